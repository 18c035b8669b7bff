"""Launchers and sweeps: a 2-job reward-weight sweep through hydra/launcher=submitit_local gives two
MLflow runs in one experiment, tagged with one sweep id, whose params differ in the swept key; the
SLURM launcher config yields a multi-node sbatch script and the trainer takes its shape from the
allocation (one SLURM job = one training run)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from museg_lit.config import CONF_DIR

pytestmark = pytest.mark.integration

SWEPT = "reward.phases.main.weights.segment_matching"


@pytest.mark.parametrize("launcher,museg_root", [("basic", True), ("submitit_local", False)],
                         ids=["basic-MUSEG_ROOT", "submitit_local-cwd"])
def test_two_job_sweep(tmp_path, synthetic_data, tiny_checkpoint, launcher, museg_root):
    """A 2-job reward-weight sweep as a user starts it: no ``paths.*`` key on the command line, from a
    directory that is not the repository; everything lands under ``MUSEG_ROOT`` when it is set, else
    under the directory the command ran from (the keys below only make the jobs small)."""
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    cmd = [
        sys.executable, "-m", "museg_lit.train", "-m", f"hydra/launcher={launcher}",
        "+experiment=stage1", "model=tiny", "data=synthetic",
        f"model.path={tiny_checkpoint}", "model.gradient_checkpointing=false",
        f"data.annotation_file={synthetic_data}/train.jsonl", f"data.video_root={synthetic_data}", "data.synthetic=null",
        "data.frames.min_pixels=3136", "data.frames.max_pixels=3136", "data.frames.total_pixels=null",
        "data.frames.max_frames=8", "trainer.max_epochs=-1", "trainer.max_steps=2", "trainer.precision=32-true",
        "data.global_batch_size=1", "trainer.enable_progress_bar=false", "rollout.num_generations=2",
        "rollout.max_new_tokens=4", f"{SWEPT}=0.5,1.0",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MUSEG_ROOT"}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    if museg_root:
        env["MUSEG_ROOT"] = str(root)
    logs_root = root if museg_root else cwd
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    print(f"2-job {launcher} sweep: {time.perf_counter() - start:.1f} s")
    logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.rglob(".submitit/*/*.err"))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    assert not (museg_root and (cwd / "logs").exists())  # nothing next to the command when MUSEG_ROOT is set
    (sweep_dir,) = (logs_root / "logs" / "museg_stage1" / "multiruns").iterdir()
    assert (sweep_dir / "multirun.yaml").is_file()

    client = MlflowClient(f"sqlite:///{logs_root}/logs/mlflow.db")
    experiment = client.get_experiment_by_name("museg_stage1")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert {r.data.tags["sweep_id"] for r in runs} == {sweep_dir.name}
    assert {r.data.tags["sweep_dir"] for r in runs} == {str(sweep_dir)}
    assert sorted(r.data.tags["job_num"] for r in runs) == ["0", "1"]
    assert sorted(r.data.params[SWEPT] for r in runs) == ["0.5", "1.0"]
    assert sorted(r.data.tags[f"override.{SWEPT}"] for r in runs) == ["0.5", "1.0"]
    assert sorted(r.info.run_name for r in runs) == [f"{sweep_dir.name}/0", f"{sweep_dir.name}/1"]
    for run in runs:
        assert run.info.status == "FINISHED" and "train/reward" in run.data.metrics
        job_dir = Path(run.data.tags["run_dir"])
        assert job_dir == sweep_dir / run.data.tags["job_num"]
        assert (job_dir / "mlflow_run_id").read_text().strip() == run.info.run_id
        assert (job_dir / "checkpoints" / "step_00000002.ckpt").exists()  # the final checkpoint


def _hydra_compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_builds_one_multi_node_job(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.chdir(tmp_path)
    cfg = _hydra_compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                          "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4"])
    launcher = instantiate(cfg.hydra.launcher)
    params = launcher.params
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 4, 4)  # one task per GPU
    assert params["max_num_timeout"] == 5 and params["timeout_min"] == 1440
    # what the launcher hands to submitit (its own mapping, see SlurmLauncher.launch) -> the sbatch script
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun on this machine
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm",
                                     slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in {"submitit_folder", "max_num_timeout"}})
    sbatch = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --signal=USR2@120", "#SBATCH --time=1440"):
        assert line in sbatch, sbatch


def test_trainer_takes_its_shape_from_the_slurm_allocation(tmp_path, monkeypatch):
    from museg_lit.builders import cluster_plugins

    monkeypatch.chdir(tmp_path)
    cfg = _hydra_compose([])
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (1, 1)
    assert cfg.trainer.use_distributed_sampler is False and cluster_plugins() == []
    # inside the job submitit started: the allocation's nodes x tasks per node, and Lightning's SLURM
    # environment without its own requeue (submitit requeues)
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_JOB_NAME", "museg")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.chdir(tmp_path)
    cfg = _hydra_compose([])
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 8)
    (plugin,) = cluster_plugins()
    assert type(plugin).__name__ == "SLURMEnvironment" and plugin.auto_requeue is False
