"""`make eval-etbench MODEL=tiny` end to end on CPU for all 12 E.T. Bench tasks: generated videos and
E.T. Bench-format annotations (two items per task), a tiny local sentence encoder as
``sentsim_model``; the random tiny model scores near zero, so the test checks that every task gets
its row and that the Overall / Merged / AVG table is computed and written (metrics.json, picture,
MLflow). Also: a missing sentence model fails at once, before the video model loads."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from museg_lit.evaluation.caption_metrics import available
from museg_lit.evaluation.etbench_metrics import ALL_TASKS, OVERALL_COLUMNS
from museg_lit.evaluation.etbench_synthetic import generate_etbench_synthetic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def etbench(tmp_path_factory):
    return generate_etbench_synthetic(tmp_path_factory.mktemp("etbench"), per_task=2)


def make_etbench(root: Path, tiny_checkpoint, *extra: str, make_vars: tuple[str, ...] = (), timeout: int = 240):
    args = " ".join([f"paths.root_dir={root}", f"data.annotation_file={root / 'et_bench.json'}",
                     f"model.path={tiny_checkpoint}", "max_new_tokens=12", "batch_size=4", "data.num_workers=0", *extra])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["make", "-s", "-C", str(REPO), "eval-etbench", "MODEL=tiny", f"VIDEO_ROOT={root / 'videos'}",
                           *make_vars, f"EVAL_ARGS={args}"], env=env, capture_output=True, text=True, timeout=timeout)


def test_make_eval_etbench_scores_all_twelve_tasks(etbench, tiny_checkpoint):
    proc = make_etbench(etbench, tiny_checkpoint, make_vars=(f"SENTSIM={etbench / 'sentsim'}",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = etbench / "logs" / "eval" / "et_bench" / "tiny"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted({r["task"] for r in rows}) == sorted(ALL_TASKS) and len(rows) == 24
    assert all({"output", "answer", "prediction", "error"} <= set(r) for r in rows)
    summary = json.loads((out / "metrics.json").read_text())
    table = summary["etbench"]
    assert set(table["per_task"]) == set(ALL_TASKS)
    assert table["per_task"]["dvc"]["youcook2"]["Total"] == 2 and "SentSim" in table["per_task"]["slc"]["cross_task"]
    assert [c for c, _, _ in OVERALL_COLUMNS] == list(table["overall"])
    assert all(v is not None for v in (*table["overall"].values(), *table["merged"].values(), table["avg"]))
    assert summary["headline_metric"] == "avg" and summary["metrics"]["avg"] == table["avg"] / 100
    assert "et_bench: avg =" in proc.stdout
    assert (out / "etbench_table.png").stat().st_size > 10_000
    client = MlflowClient(f"sqlite:///{etbench}/logs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("eval").experiment_id])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["eval/et_bench/avg"] == summary["metrics"]["avg"]
    assert {"eval/et_bench/ref/acc", "eval/et_bench/gnd/f1", "eval/et_bench/cap/f1", "eval/et_bench/cap/sim",
            "eval/et_bench/com/rec", "eval/et_bench/dvc/youcook2/sentsim", "eval/et_bench/gvq/qa_ego4d/r_0.5"} <= set(m)
    assert "plots/etbench_table.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    if available():  # the optional extra: captioning scores as the reference reports them
        assert {"Bleu_4", "ROUGE_L", "CIDEr"} <= set(table["per_task"]["dvc"]["youcook2"])
        assert "eval/et_bench/slc/cross_task/cider" in m


def test_missing_sentence_model_fails_before_the_model_loads(etbench, tiny_checkpoint, tmp_path):
    proc = make_etbench(etbench, tiny_checkpoint, f"sentsim_model={tmp_path / 'nope'}", "logger=none", timeout=120)
    assert proc.returncode == 2
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: sentsim_model:") and "huggingface-cli download sentence-transformers/all-MiniLM-L6-v2" in line
    assert "Traceback" not in proc.stderr and "Loading weights" not in proc.stderr
