"""The learning proof end to end at reduced size (``make learn-demo`` with a few steps): SFT, then GRPO
from its export, then the held-out evaluations, the baselines, the MLflow curves, the table and the PNG.
Slow (a few minutes on 2 cores): ``pytest -m slow tests/integration/test_learning_demo.py``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_learn_demo_at_reduced_size_writes_the_table_and_the_picture(tmp_path):
    out = tmp_path / "learning.md"
    cmd = [sys.executable, str(REPO_ROOT / "experiments" / "learning.py"), "--root", str(tmp_path),
           "--sft-steps", "30", "--grpo-steps", "3", "--train", "32", "--heldout", "8", "--eval-every", "15",
           "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=REPO_ROOT, timeout=1200)
    text = out.read_text()
    for row in ("baseline: whole video", "baseline: mean train segment", "SFT export", "GRPO export",
                "SFT export, blanked frames"):
        assert f"| {row} |" in text
    assert "| goal (held-out tvg mIoU) |" in text and "experiments/learning.py" in text
    assert out.with_suffix(".png").stat().st_size > 10_000
    for stage in ("sft", "grpo"):
        assert (tmp_path / "logs" / "learning" / stage / "export" / "config.json").is_file()
