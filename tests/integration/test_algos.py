"""A smoke run of each algorithm variant on the tiny model (2-4 real steps each)."""

from __future__ import annotations

import pytest
import torch

from museg_lit.config import compose
from tests.integration.test_training import _overrides, _run, length_variance_reward

pytestmark = pytest.mark.integration


def _fit(tmp_path, synthetic_data, tiny_checkpoint, *extra, reward=length_variance_reward):
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "optim.optimizer.lr=1e-3",
                             "rollout.max_new_tokens=12", "rollout.num_generations=4", *extra))
    run = _run(cfg, reward)
    run.module.configure_model()
    before = {n: p.detach().clone() for n, p in run.module.policy.named_parameters()}
    calls = {"score": 0}
    score = run.module._score

    def counted(*a, **k):
        calls["score"] += 1
        return score(*a, **k)

    run.module._score = counted
    run.trainer.fit(run.module, datamodule=run.datamodule)
    changed = sum(not torch.equal(p, dict(run.module.policy.named_parameters())[n].detach()) for n, p in before.items())
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])
    return run, changed, calls["score"]


@pytest.mark.parametrize("algo", ["grpo", "dr_grpo", "dapo"])
def test_each_algo_trains(algo, tmp_path, synthetic_data, tiny_checkpoint):
    # the random tiny model almost never emits EOS within 12 tokens, so DAPO's overlong masking
    # would mask every row; it is unit-tested on its own (test_dapo_filters)
    run, changed, _ = _fit(tmp_path, synthetic_data, tiny_checkpoint, f"algo={algo}", "trainer.max_steps=2",
                           "algo.mask_truncated=false")
    assert changed > 0
    assert (run.module.reference is None) == (algo == "dapo")  # DAPO: beta 0 -> no reference model


def test_num_iterations_reuses_rollouts_with_clipping(tmp_path, synthetic_data, tiny_checkpoint):
    # 4 steps, num_iterations 2, accumulation 1 -> 2 rollouts, each used for 2 optimizer steps
    run, changed, scored = _fit(tmp_path, synthetic_data, tiny_checkpoint, "algo.num_iterations=2",
                                "trainer.max_steps=4", "data.shuffle=false")
    assert scored == 2
    assert changed > 0
    assert "train/clip_fraction" in run.trainer.callback_metrics


def test_token_aware_kl_runs(tmp_path, synthetic_data, tiny_checkpoint):
    run, changed, _ = _fit(tmp_path, synthetic_data, tiny_checkpoint, "algo.beta_time=0.0", "trainer.max_steps=2")
    assert changed > 0 and run.module.reference is not None


def test_dapo_refills_zero_variance_groups(tmp_path, synthetic_data, tiny_checkpoint):
    # a constant reward makes every group zero-variance: each step tries max_refill_batches refills
    run, _, scored = _fit(tmp_path, synthetic_data, tiny_checkpoint, "algo=dapo", "algo.max_refill_batches=2",
                          "trainer.max_steps=1", reward=lambda c, s, **k: [1.0] * len(c))
    assert scored == 1 + 2
    assert run.trainer.callback_metrics["train/refill_batches"] == 2.0
