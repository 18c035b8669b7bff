"""A scored rollout: everything the loss needs from one batch of prompts, fixed across iterations.

:class:`ScoredRollout` is what generation, rewards and the no-grad log-prob passes produce for one
batch (rows prompt-major, ``N = B*g``); DAPO keeps some of its groups (:meth:`select_groups`) and
may add refilled ones, so a step trains on a list of them, which :class:`LossTargets` joins into
the tensors of one loss call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from museg_lit.rewards.schedule import RewardOutput
from museg_lit.rl.rollout import Rollout, select_rollout
from museg_lit.rl.sampling import rows_of_groups

__all__ = ["LossTargets", "ScoredRollout", "pad_cat"]


@dataclass(frozen=True)
class ScoredRollout:
    rollout: Rollout
    samples: list  # B GroundingSample, one per group
    rewards: RewardOutput  # per row [N] (host)
    group_std: Tensor  # [B] (host)
    advantages: Tensor  # [N]
    loss_mask: Tensor  # [N, C] completion mask, truncated rows zeroed if configured
    kl_weight: Tensor  # [N, C] per-token KL weight (beta, or token-aware)
    ref_logp: Tensor | None  # [N, C], when some token has a KL weight
    old_logp: Tensor | None  # [N, C], only for num_iterations > 1

    def select_groups(self, keep: Tensor) -> ScoredRollout:
        """The prompts ``keep`` (bool ``[B]``) with their G completions each."""
        rows = rows_of_groups(keep, self.rollout.num_generations)  # [N]

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[rows.to(t.device)]

        return replace(
            self, rollout=select_rollout(self.rollout, keep.to(self.rollout.completion_ids.device)),
            samples=[s for s, k in zip(self.samples, keep.tolist(), strict=True) if k],
            rewards=self.rewards.select(rows), group_std=self.group_std[keep.to(self.group_std.device)],
            advantages=pick(self.advantages), loss_mask=pick(self.loss_mask), kl_weight=pick(self.kl_weight),
            ref_logp=pick(self.ref_logp), old_logp=pick(self.old_logp),
        )


def pad_cat(tensors: list[Tensor], value: float = 0.0) -> Tensor:
    """Concatenate ``[N_i, C_i]`` tensors along rows, right-padding to the longest C.

    Example: ``[[1, 2]]`` and ``[[3]]`` -> ``[[1, 2], [3, 0]]``.
    """
    width = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (0, width - t.shape[1]), value=value) for t in tensors], dim=0)


@dataclass(frozen=True)
class LossTargets:
    """The loss's inputs other than the policy's log-probs, joined over a step's scored rollouts
    (rows concatenated, completions right-padded; padding is masked out)."""

    advantages: Tensor  # [N]
    mask: Tensor  # [N, C]
    kl_weight: Tensor  # [N, C]
    ref_logp: Tensor | None  # [N, C]
    old_logp: Tensor | None  # [N, C]

    @classmethod
    def of(cls, chunks: list[ScoredRollout]) -> LossTargets:
        def joined(name: str) -> Tensor | None:
            parts = [getattr(c, name) for c in chunks]
            return None if parts[0] is None else pad_cat(parts)

        return cls(torch.cat([c.advantages for c in chunks]), joined("loss_mask"), joined("kl_weight"),
                   joined("ref_logp"), joined("old_logp"))
