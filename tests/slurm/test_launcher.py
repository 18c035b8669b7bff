"""The project's ``hydra/launcher=slurm`` on a real single-node SLURM cluster (``make test-slurm``).

Every test starts ``python -m museg_lit.train -m hydra/launcher=slurm ...`` the way a user does (from
a working directory of its own, no ``paths.*`` key; (a) without ``MUSEG_ROOT``, the others with it),
with only what this 2-core node needs
on top of the launcher's GPU-node defaults (``partition``, ``gpus_per_node=0``, ``cpus_per_task``,
``mem_gb``: README "Multi-node on SLURM" lists them) and a step cap. The launching command blocks
until its jobs end, as on a real cluster. Checked:

(a) one training job trains and logs to MLflow; (b) a 2-job reward-weight sweep runs as one job
array, one MLflow run per job tagged with the sweep and the array; (c) a job of 2 tasks on the node
trains with 2-process FSDP2 on CPU, its ranks built by Lightning's SLURM environment from srun's
variables; (d) preemption (``scontrol requeue``) and the timeout signal (USR2, what
``#SBATCH --signal`` sends before the time limit): the job is requeued and resumes from its newest
complete checkpoint, in the same job directory and the same MLflow run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.slurm.cluster import SlurmCluster

pytestmark = pytest.mark.slurm

# what a 2-core node without GPUs needs on top of conf/hydra/launcher/slurm.yaml
NODE = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4"]
COMMAND_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def museg_root(tmp_path_factory) -> Path:
    """One MUSEG_ROOT for the tests that set it: the generated videos are made once and shared."""
    return tmp_path_factory.mktemp("museg_root")


class Multirun:
    """``python -m museg_lit.train -m <NODE> <overrides>`` started in the background."""

    def __init__(self, cluster: SlurmCluster, root: Path, *overrides: str, museg_root: bool = True):
        """With ``museg_root`` everything goes to ``root`` (MUSEG_ROOT); without, to the directory the
        command runs from, ``root`` itself."""
        self.cluster, self.root = cluster, root
        self.cwd = root / "cwd" if museg_root else root
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.sweeps_before = set(root.glob("logs/*/multiruns/*"))
        env = {k: v for k, v in cluster.env.items() if k != "MUSEG_ROOT"}
        env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        if museg_root:
            env["MUSEG_ROOT"] = str(root)
        self.start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "museg_lit.train", "-m", *NODE, *overrides],
                                     cwd=self.cwd, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

    def sweep_dir(self, timeout: float = 120) -> Path:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = set(self.root.glob("logs/*/multiruns/*")) - self.sweeps_before
            if new:
                (sweep,) = new
                return sweep
            assert self.proc.poll() is None, self.output()
            time.sleep(0.5)
        raise TimeoutError(f"no sweep folder after {timeout} s")

    def job_ids(self, sweep: Path, count: int, timeout: float = 120) -> list[str]:
        """SLURM job ids of the sweep's jobs (submitit's folders ``.submitit/<id>``), once submitted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = [p.name for p in (sweep / ".submitit").glob("*")]
            # an array has a folder per task (<array id>_<task>) beside one for the array id itself
            ids = sorted(n for n in names if re.fullmatch(r"\d+_\d+", n)) or sorted(
                n for n in names if re.fullmatch(r"\d+", n))
            if len(ids) >= count:
                return ids
            assert self.proc.poll() is None, self.output()
            time.sleep(0.5)
        raise TimeoutError(f"{count} jobs not submitted after {timeout} s\n{self.cluster.debug_report()}")

    def output(self) -> str:
        return self.proc.stdout.read()[-6000:] if self.proc.stdout else ""

    def wait(self, sweep: Path | None = None) -> float:
        try:
            out, _ = self.proc.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            pytest.fail(f"still running after {COMMAND_TIMEOUT_S} s:\n{out[-4000:]}\n{self._job_logs(sweep)}")
        elapsed = time.monotonic() - self.start
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}:\n{out[-4000:]}\n{self._job_logs(sweep)}"
        return elapsed

    def _job_logs(self, sweep: Path | None) -> str:
        if sweep is None:
            return self.cluster.debug_report()
        logs = [f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(sweep.glob(".submitit/*/*.err"))]
        return "\n".join(logs) + "\n" + self.cluster.debug_report()


def _runs(root: Path, experiment: str, sweep: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/logs/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return sorted(client.search_runs([found.experiment_id], f"tags.sweep_id = '{sweep.name}'"),
                  key=lambda r: int(r.data.tags["job_num"]))


def _steps(root: Path, run_id: str, key: str = "train/reward") -> list[int]:
    return sorted(m.step for m in MlflowClient(f"sqlite:///{root}/logs/mlflow.db").get_metric_history(run_id, key))


def test_a_one_training_job_trains_and_logs_to_mlflow(slurm_cluster, tmp_path):
    """Without MUSEG_ROOT, from a working directory of its own, and with a ``setup`` line that moves the
    job elsewhere before srun: the job still writes under the directory the command ran from."""
    root, elsewhere = tmp_path / "submitted_from", tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = Multirun(slurm_cluster, root, "trainer.max_steps=2", f"hydra.launcher.setup=['cd {elsewhere}']",
                   museg_root=False)
    sweep = run.sweep_dir()
    (job_id,) = run.job_ids(sweep, 1)
    elapsed = run.wait(sweep)
    print(f"(a) one job {job_id}: {elapsed:.1f} s")
    (mlrun,) = _runs(root, "train", sweep)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == f"{sweep.name}/0"
    assert mlrun.data.tags["slurm_job_id"] == job_id and mlrun.data.tags["run_dir"] == str(sweep / "0")
    assert _steps(root, mlrun.info.run_id) == [0, 1]  # MLflow steps count from 0
    assert (sweep / "0" / "checkpoints" / "step_00000002.ckpt").is_file()
    assert slurm_cluster.wait_for_state(job_id, ["COMPLETED", "FAILED", "CANCELLED"], timeout=60) == "COMPLETED"
    assert sweep.parent == root / "logs" / "train" / "multiruns" and not any(elsewhere.iterdir())


def test_b_reward_weight_sweep_runs_as_one_job_array(slurm_cluster, museg_root):
    swept = "reward.phases.main.weights.segment_matching"
    run = Multirun(slurm_cluster, museg_root, "trainer.max_steps=2", f"{swept}=0.5,1.0")
    sweep = run.sweep_dir()
    ids = run.job_ids(sweep, 2)
    elapsed = run.wait(sweep)
    print(f"(b) 2-job sweep as array {ids}: {elapsed:.1f} s")
    array_ids = {i.split("_")[0] for i in ids}
    assert len(array_ids) == 1 and sorted(i.split("_")[1] for i in ids) == ["0", "1"], ids  # one array
    runs = _runs(museg_root, "train", sweep)
    assert [r.info.run_name for r in runs] == [f"{sweep.name}/0", f"{sweep.name}/1"]
    assert [r.data.params[swept] for r in runs] == ["0.5", "1.0"]
    assert [r.data.tags[f"override.{swept}"] for r in runs] == ["0.5", "1.0"]
    (array_id,) = array_ids
    assert [r.data.tags["slurm_array_job"] for r in runs] == [f"{array_id}_0", f"{array_id}_1"]
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags["sweep_dir"] == str(sweep)
        assert (sweep / r.data.tags["job_num"] / "checkpoints" / "step_00000002.ckpt").is_file()


def test_c_two_tasks_train_fsdp2_with_ranks_from_slurm(slurm_cluster, museg_root):
    run = Multirun(slurm_cluster, museg_root, "hydra.launcher.tasks_per_node=2", "trainer=fsdp_cpu",
                   "trainer.max_steps=2")
    sweep = run.sweep_dir()
    (job_id,) = run.job_ids(sweep, 1)
    elapsed = run.wait(sweep)
    print(f"(c) 2-task FSDP2 job {job_id}: {elapsed:.1f} s")
    logs = {p.name: p.read_text() for p in (sweep / ".submitit" / job_id).glob("*_log.*")}
    assert {f"{job_id}_0_log.out", f"{job_id}_1_log.out"} <= set(logs), sorted(logs)  # srun started 2 tasks
    both = "\n".join(logs.values())
    # Lightning's SLURM environment built the ranks (no process of its own launched): 2 ranks, gloo
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in both, both[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in both, both[-3000:]
    assert "All distributed processes registered. Starting with 2 processes" in both  # the gloo rendezvous
    (mlrun,) = _runs(museg_root, "train", sweep)  # rank 0 alone tracks
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["trainer.strategy._target_"] == "museg_lit.distributed.strategy.FSDP2Strategy"
    assert (sweep / "0" / "checkpoints" / "step_00000002.ckpt").exists()


@pytest.mark.parametrize("how", ["scontrol requeue", "USR2"])
def test_d_preempted_job_is_requeued_and_resumes_in_the_same_run(slurm_cluster, museg_root, how):
    """Long enough to be interrupted after its first checkpoint; ``scontrol requeue`` kills and requeues
    it (SLURM's preemption), USR2 makes submitit requeue it (the signal sent before the time limit)."""
    steps, every = 30, 4
    run = Multirun(slurm_cluster, museg_root, f"trainer.max_steps={steps}",
                   f"callbacks.checkpoint.every_n_train_steps={every}", "callbacks.checkpoint.keep_last=-1",
                   "callbacks.completions_table.every_n_steps=100")
    sweep = run.sweep_dir()
    (job_id,) = run.job_ids(sweep, 1)
    ckpts = sweep / "0" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (ckpts / f"step_{every:08d}.ckpt").exists():
        assert time.monotonic() < deadline, run._job_logs(sweep)
        assert run.proc.poll() is None, run.output()
        time.sleep(0.2)
    run_id = (sweep / "0" / "mlflow_run_id").read_text().strip()
    if how == "USR2":
        slurm_cluster.signal(job_id, "USR2")
    else:
        slurm_cluster.requeue(job_id)
    interrupted_at = time.monotonic()
    # back in the queue (PENDING until its begin time) once the interrupted run is gone, or already
    # restarted (Restarts=1; it loads for seconds before its first step): the newest complete
    # checkpoint then is the one to resume from
    deadline = time.monotonic() + 90
    while not (slurm_cluster.job_state(job_id) == "PENDING"
               or int(slurm_cluster.job_info(job_id).get("Restarts", "0")) >= 1):
        assert time.monotonic() < deadline, run._job_logs(sweep)
        time.sleep(0.2)
    newest = max(int(p.stem.split("_")[1]) for p in ckpts.glob("step_*.ckpt"))
    elapsed = run.wait(sweep)
    print(f"({how}) job {job_id}: {elapsed:.1f} s in all, {time.monotonic() - interrupted_at:.1f} s after it")

    (mlrun,) = _runs(museg_root, "train", sweep)  # one MLflow run, continued
    tags = mlrun.data.tags
    assert mlrun.info.run_id == run_id == (sweep / "0" / "mlflow_run_id").read_text().strip()
    assert mlrun.info.status == "FINISHED"
    assert tags["resume_count"] == "1" and tags["slurm_restart_count"] == "1" and tags["slurm_job_id"] == job_id
    resumed = Path(tags["resumed_from"])
    assert resumed.parent == ckpts and resumed.name.startswith("step_")
    resumed_step = int(resumed.stem.split("_")[1])
    assert resumed_step == newest and every <= newest < steps and newest % every == 0
    assert (ckpts / f"step_{steps:08d}.ckpt").is_file()
    logged = _steps(museg_root, run_id)
    assert set(logged) == set(range(steps))  # no step missing from the curve (MLflow steps count from 0)
    print(f"({how}) resumed from step {resumed_step} of {steps}")
    # the job's record once it left COMPLETING (a requeued job's first record says PENDING)
    assert slurm_cluster.wait_for_state(job_id, ["COMPLETED", "FAILED", "CANCELLED"], timeout=60) == "COMPLETED"
    assert os.path.isdir(sweep / ".submitit" / job_id)
