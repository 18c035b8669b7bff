"""Crash-safe checkpoints (museg_lit.checkpointing): run identity, atomic publish and delete, picking
the newest complete checkpoint, RNG round trip, and a process killed in the middle of a write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from museg_lit.checkpointing import (
    ResumableCheckpoint,
    ResumeError,
    discard,
    find_resume_checkpoint,
    is_complete,
    latest_checkpoint,
    publish,
    remove_stale_tmp,
    rng_state,
    run_dir_name,
    set_rng_state,
)
from museg_lit.tracking import override_tags, remember_run_id, run_label, stored_run_id, sweep_tags


def _ckpt(path: Path, step: int) -> Path:
    torch.save({"global_step": step, "w": torch.full((4,), float(step))}, path)
    return path


# ---------------------------------------------------------------- run identity
def test_run_dir_name_is_a_function_of_the_command():
    a = run_dir_name(None, ["trainer.max_steps=8", "seed=1"])
    assert a.startswith("auto-") and len(a) == len("auto-") + 10
    assert a == run_dir_name(None, ["seed=1", "trainer.max_steps=8"])  # order does not matter
    assert a == run_dir_name(None, ["seed=1", "resume=auto", "trainer.max_steps=8"])  # resume= does not count
    assert a != run_dir_name(None, ["seed=2", "trainer.max_steps=8"])
    assert run_dir_name(None, []) == "default"
    assert run_dir_name("try2", ["seed=1"]) == "try2"
    with pytest.raises(ValueError, match="plain directory name"):
        run_dir_name("a/b", [])


def test_run_dir_resolver_in_the_train_config(tmp_path):
    """The hydra.run.dir of conf/train.yaml, resolved the way `python -m museg_lit.train` does."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from museg_lit.config import CONF_DIR
    from museg_lit.resolvers import register_resolvers

    register_resolvers()
    overrides = [f"paths.root_dir={tmp_path}", "seed=3"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    assert run_dir == f"{tmp_path}/logs/train/runs/{run_dir_name(None, overrides)}"
    assert cfg.resume == "auto" and cfg.run_name is None


def test_resume_from_a_checkpoint_alone_takes_its_stored_config_and_directory(tmp_path):
    """``resume=<ckpt>`` without run_name: the run directory and config are the checkpoint's; the
    command line's overrides replace single keys (a group choice the whole group; ``~`` deletes).
    With a run_name, or a checkpoint that stores no config, the command line decides as before."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from museg_lit.checkpoint_config import resumed_config, standalone_resume
    from museg_lit.config import CONF_DIR
    from museg_lit.resolvers import register_resolvers

    register_resolvers()
    stored = {"paths": {"output_dir": "/runs/a"}, "seed": 7, "resume": "auto", "run_name": None,
              "trainer": {"max_steps": 4, "precision": "32"}, "callbacks": {"export": {"dirpath": "/runs/a/export"}}}
    ckpt = tmp_path / "step_00000002.ckpt"
    torch.save({"state_dict": {}, "museg_config": stored}, ckpt)
    old = _ckpt(tmp_path / "old.ckpt", 1)  # written before checkpoints carried their config
    assert standalone_resume(str(ckpt), None) == stored
    assert standalone_resume(str(ckpt), "fork") is None and standalone_resume("auto", None) is None
    assert standalone_resume(str(old), None) is None and standalone_resume(str(tmp_path / "nope"), None) is None

    def composed(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"paths.root_dir={tmp_path}", *overrides],
                          return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # as under @hydra.main: ${hydra:...} resolves
        return cfg

    overrides = [f"resume={ckpt}", "trainer.max_steps=9", "trainer=gpu", "~callbacks.export"]
    cfg = composed(*overrides)
    assert OmegaConf.select(cfg, "hydra.run.dir") == "/runs/a"
    merged = resumed_config(cfg, [f"paths.root_dir={tmp_path}", *overrides])
    assert merged.seed == 7 and merged.paths.output_dir == "/runs/a" and merged.resume == str(ckpt)
    assert merged.trainer.max_steps == 9 and merged.trainer.precision == "bf16-mixed"  # conf/trainer/gpu.yaml
    assert merged.paths.root_dir == str(tmp_path) and "export" not in merged.callbacks
    # a new run_name forks: the command line's config and directory
    fork = composed(f"resume={ckpt}", "run_name=fork")
    assert OmegaConf.select(fork, "hydra.run.dir") == f"{tmp_path}/logs/train/runs/fork"
    assert resumed_config(fork, [f"resume={ckpt}", "run_name=fork"]) is fork
    plain = composed(f"resume={old}")
    name = run_dir_name(None, [f"paths.root_dir={tmp_path}"])  # resume= does not count
    assert OmegaConf.select(plain, "hydra.run.dir") == f"{tmp_path}/logs/train/runs/{name}"
    assert resumed_config(plain, [f"resume={old}"]) is plain


# ---------------------------------------------------------------- atomic publish / delete
def test_publish_replaces_files_and_directories(tmp_path):
    final = tmp_path / "step_1.ckpt"
    _ckpt(tmp_path / "a.tmp", 1)
    publish(tmp_path / "a.tmp", final)
    assert torch.load(final, weights_only=True)["global_step"] == 1 and not (tmp_path / "a.tmp").exists()
    _ckpt(tmp_path / "b.tmp", 2)
    publish(tmp_path / "b.tmp", final)  # over an existing file
    assert torch.load(final, weights_only=True)["global_step"] == 2
    # sharded checkpoints are directories: a directory replaces a (non-empty) directory
    shard = tmp_path / "step_2.ckpt"
    for version in (1, 2):
        tmp = tmp_path / f"v{version}.tmp"
        tmp.mkdir()
        (tmp / "meta.pt").write_text(str(version))
        publish(tmp, shard)
        assert (shard / "meta.pt").read_text() == str(version)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1.ckpt", "step_2.ckpt"]
    discard(shard)
    discard(final)
    discard(tmp_path / "missing.ckpt")  # nothing to do
    assert not list(tmp_path.iterdir())


def test_latest_complete_checkpoint_skips_partial_damaged_and_links(tmp_path):
    assert latest_checkpoint(tmp_path / "none") is None
    good = _ckpt(tmp_path / "step_00000002.ckpt", 2)
    _ckpt(tmp_path / "step_00000001.ckpt", 1)
    (tmp_path / "step_00000003.ckpt.tmp").write_bytes(b"PK\x03\x04 half")  # a killed write
    (tmp_path / "step_00000004.ckpt").write_bytes(good.read_bytes()[:200])  # truncated (copied by hand)
    os.symlink("step_00000002.ckpt", tmp_path / "last.ckpt")
    assert latest_checkpoint(tmp_path) == good
    assert not is_complete(tmp_path / "step_00000004.ckpt")
    # a sharded directory counts once its metadata is there
    shard = tmp_path / "step_00000005.ckpt"
    shard.mkdir()
    assert latest_checkpoint(tmp_path) == good
    (shard / ".metadata").write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == shard
    assert [p.name for p in remove_stale_tmp(tmp_path)] == ["step_00000003.ckpt.tmp"]


def test_find_resume_checkpoint_modes(tmp_path):
    assert find_resume_checkpoint("auto", tmp_path) is None
    assert find_resume_checkpoint("auto", None) is None  # no checkpoint callback: never resumes
    assert find_resume_checkpoint("never", tmp_path) is None
    ckpt = _ckpt(tmp_path / "step_00000001.ckpt", 1)
    assert find_resume_checkpoint("auto", tmp_path) == ckpt
    with pytest.raises(ResumeError, match="already holds checkpoints"):
        find_resume_checkpoint("never", tmp_path)
    assert find_resume_checkpoint(str(ckpt), None) == ckpt
    with pytest.raises(ResumeError, match="no such checkpoint"):
        find_resume_checkpoint(str(tmp_path / "nope.ckpt"), None)
    (tmp_path / "bad.ckpt").write_bytes(b"not a zip")
    with pytest.raises(ResumeError, match="not a complete checkpoint"):
        find_resume_checkpoint(str(tmp_path / "bad.ckpt"), None)


KILLED_WRITER = textwrap.dedent("""
    import io, os, signal, sys
    import lightning as L, torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO
    from museg_lit.checkpointing import ResumableCheckpoint

    save = TorchCheckpointIO.save_checkpoint

    def half_then_killed(self, checkpoint, path, storage_options=None):
        # step 3: half of the bytes reach the file, then the process dies mid-write
        if checkpoint["global_step"] != 3:
            return save(self, checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with open(path, "wb") as f:
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    TorchCheckpointIO.save_checkpoint = half_then_killed

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.randn(16, 2), batch_size=2)
    ckpt = ResumableCheckpoint(sys.argv[1], every_n_train_steps=1, keep_last=2)
    trainer = L.Trainer(max_steps=6, callbacks=[ckpt], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(Tiny(), data)
""")


def test_kill_during_a_checkpoint_write_leaves_only_complete_checkpoints(tmp_path):
    """SIGKILL while step 3's checkpoint is being written: resume must pick step 2 and load it."""
    ckpt_dir = tmp_path / "checkpoints"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(ckpt_dir)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert "step_00000003.ckpt" not in names and "step_00000003.ckpt.tmp" in names, names
    resume = find_resume_checkpoint("auto", ckpt_dir)
    assert resume == ckpt_dir / "step_00000002.ckpt"
    state = torch.load(resume, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 and state["optimizer_states"][0]["state"][0]["step"] == 2
    # the next start clears the leftover (ResumableCheckpoint.setup does this on rank 0)
    assert [p.name for p in remove_stale_tmp(ckpt_dir)] == ["step_00000003.ckpt.tmp"]


# ---------------------------------------------------------------- RNG states and run id in the checkpoint
def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trip_survives_weights_only_load(tmp_path):
    state = rng_state()
    expected = _draws()
    torch.save({"rng": state}, tmp_path / "c.ckpt")
    _draws()
    set_rng_state(torch.load(tmp_path / "c.ckpt", weights_only=True)["rng"])
    assert _draws() == expected


def test_callback_stores_rng_and_run_id_and_restores_rng_at_train_start(tmp_path):
    class FakeMLflow:  # what the callback reads from an MLFlowLogger
        run_id = "abc123"

    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger.__new__(MLFlowLogger)
    logger._run_id, logger._initialized = FakeMLflow.run_id, True
    logger._mlflow_client = None
    trainer = SimpleNamespace(loggers=[logger])
    cb = ResumableCheckpoint(str(tmp_path))
    checkpoint: dict = {}
    cb.on_save_checkpoint(trainer, None, checkpoint)
    expected = _draws()
    assert checkpoint["museg"]["mlflow_run_id"] == "abc123" and len(checkpoint["museg"]["rng"]) == 1
    _draws()
    fresh = ResumableCheckpoint(str(tmp_path))
    fresh.on_load_checkpoint(trainer, None, checkpoint)
    _draws()  # e.g. building the data loader draws between load and train start
    fresh.on_train_start(trainer, None)
    assert _draws() == expected


# ---------------------------------------------------------------- tracking helpers used by resume and sweeps
def test_run_id_file_and_tags(tmp_path):
    assert stored_run_id(tmp_path) is None
    remember_run_id(tmp_path, "r1")
    remember_run_id(tmp_path, "r2")
    assert stored_run_id(tmp_path) == "r2" and [p.name for p in tmp_path.iterdir()] == ["mlflow_run_id"]
    tags = override_tags(["+a.b=1", "c=x", "~d"])
    assert tags == {"overrides": "+a.b=1 c=x ~d", "override.a.b": "1", "override.c": "x", "override.d": ""}
    assert override_tags(None) == {}
    assert sweep_tags() == {} and run_label(tmp_path / "runs" / "auto-123") == "auto-123"  # not in a sweep
