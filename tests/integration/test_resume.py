"""Crash-safe resume, end to end: ``python -m museg_lit.train`` is SIGKILLed mid-run (twice: once in
the first epoch, once in the second), started again each time with the same command, and finishes.

What must hold: the samples trained by the optimizer steps form exactly the planned sequence (no
repeat, no gap — a step redone after a kill trains the same samples again), the metrics continue in
the one MLflow run, and the optimizer and LR-schedule state went on counting across the restarts.
Also here: the Hugging Face export of each kept checkpoint (``export_hf=true``), and the same
resume with sharded checkpoints (``trainer=fsdp_cpu``: 2 processes, a directory per checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient

from museg_lit.checkpointing import latest_checkpoint, run_dir_name
from museg_lit.data.sampler import ResumableSampler

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 12  # 8 samples, batch 1: the whole first epoch and half of the second
SEED = 42


class SampleRecorder(L.Callback):
    """Test helper (``+callbacks.record``): after each optimizer step, append the step and the ids of
    the samples it trained. It runs before the checkpoint of that step is written, so a kill in
    between makes the resumed run redo (and record again) that step."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "ids": [s.idx for s in batch.samples],
                                "pid": os.getpid()}) + "\n")


def _command(root: Path, data: Path, checkpoint: Path, record: Path) -> list[str]:
    return [
        sys.executable, "-m", "museg_lit.train", f"paths.root_dir={root}", f"model.path={checkpoint}",
        f"data.annotation_file={data}/train.jsonl", f"data.video_root={data}", "data.synthetic=null",
        "data.batch_size=1", f"trainer.max_steps={STEPS}", "trainer.enable_progress_bar=false",
        "rollout.num_generations=2", "rollout.max_new_tokens=4", "callbacks.completions_table.every_n_steps=100",
        "callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.keep_last=2",
        "+callbacks.record._target_=tests.integration.test_resume.SampleRecorder", f"+callbacks.record.path={record}",
    ]


def _checkpoint_step(ckpt_dir: Path) -> int:
    latest = latest_checkpoint(ckpt_dir)
    return -1 if latest is None else int(latest.stem.split("_")[-1])


def _run_until(cmd: list[str], cwd: Path, env: dict, ckpt_dir: Path, kill_at_step: int | None) -> int:
    """Run ``cmd``; with ``kill_at_step``, SIGKILL it as soon as a checkpoint of that step is complete
    (the next step is then under way). Returns the exit code (-9 when killed)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if kill_at_step is not None:
            deadline = time.monotonic() + 120
            while _checkpoint_step(ckpt_dir) < kill_at_step:
                assert proc.poll() is None, f"training ended before step {kill_at_step}:\n{proc.stdout.read()[-3000:]}"
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert kill_at_step is not None or proc.returncode == 0, out[-4000:]
    return proc.returncode


def test_sigkill_and_same_command_resumes_exactly(tmp_path, synthetic_data, tiny_checkpoint):
    record = tmp_path / "samples.jsonl"
    cmd = _command(tmp_path, synthetic_data, tiny_checkpoint, record)
    run_dir = tmp_path / "logs" / "train" / "runs" / run_dir_name(None, cmd[3:])
    ckpt_dir = run_dir / "checkpoints"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}

    start = time.perf_counter()
    assert _run_until(cmd, tmp_path, env, ckpt_dir, kill_at_step=2) == -signal.SIGKILL  # epoch 0
    killed_at = [_checkpoint_step(ckpt_dir)]
    assert _run_until(cmd, tmp_path, env, ckpt_dir, kill_at_step=9) == -signal.SIGKILL  # epoch 1
    killed_at.append(_checkpoint_step(ckpt_dir))
    assert _run_until(cmd, tmp_path, env, ckpt_dir, kill_at_step=None) == 0
    print(f"3 runs (2 SIGKILLs, at checkpoints {killed_at}): {time.perf_counter() - start:.1f} s")
    assert all(k < STEPS for k in killed_at)

    # 1) the optimizer steps trained exactly the planned sequence: no repeat, no gap
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert len({r["pid"] for r in rows}) == 3  # all three processes trained
    by_step: dict[int, list] = {}
    for r in rows:
        if r["step"] in by_step:  # redone after a kill between its record and its checkpoint
            assert by_step[r["step"]] == r["ids"], f"step {r['step']} redone with other samples"
        by_step[r["step"]] = r["ids"]
    assert len(rows) - len(by_step) <= 2  # at most the step in flight at each kill was redone
    ids = [json.loads(line)["idx"] for line in (synthetic_data / "train.jsonl").read_text().splitlines()]
    planned = []
    for epoch in (0, 1):
        sampler = ResumableSampler(len(ids), shuffle=True, seed=SEED)
        sampler.set_epoch(epoch)
        planned += [str(ids[i]) for i in sampler]
    assert sorted(by_step) == list(range(1, STEPS + 1))
    assert [str(i) for s in sorted(by_step) for i in by_step[s]] == planned[:STEPS]

    # 2) optimizer and LR schedule kept counting; the data position is in the checkpoint
    final = latest_checkpoint(ckpt_dir)
    assert final.name == f"step_{STEPS:08d}.ckpt"
    ckpt = torch.load(final, map_location="cpu", weights_only=True)
    adam_steps = {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    assert adam_steps == {float(STEPS)}  # a fresh optimizer after a resume would count fewer
    assert ckpt["lr_schedulers"][0]["last_epoch"] == STEPS
    position = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert (position["epoch"], position["seed"], position["batches"]) == (1, SEED, STEPS - 8)
    assert len(ckpt["museg"]["rng"]) == 1 and "torch" in ckpt["museg"]["rng"][0]
    # only complete checkpoints remain (keep_last=2 + the last.ckpt link), no .tmp leftovers
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert names == ["last.ckpt", f"step_{STEPS - 1:08d}.ckpt", f"step_{STEPS - 1:08d}.ckpt.meta.json",
                     f"step_{STEPS:08d}.ckpt", f"step_{STEPS:08d}.ckpt.meta.json"], names

    # 3) one MLflow run, continued by both restarts
    client = MlflowClient(f"sqlite:///{tmp_path}/logs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    run_id = run.info.run_id
    assert (run_dir / "mlflow_run_id").read_text().strip() == run_id == ckpt["museg"]["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["resume_count"] == "2" and run.data.tags["resumed_from"].startswith(str(ckpt_dir))
    steps = sorted({m.step for m in client.get_metric_history(run_id, "train/loss")})
    # logged steps are 0-based; a kill between a step's checkpoint and its metrics may drop that one
    assert steps[0] == 0 and steps[-1] == STEPS - 1 and len(steps) >= STEPS - 2
    assert (run_dir / "export" / "model.safetensors").exists()


def test_kept_checkpoints_export_hf_on_request(tmp_path, synthetic_data, tiny_checkpoint):
    """``callbacks.checkpoint.export_hf=true``: each kept checkpoint has a Hugging Face twin that
    transformers loads with identical logits; it goes when its checkpoint is rotated out. A saved
    checkpoint exports after the fact too (``export_checkpoint``)."""
    from hydra.utils import instantiate
    from transformers import Qwen2_5_VLForConditionalGeneration

    from museg_lit.builders import build_training
    from museg_lit.config import compose
    from museg_lit.export import export_checkpoint
    from tests.integration.test_training import _overrides, length_variance_reward

    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "callbacks=default", "~callbacks.export",
                             "~callbacks.completions_table", "callbacks.checkpoint.every_n_train_steps=1",
                             "callbacks.checkpoint.keep_last=1", "callbacks.checkpoint.export_hf=true",
                             "trainer.max_steps=2", "optim.optimizer.lr=1e-3", "rollout.max_new_tokens=8",
                             "rollout.num_generations=2"), output_dir=tmp_path / "run")
    run = build_training(cfg)
    assert run.ckpt_path is None
    run.module.reward.functions.update({name: length_variance_reward for name in run.module.reward.functions})
    run.trainer.fit(run.module, datamodule=run.datamodule)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt", "step_00000002.ckpt",
                                                          "step_00000002.ckpt.meta.json", "step_00000002.hf"]
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        trained = run.module.policy.eval()(input_ids=ids).logits
        loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt_dir / "step_00000002.hf",
                                                                    local_files_only=True).eval()
        assert torch.equal(trained, loaded(input_ids=ids).logits)
        out = export_checkpoint(ckpt_dir / "step_00000002.ckpt", instantiate(cfg.model), tmp_path / "offline")
        offline = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
        assert torch.equal(trained, offline(input_ids=ids).logits)
    # the same config built again finds the run finished; a longer run resumes from that checkpoint (resume=auto)
    from museg_lit.checkpointing import RunFinished

    with pytest.raises(RunFinished, match="already finished at step 2"):
        build_training(cfg)
    cfg.trainer.max_steps = 3
    assert build_training(cfg).ckpt_path == str(ckpt_dir / "step_00000002.ckpt")


# ---------------------------------------------------------------- sharded (FSDP2) checkpoints, 2 processes
def _fsdp_worker(out: Path, data: Path, checkpoint: Path) -> None:
    """Under torchrun: fit 2 steps, then build the same config again and fit to 3 (resume=auto)."""
    from museg_lit.builders import build_training
    from museg_lit.config import compose
    from museg_lit.tracking import start_tracking
    from tests.integration.test_training import _overrides, length_variance_reward

    rank = int(os.environ["RANK"])
    result = {}
    for steps in (2, 3):
        cfg = compose(_overrides(out, data, checkpoint, "trainer=fsdp_cpu", f"trainer.max_steps={steps}",
                                 "logger=mlflow", "callbacks=default", "~callbacks.completions_table",
                                 "callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.export_hf=true",
                                 "optim.optimizer.lr=1e-3", "rollout.num_generations=2", "rollout.max_new_tokens=4",
                                 "data.batch_size=1"), output_dir=out / "run")
        L.seed_everything(0)
        run = build_training(cfg)
        run.module.reward.functions.update({n: length_variance_reward for n in run.module.reward.functions})
        start_tracking(run.trainer.loggers, cfg, run_dir=out / "run", resumed_from=run.ckpt_path)  # as train.py
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path)
        full = {n: p.full_tensor().detach().clone() for n, p in run.module.policy.named_parameters()}  # collective
        result[steps] = {"resumed_from": run.ckpt_path, "global_step": run.trainer.global_step,
                         "adam_steps": sorted({float(v["step"]) for v in run.module.optimizers().optimizer.state.values()}),
                         "full": full if rank == 0 else None}
    torch.save(result, out / f"rank{rank}.pt")


def test_sharded_checkpoints_resume(tmp_path, synthetic_data, tiny_checkpoint):
    """trainer=fsdp_cpu: each checkpoint is a directory of shards, published by one rename after every
    rank wrote; the rebuilt run resumes from it (optimizer, data position, both ranks' RNG, MLflow
    run id) and the kept checkpoints' Hugging Face exports hold the gathered weights."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tests.integration.test_resume", "--out", str(tmp_path), "--data", str(synthetic_data),
           "--checkpoint", str(tiny_checkpoint)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"2-process run hung:\n{log[-6000:]}")
    assert proc.returncode == 0, log[-8000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    ckpt_dir = tmp_path / "run" / "checkpoints"
    for r in (r0, r1):
        assert r[2]["resumed_from"] is None and r[3]["resumed_from"] == str(ckpt_dir / "step_00000002.ckpt")
        assert (r[2]["global_step"], r[3]["global_step"]) == (2, 3)
        assert r[3]["adam_steps"] == [3.0]  # the resumed optimizer went on counting
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert names == ["last.ckpt", "step_00000002.ckpt", "step_00000002.ckpt.meta.json", "step_00000002.hf",
                     "step_00000003.ckpt", "step_00000003.ckpt.meta.json", "step_00000003.hf"]
    final = ckpt_dir / "step_00000003.ckpt"
    assert final.is_dir() and {p.name for p in final.iterdir()} >= {"meta.pt", ".metadata"}
    meta = torch.load(final / "meta.pt", weights_only=True)
    position = meta["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert (position["num_replicas"], position["batches"]) == (2, 3)
    assert len(meta["museg"]["rng"]) == 2  # one RNG state per rank
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text().strip()
    assert meta["museg"]["mlflow_run_id"] == run_id
    client = MlflowClient(f"sqlite:///{tmp_path}/logs/mlflow.db")
    assert len(client.search_runs([client.get_experiment_by_name("train").experiment_id])) == 1
    exported = Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt_dir / "step_00000003.hf", local_files_only=True)
    weights = exported.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in r0[3]["full"].items())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for flag in ("--out", "--data", "--checkpoint"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _fsdp_worker(args.out, args.data, args.checkpoint)
