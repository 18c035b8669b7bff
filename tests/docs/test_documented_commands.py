"""Every documented command runs as written (``make test-docs``; ``.ci/run`` runs this tier after
the default suite).

The commands are collected from the documentation (:mod:`tests.docs.commands`), not copied here:
a command added to the README runs in this test unless it is listed in :data:`NOT_RUN_HERE` with
the reason it cannot run on a CPU machine without network. The only additions are the documented
environment ``MUSEG_ROOT`` (everything a command writes goes to a temporary folder instead of the
clone, which must stay as it was) and ``HF_HUB_OFFLINE=1``; the commands run from the repository root, as the README says,
exactly as written. Multirun commands are then checked against the README's promises (one sweep
folder, one job folder and one MLflow run per job, named and tagged by the sweep), and servers
(``make mlflow-ui``) run last, until they answer, and must show the runs the commands above made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.docs.commands import REPO_ROOT, DocCommand, documented_commands

pytestmark = pytest.mark.docs

GPU = "needs a GPU and a real checkpoint (weights are not on this machine)"
NETWORK = "downloads from the network (none at test time)"
NOT_RUN_HERE: dict[str, str] = {
    "make install": "CI's own set-up command: .ci/run runs it, in a fresh virtual environment, before this test",
    "make test": "CI's own test command: .ci/run runs it before this test",
    "make data": NETWORK + ": MUSEG's annotation files",
    "hf download Darwin-Project/MUSEG-7B --local-dir /ckpt/MUSEG-7B": NETWORK + ": MUSEG-7B's weights",
    "huggingface-cli download sentence-transformers/all-MiniLM-L6-v2 --local-dir /ckpt/all-MiniLM-L6-v2":
        NETWORK + ": the sentence-similarity model",
    "python -m museg_lit.train +experiment=stage1 model.path=/models/Qwen2.5-VL-7B-Instruct trainer=gpu": GPU,
    "python -m museg_lit.train +experiment=stage2 model.path=/runs/stage1/export trainer=gpu": GPU,
    "python -m museg_lit.train +experiment=stage1 model.path=/models/Qwen2.5-VL-7B-Instruct trainer=gpu "
    "run_name=stage1-7b": GPU,
    "python -m museg_lit.train +experiment=stage1 model.path=/models/Qwen2.5-VL-7B-Instruct trainer=fsdp "
    "run_name=stage1-7b": GPU,
    "python -m museg_lit.train resume=logs/train/runs/stage1-7b/checkpoints/step_00000100.ckpt":
        GPU + ": continues the stage1-7b run above (tests/integration/test_checkpoint_config.py resumes a "
        "checkpoint alone on CPU)",
    "python -m museg_lit.train resume=.../step_00000400.ckpt trainer.max_steps=600":
        "a path left for the reader to fill in (`...`); resuming a finished run longer is tested in "
        "tests/integration/test_checkpoint_config.py",
    "python -m museg_lit.export logs/train/runs/stage1-7b/checkpoints/step_00000100.ckpt [OUT_DIR]":
        GPU + ": a stage1-7b checkpoint (export from a checkpoint alone: tests/integration/test_checkpoint_config.py)",
    "python -m museg_lit.train -m hydra/launcher=slurm hydra.launcher.partition=gpu hydra.launcher.nodes=2 "
    "hydra.launcher.gpus_per_node=8 hydra.launcher.timeout_min=1440 hydra.launcher.max_num_timeout=5 "
    "+experiment=stage1 trainer=fsdp model.path=/models/Qwen2.5-VL-7B-Instruct":
        GPU + " on a SLURM cluster with GPU nodes; the same launcher runs on a real single-node cluster "
        "in the SLURM tier (make test-slurm, tests/slurm)",
    "make eval-charades MODEL=/ckpt/MUSEG-7B VIDEO_ROOT=data/museg/videos": GPU + " and Charades-STA's videos",
    "make eval-etbench MODEL=/ckpt/MUSEG-7B SENTSIM=/ckpt/all-MiniLM-L6-v2": GPU + " and E.T. Bench's videos",
    "make eval-etbench-subset MODEL=/ckpt/MUSEG-7B SENTSIM=/ckpt/all-MiniLM-L6-v2": GPU + " and E.T. Bench's videos",
    "python -m museg_lit.eval task=ground_then_answer data=video_mme model=qwen2_5_vl_7b model.path=/ckpt/MUSEG-7B":
        GPU + " and Video-MME",
    "python -m museg_lit.eval task=ground_then_answer data=longvideobench model=qwen2_5_vl_7b "
    "model.path=/ckpt/MUSEG-7B": GPU + " and LongVideoBench",
    "python -m museg_lit.eval task=ground_then_answer data=mlvu model=qwen2_5_vl_7b model.path=/ckpt/MUSEG-7B":
        GPU + " and MLVU",
}
# commands that serve until stopped: where they answer once they are up
SERVERS = {"make mlflow-ui": "http://127.0.0.1:5000"}
COMMAND_TIMEOUT_S = 600

COMMANDS = documented_commands()
RUNNABLE = [c for c in COMMANDS if c.text not in NOT_RUN_HERE]
# servers last, so that they show what the other commands wrote
ORDERED = [c for c in RUNNABLE if c.text not in SERVERS] + [c for c in RUNNABLE if c.text in SERVERS]


@pytest.fixture(scope="module")
def museg_root(tmp_path_factory) -> Path:
    """One MUSEG_ROOT for all commands, as a user's would be: generated data is made once and shared."""
    return tmp_path_factory.mktemp("museg_root")


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MUSEG_ROOT", "PYTEST_CURRENT_TEST")}
    env.update({"MUSEG_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env


def _clone_state() -> set[str]:
    """Untracked and ignored paths of the clone (``git status``): a command must add none of them."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    return {line[3:] for line in out.splitlines() if line[:2] in ("??", "!!")
            and "__pycache__" not in line and ".egg-info" not in line}


def _sweep_dirs(root: Path) -> set[Path]:
    return set(root.glob("logs/*/multiruns/*"))


def test_every_command_is_run_or_listed_with_its_reason():
    """A listed command that the documentation no longer holds is a stale excuse; remove it."""
    texts = {c.text for c in COMMANDS}
    stale = sorted(set(NOT_RUN_HERE) - texts)
    assert not stale, f"NOT_RUN_HERE lists commands no document holds: {stale}"
    assert not set(SERVERS) - texts
    assert RUNNABLE, "no documented command runs on CPU?"


@pytest.mark.parametrize("command", ORDERED, ids=[c.text[:90] for c in ORDERED])
def test_documented_command_runs_as_written(command: DocCommand, museg_root: Path):
    clone_before = _clone_state()
    if command.text in SERVERS:
        _check_server(command, SERVERS[command.text], museg_root)
        return
    sweeps_before = _sweep_dirs(museg_root)
    start = time.perf_counter()
    proc = subprocess.run(["bash", "-c", command.text], cwd=REPO_ROOT, env=_env(museg_root), text=True,
                          capture_output=True, timeout=COMMAND_TIMEOUT_S)
    tail = [line for line in (proc.stdout + proc.stderr).splitlines() if "[HYDRA]" in line or "sweep" in line]
    print(f"\n{command}: exit {proc.returncode} in {time.perf_counter() - start:.1f} s", *tail[-6:], sep="\n  ")
    assert proc.returncode == 0, f"{command}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    if _is_multirun(command.text):
        _check_sweep(command, _sweep_dirs(museg_root) - sweeps_before, museg_root)
    added = _clone_state() - clone_before
    assert not added, f"{command} wrote into the clone despite MUSEG_ROOT: {sorted(added)[:10]}"


def _is_multirun(command: str) -> bool:
    """``python -m museg_lit.<entry> ... -m|--multirun ...``

    >>> _is_multirun("python -m museg_lit.train"), _is_multirun("python -m museg_lit.train -m a=1,2")
    (False, True)
    """
    words = command.split()
    entry = next((i for i, w in enumerate(words) if w.startswith("museg_lit.")), None)
    return entry is not None and bool({"-m", "--multirun"} & set(words[entry + 1:]))


def _swept_values(command: str) -> int:
    """Jobs of a basic sweep: the product of the comma-separated values on the command line."""
    jobs = 1
    for word in command.split():
        if "=" in word and not word.startswith("hydra") and "," in word.split("=", 1)[1]:
            jobs *= len(word.split("=", 1)[1].split(","))
    return jobs


def _check_sweep(command: DocCommand, new_sweeps: set[Path], root: Path) -> None:
    """README "Sweeps and comparing runs": one sweep folder, a job folder per job holding its
    MLflow run id, and one MLflow run per job named ``<sweep id>/<job>`` and tagged with the sweep."""
    from mlflow.tracking import MlflowClient

    assert len(new_sweeps) == 1, f"{command}: expected one new sweep folder, found {sorted(new_sweeps)}"
    (sweep,) = new_sweeps
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == _swept_values(command.text), f"{command}: job folders {jobs}"
    client = MlflowClient(f"sqlite:///{root}/logs/mlflow.db")
    experiment = client.get_experiment_by_name(sweep.parent.parent.name)  # logs/<task_name>/multiruns/<id>
    runs = client.search_runs([experiment.experiment_id], f"tags.sweep_id = '{sweep.name}'")
    assert sorted(r.info.run_name for r in runs) == [f"{sweep.name}/{job.name}" for job in jobs]
    for run in runs:
        job_dir = sweep / run.data.tags["job_num"]
        assert run.info.status == "FINISHED" and run.data.tags["sweep_dir"] == str(sweep)
        assert (job_dir / "mlflow_run_id").read_text().strip() == run.info.run_id
        assert any(k.startswith("override.") for k in run.data.tags)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read().decode())


def _check_server(command: DocCommand, url: str, root: Path) -> None:
    """Start the server as written, wait until it answers, check it serves this root's runs, stop it.
    Runs after the other commands (it needs their runs in the store)."""
    import socket
    from urllib.parse import urlparse

    address = urlparse(url)
    with socket.socket() as probe:
        if probe.connect_ex((address.hostname, address.port)) == 0:
            pytest.fail(f"{command}: something already listens on {url}; stop it and rerun")
    proc = subprocess.Popen(["bash", "-c", command.text], cwd=REPO_ROOT, env=_env(root), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, last_error = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{command} exited with {proc.returncode}:\n{proc.stdout.read()[-4000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError as err:
                last_error = err
            time.sleep(1)
        else:
            pytest.fail(f"{command}: no answer from {url} within 120 s ({last_error})")
        from mlflow.tracking import MlflowClient

        served = {e["name"] for e in _get_json(f"{url}/ajax-api/2.0/mlflow/experiments/search?max_results=1000")
                  .get("experiments", [])}
        written = {e.name for e in MlflowClient(f"sqlite:///{root}/logs/mlflow.db").search_experiments()}
        assert len(written) > 1 and served == written, (
            f"{command} serves experiments {sorted(served)}; the commands above wrote {sorted(written)}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
