"""Each algorithm variant on the tiny model (2-4 real steps each), its distinguishing maths checked on
what the real step computed: DAPO's group filter, token-aware KL weights, Dr. GRPO's aggregation."""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import pytest
import torch

from museg_lit.config import compose
from museg_lit.rl.kl import kl_k3
from museg_lit.rl.losses import policy_loss
from tests.integration.test_training import _overrides, _run, length_variance_reward

pytestmark = pytest.mark.integration


def _fit(tmp_path, synthetic_data, tiny_checkpoint, *extra, reward=length_variance_reward):
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "optim.optimizer.lr=1e-3",
                             "rollout.max_new_tokens=12", "rollout.num_generations=4", *extra))
    run = _run(cfg, reward)
    run.module.configure_model()
    before = {n: p.detach().clone() for n, p in run.module.policy.named_parameters()}
    calls = {"score": 0}  # batches rolled out (generated and scored)
    score = run.module._roll_out

    def counted(*a, **k):
        calls["score"] += 1
        return score(*a, **k)

    run.module._roll_out = counted
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
    score = run.module._roll_out

    def counted(batch, timings):
        patches["batch"] += batch.inputs["pixel_values_videos"].shape[0]
        return score(batch, timings)

    run.module._roll_out = counted
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert patches["batch"] > 0 and torch.isfinite(run.trainer.callback_metrics["train/loss"])
    assert patches["policy"] == policy_passes * patches["batch"]
    assert patches["reference"] == reference_passes * patches["batch"]


def _half_constant_reward(completions, solution, idx, **columns):
    """Even-idx prompts get a constant reward (a zero-variance group), odd ones the length spread."""
    return [1.0 if int(i) % 2 == 0 else float(len(c) % 7) for c, i in zip(completions, idx, strict=True)]


def _recording(run) -> dict:
    """Wrap the step's parts to record what each produced: scored rollouts, step rollouts, loss calls."""
    module, seen = run.module, {"scored": [], "steps": [], "loss": []}
    roll_out, fresh, loss = module._roll_out, module._fresh_rollouts, module.loss

    def recorded_roll_out(batch, timings):
        seen["scored"].append(roll_out(batch, timings))
        return seen["scored"][-1]

    def recorded_fresh(batch, timings):
        seen["steps"].append(fresh(batch, timings))
        return seen["steps"][-1]

    def recorded_loss(logp, advantages, mask, **kw):
        out = loss(logp, advantages, mask, **kw)
        seen["loss"].append({"logp": logp.detach().clone(), "advantages": advantages, "mask": mask,
                             **{k: v for k, v in kw.items()}, "out": out})
        return out

    module._roll_out, module._fresh_rollouts, module.loss = recorded_roll_out, recorded_fresh, recorded_loss
    return seen


@pytest.mark.parametrize("kl", [("algo.beta=0",), ("algo.beta=0.04", "algo.beta_time=0")])
def test_dapo_filters_groups_with_int_beta_and_with_token_aware_kl(kl, tmp_path, synthetic_data, tiny_checkpoint):
    # the review's crash: `algo=dapo algo.beta=0` (an int from the command line) failed in the group filter
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "algo=dapo", *kl, "algo.mask_truncated=false",
                             "algo.max_refill_batches=1", "rollout.max_new_tokens=8", "rollout.num_generations=4",
                             "trainer.max_steps=2", "data.shuffle=false"))
    run = _run(cfg, _half_constant_reward)
    assert type(run.module.algo.beta) is float
    seen = _recording(run)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])
    # every first rollout of a step held an even (constant-reward) prompt: DAPO dropped that group
    kept = [c for step in seen["steps"] for c in step.chunks]
    assert all(int(s.idx) % 2 for c in kept for s in c.samples)
    assert run.trainer.callback_metrics["health/zero_variance_groups"] > 0
    for chunk in kept:  # the kept rows carry their own per-token KL weights
        n = len(chunk.samples) * chunk.rollout.num_generations
        assert chunk.kl_weight.shape == chunk.loss_mask.shape == (n, chunk.rollout.completion_ids.shape[1])
    assert (run.module.reference is not None) == ("algo.beta_time=0" in kl)


def _forced_answers(module, texts_for_row):
    """Replace the sampled completions by given texts (tokenised, right-padded): the real step then
    runs on completions that do write answer timestamps, which the random tiny model never does."""
    generate = module._generate
    tokenizer = module.processor.tokenizer

    def forced(batch, timings):
        ro = generate(batch, timings)
        texts = [texts_for_row(i) for i in range(ro.completion_ids.shape[0])]
        enc = tokenizer(texts, padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt")
        ids, mask = enc["input_ids"].to(ro.completion_ids.device), enc["attention_mask"].to(ro.completion_mask.device)
        return replace(ro, completion_ids=ids, completion_mask=mask, texts=texts,
                       truncated=torch.zeros(len(texts), dtype=torch.bool, device=ro.truncated.device))

    module._generate = forced


def test_token_aware_kl_weights_answer_timestamps_differently(tmp_path, synthetic_data, tiny_checkpoint):
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "algo.beta=0.5", "algo.beta_time=0",
                             "optim.optimizer.lr=1e-2", "rollout.max_new_tokens=40", "rollout.num_generations=4",
                             "trainer.max_steps=2", "data.batch_size=1"))
    run = _run(cfg, length_variance_reward)
    run.module.configure_model()
    _forced_answers(run.module, lambda i: f"<think>near {i}.5 s{'!' * i}</think><answer>{i}.25-{i + 3}.0</answer>")
    seen = _recording(run)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    tokenizer = run.module.processor.tokenizer
    for scored in seen["scored"]:
        for row in range(scored.kl_weight.shape[0]):
            n = int(scored.loss_mask[row].sum())
            pieces = [tokenizer.decode([t]) for t in scored.rollout.completion_ids[row, :n].tolist()]
            weights = scored.kl_weight[row, :n].tolist()
            answer = "".join(p for p, w in zip(pieces, weights, strict=True) if w == 0.0)
            assert answer == f"{row}.25{row + 3}.0"  # only the answer's timestamps are free of the KL pull
            assert all(w == pytest.approx(0.5) for w in weights if w != 0.0)
            assert "".join(pieces).startswith(f"<think>near {row}.5")  # the reasoning's "1.5" keeps beta
    # after one update the policy has left the reference: the KL term is live, and weighting tokens
    # differently changes the loss against a constant beta
    call = seen["loss"][-1]
    assert call["out"].kl > 0
    constant = policy_loss(call["logp"], call["advantages"], call["mask"], ref_logp=call["ref_logp"], beta=0.5)
    aware = policy_loss(call["logp"], call["advantages"], call["mask"], ref_logp=call["ref_logp"],
                        beta=call["kl_weight"])
    assert aware.loss.item() == pytest.approx(call["out"].loss.item(), abs=1e-6)
    assert constant.loss.item() > aware.loss.item()  # the timestamp tokens' KL (>= 0, k3) is not charged
    metrics = run.trainer.callback_metrics
    assert metrics["health/format_failures"] == 0.0 and metrics["health/degenerate_answers"] == 0.0


def test_dr_grpo_aggregates_over_a_constant_and_does_not_scale_advantages(tmp_path, synthetic_data, tiny_checkpoint):
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "algo=dr_grpo", "rollout.max_new_tokens=12",
                             "rollout.num_generations=4", "trainer.max_steps=2"))
    run = _run(cfg, length_variance_reward)
    assert (run.module.loss.aggregation, run.module.loss.max_completion_length) == ("constant", 12)
    seen = _recording(run)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    for scored, call in zip(seen["scored"], seen["loss"], strict=True):
        rewards = scored.rewards.total.view(-1, 4)  # [B, G]
        centred = (rewards - rewards.mean(1, keepdim=True)).flatten()
        assert torch.allclose(scored.advantages.cpu(), centred, atol=1e-6)  # r - mean, no std division
        # the loss: sum of token losses / (N * max_new_tokens); ratio 1 -> token loss -A + beta * k3
        kl = kl_k3(call["logp"], call["ref_logp"])
        tokens = (-call["advantages"].unsqueeze(1) + 0.04 * kl) * call["mask"]
        n = call["mask"].shape[0]
        assert call["out"].loss.item() == pytest.approx(tokens.sum().item() / (n * 12), abs=1e-6)
    assert any(bool((s.group_std > 0).any()) and not torch.allclose(s.group_std, torch.ones_like(s.group_std))
               for s in seen["scored"])  # scaling would have changed these advantages


def test_replay_position_continues_across_a_resume(tmp_path, synthetic_data, tiny_checkpoint):
    # num_iterations 2, batch 1, unshuffled: batches 0 0 1 1 2 2 ...; a checkpoint after 3 steps (inside
    # group 1), resumed: Lightning's batch_idx must go on at the sampler's position, so step 4 is the repeat of
    # step 3's batch (scored afresh: rollouts are not in the checkpoint), step 6 a replay of step 5's
    ckpt = tmp_path / "mid_group.ckpt"

    class SaveAtStep3(L.Callback):  # as the checkpoint callback does: inside the step's batch-end hook
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3 and not ckpt.exists():
                trainer.save_checkpoint(ckpt)

    def fit(max_steps, resume=None):
        cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "algo.num_iterations=2",
                                 "rollout.max_new_tokens=4", "rollout.num_generations=2", "data.batch_size=1",
                                 "data.shuffle=false", f"trainer.max_steps={max_steps}"))
        run = _run(cfg, length_variance_reward, recorder=SaveAtStep3())
        seen, position, fresh = [], run.module._replay_position, run.module._fresh_rollouts

        def recorded_position(batch_idx):
            seen.append({"batch_idx": batch_idx, "position": position(batch_idx), "fresh": False})
            return seen[-1]["position"]

        def recorded_fresh(batch, timings):
            seen[-1].update(fresh=True, ids=[s.idx for s in batch.samples])
            return fresh(batch, timings)

        run.module._replay_position, run.module._fresh_rollouts = recorded_position, recorded_fresh
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=resume)
        return seen

    before = fit(4)[:3]
    after = fit(6, ckpt)
    assert [(r["batch_idx"], r["position"], r["fresh"]) for r in before] == [
        (0, (0, 0, 0), True), (1, (0, 1, 0), False), (2, (1, 0, 0), True)]
    assert [(r["batch_idx"], r["position"], r["fresh"]) for r in after] == [
        (3, (1, 1, 0), True), (4, (2, 0, 0), True), (5, (2, 1, 0), False)]
    assert after[0]["ids"] == before[2]["ids"]  # the resumed step repeats the batch of step 3
    assert after[1]["ids"] != before[2]["ids"]
