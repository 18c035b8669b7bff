"""GRPO LightningModule: rollout -> rewards -> group advantages -> log-probs -> loss.

One training step takes a batch of B prompts (each with its decoded clip), samples G completions per
prompt, scores them with the active reward phase, normalises rewards within each group, computes
per-token log-probs of the policy (with grad) and of the frozen reference (if ``beta > 0``), and
returns the loss; Lightning does backward, clipping, accumulation and the optimizer step.

Departures from MUSEG's TRL-0.15 trainer: generation runs in the training process with HF
``generate`` (MUSEG used a separate vLLM GPU); everything else follows the recipe in DESIGN.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import lightning as L
import torch

from museg_lit.models.factory import ModelSpec, load_policy, load_processor, load_reference
from museg_lit.rewards.schedule import RewardSchedule
from museg_lit.rl.advantages import group_advantages
from museg_lit.rl.config import AlgoConfig, RolloutConfig
from museg_lit.rl.logprobs import completion_logprobs
from museg_lit.rl.losses import policy_loss
from museg_lit.rl.rollout import generate_rollout


class GRPOModule(L.LightningModule):
    def __init__(
        self,
        model: ModelSpec,
        reward: RewardSchedule,
        algo: AlgoConfig,
        rollout: RolloutConfig,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_completions_logged: int = 8,
    ):
        super().__init__()
        self.spec, self.reward, self.algo, self.rollout_cfg = model, reward, algo, rollout
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_completions_logged = num_completions_logged
        self.policy: torch.nn.Module | None = None
        self.reference: torch.nn.Module | None = None
        self.processor = None
        self.skipped_total = 0
        self.last_completions: list[dict] = []  # rows for the MLflow completions table
        self._update_started: float | None = None

    # ---- model construction (Lightning calls this once, also under sharded strategies) ----
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        self.processor = load_processor(self.spec)
        self.policy = load_policy(self.spec).train()  # from_pretrained returns eval mode; checkpointing needs train
        if self.spec.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # beta == 0 -> no KL term -> no reference model in memory at all
        self.reference = load_reference(self.spec) if self.algo.beta > 0 else None
        gen = self.policy.generation_config
        eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        self.eos_token_ids = [int(e) for e in eos if e is not None]
        self.pad_token_id = int(self.processor.tokenizer.pad_token_id)
        tok = self.processor.tokenizer
        vision_tokens = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
        self.suppress_token_ids = [tok.convert_tokens_to_ids(t) for t in vision_tokens if t in tok.get_vocab()]

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=max(1, self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @contextmanager
    def _timed(self, name: str, timings: dict):
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        # only the processor tensors travel; samples (frozen dataclasses) stay on the host
        if batch.get("inputs") is not None:
            batch["inputs"] = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch["inputs"].items()}
        return batch

    # ---- one GRPO step ----
    def training_step(self, batch: dict, batch_idx: int):
        self.skipped_total += len(batch["skipped"])
        self.log("data/skipped", float(self.skipped_total), on_step=True, batch_size=1)
        if batch["inputs"] is None:  # every video of this batch failed to decode: no step
            return None
        G = self.rollout_cfg.num_generations
        samples = batch["samples"]
        timings = {"decode_s": batch["decode_s"]}
        inputs = batch["inputs"]

        with self._timed("generate_s", timings):
            ro = generate_rollout(
                self.policy, self.processor.tokenizer, inputs, num_generations=G,
                max_new_tokens=self.rollout_cfg.max_new_tokens, temperature=self.rollout_cfg.temperature,
                top_p=self.rollout_cfg.top_p, top_k=self.rollout_cfg.top_k,
                eos_token_ids=self.eos_token_ids, pad_token_id=self.pad_token_id,
                suppress_token_ids=self.suppress_token_ids,
            )
        with self._timed("reward_s", timings):
            solution = [s.solution for s in samples for _ in range(G)]
            columns: dict[str, list] = {}
            for s in samples:
                for key, value in s.columns().items():
                    columns.setdefault(key, []).extend([value] * G)
            rewards = self.reward.compute(self.global_step, ro.texts, solution, **columns)
            stats = group_advantages(rewards.total, G, scale=self.algo.scale_rewards, eps=self.algo.advantage_eps)
        advantages = stats.advantages.to(self.device)  # [B*G]
        temperature = self.rollout_cfg.temperature if self.algo.logprobs_at_temperature else 1.0

        ref_logp = None
        if self.reference is not None:
            with self._timed("ref_logp_s", timings), torch.no_grad():
                ref_logp = completion_logprobs(
                    self.reference, ro.prompt_inputs, ro.completion_ids, ro.completion_mask, temperature=temperature
                )  # [B*G, C]
        with self._timed("policy_logp_s", timings):
            logp = completion_logprobs(
                self.policy, ro.prompt_inputs, ro.completion_ids, ro.completion_mask, temperature=temperature
            )  # [B*G, C]
        out = policy_loss(
            logp, advantages, ro.completion_mask, ref_logp=ref_logp, beta=self.algo.beta,
            kl_estimator=self.algo.kl_estimator, epsilon_low=self.algo.epsilon_low,
            epsilon_high=self.algo.epsilon_high, aggregation=self.algo.aggregation,
            max_completion_length=self.rollout_cfg.max_new_tokens,
        )

        n = len(ro.texts)
        metrics = {
            "train/loss": out.loss.detach(),
            "train/policy_loss": out.policy_loss,
            "train/kl": out.kl,
            "train/clip_fraction": out.clip_fraction,
            "train/reward": rewards.total.mean(),
            "train/reward_std": stats.std.mean(),
            "train/completion_length": ro.completion_mask.sum(1).float().mean(),
            "train/truncated_fraction": ro.truncated.float().mean(),
            "train/reward_phase": float(self.reward.phases.index(rewards.phase)),
        }
        metrics.update({f"train/reward/{k}": v.mean() for k, v in rewards.per_function.items()})
        metrics.update({f"time/{k}": v for k, v in timings.items()})
        self.log_dict(metrics, on_step=True, batch_size=n)
        self.last_completions = [
            {"step": self.global_step, "idx": samples[i // G].idx, "completion": ro.texts[i],
             "solution": str(solution[i]), "reward": float(rewards.total[i]),
             **{k: float(v[i]) for k, v in rewards.per_function.items()}}
            for i in range(min(n, self.num_completions_logged))
        ]
        self._update_started = time.perf_counter()
        return out.loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # backward + gradient clipping + optimizer step happen between training_step and here
        if self._update_started is not None:
            self.log("time/update_s", time.perf_counter() - self._update_started, on_step=True, batch_size=1)
            self._update_started = None
