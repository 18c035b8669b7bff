"""Resumable sampler: the order is a function of (seed, epoch); a resume continues after the last
consumed batch, never repeating or skipping one (museg_lit.data.sampler)."""

from __future__ import annotations

import pytest

from museg_lit.data.sampler import ResumableBatchSampler, ResumableDataLoader, ResumableSampler


def _batches(n, batch_size=1, group=1, repeats=1, *, shuffle=False, seed=0, epoch=0, replicas=1, rank=0):
    sampler = ResumableSampler(n, shuffle=shuffle, seed=seed, num_replicas=replicas, rank=rank)
    sampler.set_epoch(epoch)
    return ResumableBatchSampler(sampler, batch_size, group, repeats)


def test_unshuffled_sharding_pads_like_distributed_sampler():
    # n=5 over 2 replicas: padded order 0 1 2 3 4 0; replica 0 takes 0 2 4, replica 1 takes 1 3 0
    assert list(ResumableSampler(5, shuffle=False, num_replicas=2, rank=0)) == [0, 2, 4]
    assert list(ResumableSampler(5, shuffle=False, num_replicas=2, rank=1)) == [1, 3, 0]
    # n=1 over 3 replicas wraps more than once
    assert [list(ResumableSampler(1, shuffle=False, num_replicas=3, rank=r)) for r in range(3)] == [[0], [0], [0]]


def test_shuffled_order_depends_only_on_seed_and_epoch():
    a = list(_batches(16, shuffle=True, seed=7, epoch=0))
    assert a == list(_batches(16, shuffle=True, seed=7, epoch=0))
    assert a != list(_batches(16, shuffle=True, seed=7, epoch=1))
    assert a != list(_batches(16, shuffle=True, seed=8, epoch=0))
    assert sorted(i for b in a for i in b) == list(range(16))  # a permutation: each sample once
    # the replicas split one global permutation: disjoint, together everything
    shards = [[i for b in _batches(16, shuffle=True, seed=7, replicas=2, rank=r) for i in b] for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(16))


@pytest.mark.parametrize(("n", "batch_size", "group", "repeats", "expected"), [
    (4, 1, 2, 2, [[0], [1], [0], [1], [2], [3], [2], [3]]),
    # the trailing partial group is replayed too: [0,1],[2,3] is a group, then [4] alone
    (5, 2, 2, 2, [[0, 1], [2, 3], [0, 1], [2, 3], [4], [4]]),
    (3, 2, 1, 1, [[0, 1], [2]]),  # no reuse: plain batches, the last one short
    (7, 2, 3, 2, [[0, 1], [2, 3], [4, 5], [0, 1], [2, 3], [4, 5], [6], [6]]),
])
def test_group_repeats(n, batch_size, group, repeats, expected):
    """Every `group` consecutive batches are yielded `repeats` times in a row (PPO-style reuse)."""
    sampler = _batches(n, batch_size, group, repeats)
    assert list(sampler) == expected
    assert len(sampler) == len(expected)


def test_docstring_example_resumes_between_repeats():
    # indices 0..3, batch 1, group 2, repeats 2 -> [0] [1] [0] [1] [2] [3] [2] [3]
    full = _batches(4, 1, 2, 2)
    assert list(full) == [[0], [1], [0], [1], [2], [3], [2], [3]]
    resumed = _batches(4, 1, 2, 2)
    resumed.load_state_dict({"epoch": 0, "seed": 0, "batches": 3})
    assert list(resumed) == [[1], [2], [3], [2], [3]]
    assert len(resumed) == 8  # the whole epoch: Lightning adds the batches it already counted


@pytest.mark.parametrize("consumed", [0, 1, 5, 9])
def test_resume_continues_exactly(consumed):
    """Train `consumed` batches, save (the trainer's count, behind the prefetching sampler), resume:
    the consumed prefix + the resumed rest is exactly the uninterrupted epoch."""
    full = list(_batches(10, 1, shuffle=True, seed=3, epoch=2))
    first = _batches(10, 1, shuffle=True, seed=3, epoch=2)
    it = iter(first)
    for _ in range(min(consumed + 2, 10)):  # the loader ran 2 batches ahead of training
        next(it)
    state = first.state_dict(consumed=consumed)
    assert (state["epoch"], state["seed"], state["batches"]) == (2, 3, consumed)
    fresh = _batches(10, 1, shuffle=True, seed=999)  # a new process: another seed until the state loads
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)  # Lightning calls set_epoch with the restored epoch: no reset
    assert full[:consumed] + list(fresh) == full


def test_state_without_a_trainer_counts_yielded_batches():
    sampler = _batches(6, 2)
    it = iter(sampler)
    next(it)
    next(it)
    assert sampler.state_dict()["batches"] == 2


def test_checkpoint_on_the_last_batch_continues_with_the_next_epoch():
    sampler = _batches(4, 1, shuffle=True, seed=1)
    sampler.load_state_dict({"epoch": 0, "seed": 1, "batches": 4})
    assert sampler.sampler.epoch == 1
    assert list(sampler) == list(_batches(4, 1, shuffle=True, seed=1, epoch=1))
    # a new epoch after a mid-epoch resume starts at its first batch
    mid = _batches(4, 1, shuffle=True, seed=1)
    mid.load_state_dict({"epoch": 0, "seed": 1, "batches": 2})
    assert len(list(mid)) == 2
    mid.sampler.set_epoch(1)
    assert list(mid) == list(_batches(4, 1, shuffle=True, seed=1, epoch=1))


def test_changed_layout_is_refused_with_the_values():
    state = _batches(8, 2).state_dict(consumed=1)
    with pytest.raises(ValueError, match=r"batch_size: checkpoint 2, now 1"):
        _batches(8, 1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"num_replicas: checkpoint 1, now 2"):
        _batches(8, 2, replicas=2).load_state_dict(state)


def test_dataloader_state_uses_the_trainer_count():
    count = {"n": 0}
    loader = ResumableDataLoader(list(range(6)), batch_sampler=_batches(6, 2), progress=lambda: count["n"])
    it = iter(loader)
    next(it)
    next(it)  # two batches fetched, one trained
    count["n"] = 1
    state = loader.state_dict()
    assert state["batches"] == 1
    resumed = ResumableDataLoader(list(range(6)), batch_sampler=_batches(6, 2))
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == [[2, 3], [4, 5]]
    with pytest.raises(TypeError):
        ResumableDataLoader(list(range(6)), batch_size=2)
