"""Build the training objects from a composed config (shared by the entry point and tests).

Besides instantiating the groups, this is where a run finds what it resumes: the newest complete
checkpoint in its checkpoint callback's directory (``resume=auto``, :mod:`museg_lit.checkpointing`)
and the MLflow run it already has (:mod:`museg_lit.tracking`). A config without a checkpoint
callback (``callbacks=none``, most tests) never resumes and turns Lightning's own default
checkpointing off.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict

from museg_lit.checkpoint_config import resolved_config, standalone_resume
from museg_lit.checkpointing import check_resume, find_resume_checkpoint
from museg_lit.data.datamodule import GroundingDataModule
from museg_lit.distributed.allocation import apply_cpu_allocation
from museg_lit.errors import ConfigError
from museg_lit.models.factory import load_processor, require_trainable
from museg_lit.module import GRPOModule
from museg_lit.outputs import check_writable, output_folders
from museg_lit.policy_module import PolicyModule
from museg_lit.schema import check_config
from museg_lit.sft.config import SFTConfig
from museg_lit.sft.module import SFTModule
from museg_lit.tracking import build_mlflow_logger

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    trainer: L.Trainer
    module: PolicyModule  # GRPOModule, or SFTModule with algo=sft
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


def accumulation_for(global_batch_size: int, per_device_batch: int, world_size: int,
                     generation_split: int = 1) -> int:
    """Gradient-accumulation steps that make ``global_batch_size`` prompts per optimizer step.

    Ranks that share prompts (``generation_split``) form one data-parallel replica, so
    ``replicas = world_size / generation_split`` and ``steps = global / (replicas * per_device)``.
    MUSEG: 7 GPUs x 1 prompt x 2 = 14; on 1 GPU the same 14 need 14 steps; 8 GPUs cannot make 14.

    >>> accumulation_for(14, 1, 7), accumulation_for(14, 1, 1), accumulation_for(16, 2, 8, generation_split=2)
    (2, 14, 2)
    """
    replicas = world_size // generation_split
    per_step = replicas * per_device_batch
    if global_batch_size < 1 or global_batch_size % per_step:
        raise ConfigError(
            f"data.global_batch_size={global_batch_size} is not a multiple of {per_step} prompts per micro-batch "
            f"({replicas} data-parallel replicas x data.batch_size={per_device_batch}); change trainer.devices, "
            "data.batch_size or data.global_batch_size")
    return global_batch_size // per_step


def _derive_accumulation(cfg: DictConfig, trainer: L.Trainer) -> int:
    """``data.global_batch_size`` -> ``trainer.accumulate_grad_batches`` (set on the trainer and in
    ``cfg``, so MLflow records the derived value); without it the configured value stands."""
    configured = cfg.trainer.get("accumulate_grad_batches")
    global_batch = cfg.data.get("global_batch_size")
    if global_batch is None:
        return int(configured or 1)
    split = getattr(getattr(trainer.strategy, "sharding", None), "generation_split", 1)
    steps = accumulation_for(int(global_batch), int(cfg.data.batch_size), trainer.world_size, split)
    if configured is not None and int(configured) != steps:
        raise ConfigError(f"trainer.accumulate_grad_batches={configured} contradicts data.global_batch_size="
                          f"{global_batch} (which needs {steps} on {trainer.world_size} processes); set only one "
                          "(data.global_batch_size=null to use the accumulation as given)")
    trainer.accumulate_grad_batches = steps
    with open_dict(cfg):
        cfg.trainer.accumulate_grad_batches = steps
    log.info("data.global_batch_size=%s: %d processes x batch %s x accumulation %d", global_batch,
             trainer.world_size, cfg.data.batch_size, steps)
    return steps


def build_training(cfg: DictConfig) -> TrainingRun:
    """Instantiate model spec, processor, data, module, loggers, callbacks and trainer.

    The processor loads first: a missing checkpoint path fails here, before any data work. The
    trainer comes before the data module: gradient accumulation is derived from
    ``data.global_batch_size`` and the trainer's process count (:func:`accumulation_for`).
    Every typed value is checked first (:func:`museg_lit.schema.check_config`), then every output
    folder is created and test-written (:mod:`museg_lit.outputs`). On resume, a config that changes
    keys a resumed run cannot take is refused, and a finished run says so
    (:func:`museg_lit.checkpointing.check_resume`).
    """
    check_config(cfg)
    check_writable(output_folders(cfg))
    apply_cpu_allocation()  # a launcher's job uses the CPUs it was given, not every core of the node
    spec = instantiate(cfg.model)
    if cfg.rollout.get("share_prefix", True) and spec.attn_implementation.startswith("flash"):
        raise ConfigError(f"rollout.share_prefix=true packs each prompt with its completions under a block mask, "
                          f"which model.attn_implementation={spec.attn_implementation} cannot take: use "
                          f"model.attn_implementation=sdpa, or rollout.share_prefix=false")
    processor = load_processor(spec)
    require_trainable(spec)  # a family whose model passes do not exist yet stops here, in one line
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
                          accumulate_grad_batches=cfg.trainer.get("accumulate_grad_batches") or 1,
                          # without our checkpoint callback Lightning would add its own default one
                          enable_checkpointing=checkpoint is not None, **({"plugins": plugins} if plugins else {}))
    accumulation = _derive_accumulation(cfg, trainer)
    algo = instantiate(cfg.algo)
    optimizer = instantiate(cfg.optim.optimizer)
    scheduler = instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None
    if isinstance(algo, SFTConfig):  # algo=sft: teacher-forced answers, no rollouts and no rewards
        datamodule = instantiate(cfg.data, processor=processor, answers=algo.target)
        module: PolicyModule = SFTModule(model=spec, algo=algo, optimizer=optimizer, scheduler=scheduler)
    else:
        # num_iterations > 1: each group of accumulated batches is replayed num_iterations times;
        # prompts that leave no room under rollout.max_total_tokens are skipped by the collator
        datamodule = instantiate(cfg.data, processor=processor, repeat_batches=algo.num_iterations,
                                 repeat_group=accumulation, max_total_tokens=cfg.rollout.get("max_total_tokens"))
        module = GRPOModule(model=spec, reward=instantiate(cfg.reward), algo=algo, rollout=instantiate(cfg.rollout),
                            optimizer=optimizer, scheduler=scheduler)
    run_config = OmegaConf.to_container(cfg, resolve=False)
    if checkpoint is not None and hasattr(checkpoint, "run_config"):
        checkpoint.run_config = run_config  # recorded with each checkpoint
    module.run_config = resolved_config(cfg)  # stored in each checkpoint (museg_lit.checkpoint_config)
    if ckpt_path is not None:
        # resume=<ckpt> alone: the run's config came from the checkpoint; compare resolved with resolved
        stored = standalone_resume(resume, cfg.get("run_name"))
        check_resume(ckpt_path, run_config if stored is None else module.run_config, run_name=run_dir.name,
                     recorded=stored)
    return TrainingRun(trainer, module, datamodule, str(ckpt_path) if ckpt_path is not None else None)
