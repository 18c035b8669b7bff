"""`python -m museg_lit.eval task=ground_then_answer data=synthetic_qa model=tiny` end to end on CPU:
the generated QA set is written on first use, both stages and the whole-video baseline run on the
same questions, predictions / metrics / picture land in the output folder and in one MLflow run
(resuming is tested in tests/unit/test_qa_runner.py).
The tiny model has random weights: its accuracies are near chance or zero (no parsable letter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NUM = 3


def test_ground_then_answer_on_the_generated_set(tmp_path, tiny_checkpoint):
    args = [sys.executable, "-m", "museg_lit.eval", "task=ground_then_answer", "data=synthetic_qa", "model=tiny",
            f"model.path={tiny_checkpoint}", f"paths.root_dir={tmp_path}", f"data.synthetic.num_samples={NUM}",
            "max_new_tokens=12", "gta.answer_max_new_tokens=4", "batch_size=3", "name=run"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "logs" / "eval" / "synthetic_qa" / "run"
    questions = [json.loads(line) for line in (tmp_path / "data" / "synthetic_qa" / "test.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [q["id"] for q in questions] and len(rows) == NUM
    for r, q in zip(rows, questions, strict=True):
        assert (r["question"], r["options"], r["answer"], r["evidence"]) == (q["question"], q["options"], q["answer"],
                                                                            q["evidence"])
        assert {"grounding_output", "grounded", "window", "fallback", "gta_output", "gta_letter", "gta_correct",
                "baseline_output", "baseline_letter", "baseline_correct", "window_timestamps"} <= set(r)
        assert 0.0 <= r["window"][0] < r["window"][1] <= r["duration"] and r["error"] is None
        assert r["window"][0] <= r["window_timestamps"][0] <= r["window_timestamps"][1] <= r["window"][1]
    summary = json.loads((out / "metrics.json").read_text())
    m = summary["metrics"]
    assert summary["headline_metric"] == "gta_accuracy" and m["num"] == NUM
    assert m["gta_accuracy"] == sum(r["gta_correct"] for r in rows) / NUM
    assert m["baseline_accuracy"] == sum(r["baseline_correct"] for r in rows) / NUM
    assert "ground-then-answer accuracy" in proc.stdout and "vs whole video" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/logs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("eval").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "synthetic_qa/run"
    assert run.data.metrics["eval/synthetic_qa/gta_accuracy"] == m["gta_accuracy"]
    assert run.data.metrics["eval/synthetic_qa/baseline_accuracy"] == m["baseline_accuracy"]
    assert run.data.params["gta.margin_s"] == "2.0" and run.data.params["task"] == "ground_then_answer"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {"plots/gta_timeline.png"}


def test_ground_then_answer_on_a_grounding_set_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "museg_lit.eval", "task=ground_then_answer", "data=charades_sta",
                           f"paths.root_dir={tmp_path}", "logger=none"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "error: task=ground_then_answer: data is not a multiple-choice QA set" in proc.stderr
    assert "Traceback" not in proc.stderr
