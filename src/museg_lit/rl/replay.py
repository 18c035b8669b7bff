"""Rollout replay for ``algo.num_iterations > 1``: one rollout, several optimizer steps.

The data module yields each group of ``A`` accumulated batches ``num_iterations`` times in a row
(:class:`~museg_lit.data.sampler.ResumableBatchSampler`: ``[b0, b1, b0, b1, b2, b3, ...]``). The
first pass over a group generates and scores; the later passes reuse those rollouts with PPO
clipping against their rollout-time log-probs. A rollout is found again by its batch's *position*
in the epoch (group index, slot in the group), not by the ids of its samples: two batches of a
group may hold the same ids (a small dataset padded by wrap-around), and a sample replaced after a
decode failure changes ids between passes.

Only one group is kept: storing the first slot of a new group drops everything older. A resume
that lands inside a group finds nothing stored and scores afresh (the rollouts are not in the
checkpoint).
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["RolloutReplay"]

T = TypeVar("T")
Key = tuple[int, int, int]  # (epoch, group index, slot)


class RolloutReplay(Generic[T]):
    """Rollouts of the current group of batches, by position.

    >>> replay = RolloutReplay(num_iterations=2)
    >>> replay.lookup((0, 0, 0), repeat=0) is None  # first pass: generate
    True
    >>> replay.store((0, 0, 0), repeat=0, value="r0")
    >>> replay.lookup((0, 0, 0), repeat=1)  # second (last) pass: reuse, then forget
    'r0'
    >>> len(replay)
    0
    """

    def __init__(self, num_iterations: int):
        self.num_iterations = num_iterations
        self._stored: dict[Key, T] = {}

    def __len__(self) -> int:
        return len(self._stored)

    def lookup(self, key: Key, repeat: int) -> T | None:
        """The rollouts stored for ``key`` on a later pass (``repeat > 0``); the last pass takes them out."""
        if repeat == 0:
            return None
        if repeat + 1 >= self.num_iterations:
            return self._stored.pop(key, None)
        return self._stored.get(key)

    def store(self, key: Key, repeat: int, value: T) -> None:
        """Keep fresh rollouts for the passes still to come (nothing is kept on the last pass)."""
        if repeat + 1 >= self.num_iterations:
            return
        if key[2] == 0:  # a new group starts: older groups are done
            self._stored = {k: v for k, v in self._stored.items() if k[:2] == key[:2]}
        self._stored[key] = value
