"""Build the training objects from a composed config (shared by the entry point and tests).

Besides instantiating the groups, this is where a run finds what it resumes: the newest complete
checkpoint in its checkpoint callback's directory (``resume=auto``, :mod:`museg_lit.checkpointing`)
and the MLflow run it already has (:mod:`museg_lit.tracking`). A config without a checkpoint
callback (``callbacks=none``, most tests) never resumes and turns Lightning's own default
checkpointing off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from museg_lit.checkpointing import find_resume_checkpoint
from museg_lit.data.datamodule import GroundingDataModule
from museg_lit.models.factory import load_processor
from museg_lit.module import GRPOModule
from museg_lit.tracking import build_mlflow_logger


@dataclass
class TrainingRun:
    trainer: L.Trainer
    module: GRPOModule
    datamodule: GroundingDataModule
    ckpt_path: str | None = None  # the checkpoint `fit` continues from (None: a fresh start)


def _instantiate_dict(cfg: DictConfig | None, build=instantiate) -> list:
    """A config group holding named ``_target_`` entries (callbacks, loggers) -> objects."""
    if not cfg:
        return []
    return [build(entry) for entry in cfg.values() if entry is not None and "_target_" in entry]


def _is_mlflow(entry: DictConfig) -> bool:
    return str(entry.get("_target_", "")).endswith("MLFlowLogger")


def cluster_plugins() -> list:
    """Under submitit's SLURM executor (``hydra/launcher=slurm``) Lightning's SLURM environment, with
    its own requeue off: submitit already requeues on the preemption/timeout signal
    (``hydra.launcher.max_num_timeout``) and a second requeue would start the job twice."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def build_training(cfg: DictConfig) -> TrainingRun:
    """Instantiate model spec, processor, data, module, loggers, callbacks and trainer.

    The processor loads first: a missing checkpoint path fails here, before any data work.
    """
    spec = instantiate(cfg.model)
    processor = load_processor(spec)
    # num_iterations > 1: each group of accumulated batches is replayed num_iterations times
    datamodule = instantiate(cfg.data, processor=processor, repeat_batches=cfg.algo.num_iterations,
                             repeat_group=cfg.trainer.accumulate_grad_batches)
    module = GRPOModule(
        model=spec,
        reward=instantiate(cfg.reward),
        algo=instantiate(cfg.algo),
        rollout=instantiate(cfg.rollout),
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
    )
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    checkpoint = next((cb for cb in callbacks if isinstance(cb, ModelCheckpoint)), None)
    resume = cfg.get("resume", "auto")
    ckpt_path = find_resume_checkpoint(resume, checkpoint.dirpath if checkpoint is not None else None)
    run_dir = Path(cfg.paths.output_dir)
    loggers = _instantiate_dict(cfg.get("logger"), lambda entry: build_mlflow_logger(
        entry, run_dir, resume=resume != "never", run_name=cfg.get("run_name")) if _is_mlflow(entry)
        else instantiate(entry))
    plugins = cluster_plugins()
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                          # without our checkpoint callback Lightning would add its own default one
                          enable_checkpointing=checkpoint is not None, **({"plugins": plugins} if plugins else {}))
    return TrainingRun(trainer, module, datamodule, str(ckpt_path) if ckpt_path is not None else None)
