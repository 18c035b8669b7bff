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
                "time/decode_s", "time/update_s", "data/skipped", "health/zero_variance_groups",
                "health/format_failures", "health/degenerate_answers", "perf/peak_mem_mb"):
        assert key in run.trainer.callback_metrics, key
    metrics = run.trainer.callback_metrics
    for key in ("health/zero_variance_groups", "health/format_failures", "health/degenerate_answers"):
        assert 0.0 <= float(metrics[key]) <= 1.0, key
    # the random tiny model writes no <answer>: every completion is a format failure and degenerate
    assert float(metrics["health/format_failures"]) == float(metrics["health/degenerate_answers"]) == 1.0
    assert float(metrics["perf/peak_mem_mb"]) > 100  # the process holds two tiny models and torch
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


class TrainedSteps(L.Callback):
    """Counts the batches whose training_step returned a loss (an optimizer update follows)."""

    def __init__(self):
        self.trained = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.trained += outputs is not None


def _copy_videos(lines, synthetic_data, target):
    for line in lines:
        name = re.search(r'"video": "([^"]+)"', line).group(1)
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes((synthetic_data / name).read_bytes())


def test_broken_video_is_replaced_and_counted(tmp_path, synthetic_data, tiny_checkpoint):
    """A missing video drops its sample at setup (counted); an undecodable one is skipped with a warning
    naming the file and replaced from the data: every one of max_steps is a real update on a full batch."""
    lines = (synthetic_data / "train.jsonl").read_text().splitlines()[:6]
    (tmp_path / "vids").mkdir()
    _copy_videos(lines, synthetic_data, tmp_path / "vids")
    broken = re.search(r'"video": "([^"]+)"', lines[1]).group(1)
    (tmp_path / "vids" / broken).write_text("this is not a video")
    missing = re.search(r'"video": "([^"]+)"', lines[2]).group(1)
    (tmp_path / "vids" / missing).unlink()
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "trainer.max_steps=4", "data.shuffle=false",
                             "data.batch_size=1", "rollout.max_new_tokens=8", "rollout.num_generations=2",
                             "data.max_skip_fraction=0.3",
                             f"data.annotation_file={tmp_path}/train.jsonl", f"data.video_root={tmp_path}/vids"))
    run = _run(cfg, length_variance_reward)
    steps = TrainedSteps()
    run.trainer.callbacks.append(steps)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.trainer.callback_metrics["data/missing_videos"] == 1.0
    assert run.module.skipped_total == 1 and run.trainer.callback_metrics["data/skipped"] == 1.0
    assert run.module.skips.drawn == 5  # 4 batches of 1, plus the replacement of the broken sample
    assert run.trainer.global_step == 4 and steps.trained == 4


def test_skips_over_the_budget_stop_the_run(tmp_path, synthetic_data, tiny_checkpoint):
    """Undecodable videos beyond data.max_skip_fraction stop the run with the first failures named."""
    from museg_lit.errors import DataError

    lines = (synthetic_data / "train.jsonl").read_text().splitlines()[:4]
    (tmp_path / "vids").mkdir()
    _copy_videos(lines, synthetic_data, tmp_path / "vids")
    for line in lines[:3]:
        (tmp_path / "vids" / re.search(r'"video": "([^"]+)"', line).group(1)).write_text("not a video")
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "trainer.max_steps=20", "data.shuffle=false",
                             "data.batch_size=1", "rollout.max_new_tokens=8", "rollout.num_generations=2",
                             f"data.annotation_file={tmp_path}/train.jsonl", f"data.video_root={tmp_path}/vids"))
    run = _run(cfg, length_variance_reward)
    with pytest.raises(DataError, match=r"samples drawn were skipped .* data.max_skip_fraction=0.1; first failures: "
                                        r".*train.jsonl:1: .*not a readable media file"):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.trainer.global_step < 20


def test_a_wrong_video_root_fails_before_the_model_loads(tmp_path, synthetic_data, tiny_checkpoint):
    from museg_lit.errors import DataError

    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, f"data.video_root={tmp_path}/nowhere"))
    run = _run(cfg, length_variance_reward)
    with pytest.raises(DataError, match=r"train.jsonl: (\d+) of \1 videos missing under data.video_root=.*nowhere \(first: "):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.module.policy is None  # failed in setup, before configure_model
