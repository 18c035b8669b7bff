"""What a multirun resolves in the launching process, before any job exists.

Hydra's sweeper resolves ``hydra.sweep.dir`` and the submitit launchers resolve their whole
``hydra.launcher`` node (``submitit_folder``) before Hydra's config singleton is set: any
``${hydra:...}`` reached from there failed with "HydraConfig was not set" (every documented sweep
and SLURM command did). These tests resolve exactly those nodes with the singleton cleared, for
both entry points, every launcher and every experiment, with and without ``MUSEG_ROOT``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

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


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_launches(tmp_path, monkeypatch, experiment, launcher):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUSEG_ROOT", raising=False)
    cfg = _compose("train", [f"+experiment={experiment}", f"hydra/launcher={launcher}"])
    sweep_dir, _ = _launching_process_view(cfg)
    assert Path(sweep_dir).parent == tmp_path / "logs" / cfg.task_name / "multiruns"


def test_no_hydra_resolver_is_reachable_from_the_launching_process():
    """The static rule behind the tests above: the keys a launching process resolves (every
    ``paths`` key but ``output_dir``, the job's own folder) use no ``${hydra:...}``."""
    for path in sorted((CONF_DIR / "paths").glob("*.yaml")):
        node = OmegaConf.load(path)
        for key in node:
            if key != "output_dir":
                assert "${hydra:" not in str(node._get_node(key)._value()), f"{path.name}: {key}"


def test_root_dir_is_the_launch_directory_in_a_job_started_elsewhere(tmp_path, monkeypatch):
    """Inside a job (Hydra's config set) the root is the directory Hydra was started from, even when
    the job's process runs elsewhere; MUSEG_ROOT wins over both and is made absolute."""
    monkeypatch.delenv("MUSEG_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert root_dir() == str(tmp_path)
    cfg = _compose("train", [])
    with open_dict(cfg.hydra):
        cfg.hydra.runtime.cwd = "/launch/dir"
    HydraConfig.instance().set_config(cfg)
    assert root_dir() == "/launch/dir"
    monkeypatch.setenv("MUSEG_ROOT", "rel/root")
    assert root_dir() == str(tmp_path / "rel" / "root")
    monkeypatch.setenv("MUSEG_ROOT", "")  # empty counts as unset
    assert root_dir() == "/launch/dir"


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
    """submitit's local executor does not pass cpus_per_task on: the job reads it from its Hydra config."""
    import torch

    from museg_lit.distributed.allocation import apply_cpu_allocation

    monkeypatch.chdir(tmp_path)
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(var, raising=False)
    before = torch.get_num_threads()
    try:
        cfg = _compose("train", ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1"])
        HydraConfig.instance().set_config(cfg)
        assert apply_cpu_allocation() is None and torch.get_num_threads() == before  # not a launcher's job
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
        assert apply_cpu_allocation() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")  # a SLURM job: its allocation
        assert apply_cpu_allocation() == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's explicit choice wins
        torch.set_num_threads(before)
        assert apply_cpu_allocation() is None and torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
