"""The config a checkpoint carries: stored at each save, read by export and by resume from the path alone.

Every Lightning checkpoint of a training run holds the run's composed config, resolved to plain
values, under ``checkpoint["museg_config"]`` (written by
:meth:`museg_lit.policy_module.PolicyModule.on_save_checkpoint`; a sharded checkpoint directory
keeps it in its ``meta.pt``). With it a checkpoint needs nothing passed in again:

* **export** — :func:`museg_lit.export.export_checkpoint` (``python -m museg_lit.export CKPT``)
  builds the model spec and processor from ``model`` of the stored config;
* **resume** — ``python -m museg_lit.train resume=CKPT`` (no ``run_name``) continues the run the
  checkpoint belongs to: the stored config is the run's config, the command line's overrides
  replace single keys of it (``trainer.max_steps=...``; keys a resumed run may not change are
  refused as for any resume, :mod:`museg_lit.checkpoint_record`), and the run directory is the
  checkpoint's own (its checkpoints, its MLflow run), wherever the command is started.
  With a ``run_name`` (given, or set by the experiment) the command line's config is used as before:
  that is how a new run starts from another run's checkpoint.

The record next to each checkpoint (``.meta.json``) keeps the *unresolved* config, as it always
has, for the resume checks of ``resume=auto``; checkpoints written before this key existed resume
and export the old way (the full command, or an explicit model spec).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = ["CONFIG_KEY", "resolved_config", "resumed_config", "standalone_resume", "stored_config"]

CONFIG_KEY = "museg_config"
# a sharded (distributed) checkpoint directory keeps its non-tensor entries in this file (Lightning's name)
SHARDED_META = "meta.pt"


def resolved_config(cfg: DictConfig) -> dict:
    """The composed config as plain, resolved values (what a checkpoint stores)."""
    return OmegaConf.to_container(cfg, resolve=True)


def stored_config(ckpt: str | Path) -> dict | None:
    """The config stored in checkpoint ``ckpt`` (a file, or a sharded directory); None when it has
    none (written before checkpoints carried it) or ``ckpt`` is not a readable checkpoint."""
    path = Path(ckpt)
    path = path / SHARDED_META if path.is_dir() else path
    if not path.is_file():
        return None
    try:  # mmap: only the pickled metadata is read, not the weights
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # damaged or not a checkpoint: resume's own checks name the problem
        return None
    config = checkpoint.get(CONFIG_KEY) if isinstance(checkpoint, Mapping) else None
    return dict(config) if isinstance(config, Mapping) else None


def standalone_resume(resume, run_name) -> dict | None:
    """The stored config when a run continues from checkpoint ``resume`` alone: ``resume`` is a path
    (not ``auto`` / ``never``) to a checkpoint that stores its config, and no ``run_name`` is set."""
    if run_name or resume in (None, False, "auto", "never", "null", "false"):
        return None
    return stored_config(str(resume))


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].replace("/", ".")


def resumed_config(cfg: DictConfig, overrides: Sequence[str] | None) -> DictConfig:
    """``cfg`` itself, or for a resume from a checkpoint alone (:func:`standalone_resume`) the
    checkpoint's stored config with each command-line override applied: the key takes its value in
    ``cfg`` (a config-group choice such as ``trainer=gpu`` replaces the whole group; ``~key`` deletes)."""
    stored = standalone_resume(cfg.get("resume"), cfg.get("run_name"))
    if stored is None:
        return cfg
    merged = OmegaConf.create(stored)
    for override in overrides or ():
        key = _override_key(str(override))
        if key == "hydra" or key.startswith("hydra."):
            continue
        if str(override).startswith("~"):
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(merged, parent) if parent else merged
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(merged, key, value, merge=False, force_add=True)
    OmegaConf.set_struct(merged, True)
    return merged
