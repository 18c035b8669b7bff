"""Smoke tests of the single-node SLURM cluster: sbatch, submitit (1 and 2 tasks), requeue and USR2."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import submitit

from tests.slurm.cluster import SlurmCluster
from tests.slurm.payloads import CountedStarts, describe_task

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 120


def make_executor(folder: Path, **overrides) -> submitit.AutoExecutor:
    """A submitit executor for the ``debug`` partition; jobs import ``tests.slurm.payloads`` from the repo."""
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        slurm_partition="debug",
        cpus_per_task=1,
        mem_gb=1,
        gpus_per_node=0,
        tasks_per_node=1,
        timeout_min=5,
        slurm_setup=[f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
    )
    executor.update_parameters(**overrides)
    return executor


def wait_done(job: submitit.Job, cluster: SlurmCluster, timeout: float = JOB_TIMEOUT_S) -> None:
    """Poll ``job.done`` (result pickle, else a forced sacct call) until True; raises after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not job.done(force_check=True):
        if time.monotonic() > deadline:
            logs = f"stdout:\n{job.stdout()}\nstderr:\n{job.stderr()}"
            raise TimeoutError(
                f"submitit job {job.job_id} not done after {timeout}s\n{logs}\n{cluster.debug_report()}"
            )
        time.sleep(0.5)


def wait_for_file(path: Path, cluster: SlurmCluster, timeout: float = JOB_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written after {timeout}s\n{cluster.debug_report()}")
        time.sleep(0.2)


def starts(marker_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(marker_dir.glob("start-*.json"))]


def test_cluster_is_up(slurm_cluster: SlurmCluster) -> None:
    assert slurm_cluster.node_state() == "idle"
    assert slurm_cluster.startup_s is not None and slurm_cluster.startup_s < 30


@pytest.mark.timeout(JOB_TIMEOUT_S)
def test_sbatch_wrap_hostname(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "hostname.out"
    job_id = slurm_cluster.sbatch(f"--output={out}", "--wrap", "hostname")
    states = slurm_cluster.wait_for_jobs([job_id], timeout=60)
    assert states[job_id] == "COMPLETED"
    assert slurm_cluster.job_info(job_id).get("ExitCode") == "0:0"
    assert out.read_text().strip() == socket.gethostname()


@pytest.mark.timeout(JOB_TIMEOUT_S)
def test_two_one_cpu_jobs_run_at_once(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    args = (f"--output={tmp_path}/%j.out", "--cpus-per-task=1", "--mem=1G", "--wrap", "sleep 4")
    ids = [slurm_cluster.sbatch(*args) for _ in range(2)]
    deadline = time.monotonic() + 30
    while {slurm_cluster.job_state(j) for j in ids} != {"RUNNING"}:
        assert time.monotonic() < deadline, {j: slurm_cluster.job_state(j) for j in ids}
        time.sleep(0.2)
    assert set(slurm_cluster.wait_for_jobs(ids, timeout=60).values()) == {"COMPLETED"}


@pytest.mark.timeout(JOB_TIMEOUT_S)
def test_submitit_single_task_result(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = make_executor(tmp_path / "submitit").submit(describe_task, 21)
    wait_done(job, slurm_cluster)
    result = job.result()
    assert result["x2"] == 42
    assert result["SLURM_JOB_ID"] == job.job_id
    assert result["SLURM_PROCID"] == "0" and result["num_tasks"] == 1
    # sacct --completion (bin/sacct) gives submitit the final state without slurmdbd, once the job has
    # left COMPLETING (the result pickle is written before that)
    deadline = time.monotonic() + 30
    while (
        state := job.watcher.get_state(job.job_id, mode="force")
    ) == "UNKNOWN" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state == "COMPLETED"


@pytest.mark.timeout(JOB_TIMEOUT_S)
def test_submitit_two_tasks(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = make_executor(tmp_path / "submitit", tasks_per_node=2).submit(describe_task, 1)
    wait_done(job, slurm_cluster)
    results = job.results()
    assert len(results) == 2
    assert sorted(r["SLURM_PROCID"] for r in results) == ["0", "1"]
    assert sorted(r["global_rank"] for r in results) == [0, 1]
    assert {r["SLURM_NTASKS"] for r in results} == {"2"}
    assert {r["SLURM_JOB_ID"] for r in results} == {job.job_id}


@pytest.mark.timeout(3 * JOB_TIMEOUT_S)
def test_scontrol_requeue_reruns_the_submission(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """``scontrol requeue``: SLURM sends SIGTERM (submitit bypasses it), SIGKILL after KillWait, reruns."""
    markers = tmp_path / "markers"
    markers.mkdir()
    job = make_executor(tmp_path / "submitit").submit(CountedStarts(), str(markers))
    wait_for_file(markers / "start-0.json", slurm_cluster)
    slurm_cluster.requeue(job.job_id)
    wait_done(job, slurm_cluster, timeout=2 * JOB_TIMEOUT_S)
    assert job.result() == {"starts": 2, "requeued": True, "restart_count": "1"}
    records = starts(markers)
    assert [r["SLURM_RESTART_COUNT"] for r in records] == [None, "1"]
    assert {r["SLURM_JOB_ID"] for r in records} == {job.job_id}
    assert "Bypassing signal SIGTERM" in (job.stderr() or "")
    assert slurm_cluster.job_info(job.job_id).get("Restarts") == "1"


@pytest.mark.timeout(3 * JOB_TIMEOUT_S)
def test_usr2_checkpoints_and_requeues(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """``scancel --signal=USR2``: submitit's handler checkpoints, runs ``scontrol requeue`` and exits."""
    markers = tmp_path / "markers"
    markers.mkdir()
    job = make_executor(tmp_path / "submitit").submit(CountedStarts(), str(markers))
    wait_for_file(markers / "start-0.json", slurm_cluster)
    slurm_cluster.signal(job.job_id, "USR2")
    wait_done(job, slurm_cluster, timeout=2 * JOB_TIMEOUT_S)
    assert job.result() == {"starts": 2, "requeued": True, "restart_count": "1"}
    assert [r["SLURM_RESTART_COUNT"] for r in starts(markers)] == [None, "1"]
    assert "Caught signal SIGUSR2" in (job.stderr() or "")  # submitit logs WARNING to stderr, INFO to stdout
    info = job.stdout() or ""
    assert "Calling checkpoint method." in info
    assert f"Requeued job {job.job_id}" in info


@pytest.mark.timeout(3 * JOB_TIMEOUT_S)
def test_time_limit_signal_requeues(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """``#SBATCH --time=1 --signal=USR2@50``: slurmctld sends USR2 ~10 s in (checked every few seconds)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    executor = make_executor(tmp_path / "submitit", timeout_min=1, slurm_signal_delay_s=50)
    job = executor.submit(CountedStarts(), str(markers))
    wait_done(job, slurm_cluster, timeout=2 * JOB_TIMEOUT_S)
    assert job.result()["starts"] == 2
    assert "Caught signal SIGUSR2" in (job.stderr() or "")


@pytest.mark.timeout(JOB_TIMEOUT_S)
def test_cancelled_job_is_reported(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """A job that dies without a result pickle: submitit learns CANCELLED from sacct --completion."""
    markers = tmp_path / "markers"
    markers.mkdir()
    job = make_executor(tmp_path / "submitit").submit(CountedStarts(), str(markers))
    wait_for_file(markers / "start-0.json", slurm_cluster)
    slurm_cluster.cancel(job.job_id)
    wait_done(job, slurm_cluster, timeout=60)
    job._results_timeout_s = 1  # submitit otherwise waits 15 s for a result pickle (shared-filesystem lag)
    with pytest.raises(submitit.core.utils.UncompletedJobError, match="CANCELLED"):
        job.result()
