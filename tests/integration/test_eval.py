"""`make eval-charades MODEL=tiny VIDEO_ROOT=...` end to end on CPU, the real way (make -> Hydra
entry point -> runner -> MLflow), on six real Charades-STA queries whose videos are generated here
under the annotation's names; then an interrupted run resumes with only the missing samples."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from museg_lit.data.synthetic import _write_video

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NUM = 6  # the first six queries: three videos, two queries each (decoded once per video)


@pytest.fixture(scope="module")
def charades(museg_data_dir, tmp_path_factory):
    """A small Charades-STA annotation file and tiny videos (112x112, 2 fps, 8 s) at its paths."""
    root = tmp_path_factory.mktemp("charades")
    entries = json.loads((museg_data_dir / "charades_sta.json").read_text())[:NUM]
    (root / "ann.json").write_text(json.dumps(entries))
    for e in entries:
        path = root / "videos" / e["video"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # a shape shown during the ground truth, as far as the 8 s video reaches
            _write_video(path, 8.0, 2.0, (112, 112), [("red", "square", e["groundtruth"], (56, 56))])
    return root, entries


def make_eval(root: Path, tiny_checkpoint, *extra: str, target: str = "eval-charades", timeout: int = 240):
    args = " ".join([f"paths.root_dir={root}", f"data.annotation_file={root / 'ann.json'}", f"model.path={tiny_checkpoint}",
                     "max_new_tokens=12", "batch_size=4", "data.num_workers=0", *extra])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["make", "-s", "-C", str(REPO), target, "MODEL=tiny", f"VIDEO_ROOT={root / 'videos'}",
                           f"EVAL_ARGS={args}"], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def first_run(charades, tiny_checkpoint):
    root, _ = charades
    proc = make_eval(root, tiny_checkpoint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_make_eval_charades_writes_predictions_metrics_pictures_and_mlflow_run(first_run, charades):
    root, proc = first_run
    _, entries = charades
    out = root / "logs" / "eval" / "charades_sta" / "tiny"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(i) for i in range(NUM)]
    for r, e in zip(rows, entries, strict=True):
        assert r["question"] == e["question"] and r["groundtruth"] == e["groundtruth"] and r["video"] == e["video"]
        assert {"output", "answer", "prediction", "iou", "duration", "error"} <= set(r) and r["error"] is None
        assert r["duration"] == pytest.approx(8.0)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["headline_metric"] == "m_iou" and summary["num_samples"] == NUM
    assert {"tot", "m_iou", "f1_single_0.1", "f1_single_0.3", "f1_single_0.5", "f1_single_0.7", "mean_f1_single",
            "no_prediction"} <= set(summary["metrics"])
    assert summary["settings"]["frames"]["total_pixels"] == 3584 * 28 * 28
    assert summary["settings"]["frames"]["min_pixels"] == 16 * 28 * 28
    for png in ("timeline.png", "iou_hist.png", "recall_curve.png"):
        assert (out / png).stat().st_size > 10_000
    assert "charades_sta: m_iou =" in proc.stdout
    client = MlflowClient(f"sqlite:///{root}/logs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("eval").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "charades_sta/tiny"
    assert run.data.metrics["eval/charades_sta/m_iou"] == summary["metrics"]["m_iou"]
    assert run.data.metrics["eval/charades_sta/tot"] == NUM
    assert run.data.params["max_new_tokens"] == "12" and run.data.params["runner.template"] == "frame_selection_thinking"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"predictions.jsonl", "metrics.json", "config.yaml", "plots"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/timeline.png", "plots/iou_hist.png", "plots/recall_curve.png"}


def test_interrupted_evaluation_resumes_with_the_missing_samples_only(first_run, tiny_checkpoint):
    root, _ = first_run
    jsonl = root / "logs" / "eval" / "charades_sta" / "tiny" / "predictions.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(lines[:2]) + lines[2][:25])  # as if killed while writing the third row
    proc = make_eval(root, tiny_checkpoint, "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((jsonl.parent / "metrics.json").read_text())
    assert summary["num_generated_now"] == NUM - 2
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(i) for i in range(NUM)]
    assert rows[:2] == [json.loads(line) for line in lines[:2]]  # kept, not regenerated
    assert "| 2/6 [" in proc.stderr  # the progress bar picks up where the first run stopped


def test_missing_videos_fail_at_once_with_a_hint(charades, tiny_checkpoint, tmp_path):
    root, _ = charades
    proc = make_eval(root, tiny_checkpoint, f"data.video_root={tmp_path}", "logger=none", timeout=120)
    assert proc.returncode != 0
    assert f"3 of 3 videos are missing under the video root {tmp_path}" in proc.stderr
    assert "Charades_v1_480.zip" in proc.stderr and "Traceback" not in proc.stderr
    assert "Loading weights" not in proc.stderr  # failed before the model loaded
