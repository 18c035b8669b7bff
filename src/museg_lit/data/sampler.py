"""Resumable training order: a killed run continues with the next unseen batch, never repeating one.

PyTorch's ``RandomSampler`` draws its order from the global RNG, and on resume Lightning restarts the
epoch's loader from the beginning: a run restarted mid-epoch would see the first batches again. Here
the order is a pure function of ``(seed, epoch)`` and the checkpoint records how far training got:

* :class:`ResumableSampler` — the indices of one epoch: a permutation of ``range(n)`` drawn from a
  generator seeded with ``seed + epoch`` (or ``0..n-1`` unshuffled), split over data-parallel
  replicas exactly as ``DistributedSampler`` does (padded by wrapping around so every replica gets
  the same count; replica ``r`` takes every ``R``-th index from ``r``). Lightning calls its
  ``set_epoch`` at every epoch start.
* :class:`ResumableBatchSampler` — batches of ``batch_size``; every ``group`` consecutive batches are
  yielded ``repeats`` times in a row (PPO-style rollout reuse: each optimizer step sees its rollouts again).
  Its state is ``{epoch, seed, batches}``: ``batches`` counts the batches of this epoch's sequence
  (repeats included) that training consumed, so a resume may land between two repeats of a group.
* :class:`ResumableDataLoader` — a ``DataLoader`` with ``state_dict`` / ``load_state_dict``;
  Lightning stores that state in the checkpoint (``loops.fit_loop.state_dict.combined_loader``)
  and loads it back before the first batch of a resumed fit.

Why the count comes from the trainer, not from the sampler: Lightning fetches one batch ahead (to
know which batch is the last) and DataLoader workers prefetch more, so the sampler has always handed
out more batches than were trained. :func:`lightning_progress` reads Lightning's own count of the
batches trained in the current epoch; without a trainer the sampler counts what it yielded.

Resuming needs the same data, batch size, group, repeats and number of data-parallel replicas; a
checkpoint written with other settings is refused with the differing values named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["ResumableBatchSampler", "ResumableDataLoader", "ResumableSampler", "group_repeat_position",
           "lightning_progress"]


class ResumableSampler(Sampler[int]):
    """This replica's indices of one epoch; the order depends only on ``(seed, epoch)``.

    Example: n=5, shuffle=False, 2 replicas -> padded order 0 1 2 3 4 0; replica 0 gets 0 2 4,
    replica 1 gets 1 3 0.
    """

    def __init__(self, num_samples: int, *, shuffle: bool = True, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside {num_replicas} replicas")
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_samples // self.num_replicas)  # per replica, padded

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            # seed + epoch, as DistributedSampler: every replica draws the same global permutation
            generator = torch.Generator().manual_seed((self.seed + self.epoch) % 2**63)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = len(self) * self.num_replicas
        while len(order) < total:  # pad by wrapping around (more than once if n < replicas)
            order += order[: total - len(order)]
        return iter(order[self.rank:total:self.num_replicas])


def _group_repeat(batches: list[list[int]], group: int, repeats: int) -> list[list[int]]:
    """``[b0, b1, b2]``, group 2, repeats 2 -> ``[b0, b1, b0, b1, b2, b2]`` (a short last group repeats too)."""
    out: list[list[int]] = []
    for start in range(0, len(batches), group):
        out.extend(batches[start:start + group] * repeats)
    return out


def group_repeat_position(position: int, num_batches: int, group: int, repeats: int) -> tuple[int, int, int]:
    """``(group index, repeat, slot)`` of the batch at ``position`` of :func:`_group_repeat`'s output
    over ``num_batches`` batches: the ``slot``-th batch of group ``group index``, seen for the
    ``repeat``-th time (0 = first).

    Example (``[b0, b1, b0, b1, b2, b2]``: 3 batches, group 2, repeats 2): positions 0..5 ->
    (0, 0, 0) (0, 0, 1) (0, 1, 0) (0, 1, 1) (1, 0, 0) (1, 1, 0).

    >>> [group_repeat_position(p, 3, 2, 2) for p in range(6)][3:]
    [(0, 1, 1), (1, 0, 0), (1, 1, 0)]
    """
    if not 0 <= position < num_batches * repeats:
        raise IndexError(f"position {position} outside the {num_batches * repeats} batches of the epoch")
    index, within = divmod(position, group * repeats)
    size = min(group, num_batches - index * group)  # the last group may be short
    repeat, slot = divmod(within, size)
    return index, repeat, slot


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of ``sampler``'s indices (group-repeated) that resume after the last consumed batch.

    Example: indices 0..3 unshuffled, batch 1, group 2, repeats 2 -> [0] [1] [0] [1] [2] [3] [2] [3];
    resumed with ``{"epoch": 0, "batches": 3}`` the epoch continues with [1] [2] [3] [2] [3].
    """

    def __init__(self, sampler: ResumableSampler, batch_size: int, group: int = 1, repeats: int = 1):
        if batch_size < 1 or group < 1 or repeats < 1:
            raise ValueError(f"batch_size, group and repeats must be >= 1, got {batch_size}, {group}, {repeats}")
        self.sampler, self.batch_size, self.group, self.repeats = sampler, batch_size, group, repeats
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) from a checkpoint
        self._yielded = 0  # batches of the current epoch handed out (the count without a trainer)

    def epoch_batches(self) -> list[list[int]]:
        """The full batch sequence of the sampler's current epoch (repeats included)."""
        indices = list(self.sampler)
        batches = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        return _group_repeat(batches, self.group, self.repeats)

    def __len__(self) -> int:
        # the whole epoch, also when resuming: Lightning adds the batches it already counted
        return self.num_batches * self.repeats

    @property
    def num_batches(self) -> int:
        """Distinct batches of an epoch (before repeating)."""
        return -(-len(self.sampler) // self.batch_size)

    def position(self, i: int) -> tuple[int, int, int]:
        """``(group index, repeat, slot)`` of the epoch's ``i``-th batch (:func:`group_repeat_position`)."""
        return group_repeat_position(i, self.num_batches, self.group, self.repeats)

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._resume is not None and self._resume[0] == self.sampler.epoch:
            skip = self._resume[1]
        self._yielded = skip
        for batch in self.epoch_batches()[skip:]:
            self._yielded += 1
            yield batch

    def _layout(self) -> dict:
        return {"num_samples": self.sampler.num_samples, "num_replicas": self.sampler.num_replicas,
                "batch_size": self.batch_size, "group": self.group, "repeats": self.repeats,
                "shuffle": self.sampler.shuffle}

    def state_dict(self, consumed: int | None = None) -> dict:
        """``consumed``: batches of this epoch trained so far (default: the batches yielded)."""
        return {"epoch": self.sampler.epoch, "seed": self.sampler.seed,
                "batches": self._yielded if consumed is None else int(consumed), **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        layout = self._layout()
        changed = {k: (state[k], v) for k, v in layout.items() if k in state and state[k] != v}
        if changed:
            what = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"cannot continue the checkpoint's data order ({what}); resume with the same data and "
                             "batch settings and the same number of data-parallel ranks, or start a new run")
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):  # saved on the epoch's last batch: continue with the next epoch
            epoch, batches = epoch + 1, 0
        self.sampler.seed = int(state["seed"])
        self.sampler.set_epoch(epoch)
        self._resume = (epoch, batches)
        self._yielded = batches


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableBatchSampler` whose position Lightning checkpoints.

    ``progress``: returns the batches of the current epoch that training consumed
    (:func:`lightning_progress`); ``None`` = the batches the sampler yielded.
    """

    def __init__(self, *args, progress: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, ResumableBatchSampler):
            raise TypeError("ResumableDataLoader needs batch_sampler=ResumableBatchSampler(...)")
        self.progress = progress

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict(consumed=None if self.progress is None else self.progress())

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


def lightning_progress(trainer) -> Callable[[], int]:
    """Batches of the current epoch that ``trainer`` has trained.

    ``batch_progress.current.processed`` counts a batch once its optimizer work is done (checkpoints
    are written after that, in ``on_train_batch_end``), survives a resume (Lightning restores it),
    and restarts at 0 with each epoch, just like the sampler's position.
    """
    return lambda: int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
