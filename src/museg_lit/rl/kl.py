"""Per-token KL estimators between policy and reference (Schulman, "Approximating KL").

With ``d = ref_logp - logp`` (log-ratio reference/policy, sampled from the policy):

* ``k1 = -d``                 unbiased, high variance, can be negative
* ``k2 = d**2 / 2``           biased, low variance
* ``k3 = exp(d) - d - 1``     unbiased, non-negative; the estimator of MUSEG / TRL 0.15 / DeepSeekMath
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``logp - ref``. Example: logp=-1, ref=-2 -> 1.0."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``(logp - ref)**2 / 2``. Example: logp=-1, ref=-2 -> 0.5."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``exp(ref - logp) - (ref - logp) - 1``. Example: logp=-1, ref=-2 -> e^-1 + 1 - 1 = 0.36788."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def get_kl_estimator(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    try:
        return KL_ESTIMATORS[name]
    except KeyError:
        raise KeyError(f"algo.kl_estimator={name!r} is unknown; choose one of {sorted(KL_ESTIMATORS)}") from None
