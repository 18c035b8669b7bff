"""Cross-rank GRPO advantages: a group's G completions split over ranks give the 1-rank advantages.

The pure function (``split_group_advantages``) is checked on hand-computed values; the collective
(``gathered_group_advantages``) on 2 real processes (gloo, spawned) with each prompt's 4
completions split 2 + 2 over the ranks. ``run_on_ranks`` is shared with the sharding tests.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from museg_lit.distributed.ranks import RankGroup, all_ranks_agree, gathered_group_advantages
from museg_lit.rl.advantages import group_advantages, split_group_advantages


# ---------------------------------------------------------------- spawning helper
def _entry(rank: int, world: int, body, tmp: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))  # a deadlock fails in 60 s instead of hanging
    try:
        result = body(rank, world, *args)
        torch.save(result, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_ranks(body, tmp_path: Path, *args, world: int = 2, timeout: float = 120.0) -> list:
    """Run ``body(rank, world, *args)`` in ``world`` spawned gloo processes; returns their results.

    ``body`` must be a module-level function (it is pickled). Fails (and kills the processes) when
    they do not finish within ``timeout`` seconds — the symptom of a deadlock.
    """
    ctx = mp.start_processes(_entry, args=(world, body, str(tmp_path), args), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{body.__name__} did not finish on {world} ranks within {timeout} s (deadlock?)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


# ---------------------------------------------------------------- pure maths
def test_split_group_advantages_hand_computed():
    # k=2 ranks, g=1 completion each, B=1: group [1, 3] -> mean 2, std sqrt(2)=1.41421 (unbiased)
    gathered = torch.tensor([[1.0], [3.0]])  # [k, B*g]
    a0 = split_group_advantages(gathered, 0, 1)
    a1 = split_group_advantages(gathered, 1, 1)
    assert a0.advantages.tolist() == pytest.approx([-1 / (math.sqrt(2) + 1e-4)])  # -0.70706
    assert a1.advantages.tolist() == pytest.approx([1 / (math.sqrt(2) + 1e-4)])  # +0.70706
    assert a0.mean.tolist() == a1.mean.tolist() == [2.0]
    assert a0.std.tolist() == pytest.approx([math.sqrt(2)])


def test_split_group_advantages_equal_one_rank_layout():
    # B=3 prompts, G=6 split over k=3 ranks (g=2 each); rank r holds completions 2r, 2r+1 of each prompt
    torch.manual_seed(0)
    full = torch.rand(3, 6)  # [B, G] one rank's view
    gathered = torch.stack([full[:, 2 * r:2 * r + 2].reshape(-1) for r in range(3)])  # [k, B*g]
    expected = group_advantages(full.reshape(-1), 6)
    for r in range(3):
        got = split_group_advantages(gathered, r, 2)
        assert torch.allclose(got.advantages, expected.advantages.view(3, 6)[:, 2 * r:2 * r + 2].reshape(-1))
        assert torch.allclose(got.mean, expected.mean) and torch.allclose(got.std, expected.std)
    # Dr. GRPO (no std scaling) follows the same layout
    got = split_group_advantages(gathered, 1, 2, scale=False)
    assert torch.allclose(got.advantages, group_advantages(full.reshape(-1), 6, scale=False).advantages.view(3, 6)[:, 2:4].reshape(-1))


def test_split_group_advantages_rejects_bad_shape():
    with pytest.raises(ValueError, match="gathered"):
        split_group_advantages(torch.zeros(2, 3), 0, 2)


def test_single_rank_group_needs_no_process_group():
    rewards = torch.tensor([0.0, 1.0, 2.0, 2.0])
    got = gathered_group_advantages(rewards, 2, RankGroup())
    assert torch.equal(got.advantages, group_advantages(rewards, 2).advantages)
    with pytest.raises(ValueError):
        RankGroup(size=2, rank=2)


# ---------------------------------------------------------------- 2 processes
FULL = torch.tensor([[0.0, 1.0, 1.0, 3.0], [2.0, 2.0, 2.0, 2.0], [0.5, 0.0, 1.5, 0.25]])  # [B=3, G=4]


def _split_advantages_body(rank: int, world: int):
    local = FULL[:, 2 * rank:2 * rank + 2].reshape(-1)  # [B*2]: this rank's 2 completions of each prompt
    group = RankGroup(world, rank, dist.group.WORLD)
    stats = gathered_group_advantages(local, 2, group)
    # one rank with nothing to train makes every rank skip (rank 1 says no)
    agree_all = all_ranks_agree(True)
    agree_mixed = all_ranks_agree(rank == 0)
    return {"stats": stats, "agree_all": agree_all, "agree_mixed": agree_mixed}


def test_advantages_split_over_two_ranks_equal_one_rank(tmp_path):
    results = run_on_ranks(_split_advantages_body, tmp_path)
    expected = group_advantages(FULL.reshape(-1), 4)  # the 1-rank computation
    for rank, res in enumerate(results):
        adv = res["stats"].advantages
        assert torch.allclose(adv, expected.advantages.view(3, 4)[:, 2 * rank:2 * rank + 2].reshape(-1), atol=1e-7)
        assert torch.allclose(res["stats"].mean, expected.mean) and torch.allclose(res["stats"].std, expected.std)
        assert res["agree_all"] is True and res["agree_mixed"] is False
    # the zero-variance group (prompt 1) has zero advantages on both ranks, no NaN
    assert results[0]["stats"].advantages[2:4].tolist() == [0.0, 0.0]
