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


@pytest.mark.parametrize("freeze_vision", [True, False])
def test_lora_trains_adapters_only_and_reference_is_the_base(freeze_vision, tmp_path, synthetic_data, tiny_checkpoint):
    run, changed, _ = _fit(tmp_path, synthetic_data, tiny_checkpoint, "model.lora.enabled=true", "model.lora.r=4",
                           "model.lora.alpha=8", f"model.freeze_vision={freeze_vision}", "trainer.max_steps=2")
    policy = run.module.policy
    assert run.module.reference is None  # no second copy of the weights
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("visual" in n for n in trainable) != freeze_vision
    assert changed == len(trainable)  # exactly the adapter weights moved
    # after training the adapter changes the output; disabled, the output is the base model's
    from transformers import Qwen2_5_VLForConditionalGeneration

    from museg_lit.models.lora import reference_context

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint, local_files_only=True).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    policy.eval()
    with torch.no_grad(), reference_context(policy):
        ref_logits = policy(input_ids=ids).logits
    with torch.no_grad():
        assert torch.allclose(ref_logits, base(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(policy(input_ids=ids).logits, ref_logits, atol=1e-5)


@pytest.mark.parametrize(("share_prefix", "freeze_vision", "policy_passes", "reference_passes"), [
    (True, False, 2, 1),  # generation + policy pass; reference pass: each once per prompt
    (True, True, 1, 0),  # frozen tower: the prefill's features serve the reference and the policy pass
    (False, False, 2 * 4, 4),  # the repeated comparison path: once per completion (G = 4)
])
def test_vision_tower_runs_once_per_prompt_per_pass(share_prefix, freeze_vision, policy_passes, reference_passes,
                                                    tmp_path, synthetic_data, tiny_checkpoint):
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "rollout.max_new_tokens=6",
                             "rollout.num_generations=4", "trainer.max_steps=2", f"rollout.share_prefix={share_prefix}",
                             f"model.freeze_vision={freeze_vision}"))
    run = _run(cfg, length_variance_reward)
    run.module.configure_model()
    patches = {"batch": 0, "policy": 0, "reference": 0}
    for name in ("policy", "reference"):
        visual = getattr(run.module, name).model.visual
        visual.register_forward_pre_hook(lambda mod, args, name=name: patches.__setitem__(name, patches[name] + args[0].shape[0]))
    score = run.module._score

    def counted(batch, timings):
        patches["batch"] += batch["inputs"]["pixel_values_videos"].shape[0]
        return score(batch, timings)

    run.module._score = counted
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert patches["batch"] > 0 and torch.isfinite(run.trainer.callback_metrics["train/loss"])
    assert patches["policy"] == policy_passes * patches["batch"]
    assert patches["reference"] == reference_passes * patches["batch"]
