"""The learning-proof picture (``experiments/learning.py``) draws the curves it is given."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO_ROOT


def _learning():
    spec = importlib.util.spec_from_file_location("learning", REPO_ROOT / "experiments" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CURVES = {
    "sft": {"val/m_iou": [(0, 0.1), (15, 0.3), (30, 0.4)], "sft/loss": [(1, 2.0)]},
    "grpo": {"val/m_iou": [(0, 0.4), (3, 0.45)], "train/reward": [(1, 1.0), (2, 2.0), (3, 3.0)]},
}


def test_learning_figure_shows_the_curves(tmp_path):
    learning = _learning()
    fig = learning.learning_figure(CURVES, sft_steps=30)
    left, right = fig.axes
    assert (left.get_title(), right.get_title()) == ("held-out grounding", "GRPO training reward")
    assert (left.get_ylabel(), right.get_xlabel()) == ("held-out tvg mIoU", "GRPO step")
    sft, grpo, start = left.get_lines()
    assert (list(sft.get_xdata()), list(sft.get_ydata())) == ([0, 15, 30], [0.1, 0.3, 0.4])
    assert (list(grpo.get_xdata()), list(grpo.get_ydata())) == ([30, 33], [0.4, 0.45])  # after the SFT steps
    assert list(start.get_xdata()) == [30, 30]
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["SFT", "GRPO (from the SFT export)"]
    per_step, mean = right.get_lines()
    assert list(per_step.get_ydata()) == [1.0, 2.0, 3.0]
    assert list(mean.get_ydata()) == [1.0, 1.5, 2.0]  # running mean (window 10 not yet full)
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["per step", "mean of 10"]
    learning.plot(CURVES, 30, tmp_path / "l.png")
    assert (tmp_path / "l.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
