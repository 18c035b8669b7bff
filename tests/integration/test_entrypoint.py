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
