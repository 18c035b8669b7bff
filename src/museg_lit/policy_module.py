"""What every training stage of the platform shares: a policy, its processor, and the plumbing.

:class:`PolicyModule` is the base of :class:`museg_lit.module.GRPOModule` (RL) and
:class:`museg_lit.sft.module.SFTModule` (supervised warm start). It loads the policy (and, for
stages that set :attr:`needs_reference`, the frozen reference) in ``configure_model``, shards them
with FSDP2 under a model-parallel strategy (:mod:`museg_lit.distributed.sharding`), builds the
optimizer and schedule, moves the processor tensors of a batch to the device, and counts drawn and
skipped samples against the skip budget (:mod:`museg_lit.data.skips`), whose state travels in the
checkpoint, as does the run's resolved config (:mod:`museg_lit.checkpoint_config`). At train start it
logs the annotation counts of the data module's setup (``data/loaded``, ``data/dropped/<reason>``,
...: :class:`museg_lit.data.annotations.LoadReport`). A stage adds its ``training_step``.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.distributed.device_mesh import DeviceMesh

from museg_lit.checkpoint_config import CONFIG_KEY
from museg_lit.data.batch import PromptBatch
from museg_lit.data.skips import SkipCounter
from museg_lit.distributed.ranks import RankGroup, all_ranks_agree, mesh_groups
from museg_lit.distributed.sharding import ShardingConfig, cast_parameters, shard_model
from museg_lit.models.factory import ModelSpec, load_policy, load_processor, load_reference
from museg_lit.models.generation import SpecialTokens

__all__ = ["PolicyModule"]


class PolicyModule(L.LightningModule):
    """Policy + processor + optimizer + skip budget; subclasses write ``training_step``."""

    def __init__(
        self,
        model: ModelSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__()
        self.spec = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.policy: torch.nn.Module | None = None
        self.reference: torch.nn.Module | None = None
        self.processor = None
        self.skips = SkipCounter()  # draws / skipped samples and the skip budget (data.max_skip_fraction)
        self.missing_videos = 0  # samples the data module dropped at setup (video not there)
        self.sharded = False  # set by configure_model under a model-parallel strategy (FSDP2)
        self.rank_group = RankGroup()  # ranks sharing each prompt (generation_split); 1 rank by default
        self.run_config: dict | None = None  # the resolved run config, stored in each checkpoint (set by the builder)

    @property
    def needs_reference(self) -> bool:
        """Whether a frozen copy of the initial policy is loaded (GRPO's KL term); False here."""
        return False

    # ---- model construction (Lightning calls this once, also under sharded strategies) ----
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        self.processor = load_processor(self.spec)
        # from_pretrained returns eval mode; activation checkpointing (set by load_policy) needs train mode
        self.policy = load_policy(self.spec).train()
        # with LoRA the reference is the policy with its adapter disabled (no second copy)
        self.reference = load_reference(self.spec) if self.needs_reference and not self.spec.uses_lora else None
        if self.device_mesh is not None:  # set by Lightning's ModelParallelStrategy (trainer=fsdp)
            self._shard(self.device_mesh)
        # stop / pad / never-sample ids, looked up once (museg_lit.models.generation)
        self.tokens = SpecialTokens.of(self.policy, self.processor.tokenizer)

    def _sharding_config(self, mesh: DeviceMesh) -> ShardingConfig:
        # FSDP2Strategy carries the settings; a bare ModelParallelStrategy gets the defaults
        # (bf16 compute on GPU, fp32 on CPU where bf16 matmuls are slow and gloo is the backend)
        cfg = getattr(self._trainer.strategy, "sharding", None) if self._trainer is not None else None
        return cfg or ShardingConfig(param_dtype="bfloat16" if mesh.device_type == "cuda" else None)

    def check_sharding(self, cfg: ShardingConfig, mesh: DeviceMesh) -> None:
        """Refuse sharding settings the stage cannot run with (called before anything is sharded)."""

    def _shard(self, mesh: DeviceMesh) -> None:
        """FSDP2 on policy and reference (see :mod:`museg_lit.distributed.sharding`)."""
        cfg = self._sharding_config(mesh)
        self.check_sharding(cfg, mesh)
        fsdp_mesh, self.rank_group = mesh_groups(mesh, cfg.generation_split)
        mp_policy = cfg.mp_policy()
        # fp32 master weights under mixed precision: the optimizer must not update bf16 weights
        # (an lr of 1.5e-6 is below bf16's resolution for weights of magnitude ~1e-2).
        # LoRA: the peft wrapper is sharded like the bare model (adapters live inside the blocks and
        # are gathered with them); the reference is the policy with its adapter disabled, which
        # changes no parameter, so every rank still runs the same collectives.
        cast_parameters(self.policy, cfg.policy_dtype)
        shard_model(self.policy, fsdp_mesh, mp_policy=mp_policy, reshard_after_forward=cfg.reshard_after_forward,
                    activation_checkpointing=self.spec.gradient_checkpointing)
        if self.reference is not None:
            # no optimizer state and no grad: store it in the compute dtype, no activation checkpointing
            cast_parameters(self.reference, cfg.reference_dtype)
            shard_model(self.reference, fsdp_mesh, mp_policy=mp_policy,
                        reshard_after_forward=cfg.reshard_after_forward, frozen=True)
        self.sharded = True

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=max(1, self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def transfer_batch_to_device(self, batch: PromptBatch, device: torch.device, dataloader_idx: int) -> PromptBatch:
        return batch.to(device)  # the processor and answer tensors travel; samples stay on the host

    # ---- the skip budget ----
    @property
    def skipped_total(self) -> int:
        return self.skips.skipped

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["museg_skips"] = self.skips.state_dict()
        if self.run_config is not None:  # the checkpoint describes itself (museg_lit.checkpoint_config)
            checkpoint[CONFIG_KEY] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "museg_skips" in checkpoint:
            self.skips.load_state_dict(checkpoint["museg_skips"])

    def on_train_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None:
            self.skips.max_fraction = getattr(dm, "max_skip_fraction", self.skips.max_fraction)
            self.missing_videos = getattr(dm, "num_missing_videos", 0)
            report = getattr(dm, "report", None)  # the annotation counts of setup (LoadReport), once per start
            if report is not None:
                for logger in self.trainer.loggers:  # rank 0 only (Lightning's loggers log there)
                    logger.log_metrics(report.as_metrics(), step=self.trainer.global_step)

    def _count_skips(self, batch: PromptBatch) -> bool:
        """Count the batch's draws and skips, log them, and enforce the skip budget on every rank at
        once (a ``DataError`` naming the first failures). Returns whether this rank has samples."""
        self.skips.add(batch.drawn, batch.skipped)
        self.log_dict({**self.skips.as_metrics(), "data/missing_videos": float(self.missing_videos)},
                      on_step=True, batch_size=1)
        has_samples = batch.inputs is not None
        # a batch none of whose draws loaded is over any budget below 1; under FSDP every rank must
        # stop (or go on) together, or the others wait forever in the next collective
        within = not self.skips.exceeded() and (has_samples or self.skips.max_fraction >= 1)
        if not all_ranks_agree(within, self.device):
            raise self.skips.error()
        return has_samples

    def has_batch(self, batch: PromptBatch) -> bool:
        """Count the batch's skips; False when this step must be skipped on every rank (some rank has
        no sample: under FSDP all ranks run the same forwards and backward, or none does)."""
        return all_ranks_agree(self._count_skips(batch), self.device)
