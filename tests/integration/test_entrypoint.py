"""The real entry point, started the real way: `python -m museg_lit.train ...` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.integration


def _train(cwd, *overrides, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "museg_lit.train", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_logs_a_complete_mlflow_run(tmp_path, tiny_checkpoint):
    proc = _train(tmp_path, f"paths.root_dir={tmp_path}", f"model.path={tiny_checkpoint}", "trainer.max_steps=2",
                  "data.synthetic.num_samples=4", "rollout.max_new_tokens=16", "callbacks.completions_table.every_n_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/logs/mlflow.db")
    experiment = client.get_experiment_by_name("train")
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    for key in ("train/reward", "train/reward/format", "train/reward/segment_matching", "train/reward_std", "train/kl",
                "train/completion_length", "train/loss", "time/decode_s", "time/generate_s", "time/ref_logp_s",
                "time/update_s", "data/skipped"):
        assert key in metrics, f"{key} missing from {sorted(metrics)}"
    assert run.data.params["model.name"] == "tiny-qwen2.5-vl"
    assert run.data.params["rollout.max_new_tokens"] == "16"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.txt", "completions"} <= artifacts
    tables = [a.path for a in client.list_artifacts(run.info.run_id, "completions")]
    assert tables and tables[0].startswith("completions/step_")
    # the synthetic data set was generated once into the data directory
    assert (tmp_path / "data" / "synthetic" / "train.jsonl").exists()


def test_print_config_and_typo():
    proc = _train(None, "--cfg", "job", timeout=120)
    assert proc.returncode == 0 and "model:" in proc.stdout and "tiny-qwen2.5-vl" in proc.stdout
    bad = _train(None, "rollout.temprature=0.5", timeout=120)
    assert bad.returncode != 0 and "rollout.temprature" in bad.stderr


def test_missing_weights_fail_at_once_with_a_hint(tmp_path):
    proc = _train(tmp_path, "model=qwen2_5_vl_7b", f"model.path={tmp_path}/nope", "logger=none", timeout=120)
    assert proc.returncode != 0
    assert "download Qwen/Qwen2.5-VL-7B-Instruct" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2  # user errors exit 2


@pytest.mark.parametrize(("override", "message"), [
    ("algo.epsilon_low=-1", "error: algo.epsilon_low=-1: must be in [0, 1)"),
    ("rollout.temperature=0", "error: rollout.temperature=0: must be > 0"),
    ("rollout.num_generations=1", "error: rollout.num_generations=1: must be >= 2"),
    ("rollout.top_p=1.5", "error: rollout.top_p=1.5: must be in (0, 1]"),
])
def test_out_of_range_config_values_are_one_line_errors(override, message, tmp_path, tiny_checkpoint):
    """Typed configs refuse the value when Hydra builds them: one line naming the key, exit 2,
    before any model or data loads."""
    proc = _train(tmp_path, f"paths.root_dir={tmp_path}", f"model.path={tiny_checkpoint}", "logger=none", override,
                  timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize(("record", "message"), [
    ('{"idx": 0, "problem": "q", "solution": [[NaN, 3]], "video": "v.mp4", "duration": 10, "task": "tvg"}',
     "train.jsonl:2: the start of segment [nan, 3] of key 'solution' must be a finite number"),
    ('{"idx": 0, "problem": "q", "video": "v.mp4", "task": "tvg"}', "train.jsonl:2: missing key 'solution'"),
    ('{not json', "train.jsonl:2: not valid JSON"),
])
def test_a_bad_annotation_line_is_one_line_naming_file_and_line(record, message, tmp_path, tiny_checkpoint):
    good = '{"idx": 1, "problem": "q", "solution": [[1, 3]], "video": "v.mp4", "duration": 10, "task": "tvg"}'
    (tmp_path / "train.jsonl").write_text(good + "\n" + record + "\n")
    proc = _train(tmp_path, f"paths.root_dir={tmp_path}", f"model.path={tiny_checkpoint}", "logger=none",
                  "callbacks=none", "data.synthetic=null", f"data.annotation_file={tmp_path}/train.jsonl",
                  f"data.video_root={tmp_path}", timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
