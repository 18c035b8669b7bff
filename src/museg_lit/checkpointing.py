"""Crash-safe checkpoints and resume: run identity, atomic writes, latest complete checkpoint, RNG.

A run killed at any instant (SIGKILL mid-step, a lost node, preemption) and started again with the
*same command* continues from its latest complete checkpoint:

* **Run identity** — the run directory is ``logs/<task_name>/runs/<name>``, where ``<name>`` is the
  ``run_name`` given on the command line or, without one, a hash of the command-line overrides
  (:func:`run_dir_name`; ``run_name`` and ``resume`` themselves do not count). The same command
  therefore finds the same directory, its checkpoints and its MLflow run id
  (:mod:`museg_lit.tracking`). A sweep job's directory is ``<sweep dir>/<job number>``, which a
  requeued SLURM job gets back unchanged.
* **Atomic writes** — :class:`ResumableCheckpoint` (Lightning's ``ModelCheckpoint``: every N
  optimizer steps, keep the last K, ``last.ckpt``) writes each checkpoint under ``<name>.tmp`` and
  renames it into place only when every rank has finished writing. That holds for one-file
  checkpoints and for the directories of distributed (sharded) checkpoints alike, which is why it
  lives in the callback and not in a ``CheckpointIO`` (Lightning's ``ModelParallelStrategy`` writes
  sharded checkpoints without one). A name without ``.tmp`` is therefore a complete checkpoint;
  leftovers of a killed write end in ``.tmp`` and are deleted at the next start. Old checkpoints are
  renamed to ``.tmp`` before deletion, so a kill mid-delete leaves no half-deleted checkpoint either.
* **Resume** — :func:`find_resume_checkpoint` picks the newest complete checkpoint (``resume=auto``)
  and skips, with a warning, any that fails an integrity check: a torch zip archive whose central
  directory is readable (or a sharded directory with its metadata) whose SHA-256 matches the one
  recorded when it was written (:mod:`museg_lit.checkpoint_record`). A checkpoint damaged after
  its write is thus never loaded; the previous one is used.
* **Failed saves** — a save that fails (disk full, permissions) leaves no partial file and never
  deletes an older checkpoint; training goes on with an error logged naming the newest complete
  checkpoint, and a failed *final* save stops the run with one line saying how to continue.
* **Contents** — Lightning saves model, optimizers, LR schedulers, loop progress and the data
  position (:mod:`museg_lit.data.sampler`); this callback adds every rank's RNG states (restored
  at train start, after the data loader is rebuilt, so the sampling stream continues exactly) and
  the MLflow run id under ``checkpoint["museg"]``; the module adds the run's resolved config
  (``checkpoint["museg_config"]``, :mod:`museg_lit.checkpoint_config`), so that ``resume=<ckpt>``
  alone continues that checkpoint's run and its export needs nothing else. On request (``export_hf=true``) each kept
  checkpoint also gets a Hugging Face export next to it (``step_00000100.hf``), removed with it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from weakref import proxy

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger

from museg_lit.checkpoint_config import standalone_resume
from museg_lit.checkpoint_record import (
    APPLIED_ON_RESUME,
    META_SUFFIX,
    config_changes,
    damage_of,
    read_record,
    record_path,
    refused_changes,
    write_record,
)

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
CHECKPOINT_SUFFIX = ".ckpt"
# keys of the command line that do not change what a run computes, hence not its directory
RUN_NAME_IGNORED_KEYS = ("run_name", "resume")


# ---------------------------------------------------------------- run identity
def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def run_dir_name(run_name: str | None, overrides: Sequence[str]) -> str:
    """The run directory's name: ``run_name`` if given, else ``default`` (no overrides) or
    ``auto-<10 hex>``, a hash of the sorted overrides (their order does not change the config).

    Example: ``["trainer.max_steps=8", "seed=1"]`` and ``["seed=1", "trainer.max_steps=8"]`` give the
    same name; adding ``resume=auto`` or ``run_name=`` does not change it.
    """
    if run_name:
        name = str(run_name)
        if "/" in name or name in (".", ".."):
            raise ValueError(f"run_name={name!r} must be a plain directory name")
        return name
    kept = sorted(str(o) for o in overrides if _override_key(str(o)) not in RUN_NAME_IGNORED_KEYS)
    if not kept:
        return "default"
    return "auto-" + hashlib.sha1("\n".join(kept).encode()).hexdigest()[:10]


def run_dir(parent: str, run_name: str | None, overrides: Sequence[str], resume) -> str:
    """The run directory: ``<parent>/<run_dir_name>``, or, for a resume from a checkpoint alone
    (``resume=<ckpt>`` without ``run_name``, :mod:`museg_lit.checkpoint_config`), the directory of
    the run that wrote the checkpoint, as its stored config names it."""
    stored = standalone_resume(resume, run_name)
    output_dir = (stored.get("paths") or {}).get("output_dir") if stored is not None else None
    return str(output_dir) if output_dir else f"{parent}/{run_dir_name(run_name, list(overrides or []))}"


# ---------------------------------------------------------------- finding a checkpoint to resume
class ResumeError(ValueError):
    """The ``resume`` setting cannot be honoured (one line for the user, no traceback)."""


class CheckpointSaveError(OSError):
    """The checkpoint at the end of the fit could not be written (one line: what is left, how to continue)."""


def is_complete(path: Path) -> bool:
    """Cheap integrity check: a torch zip archive with a readable central directory (written last),
    or a sharded checkpoint directory holding its metadata (Lightning's ``meta.pt``, DCP's ``.metadata``)."""
    path = Path(path)
    if path.name.endswith(TMP_SUFFIX):
        return False
    if path.is_dir():
        return (path / "meta.pt").is_file() or (path / ".metadata").is_file()
    return path.is_file() and zipfile.is_zipfile(path)


def _step_of(path: Path) -> int:
    numbers = re.findall(r"\d+", path.name.removesuffix(CHECKPOINT_SUFFIX))
    return int(numbers[-1]) if numbers else -1  # last.ckpt (no number) only when nothing else exists


def latest_checkpoint(dirpath: str | Path) -> Path | None:
    """Newest complete ``*.ckpt`` in ``dirpath`` by the step in its name, then by time; links
    (``last.ckpt -> step_...``) and ``.tmp`` leftovers never count."""
    dirpath = Path(dirpath)
    if not dirpath.is_dir():
        return None
    candidates = [p for p in dirpath.iterdir() if p.name.endswith(CHECKPOINT_SUFFIX) and not p.is_symlink()]
    for path in sorted(candidates, key=lambda p: (_step_of(p), p.stat().st_mtime), reverse=True):
        if not is_complete(path):
            log.warning("skipping incomplete or damaged checkpoint %s", path)
        elif (damage := damage_of(path)) is not None:
            log.warning("skipping damaged checkpoint %s: %s; trying the previous one", path, damage)
        else:
            return path
    return None


def find_resume_checkpoint(resume: str | None, ckpt_dir: str | Path | None) -> Path | None:
    """The checkpoint a fit starts from: ``auto`` = the newest complete one in ``ckpt_dir`` (None if
    there is none, or no checkpoint callback); ``never`` = none, and refuse to mix a fresh start into a
    directory that already holds checkpoints; any other value = that checkpoint path."""
    mode = "never" if resume in (None, False, "null", "false") else str(resume)
    if mode == "auto":
        return latest_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    if mode == "never":
        # any checkpoint-looking file refuses (no need to hash it: damaged or not, it is not ours to mix)
        if ckpt_dir is not None and any(is_complete(p) for p in Path(ckpt_dir).glob(f"*{CHECKPOINT_SUFFIX}")
                                        if not p.is_symlink()):
            raise ResumeError(f"{ckpt_dir} already holds checkpoints of this run and resume=never: use resume=auto "
                              "to continue it, or give the new run its own run_name=...")
        return None
    path = Path(mode)
    if not path.exists():
        raise ResumeError(f"resume={mode}: no such checkpoint (use resume=auto, resume=never or a checkpoint path)")
    if not is_complete(path):
        raise ResumeError(f"resume={mode}: not a complete checkpoint (unfinished write or damaged file)")
    if (damage := damage_of(path)) is not None:
        raise ResumeError(f"resume={mode}: {damage}")
    return path


class RunFinished(Exception):
    """A finished run's command was run again: nothing to do (one line, exit status 0)."""


def _fit_length(config: Mapping) -> tuple[int, int]:
    trainer = config.get("trainer") or {}
    return int(trainer.get("max_steps") or -1), int(trainer.get("max_epochs") or -1)


def check_resume(ckpt: str | Path, config: Mapping, *, run_name: str, recorded: Mapping | None = None) -> None:
    """Refuse a resume whose config changes keys a resumed run cannot take (naming them, old -> new),
    and raise :class:`RunFinished` when the checkpoint ended the fit and the fit is no longer now.
    ``config`` is compared with the record's config, or with ``recorded`` when given (the resolved
    config stored in the checkpoint, for a resume from the checkpoint alone; ``config`` is then
    resolved too). Checkpoints written before records existed are not checked."""
    try:
        record = read_record(ckpt)
    except ValueError as exc:
        raise ResumeError(str(exc)) from None
    if record is None or not isinstance(record.get("config"), Mapping):
        return
    if recorded is not None:
        record = {**record, "config": recorded}
    refused = refused_changes(config_changes(record["config"], config))
    if refused:
        listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in refused)
        applied = ", ".join(p.rstrip(".") + ("*" if p.endswith(".") else "") for p in APPLIED_ON_RESUME)
        raise ResumeError(f"resuming {ckpt} with a config that changes what the run computes ({listed}); "
                          f"start another run with run_name=<new name> (a resumed run may change only: {applied})")
    if record.get("finished"):
        (_, old_epochs), (steps, epochs) = _fit_length(record["config"]), _fit_length(config)
        longer = (steps > 0 and steps > record["step"]) or (steps <= 0 and epochs > old_epochs > 0)
        if not longer:
            raise RunFinished(f"run {run_name} already finished at step {record['step']} ({ckpt}); nothing to do. "
                              f"To train longer: trainer.max_steps=<more than {record['step']}>; to start another "
                              "run: run_name=<new name>")


# ---------------------------------------------------------------- atomic file operations
def _fsync_tree(path: Path) -> None:
    """Flush a written file (or every file of a directory) to disk before it is renamed into place:
    the rename must never become durable before the data it names."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def publish(tmp: str | Path, final: str | Path, *, fsync: bool = True) -> None:
    """Rename a finished ``tmp`` file or directory to ``final`` atomically (replacing ``final``).

    ``os.replace`` swaps a file in one step; a directory cannot replace a non-empty directory, so an
    existing ``final`` is first renamed to a ``.tmp`` name (ignored by resume) and deleted afterwards.
    """
    tmp, final = Path(tmp), Path(final)
    if fsync:
        _fsync_tree(tmp)
    if (final.exists() and not final.is_symlink()) and (final.is_dir() or tmp.is_dir()):
        old = final.with_name(f"{final.name}.old-{os.getpid()}{TMP_SUFFIX}")
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)
    if fsync:
        _fsync_dir(final.parent)


def discard(path: str | Path) -> None:
    """Delete a checkpoint so that no instant leaves a half-deleted one under its real name."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    doomed = path.with_name(f"{path.name}.del-{os.getpid()}{TMP_SUFFIX}")
    os.replace(path, doomed)
    _remove(doomed)


def remove_stale_tmp(dirpath: str | Path) -> list[Path]:
    """Delete the ``.tmp`` leftovers of writes or deletions that a kill interrupted, and the records
    of checkpoints that no longer exist."""
    dirpath = Path(dirpath)
    entries = list(dirpath.iterdir()) if dirpath.is_dir() else []
    names = {p.name for p in entries}
    stale = [p for p in entries if p.name.endswith(TMP_SUFFIX)
             or (p.name.endswith(CHECKPOINT_SUFFIX + META_SUFFIX) and p.name.removesuffix(META_SUFFIX) not in names)]
    for p in stale:
        _remove(p)
    return stale


# ---------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """This process's RNG states as plain types (loadable with ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_ranks(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (a collective when distributed; ``[obj]`` otherwise)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


# ---------------------------------------------------------------- the callback
def _is_last_step(trainer: L.Trainer) -> bool:
    """The optimizer step that ends the fit (``max_steps`` reached, or the last batch of the last epoch)."""
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    max_epochs = trainer.max_epochs
    last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    return bool(max_epochs is not None and max_epochs > 0 and last_batch and trainer.current_epoch + 1 >= max_epochs)


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for crash-safe resume (see the module docstring).

    Args:
        dirpath: where checkpoints go (``<run dir>/checkpoints``).
        every_n_train_steps: save every N optimizer steps.
        keep_last: how many of the newest checkpoints to keep (-1: all).
        save_last: ``"link"`` (``last.ckpt`` points at the newest), ``True`` (a copy) or ``False``.
        save_final: also save at the step that ends the fit, so that re-running a finished command
            finds it finished instead of redoing the steps after the last periodic checkpoint.
        export_hf: write each kept checkpoint's policy as a Hugging Face directory next to it.
        merge_lora: for ``export_hf``: merge LoRA adapters into the weights (else save the adapter).
        fsync: flush files to disk before the rename (off only for throw-away runs on slow disks).
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 100, keep_last: int = 2,
                 save_last: bool | str = "link", save_final: bool = True, export_hf: bool = False,
                 merge_lora: bool = True, fsync: bool = True, filename: str = "step_{step:08d}"):
        super().__init__(dirpath=dirpath, filename=filename, monitor="step", mode="max", save_top_k=keep_last,
                         save_last=save_last, every_n_train_steps=every_n_train_steps,
                         auto_insert_metric_name=False, enable_version_counter=False,
                         save_on_train_epoch_end=False)
        self.save_final, self.export_hf, self.merge_lora, self.fsync = save_final, export_hf, merge_lora, fsync
        self._rng_to_restore: dict | None = None
        self.run_config: dict | None = None  # recorded with each checkpoint (set by the builder)
        self._failed: str | None = None  # the checkpoint whose save failed last

    # ---- set-up: a resumed run finds its directory non-empty; that is expected here
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath is not None:
            for p in remove_stale_tmp(self.dirpath):
                log.info("removed %s (a write or delete that a kill interrupted)", p)
        trainer.strategy.barrier("ResumableCheckpoint.setup")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.save_final and _is_last_step(trainer) and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    # ---- atomic save and delete
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = filepath + TMP_SUFFIX
        error: OSError | None = None
        try:
            trainer.save_checkpoint(tmp, self.save_weights_only)  # every rank writes; ends with a barrier
            if trainer.is_global_zero:
                # the record (checksum, step, config) goes first: a complete checkpoint always has one
                write_record(tmp, filepath, step=trainer.global_step, finished=_is_last_step(trainer),
                             config=self.run_config)
                publish(tmp, filepath, fsync=self.fsync)
        except OSError as exc:
            error = exc
        # every rank takes the same branch (rank 0 alone publishes, and alone may fail)
        if trainer.strategy.reduce_boolean_decision(error is not None, all=False):
            self._save_failed(trainer, filepath, error or OSError("the save failed on another rank"))
            return
        trainer.strategy.barrier("ResumableCheckpoint.publish")
        self._failed = None
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if self.export_hf:
            self._export(trainer, filepath)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_failed(self, trainer: L.Trainer, filepath: str, exc: OSError) -> None:
        """Clean up a failed save; keep every older checkpoint; go on, or stop if the fit ends here."""
        if trainer.is_global_zero:
            discard(filepath + TMP_SUFFIX)
            discard(record_path(filepath))
        self._failed = filepath
        self.best_k_models.pop(filepath, None)  # never rotate an older checkpoint out for this one
        kept = latest_checkpoint(self.dirpath) if self.dirpath is not None else None
        where = f"the newest complete checkpoint is {kept}" if kept else "no complete checkpoint exists yet"
        message = f"could not write checkpoint {filepath} at step {trainer.global_step} ({exc}); {where}"
        if _is_last_step(trainer):
            raise CheckpointSaveError(f"{message}: free space or fix callbacks.checkpoint.dirpath, then run the same "
                                      "command again to continue from it") from exc
        log.error("%s; training goes on and tries again at the next checkpoint", message)

    def _export(self, trainer: L.Trainer, filepath: str) -> None:
        from museg_lit.export import export_module  # export imports transformers-heavy helpers lazily

        export_module(trainer.lightning_module, self.hf_dir(filepath), merge_lora=self.merge_lora,
                      is_global_zero=trainer.is_global_zero)

    @staticmethod
    def hf_dir(filepath: str | Path) -> Path:
        """Where ``export_hf`` puts a checkpoint's Hugging Face export: ``step_00000100.hf``."""
        return Path(filepath).with_suffix(".hf")

    def _should_remove_checkpoint(self, trainer: L.Trainer, previous: str, current: str) -> bool:
        # Lightning never deletes the checkpoint a fit resumed from. Here every crash resumes from
        # the run's own newest checkpoint, so that rule would leave one orphan per restart; by the
        # time rotation reaches it, newer complete checkpoints exist. Outside dirpath: never.
        if previous == current or self.dirpath is None or current == self._failed:
            return False
        return Path(self.dirpath).absolute() in Path(previous).absolute().parents

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if trainer.is_global_zero:
            discard(filepath)
            discard(record_path(filepath))
            discard(self.hf_dir(filepath))

    # ---- what this callback adds to a checkpoint
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        run_id = next((lg.run_id for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)
        checkpoint["museg"] = {"mlflow_run_id": run_id, "rng": _all_ranks(rng_state())}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("museg", {}).get("rng") or []
        rank = _rank()
        if len(states) > rank:
            self._rng_to_restore = states[rank]
        elif states:
            log.warning("checkpoint holds RNG states of %d ranks; rank %d keeps its fresh seed", len(states), rank)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # restored here rather than at load time: building the data loader between the two draws
        # from the RNG, and the continued run must see the exact stream the killed run would have
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
