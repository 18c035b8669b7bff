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


def split_group_advantages(
    gathered: Tensor, rank: int, num_generations_local: int, *, scale: bool = True, eps: float = 1e-4
) -> GroupStats:
    """Advantages of one rank's rows when each group's completions are spread over k ranks.

    ``gathered`` ``[k, B*g]``: row ``r`` holds rank ``r``'s rewards, prompt-major (the same B prompts
    in the same order on every rank, ``g = num_generations_local`` completions each). Group ``b`` is
    the concatenation over ranks of ``gathered[r, b*g:(b+1)*g]`` (G = k*g completions), normalised
    exactly as :func:`group_advantages` does on one rank; the result keeps only rank ``rank``'s rows.

    Example (k=2, g=1, B=1): gathered [[1], [3]] -> group [1, 3] -> mean 2, std 1.41421;
    rank 0 gets advantages [-0.70706], rank 1 [+0.70706]; both get mean [2] and std [1.41421].
    """
    if gathered.dim() != 2 or gathered.shape[1] % num_generations_local:
        raise ValueError(f"gathered must be [k, B*{num_generations_local}], got {tuple(gathered.shape)}")
    k = gathered.shape[0]
    per_rank = gathered.view(k, -1, num_generations_local)  # [k, B, g]
    grouped = per_rank.permute(1, 0, 2).reshape(-1)  # [B*k*g]: group b = rank 0's g, rank 1's g, ...
    stats = group_advantages(grouped, k * num_generations_local, scale=scale, eps=eps)
    mine = stats.advantages.view(-1, k, num_generations_local)[:, rank, :].reshape(-1)  # [B*g]
    return GroupStats(mine, stats.mean, stats.std)
