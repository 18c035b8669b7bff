"""GRPO LightningModule: rollout -> rewards -> group advantages -> log-probs -> loss.

One training step takes a batch of B prompts (each with its decoded clip), samples G completions per
prompt, scores them with the active reward phase, normalises rewards within each group, computes
per-token log-probs of the policy (with grad) and of the frozen reference (if any token has a KL
weight), and returns the loss; Lightning does backward, clipping, accumulation and the optimizer step.

Variants (all chosen in :class:`~museg_lit.rl.config.AlgoConfig`): ``num_iterations > 1`` caches a
rollout and reuses it for that many steps (the data module repeats each group of batches), with PPO
clipping against the rollout-time log-probs; DAPO's dynamic sampling drops zero-variance groups and
refills from further batches; token-aware KL gives timestamp tokens their own beta.

Shared prefix (``rollout.share_prefix``, default on): a rollout keeps its B prompts once; the
vision tower and the prompt run once per prompt in generation (one prefill, KV cache repeated to
the G rows) and in every log-prob pass (the prompt packed with its G completions), with the same
numbers as G prompt copies (:mod:`museg_lit.rl.logprobs`). With a frozen vision tower the
prefill's vision features serve every later pass of the step (:attr:`GRPOModule.reuses_vision_features`).

Multi-process (``trainer=fsdp``, :mod:`museg_lit.distributed`): ``configure_model`` shards policy
and reference with FSDP2 (``fully_shard`` per decoder layer and vision block, then the root); the
policy is unsharded once per rollout so that decoding issues no collective and ranks may finish at
different lengths; every other forward (log-probs) runs the same number of times on every rank. A
prompt's G completions live on one rank, or — with ``generation_split=k`` — on k ranks that
all-gather their rewards before normalising, so the advantages equal the 1-rank computation.

Departures from MUSEG's TRL-0.15 trainer (the full list is the README's "Fidelity" table):
generation runs in the training process with HF ``generate`` (MUSEG used a separate vLLM GPU),
vision placeholders are suppressed in rollouts (MUSEG dropped them from vLLM's output), and
weights stay fp32 under bf16 autocast. Sampling settings, the completion budget (prompt +
completion <= ``rollout.max_total_tokens``) and the 3D positions are MUSEG's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributed.device_mesh import DeviceMesh

from museg_lit.distributed.ranks import gathered_group_advantages
from museg_lit.distributed.sharding import ShardingConfig, unshard_for_generation
from museg_lit.models.factory import ModelSpec
from museg_lit.models.lora import reference_context
from museg_lit.policy_module import PolicyModule
from museg_lit.rewards.schedule import RewardOutput, RewardSchedule
from museg_lit.rl.config import AlgoConfig, RolloutConfig
from museg_lit.rl.logprobs import rollout_logprobs
from museg_lit.rl.losses import policy_loss
from museg_lit.rl.rollout import Rollout, generate_rollout, select_rollout
from museg_lit.rl.sampling import informative_groups, mask_truncated, rows_of_groups
from museg_lit.rl.token_mask import per_token_beta, timestamp_token_mask


@dataclass(frozen=True)
class ScoredRollout:
    """A rollout with everything the loss needs that does not change across iterations."""

    rollout: Rollout
    samples: list  # B GroundingSample, one per group
    rewards: RewardOutput  # per row
    group_std: Tensor  # [B]
    advantages: Tensor  # [N]
    loss_mask: Tensor  # [N, C] completion mask, truncated rows zeroed if configured
    beta: Tensor | float  # scalar or [N, C] token-aware
    ref_logp: Tensor | None  # [N, C]
    old_logp: Tensor | None  # [N, C], only for num_iterations > 1


def _pad_cat(tensors: list[Tensor], value: float = 0.0) -> Tensor:
    """Concatenate ``[N_i, C_i]`` tensors along rows, right-padding to the longest C."""
    width = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (0, width - t.shape[1]), value=value) for t in tensors], dim=0)


class GRPOModule(PolicyModule):
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
        super().__init__(model, optimizer, scheduler)
        self.reward, self.algo, self.rollout_cfg = reward, algo, rollout
        self.num_completions_logged = num_completions_logged
        self.last_completions: list[dict] = []  # rows for the MLflow completions table
        self.refill_batches: Iterator | None = None  # DAPO refills; set by the data module hook below
        self._cache: dict[tuple, tuple[list[ScoredRollout], int]] = {}
        self._update_started: float | None = None

    @property
    def needs_reference(self) -> bool:
        # no KL weight anywhere -> no reference model in memory at all
        return self.algo.needs_reference

    @property
    def generations_per_rank(self) -> int:
        """Completions of each prompt generated on this rank: ``G / generation_split``."""
        return self.rollout_cfg.num_generations // self.rank_group.size

    def check_sharding(self, cfg: ShardingConfig, mesh: DeviceMesh) -> None:
        if self.algo.dynamic_sampling and mesh.size() > 1:
            raise NotImplementedError(
                "algo.dynamic_sampling (DAPO refills) with more than one rank is not supported yet: each rank would "
                "refill a different number of batches, and under FSDP every extra forward is a collective the other "
                "ranks never join (deadlock); use algo.dynamic_sampling=false or one device"
            )
        if self.rollout_cfg.num_generations % cfg.generation_split:
            raise ValueError(f"rollout.num_generations={self.rollout_cfg.num_generations} is not divisible by "
                             f"generation_split={cfg.generation_split}")

    def on_train_start(self) -> None:
        super().on_train_start()
        dm = getattr(self.trainer, "datamodule", None)
        if self.algo.dynamic_sampling and dm is not None and self.refill_batches is None:
            self.refill_batches = dm.refill_batches()

    @contextmanager
    def _timed(self, name: str, timings: dict):
        start = time.perf_counter()
        yield
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    @contextmanager
    def _sampling_rng(self, samples: list):
        """Ranks that share prompts (``generation_split > 1``) must sample *different* completions,
        but Lightning seeds every rank alike. Inside, the RNG is seeded from (initial seed, step,
        prompts, rank in group) and restored afterwards: different per rank, reproducible on resume,
        and the training RNG stream is left untouched. A no-op with one rank per prompt."""
        if self.rank_group.size == 1:
            yield
            return
        key = f"{torch.initial_seed()}/{self.global_step}/{[s.idx for s in samples]}/{self.rank_group.rank}"
        seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") & (2**63 - 1)
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else [], device_type="cuda"):
            torch.manual_seed(seed)
            yield

    # ---- rollout and scoring ----
    @property
    def reuses_vision_features(self) -> bool:
        """Whether the vision features of the shared prefill serve every later pass of the step.

        Exact, not an approximation, when the vision tower is frozen (``model.freeze_vision``):
        its weights then never change, so the policy computes the same features in generation,
        in the old-policy pass and in the policy pass (the features need no gradient: nothing
        upstream of them trains); the reference is loaded from the same checkpoint (or is the
        same LoRA-wrapped model, whose adapters never touch a frozen vision tower) and computes
        in the same dtype (fp32, the same autocast, or FSDP's bf16 all-gather of the same
        weights), so its features are those numbers too. A trainable vision tower is re-run in
        every pass: once per prompt (packed), never once per completion.
        """
        return self.rollout_cfg.share_prefix and self.spec.freeze_vision

    def _logprobs(self, model, ro: Rollout) -> Tensor:
        """Per-token log-probs ``[B*G, C]`` of the rollout's completions under ``model``."""
        temperature = self.rollout_cfg.temperature if self.algo.logprobs_at_temperature else 1.0
        return rollout_logprobs(model, ro, share_prefix=self.rollout_cfg.share_prefix, temperature=temperature)

    def _score(self, batch: dict, timings: dict) -> ScoredRollout:
        # g = G / generation_split completions per prompt on this rank (all G when groups live on one rank)
        g, samples = self.generations_per_rank, batch["samples"]
        # under FSDP: gather the weights once, decode with no collective (ranks may stop at different
        # lengths), reshard; HF's synced_gpus lock-step is then unnecessary
        with self._timed("generate_s", timings), unshard_for_generation(self.policy), self._sampling_rng(samples):
            ro = generate_rollout(
                self.policy, self.processor.tokenizer, batch["inputs"], num_generations=g,
                sampling=self.rollout_cfg.sampling, tokens=self.tokens,
                max_total_tokens=self.rollout_cfg.max_total_tokens, synced_gpus=False if self.sharded else None,
                share_prefix=self.rollout_cfg.share_prefix, keep_video_features=self.reuses_vision_features,
            )
        with self._timed("reward_s", timings):
            solution = [s.solution for s in samples for _ in range(g)]
            columns: dict[str, list] = {}
            for s in samples:
                for key, value in s.columns().items():
                    columns.setdefault(key, []).extend([value] * g)
            rewards = self.reward.compute(self.global_step, ro.texts, solution, **columns)
            # groups split over ranks gather their rewards first: the same advantages as on one rank
            stats = gathered_group_advantages(rewards.total, g, self.rank_group, scale=self.algo.scale_rewards,
                                              eps=self.algo.advantage_eps, device=self.device)
        mask = mask_truncated(ro.completion_mask, ro.truncated) if self.algo.mask_truncated else ro.completion_mask
        beta: Tensor | float = self.algo.beta
        if self.algo.beta_time is not None:
            ts = timestamp_token_mask(ro.completion_ids, ro.completion_mask, self.processor.tokenizer,
                                      self.algo.token_kl_scope)  # [N, C]
            beta = per_token_beta(ts, self.algo.beta, self.algo.beta_time).to(self.device)
        ref_logp = old_logp = None
        if self.algo.needs_reference:
            with self._timed("ref_logp_s", timings), torch.no_grad():
                if self.reference is not None:
                    ref_logp = self._logprobs(self.reference, ro)
                else:  # LoRA: the base weights are the reference
                    with reference_context(self.policy):
                        ref_logp = self._logprobs(self.policy, ro)
        if self.algo.num_iterations > 1:
            with self._timed("old_logp_s", timings), torch.no_grad():
                old_logp = self._logprobs(self.policy, ro)
        return ScoredRollout(ro, samples, rewards, stats.std, stats.advantages.to(self.device), mask, beta,
                             ref_logp, old_logp)

    def _keep_informative(self, scored: ScoredRollout) -> ScoredRollout | None:
        """DAPO dynamic sampling: drop groups whose rewards are all equal (None if none is left)."""
        keep_groups = informative_groups(scored.group_std)  # [B]
        if bool(keep_groups.all()):
            return scored
        if not bool(keep_groups.any()):
            return None
        rows = rows_of_groups(keep_groups, self.generations_per_rank)  # [N]
        dev_rows = rows.to(self.device)
        pick = lambda t: None if t is None else t[dev_rows]  # noqa: E731
        total = scored.rewards.total[rows]
        per_fn = {k: v[rows] for k, v in scored.rewards.per_function.items()}
        return replace(
            scored, rollout=select_rollout(scored.rollout, keep_groups.to(self.device)),
            samples=[s for s, k in zip(scored.samples, keep_groups.tolist(), strict=True) if k],
            rewards=RewardOutput(total, per_fn, scored.rewards.phase), group_std=scored.group_std[keep_groups],
            advantages=scored.advantages[dev_rows], loss_mask=scored.loss_mask[dev_rows],
            beta=scored.beta if isinstance(scored.beta, float) else scored.beta[dev_rows],
            ref_logp=pick(scored.ref_logp), old_logp=pick(scored.old_logp),
        )

    def _rollouts(self, batch: dict, timings: dict) -> list[ScoredRollout]:
        """Scored rollouts for this batch: fresh, refilled (DAPO) or cached (num_iterations > 1)."""
        key = tuple(s.idx for s in batch["samples"])
        if key in self._cache:
            chunks, uses = self._cache.pop(key)
            if uses + 1 < self.algo.num_iterations:
                self._cache[key] = (chunks, uses + 1)
            return chunks
        first = self._score(batch, timings)
        chunks = [first]
        if self.algo.dynamic_sampling:
            kept = self._keep_informative(first)
            chunks = [kept] if kept is not None else []
            want, attempts = len(batch["samples"]), 0
            while sum(len(c.samples) for c in chunks) < want and attempts < self.algo.max_refill_batches:
                attempts += 1
                extra = next(self.refill_batches, None) if self.refill_batches is not None else None
                if extra is None or extra["inputs"] is None:
                    continue
                extra = self.transfer_batch_to_device(extra, self.device, 0)
                kept = self._keep_informative(self._score(extra, timings))
                if kept is not None:
                    chunks.append(kept)
            self.log("train/refill_batches", float(attempts), on_step=True, batch_size=1)
            chunks = chunks or [first]  # nothing informative: the step still runs (zero advantages)
        if self.algo.num_iterations > 1:
            self._cache[key] = (chunks, 1)
        return chunks

    # ---- one GRPO step ----
    def training_step(self, batch: dict, batch_idx: int):
        # every draw of this batch failed (only with data.max_skip_fraction=1): no step on any rank
        if not self.has_batch(batch):
            return None
        timings = {"decode_s": batch["decode_s"]}
        chunks = self._rollouts(batch, timings)
        with self._timed("policy_logp_s", timings):
            logps = [self._logprobs(self.policy, c.rollout) for c in chunks]  # each [N_i, C_i]
        has_ref = chunks[0].ref_logp is not None
        beta = self.algo.beta if all(isinstance(c.beta, float) for c in chunks) else _pad_cat(
            [c.beta if torch.is_tensor(c.beta) else torch.full_like(c.loss_mask, c.beta, dtype=torch.float)
             for c in chunks])
        out = policy_loss(
            _pad_cat(logps), torch.cat([c.advantages for c in chunks]), _pad_cat([c.loss_mask for c in chunks]),
            old_logp=_pad_cat([c.old_logp for c in chunks]) if chunks[0].old_logp is not None else None,
            ref_logp=_pad_cat([c.ref_logp for c in chunks]) if has_ref else None,
            beta=beta, kl_estimator=self.algo.kl_estimator, epsilon_low=self.algo.epsilon_low,
            epsilon_high=self.algo.epsilon_high, aggregation=self.algo.aggregation,
            max_completion_length=self.rollout_cfg.max_new_tokens,
        )
        self._log_step(chunks, out, timings)
        self._update_started = time.perf_counter()
        return out.loss

    def _log_step(self, chunks: list[ScoredRollout], out, timings: dict) -> None:
        total = torch.cat([c.rewards.total for c in chunks])
        masks = torch.cat([c.rollout.completion_mask.sum(1) for c in chunks]).float()
        truncated = torch.cat([c.rollout.truncated for c in chunks]).float()
        metrics = {
            "train/loss": out.loss.detach(),
            "train/policy_loss": out.policy_loss,
            "train/kl": out.kl,
            "train/clip_fraction": out.clip_fraction,
            "train/reward": total.mean(),
            "train/reward_std": torch.cat([c.group_std for c in chunks]).mean(),
            "train/completion_length": masks.mean(),
            "train/truncated_fraction": truncated.mean(),
            "train/reward_phase": float(self.reward.phases.index(chunks[0].rewards.phase)),
        }
        for name in chunks[0].rewards.per_function:
            metrics[f"train/reward/{name}"] = torch.cat([c.rewards.per_function[name] for c in chunks]).mean()
        metrics.update({f"time/{k}": v for k, v in timings.items()})
        self.log_dict(metrics, on_step=True, batch_size=len(total))
        first, G = chunks[0], self.generations_per_rank
        self.last_completions = [
            {"step": self.global_step, "idx": first.samples[i // G].idx, "completion": first.rollout.texts[i],
             "solution": str(first.samples[i // G].solution), "reward": float(first.rewards.total[i]),
             **{k: float(v[i]) for k, v in first.rewards.per_function.items()}}
            for i in range(min(len(first.rollout.texts), self.num_completions_logged))
        ]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # backward + gradient clipping + optimizer step happen between training_step and here
        if self._update_started is not None:
            self.log("time/update_s", time.perf_counter() - self._update_started, on_step=True, batch_size=1)
            self._update_started = None
