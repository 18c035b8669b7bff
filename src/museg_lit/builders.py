"""Build the training objects from a composed config (shared by the entry point and tests)."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from museg_lit.data.datamodule import GroundingDataModule
from museg_lit.models.factory import load_processor
from museg_lit.module import GRPOModule


@dataclass
class TrainingRun:
    trainer: L.Trainer
    module: GRPOModule
    datamodule: GroundingDataModule


def _instantiate_dict(cfg: DictConfig | None) -> list:
    """A config group holding named ``_target_`` entries (callbacks, loggers) -> objects."""
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if entry is not None and "_target_" in entry]


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
    trainer = instantiate(cfg.trainer, logger=_instantiate_dict(cfg.get("logger")) or False,
                          callbacks=_instantiate_dict(cfg.get("callbacks")))
    return TrainingRun(trainer, module, datamodule)
