"""Smoke and learning tests: real GRPO steps of the tiny Qwen2.5-VL on generated videos (CPU)."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch

from museg_lit.builders import build_training
from museg_lit.config import compose

pytestmark = pytest.mark.integration


def digit_share(completions, solution, **columns):
    """Test reward: share of characters that are digits (a token pattern the tiny model can learn)."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def length_variance_reward(completions, solution, **columns):
    """Test reward with spread in every group: the completion's length modulo 7 (any signal works)."""
    return [float(len(c) % 7) for c in completions]


class RewardRecorder(L.Callback):
    def __init__(self):
        self.rewards: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rewards.append(float(trainer.callback_metrics["train/reward"]))


def _overrides(tmp_path, synthetic_data, tiny_checkpoint, *extra):
    return [
        f"paths.root_dir={tmp_path}",
        f"model.path={tiny_checkpoint}",
        f"data.annotation_file={synthetic_data}/train.jsonl",
        f"data.video_root={synthetic_data}",
        "data.synthetic=null",
        "logger=none",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


def _run(cfg, reward_fn, recorder=None):
    """Build the run from ``cfg`` and score every active reward name with ``reward_fn``."""
    run = build_training(cfg)
    run.module.reward.functions.clear()
    run.module.reward.functions.update({name: reward_fn for name in run.module.reward.phases[0].weights})
    if recorder is not None:
        run.trainer.callbacks.append(recorder)
    return run


def test_smoke_every_parameter_changes(tmp_path, synthetic_data, tiny_checkpoint):
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "trainer.max_steps=2",
                             "optim.optimizer.lr=1e-3", "rollout.max_new_tokens=16"))
    run = _run(cfg, length_variance_reward)
    run.module.configure_model()
    before = {n: p.detach().clone() for n, p in run.module.policy.named_parameters() if p.requires_grad}
    run.trainer.fit(run.module, datamodule=run.datamodule)
    after = dict(run.module.policy.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    assert not unchanged, f"parameters that did not change: {unchanged[:5]}"
    loss = run.trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)
    for key in ("train/kl", "train/reward_std", "train/completion_length", "time/generate_s", "time/ref_logp_s",
                "time/decode_s", "time/update_s", "data/skipped"):
        assert key in run.trainer.callback_metrics, key
    # the reference stays frozen
    assert all(not p.requires_grad for p in run.module.reference.parameters())


def test_grpo_learns_a_token_pattern(tmp_path, synthetic_data, tiny_checkpoint):
    """GRPO with a reward for digits must raise the mean reward clearly: this catches sign errors."""
    steps = 24
    cfg = compose(_overrides(
        tmp_path, synthetic_data, tiny_checkpoint, f"trainer.max_steps={steps}", "optim.optimizer.lr=3e-3",
        "optim.scheduler=null", "algo.beta=0.0", "rollout.num_generations=8", "rollout.max_new_tokens=12",
        "data.batch_size=2", "seed=0",
    ))
    L.seed_everything(0)
    recorder = RewardRecorder()
    run = _run(cfg, digit_share, recorder)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    print("rewards per step:", [round(r, 3) for r in recorder.rewards])
    first, last = recorder.rewards[:4], recorder.rewards[-4:]
    start, end = sum(first) / len(first), sum(last) / len(last)
    assert end > start + 0.15 and end > 2 * start, f"mean reward did not rise: {start:.3f} -> {end:.3f} ({recorder.rewards})"
    assert run.module.reference is None  # beta 0 loads no reference model


def test_broken_video_is_skipped_and_counted(tmp_path, synthetic_data, tiny_checkpoint):
    """A missing and an undecodable video are skipped with a warning naming the file; training goes on."""
    lines = (synthetic_data / "train.jsonl").read_text().splitlines()[:4]
    (tmp_path / "vids").mkdir()
    for line in lines:
        name = re.search(r'"video": "([^"]+)"', line).group(1)
        target = tmp_path / "vids" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((synthetic_data / name).read_bytes())
    broken = re.search(r'"video": "([^"]+)"', lines[1]).group(1)
    (tmp_path / "vids" / broken).write_text("this is not a video")
    missing = re.search(r'"video": "([^"]+)"', lines[2]).group(1)
    (tmp_path / "vids" / missing).unlink()
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "trainer.max_steps=4", "data.shuffle=false",
                             "data.batch_size=1", "rollout.max_new_tokens=8", "rollout.num_generations=2",
                             f"data.annotation_file={tmp_path}/train.jsonl", f"data.video_root={tmp_path}/vids"))
    run = _run(cfg, length_variance_reward)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.module.skipped_total == 2
    assert run.trainer.callback_metrics["data/skipped"] == 2.0
    # Lightning counts a batch whose training_step returned None as a step (no gradient, no update)
    assert run.trainer.global_step == 4
    assert "train/loss" in run.trainer.callback_metrics  # the two good samples trained
