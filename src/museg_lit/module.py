"""GRPO LightningModule. One training step, in call order (each line is one method below):

1. ``training_step``      count the batch's draws and skips; a batch with no sample skips the step on every rank
2. ``_rollouts``          replayed rollouts (``num_iterations > 1``, found by the batch's position), else:
3. ``_fresh_rollouts``    one scored rollout, and with DAPO its informative groups plus refills
4. ``_roll_out``          for one batch of B prompts:
5.   ``_generate``        G completions per prompt (one prefill per prompt, KV cache shared by its G rows)
6.   ``_score``           reward columns -> phased rewards -> group-normalised advantages
7.   ``_frozen_logprobs`` no-grad reference log-probs (KL) and rollout-time policy log-probs (PPO ratio)
8. policy pass            per-token log-probs of the completions, with grad
9. ``self.loss``          the configured :class:`~museg_lit.rl.losses.PolicyLoss` (``AlgoConfig.loss``)
10. ``_log_step``         ``train/*``, ``health/*``, ``perf/*``, ``time/*``; Lightning then does backward,
                          clipping, accumulation and the optimizer step (``on_train_batch_end`` times it)

Variants (all chosen in :class:`~museg_lit.rl.config.AlgoConfig`): ``num_iterations > 1`` reuses a
rollout for that many steps (the data module repeats each group of batches;
:mod:`museg_lit.rl.replay`), with PPO clipping against the rollout-time log-probs; DAPO's dynamic
sampling drops zero-variance groups and refills from further batches; token-aware KL gives
timestamp tokens their own KL weight (every rollout carries a per-token weight ``[N, C]``).

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

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributed.device_mesh import DeviceMesh

from museg_lit.data.batch import PromptBatch
from museg_lit.distributed.ranks import gathered_group_advantages, sampling_rng
from museg_lit.distributed.sharding import ShardingConfig, unshard_for_generation
from museg_lit.models.factory import ModelSpec
from museg_lit.models.lora import reference_context
from museg_lit.policy_module import PolicyModule
from museg_lit.rewards.columns import completion_columns
from museg_lit.rewards.schedule import RewardOutput, RewardSchedule
from museg_lit.rl.advantages import GroupStats
from museg_lit.rl.config import AlgoConfig, RolloutConfig
from museg_lit.rl.health import answer_health, peak_memory_mb, zero_variance_share
from museg_lit.rl.logprobs import rollout_logprobs
from museg_lit.rl.losses import LossOutput
from museg_lit.rl.replay import RolloutReplay
from museg_lit.rl.rollout import Rollout, generate_rollout
from museg_lit.rl.sampling import informative_groups, mask_truncated
from museg_lit.rl.scored import LossTargets, ScoredRollout, pad_cat
from museg_lit.rl.token_mask import kl_weights
from museg_lit.timing import timed


@dataclass(frozen=True)
class StepRollouts:
    """What one step trains on (``chunks``) and the std of every group scored for it (``scored_std``
    ``[B']``, DAPO's dropped groups included: the zero-variance share is measured before filtering)."""

    chunks: list[ScoredRollout]
    scored_std: Tensor


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
        self.loss = algo.loss(max_completion_length=rollout.max_new_tokens)
        self.num_completions_logged = num_completions_logged
        self.last_completions: list[dict] = []  # rows for the MLflow completions table
        self.refill_batches: Iterator[PromptBatch] | None = None  # DAPO refills; set in on_train_start
        self.replay: RolloutReplay[StepRollouts] = RolloutReplay(algo.num_iterations)
        self._update_started: float | None = None

    @property
    def needs_reference(self) -> bool:
        # no KL weight anywhere -> no reference model in memory at all
        return self.algo.needs_reference

    @property
    def generations_per_rank(self) -> int:
        """Completions of each prompt generated on this rank: ``G / generation_split``."""
        return self.rollout_cfg.num_generations // self.rank_group.size

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

    # ---- 1. the step ----
    def training_step(self, batch: PromptBatch, batch_idx: int):
        # every draw of this batch failed (only with data.max_skip_fraction=1): no step on any rank
        if not self.has_batch(batch):
            return None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # perf/peak_mem_mb is this step's peak
        timings = {"decode_s": batch.decode_s}
        step = self._rollouts(batch, batch_idx, timings)
        with timed("policy_logp_s", timings):  # 8. the policy pass, with grad
            logp = pad_cat([self._logprobs(self.policy, c.rollout) for c in step.chunks])  # [N, C]
        targets = LossTargets.of(step.chunks)
        out = self.loss(logp, targets.advantages, targets.mask, kl_weight=targets.kl_weight,  # 9.
                        old_logp=targets.old_logp, ref_logp=targets.ref_logp)
        self._log_step(step, out, timings)  # 10.
        self._update_started = time.perf_counter()
        return out.loss

    # ---- 2.-3. which rollouts the step trains on ----
    def _rollouts(self, batch: PromptBatch, batch_idx: int, timings: dict) -> StepRollouts:
        """This batch's rollouts: replayed on a later pass over its group (``num_iterations > 1``), else fresh."""
        if self.algo.num_iterations == 1:
            return self._fresh_rollouts(batch, timings)
        group, repeat, slot = self._replay_position(batch_idx)
        key = (self.current_epoch, group, slot)
        step = self.replay.lookup(key, repeat)
        if step is None:  # first pass over the group (or a resume that landed inside it)
            step = self._fresh_rollouts(batch, timings)
            self.replay.store(key, repeat, step)
        return step

    def _replay_position(self, batch_idx: int) -> tuple[int, int, int]:
        """``(group index, repeat, slot)`` of the epoch's ``batch_idx``-th batch, from the batch sampler
        that laid the epoch out (Lightning's ``batch_idx`` continues across a resume, as the sampler does)."""
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if not hasattr(sampler, "position"):
            raise RuntimeError("algo.num_iterations > 1 needs the training loader's group-repeating batch sampler "
                               "(museg_lit.data.sampler.ResumableBatchSampler), which the data module builds")
        return sampler.position(batch_idx)

    def _fresh_rollouts(self, batch: PromptBatch, timings: dict) -> StepRollouts:
        """One scored rollout of the batch; with DAPO's dynamic sampling only its informative groups,
        topped up from refill batches (at most ``algo.max_refill_batches`` of them) to B prompts."""
        first = self._roll_out(batch, timings)
        if not self.algo.dynamic_sampling:
            return StepRollouts([first], first.group_std)
        scored, chunks = [first.group_std], []
        kept = self._keep_informative(first)
        chunks = [kept] if kept is not None else []
        attempts = 0
        while sum(len(c.samples) for c in chunks) < len(batch) and attempts < self.algo.max_refill_batches:
            attempts += 1
            extra = next(self.refill_batches, None) if self.refill_batches is not None else None
            if extra is None or extra.inputs is None:
                continue
            more = self._roll_out(extra.to(self.device), timings)
            scored.append(more.group_std)
            kept = self._keep_informative(more)
            if kept is not None:
                chunks.append(kept)
        self.log("train/refill_batches", float(attempts), on_step=True, batch_size=1)
        # nothing informative: the step still runs (zero advantages)
        return StepRollouts(chunks or [first], torch.cat(scored))

    def _keep_informative(self, scored: ScoredRollout) -> ScoredRollout | None:
        """DAPO dynamic sampling: drop groups whose rewards are all equal (None if none is left)."""
        keep = informative_groups(scored.group_std)  # [B]
        if bool(keep.all()):
            return scored
        return scored.select_groups(keep) if bool(keep.any()) else None

    # ---- 4.-7. one batch: generate, score, no-grad passes ----
    def _roll_out(self, batch: PromptBatch, timings: dict) -> ScoredRollout:
        ro = self._generate(batch, timings)
        rewards, stats = self._score(ro, batch.samples, timings)
        mask = mask_truncated(ro.completion_mask, ro.truncated) if self.algo.mask_truncated else ro.completion_mask
        kl_weight = kl_weights(ro.completion_ids, ro.completion_mask, self.processor.tokenizer, beta=self.algo.beta,
                               beta_time=self.algo.beta_time, scope=self.algo.token_kl_scope)  # [N, C]
        ref_logp, old_logp = self._frozen_logprobs(ro, timings)
        return ScoredRollout(ro, batch.samples, rewards, stats.std, stats.advantages.to(self.device), mask,
                             kl_weight, ref_logp, old_logp)

    def _generate(self, batch: PromptBatch, timings: dict) -> Rollout:
        """g = G / generation_split completions per prompt on this rank (all G when groups live on one rank).

        Under FSDP the weights are gathered once, decoding issues no collective (ranks may stop at
        different lengths), then they are resharded; HF's ``synced_gpus`` lock-step is unnecessary."""
        with timed("generate_s", timings), unshard_for_generation(self.policy), \
                sampling_rng(self.rank_group, self.global_step, [s.idx for s in batch.samples], self.device):
            return generate_rollout(
                self.policy, self.processor.tokenizer, batch.inputs, num_generations=self.generations_per_rank,
                sampling=self.rollout_cfg.sampling, tokens=self.tokens,
                max_total_tokens=self.rollout_cfg.max_total_tokens, synced_gpus=False if self.sharded else None,
                share_prefix=self.rollout_cfg.share_prefix, keep_video_features=self.reuses_vision_features,
            )

    def _score(self, ro: Rollout, samples: list, timings: dict) -> tuple[RewardOutput, GroupStats]:
        """Rewards of the active phase per completion, and advantages normalised within each prompt's
        group (groups split over ranks gather their rewards first: the same advantages as on one rank)."""
        with timed("reward_s", timings):
            solution, columns = completion_columns(samples, ro.num_generations)
            rewards = self.reward.compute(self.global_step, ro.texts, solution, **columns)
            stats = gathered_group_advantages(rewards.total, ro.num_generations, self.rank_group,
                                              scale=self.algo.scale_rewards, eps=self.algo.advantage_eps,
                                              device=self.device)
        return rewards, stats

    def _frozen_logprobs(self, ro: Rollout, timings: dict) -> tuple[Tensor | None, Tensor | None]:
        """``(ref_logp, old_logp)`` ``[N, C]``: the reference's (when some token has a KL weight; with
        LoRA the base weights are the reference) and the rollout-time policy's (``num_iterations > 1``)."""
        ref_logp = old_logp = None
        if self.algo.needs_reference:
            with timed("ref_logp_s", timings), torch.no_grad():
                if self.reference is not None:
                    ref_logp = self._logprobs(self.reference, ro)
                else:
                    with reference_context(self.policy):
                        ref_logp = self._logprobs(self.policy, ro)
        if self.algo.num_iterations > 1:
            with timed("old_logp_s", timings), torch.no_grad():
                old_logp = self._logprobs(self.policy, ro)
        return ref_logp, old_logp

    def _logprobs(self, model, ro: Rollout) -> Tensor:
        """Per-token log-probs ``[B*G, C]`` of the rollout's completions under ``model``."""
        temperature = self.rollout_cfg.temperature if self.algo.logprobs_at_temperature else 1.0
        return rollout_logprobs(model, ro, share_prefix=self.rollout_cfg.share_prefix, temperature=temperature)

    # ---- 10. what the step logs ----
    def _log_step(self, step: StepRollouts, out: LossOutput, timings: dict) -> None:
        chunks = step.chunks
        total = torch.cat([c.rewards.total for c in chunks])
        lengths = torch.cat([c.rollout.completion_mask.sum(1) for c in chunks]).float()
        truncated = torch.cat([c.rollout.truncated for c in chunks]).float()
        texts = [t for c in chunks for t in c.rollout.texts]
        durations = [s.duration for c in chunks for s in c.samples for _ in range(c.rollout.num_generations)]
        answers = answer_health(texts, durations)
        metrics = {
            "train/loss": out.loss.detach(),
            "train/policy_loss": out.policy_loss,
            "train/kl": out.kl,
            "train/clip_fraction": out.clip_fraction,
            "train/reward": total.mean(),
            "train/reward_std": torch.cat([c.group_std for c in chunks]).mean(),
            "train/completion_length": lengths.mean(),
            "train/truncated_fraction": truncated.mean(),
            "train/reward_phase": float(self.reward.phases.index(chunks[0].rewards.phase)),
            "health/zero_variance_groups": zero_variance_share(step.scored_std),
            "health/format_failures": answers["format_failures"],
            "health/degenerate_answers": answers["degenerate_answers"],
            "perf/peak_mem_mb": peak_memory_mb(self.device),
        }
        for name in chunks[0].rewards.per_function:
            metrics[f"train/reward/{name}"] = torch.cat([c.rewards.per_function[name] for c in chunks]).mean()
        metrics.update({f"time/{k}": v for k, v in timings.items()})
        self.log_dict(metrics, on_step=True, batch_size=len(total))
        first, g = chunks[0], chunks[0].rollout.num_generations
        self.last_completions = [
            {"step": self.global_step, "idx": first.samples[i // g].idx, "completion": first.rollout.texts[i],
             "solution": str(first.samples[i // g].solution), "reward": float(first.rewards.total[i]),
             **{k: float(v[i]) for k, v in first.rewards.per_function.items()}}
            for i in range(min(len(first.rollout.texts), self.num_completions_logged))
        ]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # backward + gradient clipping + optimizer step happen between training_step and here
        if self._update_started is not None:
            self.log("time/update_s", time.perf_counter() - self._update_started, on_step=True, batch_size=1)
            self._update_started = None
