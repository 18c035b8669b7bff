"""What a checkpoint records about itself, next to it: ``step_00000100.ckpt.meta.json``.

The record holds the checkpoint's SHA-256 (of the file, or of every file of a sharded checkpoint
directory, names included), its step, whether the fit ended there (``finished``) and the run's
config. It is written (atomically) before the checkpoint is renamed into place, so every complete
checkpoint has one. It serves three checks on resume:

* **damage**: bytes changed after the write (a bad disk, a copy cut short, a flipped bit) fail the
  checksum; ``resume=auto`` then skips that checkpoint with a warning and takes the previous one.
  Hashing reads the whole checkpoint once per save and once per resume, on rank 0: 1.6 GB/s,
  about a minute per 100 GB, on the CI machine (``make bench-checksum``).
* **changed config**: :func:`config_changes` lists the keys that differ from the config the run
  was started with; :data:`APPLIED_ON_RESUME` says which of them a resumed run may take (run
  length, logging, checkpoint cadence, performance switches with equal numbers); any other change
  is refused in one line naming the keys: the optimizer, schedule, data order and model in the
  checkpoint were built from the old values and would silently keep them.
* **finished**: running a finished run's command again says so instead of exiting quietly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["APPLIED_ON_RESUME", "META_SUFFIX", "config_changes", "damage_of", "digest", "read_record",
           "record_path", "refused_changes", "write_record"]

META_SUFFIX = ".meta.json"
CHUNK = 8 << 20

# keys (or key prefixes ending in ".") a resumed run may change; everything else is refused
APPLIED_ON_RESUME = (
    "trainer.max_steps", "trainer.max_epochs", "trainer.log_every_n_steps", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.val_check_interval", "trainer.limit_val_batches",
    "trainer.num_sanity_val_steps", "trainer.default_root_dir",
    "callbacks.", "logger.", "paths.", "run_name", "resume", "tracked_metric",
    "data.num_workers", "data.on_error", "data.max_skip_fraction", "data.frames.cache_dir", "data.frames.timeout_s",
    "rollout.share_prefix", "model.attn_implementation", "model.gradient_checkpointing",
)


def record_path(ckpt: str | Path) -> Path:
    return Path(f"{ckpt}{META_SUFFIX}")


def digest(path: str | Path) -> str:
    """SHA-256 of a file, or of a directory's files (sorted relative names and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f != path:
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
    return h.hexdigest()


def write_record(ckpt_written: str | Path, final: str | Path, *, step: int, finished: bool,
                 config: Mapping | None) -> None:
    """Hash the checkpoint just written at ``ckpt_written`` and record it for ``final`` (atomic)."""
    record = {"sha256": digest(ckpt_written), "step": int(step), "finished": bool(finished),
              "config": dict(config) if config is not None else None}
    target = record_path(final)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, target)


def read_record(ckpt: str | Path) -> dict | None:
    """The record of ``ckpt``; None when it has none (written before records existed).
    A record that is not readable JSON raises ``ValueError`` naming it."""
    path = record_path(ckpt)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint record ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise ValueError(f"{path}: not a checkpoint record (no sha256)")
    return record


def damage_of(ckpt: str | Path) -> str | None:
    """Why ``ckpt`` cannot be trusted (checksum mismatch, unreadable record), or None."""
    try:
        record = read_record(ckpt)
    except ValueError as exc:
        return str(exc)
    if record is None:
        return None
    actual = digest(ckpt)
    if actual != record["sha256"]:
        return f"checksum mismatch (sha256 {actual[:12]}..., recorded {record['sha256'][:12]}...): damaged after writing"
    return None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def config_changes(old: Mapping, new: Mapping) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` of every leaf that differs (a missing key counts as None)."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _applied(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in APPLIED_ON_RESUME)


def refused_changes(changes: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """The changes a resumed run cannot take (see :data:`APPLIED_ON_RESUME`)."""
    return [c for c in changes if not _applied(c[0])]
