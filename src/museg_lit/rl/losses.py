"""Policy-gradient losses of the GRPO family, as pure functions of per-token tensors.

All take per-token log-probs of the completions under the current policy ``logp`` ``[N, C]``
(with grad), optional rollout-time log-probs ``old_logp`` (``None`` = one update per rollout, so
the ratio is ``exp(logp - logp.detach())`` = 1 with the policy gradient attached, TRL 0.15's form),
optional reference log-probs ``ref_logp`` (``None`` = no KL term), advantages ``[N]`` and the
completion mask ``[N, C]``.

The per-token objective is PPO's clipped surrogate
``-min(ratio*A, clip(ratio, 1-eps_low, 1+eps_high)*A) + beta_t * KL_t``; with ``old_logp=None``
the clip never binds and this is exactly MUSEG's ``-(exp(lp - lp.detach())*A - beta*KL)``.
``beta`` may be a scalar or a per-token tensor ``[N, C]`` (LongVTG-R1's token-aware KL).

Aggregations (how token losses become one number) are registered by name
(:func:`register_aggregation`, ``algo.aggregation``):

* ``sequence_mean`` (GRPO / MUSEG / TRL 0.15): mean over sequences of each sequence's masked mean.
* ``token_mean`` (DAPO): sum over all tokens of the batch / number of valid tokens.
* ``constant`` (Dr. GRPO): sum over all tokens / (N * max_completion_length).

The training step holds one configured :class:`PolicyLoss` (built by ``AlgoConfig.loss``) and
calls it with the tensors only; :func:`policy_loss` is the same computation as a pure function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from museg_lit.rl.kl import get_kl_estimator


@dataclass(frozen=True)
class LossOutput:
    loss: Tensor  # scalar, with grad
    policy_loss: Tensor  # scalar, detached: the surrogate part
    kl: Tensor  # scalar, detached: masked token mean of the KL estimate (0 without reference)
    clip_fraction: Tensor  # scalar, detached: share of valid tokens whose ratio was clipped


Aggregation = Callable[[Tensor, Tensor, "int | None"], Tensor]  # (x [N, C], mask [N, C], max_len) -> scalar
AGGREGATIONS: dict[str, Aggregation] = {}


def register_aggregation(name: str) -> Callable[[Aggregation], Aggregation]:
    """Register a token-loss aggregation under ``name`` (selectable as ``algo.aggregation=name``)."""

    def add(fn: Aggregation) -> Aggregation:
        if name in AGGREGATIONS:
            raise ValueError(f"aggregation {name!r} is registered already")
        AGGREGATIONS[name] = fn
        return fn

    return add


@register_aggregation("sequence_mean")
def sequence_mean(x: Tensor, mask: Tensor, max_len: int | None = None) -> Tensor:
    """Mean over rows of each row's masked mean; rows with no valid token count as 0.

    Example: x=[[1,3],[5,7]], mask=[[1,1],[1,0]] -> row means [2, 5] -> 3.5.
    """
    per_row = (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [N]
    return per_row.mean()


@register_aggregation("token_mean")
def token_mean(x: Tensor, mask: Tensor, max_len: int | None = None) -> Tensor:
    """Masked mean over all tokens of the batch. Example above: (1+3+5)/3 = 3.0."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


@register_aggregation("constant")
def constant_norm(x: Tensor, mask: Tensor, max_len: int | None = None) -> Tensor:
    """Sum over tokens / (N * max_len). Example above with max_len=2: 9 / 4 = 2.25."""
    denom = x.shape[0] * (max_len if max_len is not None else x.shape[-1])
    return (x * mask).sum() / denom


def policy_loss(
    logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    old_logp: Tensor | None = None,
    ref_logp: Tensor | None = None,
    beta: float | Tensor = 0.0,
    kl_estimator: str = "k3",
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    aggregation: str = "sequence_mean",
    max_completion_length: int | None = None,
) -> LossOutput:
    """Clipped-surrogate GRPO loss with an optional (per-token) KL penalty.

    Shapes: ``logp``, ``old_logp``, ``ref_logp``, ``mask``: ``[N, C]``; ``advantages``: ``[N]``.

    Worked example (MUSEG form, one row, two tokens, A=1, beta=0.04, k3, logp=ref):
    ratio = 1, KL = 0 -> token loss -1 each -> loss -1; d loss / d logp_t = -1/2 per token.
    """
    mask = mask.to(logp.dtype)  # [N, C]
    eps_high = epsilon_low if epsilon_high is None else epsilon_high
    old = logp.detach() if old_logp is None else old_logp  # [N, C]
    ratio = torch.exp(logp - old)  # [N, C]
    adv = advantages.unsqueeze(1)  # [N, 1]
    unclipped = ratio * adv  # [N, C]
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + eps_high) * adv  # [N, C]
    surrogate = torch.minimum(unclipped, clipped)  # [N, C]
    per_token = -surrogate  # [N, C]

    kl = torch.zeros_like(logp)  # [N, C]
    if ref_logp is not None:
        kl = get_kl_estimator(kl_estimator)(logp, ref_logp)  # [N, C]
        per_token = per_token + beta * kl

    try:
        aggregate = AGGREGATIONS[aggregation]
    except KeyError:
        raise KeyError(f"algo.aggregation={aggregation!r} is unknown; choose one of {sorted(AGGREGATIONS)}") from None
    loss = aggregate(per_token, mask, max_completion_length)
    with torch.no_grad():
        is_clipped = ((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
        clip_fraction = token_mean(is_clipped.to(logp.dtype), mask)
        return LossOutput(
            loss=loss,
            policy_loss=aggregate(-surrogate.detach(), mask, max_completion_length),
            kl=token_mean(kl.detach(), mask),
            clip_fraction=clip_fraction,
        )


@dataclass(frozen=True)
class PolicyLoss:
    """The GRPO-family loss with its settings bound: ``loss(logp, advantages, mask, kl_weight=...)``.

    ``kl_weight`` ``[N, C]`` is the per-token KL weight (``beta`` on every token, or LongVTG-R1's
    token-aware weights); it is ignored without ``ref_logp``. ``max_completion_length`` is the
    ``constant`` aggregation's denominator (``rollout.max_new_tokens``).
    """

    kl_estimator: str = "k3"
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    aggregation: str = "sequence_mean"
    max_completion_length: int | None = None

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise KeyError(f"algo.aggregation={self.aggregation!r} is unknown; choose one of {sorted(AGGREGATIONS)}")
        get_kl_estimator(self.kl_estimator)  # unknown names fail here, not at the first step

    def __call__(self, logp: Tensor, advantages: Tensor, mask: Tensor, *, kl_weight: Tensor | float = 0.0,
                 old_logp: Tensor | None = None, ref_logp: Tensor | None = None) -> LossOutput:
        return policy_loss(logp, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=kl_weight,
                           kl_estimator=self.kl_estimator, epsilon_low=self.epsilon_low,
                           epsilon_high=self.epsilon_high, aggregation=self.aggregation,
                           max_completion_length=self.max_completion_length)
