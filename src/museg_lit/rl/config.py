"""Typed settings of the RL algorithm and of the rollout (built by Hydra from ``conf/algo``, ``conf/rollout``)."""

from __future__ import annotations

from dataclasses import dataclass

from museg_lit.models.generation import Sampling
from museg_lit.rl.kl import KL_ESTIMATORS
from museg_lit.rl.losses import AGGREGATIONS, PolicyLoss
from museg_lit.rl.token_mask import SCOPES
from museg_lit.settings import check_fields, setting


@dataclass(frozen=True)
class AlgoConfig:
    """Loss settings. Defaults are MUSEG's (TRL 0.15 GRPO): k3 KL with beta 0.04, std-scaled
    advantages (eps 1e-4), sequence-mean aggregation, one update per rollout (ratio == 1).

    ``num_iterations > 1`` reuses each rollout for that many optimizer steps with PPO clipping
    against the rollout-time log-probs (``epsilon_low`` / ``epsilon_high``). ``beta_time`` (not
    None) turns on LongVTG-R1's token-aware KL on the tokens chosen by ``token_kl_scope``.
    ``dynamic_sampling`` / ``mask_truncated`` are DAPO's group filter and overlong masking.
    Types and ranges are checked when built (:mod:`museg_lit.settings`), the key named.
    """

    beta: float = setting(0.04, ge=0.0)
    kl_estimator: str = setting("k3", choices=tuple(sorted(KL_ESTIMATORS)))
    scale_rewards: bool = True
    # it guards a division by the group's reward std
    advantage_eps: float = setting(1e-4, gt=0.0)
    aggregation: str = setting("sequence_mean", choices=tuple(sorted(AGGREGATIONS)))
    num_iterations: int = setting(1, ge=1)
    # a negative epsilon_low clips every ratio of 1 and zeroes positive-advantage gradients
    epsilon_low: float = setting(0.2, ge=0.0, lt=1.0)
    epsilon_high: float | None = setting(None, ge=0.0)  # null: epsilon_low
    beta_time: float | None = setting(None, ge=0.0)
    token_kl_scope: str = setting("answer", choices=tuple(SCOPES))
    dynamic_sampling: bool = False
    max_refill_batches: int = setting(4, ge=0)
    mask_truncated: bool = False
    # TRL 0.15 (MUSEG) computes training log-probs without dividing logits by the sampling
    # temperature; later TRL versions divide. False reproduces MUSEG.
    logprobs_at_temperature: bool = False

    def __post_init__(self):
        check_fields(self, "algo")

    @property
    def needs_reference(self) -> bool:
        """A reference model is needed only when some token has a KL weight."""
        return self.beta > 0 or bool(self.beta_time)

    def loss(self, max_completion_length: int | None = None) -> PolicyLoss:
        """The configured loss (``max_completion_length``: the ``constant`` aggregation's denominator)."""
        return PolicyLoss(kl_estimator=self.kl_estimator, epsilon_low=self.epsilon_low, epsilon_high=self.epsilon_high,
                          aggregation=self.aggregation, max_completion_length=max_completion_length)


@dataclass(frozen=True)
class RolloutConfig:
    """Sampling settings of the G completions per prompt (MUSEG: G=8, temperature 0.9, vLLM
    ``SamplingParams(temperature, max_tokens)``: no repetition penalty, no top-k / top-p).

    ``max_total_tokens`` caps prompt + completion (MUSEG's vLLM ``max_model_len = 4096``): each
    prompt may generate ``min(max_new_tokens, max_total_tokens - prompt length)`` tokens, and a
    prompt that leaves no room is skipped by the data module. ``None`` = no cap. Nothing from the
    checkpoint's ``generation_config.json`` is used (see :mod:`museg_lit.models.generation`).

    ``share_prefix`` (default): each prompt and its video are encoded once per pass, shared by its
    G completions in generation (one prefill, KV cache repeated) and in every log-prob pass
    (packed ``[P | C_1 .. C_G]``); the same numbers as repeating the prompt G times, which
    ``False`` does (for comparison; :mod:`museg_lit.rl.logprobs`).
    """

    # group-relative advantages need a group
    num_generations: int = setting(8, ge=2)
    max_new_tokens: int = setting(4096, ge=1)
    # a group of greedy completions has no variance
    temperature: float = setting(0.9, gt=0.0)
    top_p: float = setting(1.0, gt=0.0, le=1.0)  # 1 = off
    top_k: int | None = setting(None, ge=0)  # null / 0 = off
    repetition_penalty: float = setting(1.0, gt=0.0)  # 1 = off
    max_total_tokens: int | None = setting(None, ge=2)
    share_prefix: bool = True

    def __post_init__(self):
        check_fields(self, "rollout")

    @property
    def sampling(self) -> Sampling:
        return Sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                        top_k=self.top_k, repetition_penalty=self.repetition_penalty)
