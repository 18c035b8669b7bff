"""Group-relative advantages (GRPO).

MUSEG / TRL 0.15: ``A = (r - mean_g) / (std_g + 1e-4)`` with the *unbiased* standard deviation over
the G completions of one prompt. Dr. GRPO (Liu et al. 2025) drops the std scaling
(``scale=False``). Rows are laid out prompt-major: completions ``[p0g0, p0g1, ..., p1g0, ...]``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class GroupStats(NamedTuple):
    advantages: Tensor  # [B*G]
    mean: Tensor  # [B] group mean reward
    std: Tensor  # [B] unbiased group std


def group_advantages(rewards: Tensor, num_generations: int, *, scale: bool = True, eps: float = 1e-4) -> GroupStats:
    """Normalise rewards within each group of ``num_generations`` consecutive rows.

    Example (G=2, scale=True): rewards [1, 3] -> mean 2, std sqrt(2)=1.41421 (unbiased),
    advantages [-1/(1.41421+1e-4), +1/(1.41421+1e-4)] = [-0.70706, 0.70706].
    A group with equal rewards has std 0 and advantages 0 (no signal, no NaN).
    """
    if rewards.dim() != 1 or rewards.numel() % num_generations:
        raise ValueError(f"rewards must be 1-D with a multiple of {num_generations} rows, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, num_generations)  # [B, G]
    mean = grouped.mean(dim=1, keepdim=True)  # [B, 1]
    # unbiased std, as torch/TRL; a single generation has no spread: define std = 0
    std = grouped.std(dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean)  # [B, 1]
    adv = grouped - mean  # [B, G]
    if scale:
        adv = adv / (std + eps)
    return GroupStats(adv.reshape(-1), mean.squeeze(1), std.squeeze(1))
