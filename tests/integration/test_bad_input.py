"""Bad input never costs a run: each class of mistake (config, outputs, videos, checkpoints, resume)
gets its exact outcome — one ``error:`` line naming the key / file and exit status 2 before any
training, or a warning plus a bounded, counted recovery. Annotation lines are covered in
test_entrypoint.py and test_annotations.py, evaluation files in test_eval_runner.py, skips during
training in test_training.py."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from museg_lit.config import compose
from museg_lit.errors import ConfigError
from museg_lit.schema import check_config

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- config values (checked at start)
@pytest.mark.parametrize(("override", "message"), [
    ("data.batch_size=0", "data.batch_size=0: must be >= 1"),
    ("data.global_batch_size=-2", "data.global_batch_size=-2: must be >= 1"),
    ("data.num_workers=-1", "data.num_workers=-1: must be >= 0"),
    ("data.segment_policy=bogus", "data.segment_policy='bogus': choose one of keep, clip, drop, error"),
    ("data.on_error=ignore", "data.on_error='ignore': choose one of skip, raise"),
    ("data.max_skip_fraction=1.5", "data.max_skip_fraction=1.5: must be in [0, 1]"),
    ("data.template=nope", "data.template='nope': choose one of frame_selection_thinking"),
    ("data.shuffle=maybe", "data.shuffle='maybe': expected true or false"),
    ("data.frames.fps=0", "data.frames.fps=0: must be > 0"),
    ("data.frames.max_frames=abc", "data.frames.max_frames='abc': expected an integer"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: must be >= 1"),
    ("trainer.max_steps=ten", "trainer.max_steps='ten': expected an integer"),
    ("trainer.precision=fp8", "trainer.precision='fp8': choose one of 32-true"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: must be >= 0"),
    ("optim.optimizer.lr=fast", "optim.optimizer.lr='fast': expected a number"),
    ("optim.optimizer.lr=0", "optim.optimizer.lr=0: must be > 0"),
    ("optim.optimizer.lr=nan", "optim.optimizer.lr=nan: expected a finite number"),
    ("optim.optimizer.betas=[0.9]", "optim.optimizer.betas=[0.9]: expected two numbers in [0, 1)"),
    ("optim.scheduler.warmup_steps=-5", "optim.scheduler.warmup_steps=-5: must be >= 0"),
    ("callbacks.checkpoint.every_n_train_steps=0", "callbacks.checkpoint.every_n_train_steps=0: must be >= 1"),
    ("rollout.num_generations=abc", "rollout.num_generations='abc': expected an integer"),
    ("rollout.num_generations=1", "rollout.num_generations=1: must be >= 2"),
    ("rollout.temperature=0", "rollout.temperature=0: must be > 0"),
    ("rollout.max_new_tokens=0", "rollout.max_new_tokens=0: must be >= 1"),
    ("algo.epsilon_low=-1", "algo.epsilon_low=-1: must be in [0, 1)"),
    ("algo.beta=-0.1", "algo.beta=-0.1: must be >= 0"),
    ("algo.kl_estimator=k9", "algo.kl_estimator='k9': choose one of k1, k2, k3"),
    ("algo.scale_rewards=1", "algo.scale_rewards=1: expected true or false"),
    ("seed=x", "seed='x': expected an integer"),
    ("model.dtype=16", "model.dtype=16: expected a string"),
])
def test_config_values_are_refused_with_the_key_named(override, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose([override]))
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(("override", "message"), [
    ("batch_size=0", "batch_size=0: must be >= 1"),
    ("max_new_tokens=many", "max_new_tokens='many': expected an integer"),
    ("task=grounding", "task='grounding': choose one of tvg, tal"),
    ("resume=maybe", "resume='maybe': expected true or false"),
    ("data.frames.fps=abc", "data.frames.fps='abc': expected a number"),
])
def test_eval_config_values_are_refused_with_the_key_named(override, message):
    from museg_lit.schema import check_eval_config

    with pytest.raises(ConfigError) as err:
        check_eval_config(compose([override], config_name="eval"))
    assert str(err.value).startswith(message), str(err.value)


def test_every_shipped_config_passes_the_schema():
    for overrides in (["+experiment=stage1"], ["+experiment=stage2"], ["+experiment=longvtg"], ["algo=dapo"],
                      ["trainer=fsdp"], ["data=charades_sta"], ["data=et_bench_subset"], ["data=perception_test"]):
        check_config(compose(overrides))
    from museg_lit.schema import check_eval_config

    for data in ("charades_sta", "thumos14", "thumos15", "et_bench", "et_bench_subset", "perception_test"):
        check_eval_config(compose([f"data={data}"], config_name="eval"))


# ---------------------------------------------------------------- the real entry point
def _train(cwd, *overrides, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "museg_lit.train", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    return line


def _base(tmp_path, tiny_checkpoint, synthetic_data, *extra):
    return (f"paths.root_dir={tmp_path}", f"model.path={tiny_checkpoint}", "logger=none", "data.synthetic=null",
            f"data.annotation_file={synthetic_data}/train.jsonl", f"data.video_root={synthetic_data}",
            "trainer.enable_progress_bar=false", "rollout.max_new_tokens=8", "rollout.num_generations=2",
            "data.batch_size=1", *extra)


def test_a_wrong_type_exits_2_before_anything_loads(tmp_path, tiny_checkpoint, synthetic_data):
    line = _one_error_line(_train(tmp_path, *_base(tmp_path, tiny_checkpoint, synthetic_data,
                                                   "optim.optimizer.lr=fast"), timeout=120))
    assert line == "error: optim.optimizer.lr='fast': expected a number"
    assert not (tmp_path / "logs" / "train" / "runs").exists() or not list((tmp_path / "logs").rglob("*.ckpt"))


def test_an_unwritable_checkpoint_folder_fails_at_start(tmp_path, tiny_checkpoint, synthetic_data):
    """Found before the first step, not at the first save after the training (which lost whole runs)."""
    (tmp_path / "a_file").write_text("x")
    line = _one_error_line(_train(tmp_path, *_base(tmp_path, tiny_checkpoint, synthetic_data,
                                                   f"callbacks.checkpoint.dirpath={tmp_path}/a_file/ckpts"),
                                  timeout=120))
    assert line == f"error: callbacks.checkpoint.dirpath={tmp_path}/a_file/ckpts: cannot write there (Not a directory)"


def test_a_wrong_video_root_fails_in_seconds_and_exports_nothing(tmp_path, tiny_checkpoint, synthetic_data):
    run = "run_name=wrongroot"
    line = _one_error_line(_train(tmp_path, *_base(tmp_path, tiny_checkpoint, synthetic_data,
                                                   f"data.video_root={tmp_path}/nowhere", run)))
    assert line.startswith(f"error: {synthetic_data}/train.jsonl: 8 of 8 videos missing under "
                           f"data.video_root={tmp_path}/nowhere (first: {tmp_path}/nowhere/videos/")
    run_dir = tmp_path / "logs" / "train" / "runs" / "wrongroot"
    assert not (run_dir / "export").exists() and not list(run_dir.rglob("*.ckpt"))


def test_checkpoints_resume_and_reruns(tmp_path, tiny_checkpoint, synthetic_data):
    """One run, then: its command again (finished, one line, exit 0); a changed lr under the same
    run_name (refused naming the key); a damaged newest checkpoint (skipped, the previous used)."""
    args = _base(tmp_path, tiny_checkpoint, synthetic_data, "run_name=r", "callbacks.checkpoint.every_n_train_steps=1",
                 "callbacks.checkpoint.keep_last=2")
    first = _train(tmp_path, *args, "trainer.max_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = tmp_path / "logs" / "train" / "runs" / "r" / "checkpoints"
    record = json.loads((ckpts / "step_00000002.ckpt.meta.json").read_text())
    assert record["step"] == 2 and record["finished"] and len(record["sha256"]) == 64
    assert record["config"]["optim"]["optimizer"]["lr"] == 1.5e-06

    again = _train(tmp_path, *args, "trainer.max_steps=2")
    assert again.returncode == 0 and "Traceback" not in again.stderr
    assert f"museg_lit: run r already finished at step 2 ({ckpts}/step_00000002.ckpt); nothing to do." in again.stderr

    changed = _one_error_line(_train(tmp_path, *args, "trainer.max_steps=2", "optim.optimizer.lr=0.001",
                                     timeout=120))
    assert changed.startswith(f"error: resuming {ckpts}/step_00000002.ckpt with a config that changes what the run "
                              "computes (optim.optimizer.lr: 1.5e-06 -> 0.001); start another run with run_name=")

    newest = ckpts / "step_00000002.ckpt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the archive still opens, the weights are wrong
    newest.write_bytes(bytes(data))
    longer = _train(tmp_path, *args, "trainer.max_steps=3")
    assert longer.returncode == 0, longer.stderr[-3000:]
    output = longer.stdout + longer.stderr  # Hydra's job log goes to stdout
    assert f"skipping damaged checkpoint {newest}: checksum mismatch" in output
    assert f"Restoring states from the checkpoint path at {ckpts}/step_00000001.ckpt" in output
    assert json.loads((ckpts / "step_00000003.ckpt.meta.json").read_text())["step"] == 3


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, tiny_checkpoint, synthetic_data):
    """Disk full from step 2 on: step 1's checkpoint is never rotated out, the failure at step 2 is
    logged and training goes on, the failed final save stops with the way to continue."""
    import lightning as L

    from museg_lit.builders import build_training
    from museg_lit.checkpointing import CheckpointSaveError, ResumableCheckpoint

    cfg = compose([a for a in _base(tmp_path, tiny_checkpoint, synthetic_data, "trainer.max_steps=3",
                                    "callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.keep_last=1",
                                    "callbacks.completions_table.every_n_steps=100")],
                  output_dir=tmp_path / "run")
    run = build_training(cfg)
    real_save = L.Trainer.save_checkpoint

    def disk_full_from_step_2(trainer, filepath, weights_only=False, storage_options=None):
        if trainer.global_step >= 2:
            with open(filepath, "wb") as fh:  # a partial file, as a full disk leaves
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(trainer, filepath, weights_only, storage_options)

    run.trainer.save_checkpoint = disk_full_from_step_2.__get__(run.trainer)
    ckpts = next(cb for cb in run.trainer.callbacks if isinstance(cb, ResumableCheckpoint)).dirpath
    with pytest.raises(CheckpointSaveError) as err:
        run.trainer.fit(run.module, datamodule=run.datamodule)
    assert str(err.value) == (f"could not write checkpoint {ckpts}/step_00000003.ckpt at step 3 ([Errno 28] No space "
                              f"left on device); the newest complete checkpoint is {ckpts}/step_00000001.ckpt: free "
                              "space or fix callbacks.checkpoint.dirpath, then run the same command again to continue "
                              "from it")
    assert run.trainer.global_step == 3  # step 2's failed save did not stop the training
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step_00000001.ckpt", "step_00000001.ckpt.meta.json"]
