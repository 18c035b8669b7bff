"""Output folders checked before the first step: each one a run writes to (run directory,
checkpoints, export, the MLflow store and its artifacts) is created and test-written at start,
so an unwritable path fails in seconds with its config key named, not at the first save hours
(or a whole run) later."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

from museg_lit.errors import ConfigError

__all__ = ["check_writable", "output_folders", "store_folder"]


def store_folder(uri: str | None) -> Path | None:
    """The local folder behind an MLflow tracking/artifact location (``sqlite:///DIR/x.db`` -> DIR,
    ``file:DIR`` / a plain path -> DIR); None for remote stores (``http://``, ``s3://``)."""
    if not uri:
        return None
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent if uri.count("/") > 3 else None
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    return None


def _parent(path: str | None) -> Path | None:
    return Path(path).parent if path else None


def output_folders(cfg: Mapping) -> list[tuple[str, Path]]:
    """``(config key, folder)`` of every local folder the training run will write to."""
    def get(*keys: str):
        node = cfg
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    folders = [("paths.output_dir", get("paths", "output_dir")),
               ("callbacks.checkpoint.dirpath", get("callbacks", "checkpoint", "dirpath")),
               # the export is built beside its folder and renamed into place: test the parent
               ("callbacks.export.dirpath", _parent(get("callbacks", "export", "dirpath"))),
               ("logger.mlflow.tracking_uri", store_folder(get("logger", "mlflow", "tracking_uri"))),
               ("logger.mlflow.artifact_location", store_folder(get("logger", "mlflow", "artifact_location")))]
    return [(key, Path(folder)) for key, folder in folders if folder]


def check_writable(folders: Iterable[tuple[str, Path]]) -> None:
    """Create each folder and write (then delete) a small file in it; the error names the key."""
    for key, folder in folders:
        probe = folder / f".museg-write-test-{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"museg")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"{key}={folder}: cannot write there ({exc.strerror or exc})") from None
