"""Typed settings of the RL algorithm and of the rollout (built by Hydra from ``conf/algo``, ``conf/rollout``)."""

from __future__ import annotations

from dataclasses import dataclass

from museg_lit.errors import ConfigError
from museg_lit.models.generation import Sampling
from museg_lit.rl.kl import KL_ESTIMATORS
from museg_lit.rl.losses import AGGREGATIONS
from museg_lit.rl.token_mask import SCOPES


@dataclass(frozen=True)
class AlgoConfig:
    """Loss settings. Defaults are MUSEG's (TRL 0.15 GRPO): k3 KL with beta 0.04, std-scaled
    advantages (eps 1e-4), sequence-mean aggregation, one update per rollout (ratio == 1).

    ``num_iterations > 1`` reuses each rollout for that many optimizer steps with PPO clipping
    against the rollout-time log-probs (``epsilon_low`` / ``epsilon_high``). ``beta_time`` (not
    None) turns on LongVTG-R1's token-aware KL on the tokens chosen by ``token_kl_scope``.
    ``dynamic_sampling`` / ``mask_truncated`` are DAPO's group filter and overlong masking.
    """

    name: str = "grpo"
    beta: float = 0.04
    kl_estimator: str = "k3"
    scale_rewards: bool = True
    advantage_eps: float = 1e-4
    aggregation: str = "sequence_mean"
    num_iterations: int = 1
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    beta_time: float | None = None
    token_kl_scope: str = "answer"
    dynamic_sampling: bool = False
    max_refill_batches: int = 4
    mask_truncated: bool = False
    # TRL 0.15 (MUSEG) computes training log-probs without dividing logits by the sampling
    # temperature; later TRL versions divide. False reproduces MUSEG.
    logprobs_at_temperature: bool = False

    def __post_init__(self):
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(f"algo.kl_estimator={self.kl_estimator!r}; choose one of {sorted(KL_ESTIMATORS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"algo.aggregation={self.aggregation!r}; choose one of {sorted(AGGREGATIONS)}")
        if self.token_kl_scope not in SCOPES:
            raise ConfigError(f"algo.token_kl_scope={self.token_kl_scope!r}; choose one of {SCOPES}")
        if self.num_iterations < 1:
            raise ConfigError(f"algo.num_iterations={self.num_iterations}: must be >= 1")
        if self.beta < 0 or (self.beta_time is not None and self.beta_time < 0):
            raise ConfigError("algo.beta and algo.beta_time must be >= 0")
        # a negative epsilon_low clips every ratio of 1 and zeroes positive-advantage gradients
        if not 0 <= self.epsilon_low < 1:
            raise ConfigError(f"algo.epsilon_low={self.epsilon_low}: must be in [0, 1)")
        if self.epsilon_high is not None and self.epsilon_high < 0:
            raise ConfigError(f"algo.epsilon_high={self.epsilon_high}: must be >= 0 (or null = epsilon_low)")
        if not self.advantage_eps > 0:
            raise ConfigError(f"algo.advantage_eps={self.advantage_eps}: must be > 0 (it guards a division by std)")
        if self.max_refill_batches < 0:
            raise ConfigError(f"algo.max_refill_batches={self.max_refill_batches}: must be >= 0")

    @property
    def needs_reference(self) -> bool:
        """A reference model is needed only when some token has a KL weight."""
        return self.beta > 0 or bool(self.beta_time)


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

    num_generations: int = 8
    max_new_tokens: int = 4096
    temperature: float = 0.9
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float = 1.0
    max_total_tokens: int | None = None
    share_prefix: bool = True

    def __post_init__(self):
        if self.num_generations < 2:
            raise ConfigError(f"rollout.num_generations={self.num_generations}: must be >= 2 (group-relative advantages need a group)")
        if self.temperature <= 0:
            raise ConfigError(f"rollout.temperature={self.temperature}: must be > 0 (a group of greedy completions has no variance)")
        if self.max_new_tokens < 1 or (self.max_total_tokens is not None and self.max_total_tokens < 2):
            raise ConfigError("rollout.max_new_tokens must be >= 1 and rollout.max_total_tokens >= 2 (or null)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"rollout.top_p={self.top_p}: must be in (0, 1] (1 = off)")
        if self.top_k is not None and self.top_k < 0:
            raise ConfigError(f"rollout.top_k={self.top_k}: must be >= 0 or null (off)")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"rollout.repetition_penalty={self.repetition_penalty}: must be > 0 (1 = off)")

    @property
    def sampling(self) -> Sampling:
        return Sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                        top_k=self.top_k, repetition_penalty=self.repetition_penalty)
