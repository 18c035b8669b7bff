"""What a multirun resolves in the launching process, before any job exists.

Hydra's sweeper resolves ``hydra.sweep.dir`` and the submitit launchers resolve their whole
``hydra.launcher`` node (``submitit_folder``) before Hydra's config singleton is set: any
``${hydra:...}`` reached from there failed with "HydraConfig was not set" (every documented sweep
and SLURM command did). These tests resolve exactly those nodes with the singleton cleared, for
both entry points, every launcher and every experiment, with and without ``MUSEG_ROOT``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from museg_lit.config import CONF_DIR
from museg_lit.resolvers import at_least_one, root_dir

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
LAUNCHERS = ("basic", "submitit_local", "slurm")


def _compose(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def _launching_process_view(cfg):
    """Resolve what the sweeper and the launcher resolve before the first job (singleton unset)."""
    HydraConfig.instance().cfg = None
    assert not HydraConfig.initialized()
    sweep_dir = str(cfg.hydra.sweep.dir)  # hydra.sweep.subdir is the job's (hydra.job.num)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    return sweep_dir, launcher


@pytest.fixture(autouse=True)
def _no_hydra_singleton():
    yield
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize("museg_root", [False, True], ids=["cwd", "MUSEG_ROOT"])
@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_sweep_dir_and_launcher_resolve_before_hydra_config_exists(tmp_path, monkeypatch, config_name, launcher,
                                                                   museg_root):
    root = tmp_path / "root"
    monkeypatch.chdir(tmp_path)
    if museg_root:
        monkeypatch.setenv("MUSEG_ROOT", str(root))
    else:
        monkeypatch.delenv("MUSEG_ROOT", raising=False)
    cfg = _compose(config_name, [f"hydra/launcher={launcher}"])
    sweep_dir, params = _launching_process_view(cfg)
    expected_root = root if museg_root else tmp_path
    task = "train" if config_name == "train" else "eval"
    assert Path(sweep_dir).parent == expected_root / "logs" / task / "multiruns"
    if launcher != "basic":
        assert params["submitit_folder"] == f"{sweep_dir}/.submitit/%j"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_launches(tmp_path, monkeypatch, experiment):
    """Each experiment's sweep folder (its task_name) under the launcher that resolves the most keys
    in the launching process (the launchers' own keys do not depend on the experiment)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUSEG_ROOT", raising=False)
    cfg = _compose("train", [f"+experiment={experiment}", "hydra/launcher=slurm"])
    sweep_dir, _ = _launching_process_view(cfg)
    assert Path(sweep_dir).parent == tmp_path / "logs" / cfg.task_name / "multiruns"


# keys that only a job resolves (its own folder, the data choice of an evaluation): (file, dotted key)
JOB_ONLY = {("paths/default.yaml", "output_dir"), ("eval.yaml", "dataset")}


def _hydra_interpolations(node, prefix=""):
    """(dotted key, value) of every ``${hydra:...}`` in a loaded YAML tree, outside its ``hydra:`` node."""
    from omegaconf import DictConfig, ListConfig

    keys = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        child = node._get_node(key)
        dotted = f"{prefix}{key}"
        if dotted == "hydra":
            continue
        if isinstance(child, (DictConfig, ListConfig)):
            yield from _hydra_interpolations(child, dotted + ".")
        elif "${hydra:" in str(child._value()):
            yield dotted, str(child._value())


def test_no_hydra_resolver_outside_the_keys_only_a_job_resolves():
    """The static rule behind the tests above, over every file of conf/: ``${hydra:...}`` only in keys
    that a launching process never resolves."""
    found = {(str(p.relative_to(CONF_DIR)), key): value for p in sorted(CONF_DIR.rglob("*.yaml"))
             for key, value in _hydra_interpolations(OmegaConf.load(p))}
    assert set(found) <= JOB_ONLY, {k: v for k, v in found.items() if k not in JOB_ONLY}
    assert set(found) == JOB_ONLY  # the list is not stale


def test_a_job_gets_the_launch_root_even_when_it_runs_elsewhere(tmp_path, monkeypatch):
    """Hydra rebuilds each job's config and copies the launching config's resolver cache into it
    (``load_sweep_config``); ``museg.root`` is cached, so a job that runs in another directory (or
    sees another MUSEG_ROOT) keeps the launch's root. MUSEG_ROOT wins over the directory and is made
    absolute; an empty one counts as unset."""
    launch, elsewhere = tmp_path / "launch", tmp_path / "elsewhere"
    launch.mkdir(), elsewhere.mkdir()
    monkeypatch.delenv("MUSEG_ROOT", raising=False)
    monkeypatch.chdir(launch)
    master = _compose("train", ["hydra/launcher=submitit_local"])
    sweep_dir, _ = _launching_process_view(master)  # resolves paths.root_dir in the launching process
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MUSEG_ROOT", str(tmp_path / "other"))
    job = _compose("train", ["hydra/launcher=submitit_local"])
    OmegaConf.copy_cache(from_config=master, to_config=job)  # what load_sweep_config does
    assert job.paths.root_dir == str(launch) and job.hydra.sweep.dir == sweep_dir
    assert _compose("train", []).paths.root_dir == str(tmp_path / "other")  # a new composition: its own
    monkeypatch.setenv("MUSEG_ROOT", "rel/root")
    assert root_dir() == str(elsewhere / "rel" / "root")
    monkeypatch.setenv("MUSEG_ROOT", "")
    assert root_dir() == str(elsewhere)


def test_slurm_tasks_per_node_follow_gpus_and_never_drop_to_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (at_least_one(8), at_least_one(0), at_least_one(None), at_least_one("2")) == (8, 1, 1, 2)
    for gpus, tasks in ((8, 8), (0, 1)):
        cfg = _compose("train", ["hydra/launcher=slurm", f"hydra.launcher.gpus_per_node={gpus}"])
        assert OmegaConf.to_container(cfg.hydra.launcher, resolve=True)["tasks_per_node"] == tasks
    cfg = _compose("train", ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
                             "hydra.launcher.tasks_per_node=2"])
    assert cfg.hydra.launcher.tasks_per_node == 2


def test_doctests_of_the_launch_helpers():
    import doctest

    import museg_lit.distributed.allocation as allocation
    import museg_lit.resolvers as resolvers
    import museg_lit.tracking as tracking

    for module in (resolvers, allocation, tracking):
        failed, _ = doctest.testmod(module)
        assert failed == 0, module.__name__


def test_a_local_sweep_job_uses_its_cpus_per_task_not_every_core(tmp_path, monkeypatch):
    """submitit's local executor does not pass cpus_per_task on: the job reads it from its Hydra config,
    and exports it (Lightning's own launcher would otherwise divide every core among its processes)."""
    import torch

    from museg_lit.distributed.allocation import apply_cpu_allocation

    monkeypatch.chdir(tmp_path)
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "SUBMITIT_EXECUTOR"):
        monkeypatch.setenv(var, "0")  # registers each with monkeypatch, so the test's changes are undone
        monkeypatch.delenv(var)
    before = torch.get_num_threads()
    try:
        cfg = _compose("train", ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1"])
        HydraConfig.instance().set_config(cfg)
        assert apply_cpu_allocation() is None and torch.get_num_threads() == before  # not a launcher's job
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")  # a local sweep inside a SLURM allocation: still 1
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
        assert apply_cpu_allocation() == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # a SLURM job: its allocation
        assert apply_cpu_allocation() == 3 and torch.get_num_threads() == 3
        torch.set_num_threads(before)  # the user's explicit choice wins (here: the one just exported)
        assert apply_cpu_allocation() is None and torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
