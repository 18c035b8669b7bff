"""Checkpoints describe themselves: a real ``python -m museg_lit.train`` run stores its resolved config
in every checkpoint; the checkpoint path alone then exports the policy (``python -m museg_lit.export``)
and continues the run (``python -m museg_lit.train resume=CKPT``), from another working directory.
The same run logs the annotation counts of its data set to MLflow as ``data/*`` metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from museg_lit.checkpoint_config import CONFIG_KEY, stored_config

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 3


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def _python(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_data, tiny_checkpoint) -> Path:
    """One real run: 3 steps, a checkpoint after each (all kept), MLflow in <root>/logs. Returns <root>."""
    root = tmp_path_factory.mktemp("selfdescribing")
    # two more lines on the first video: one with a segment past the end (clipped), one whose
    # segment lies wholly past the end (nothing left after clipping: dropped). Their counts must reach MLflow.
    lines = (synthetic_data / "train.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    end = first["duration"]
    extra = [{**first, "idx": "clipped", "solution": [[end - 1, end + 5]]},
             {**first, "idx": "dropped", "solution": [[end + 1, end + 2]]}]
    annotations = root / "train.jsonl"
    annotations.write_text("\n".join([*lines, *map(json.dumps, extra)]) + "\n")
    _python(root, "-m", "museg_lit.train", f"paths.root_dir={root}", f"model.path={tiny_checkpoint}",
            f"data.annotation_file={annotations}", f"data.video_root={synthetic_data}", "data.synthetic=null",
            f"trainer.max_steps={STEPS}", "trainer.enable_progress_bar=false",
            "rollout.num_generations=2", "rollout.max_new_tokens=4", "callbacks.completions_table.every_n_steps=100",
            "callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.keep_last=-1")
    return root


def _run_dir(root: Path) -> Path:
    (run_dir,) = (root / "logs" / "train" / "runs").iterdir()
    return run_dir


def _policy_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}


def test_every_checkpoint_stores_the_resolved_config(trained, tiny_checkpoint):
    run_dir = _run_dir(trained)
    assert run_dir.name.startswith("auto-")
    for step in range(1, STEPS + 1):
        config = stored_config(run_dir / "checkpoints" / f"step_{step:08d}.ckpt")
        assert config is not None, step
        # resolved: plain values, no interpolation left; the run's own directory and settings
        assert "${" not in repr(config)
        assert config["paths"]["output_dir"] == str(run_dir)
        assert config["callbacks"]["checkpoint"]["dirpath"] == str(run_dir / "checkpoints")
        assert config["model"]["path"] == str(tiny_checkpoint)
        assert config["trainer"]["max_steps"] == STEPS and config["rollout"]["num_generations"] == 2
        assert config["data"]["annotation_file"] == str(trained / "train.jsonl")
    raw = torch.load(run_dir / "checkpoints" / "step_00000001.ckpt", map_location="cpu", weights_only=True)
    assert raw[CONFIG_KEY] == config  # the same config in every checkpoint, loadable with weights_only=True


def test_annotation_counts_reach_mlflow_as_data_metrics(trained):
    client = MlflowClient(f"sqlite:///{trained}/logs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    metrics = run.data.metrics
    # 8 generated samples + the clipped one; the other extra line dropped; no filter
    assert metrics["data/loaded"] == 9.0 and metrics["data/clipped"] == 1.0 and metrics["data/kept_invalid"] == 0.0
    assert metrics["data/dropped"] == 1.0 and metrics["data/dropped/empty_after_clip"] == 1.0
    assert metrics["data/filtered"] == 0.0
    # logged once, at train start
    assert [m.step for m in client.get_metric_history(run.info.run_id, "data/loaded")] == [0]


def test_export_from_the_checkpoint_alone(trained, tmp_path):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    ckpt = _run_dir(trained) / "checkpoints" / f"step_{STEPS:08d}.ckpt"
    proc = _python(tmp_path, "-m", "museg_lit.export", str(ckpt))  # no config, no model spec, another cwd
    out = ckpt.with_suffix(".hf")
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    exported = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, local_files_only=True).state_dict()
    AutoProcessor.from_pretrained(out, local_files_only=True)
    weights = _policy_weights(ckpt)
    assert weights and all(torch.equal(exported[k], v) for k, v in weights.items() if k in exported)
    assert set(weights) - set(exported) <= {"lm_head.weight"}  # tied to the embeddings in the export
    # the Python API: the same from the path alone, into a chosen directory
    from museg_lit.export import export_checkpoint

    again = export_checkpoint(ckpt, out_dir=tmp_path / "api")
    assert (again / "model.safetensors").exists()


def test_resume_from_the_checkpoint_alone(trained, tmp_path):
    """``resume=<step 1>`` and nothing else, from another directory: the run continues in its own
    directory and MLflow run, with its own config, and ends with the weights of the first fit."""
    run_dir = _run_dir(trained)
    ckpt_dir = run_dir / "checkpoints"
    first_fit = _policy_weights(ckpt_dir / f"step_{STEPS:08d}.ckpt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _python(elsewhere, "-m", "museg_lit.train", f"resume={ckpt_dir / 'step_00000001.ckpt'}")
    assert not (elsewhere / "logs").exists()  # nothing written where the command ran
    assert sorted(p.name for p in (trained / "logs" / "train" / "runs").iterdir()) == [run_dir.name]
    resumed = _policy_weights(ckpt_dir / f"step_{STEPS:08d}.ckpt")
    assert all(torch.equal(resumed[k], v) for k, v in first_fit.items())  # same steps 2 and 3 again
    client = MlflowClient(f"sqlite:///{trained}/logs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert run.data.tags["resume_count"] == "1"
    assert run.data.tags["resumed_from"] == str(ckpt_dir / "step_00000001.ckpt")
    assert stored_config(ckpt_dir / f"step_{STEPS:08d}.ckpt")["model"] == stored_config(
        ckpt_dir / "step_00000001.ckpt")["model"]
    # the finished run, resumed from its last checkpoint alone, says so (exit 0)
    proc = _python(elsewhere, "-m", "museg_lit.train", f"resume={ckpt_dir / f'step_{STEPS:08d}.ckpt'}")
    assert f"already finished at step {STEPS}" in proc.stderr
    # a key a resumed run may not change is refused in one line; run length may change
    bad = subprocess.run([sys.executable, "-m", "museg_lit.train", f"resume={ckpt_dir / 'step_00000002.ckpt'}",
                          "optim.optimizer.lr=0.5"], cwd=elsewhere, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "optim.optimizer.lr" in bad.stderr and "Traceback" not in bad.stderr
    _python(elsewhere, "-m", "museg_lit.train", f"resume={ckpt_dir / f'step_{STEPS:08d}.ckpt'}",
            f"trainer.max_steps={STEPS + 1}")
    assert (ckpt_dir / f"step_{STEPS + 1:08d}.ckpt").exists()
