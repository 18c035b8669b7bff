"""Typed settings of the RL algorithm and of the rollout (built by Hydra from ``conf/algo``, ``conf/rollout``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlgoConfig:
    """Loss settings. Defaults are MUSEG's (TRL 0.15 GRPO): k3 KL with beta 0.04, std-scaled
    advantages (eps 1e-4), sequence-mean aggregation, one update per rollout (ratio == 1)."""

    name: str = "grpo"
    beta: float = 0.04
    kl_estimator: str = "k3"
    scale_rewards: bool = True
    advantage_eps: float = 1e-4
    aggregation: str = "sequence_mean"
    num_iterations: int = 1
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    # TRL 0.15 (MUSEG) computes training log-probs without dividing logits by the sampling
    # temperature; later TRL versions divide. False reproduces MUSEG.
    logprobs_at_temperature: bool = False

    def __post_init__(self):
        if self.num_iterations != 1:
            raise ValueError("algo.num_iterations > 1 is not supported yet (one update per rollout, as MUSEG)")


@dataclass(frozen=True)
class RolloutConfig:
    """Sampling settings of the G completions per prompt (MUSEG: G=8, temperature 0.9)."""

    num_generations: int = 8
    max_new_tokens: int = 4096
    temperature: float = 0.9
    top_p: float = 1.0
    top_k: int | None = None

    def __post_init__(self):
        if self.num_generations < 2:
            raise ValueError("rollout.num_generations must be >= 2: group-relative advantages need a group")
