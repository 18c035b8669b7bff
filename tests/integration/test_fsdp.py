"""2-process CPU FSDP2 training of the tiny model (gloo): the same code path as ``trainer=fsdp`` on GPUs.

One ``torchrun --nproc_per_node=2`` job runs this file as a worker (``--worker``) for four short fits:

* ``split1``: each rank gets its own prompts (G completions of a prompt on one rank);
* ``split2``: ``generation_split=2`` — both ranks get the same prompts and generate G/2 completions
  each, so every group is split over the two ranks and rewards are all-gathered; with activation
  checkpointing on;
* ``lora``: peft LoRA adapters under ``fully_shard``; the reference is the adapter-disabled policy;
* ``bf16``: the GPU precision settings (bf16 compute over fp32 master weights, fp32 reductions).

In every fit the ranks use *different* ``max_new_tokens`` (8 vs 14), so their completions always
have different lengths: naive sharded generation would deadlock (one rank waits in an all-gather for
a decoding step the other never runs); the unshard-once generation must not. Each rank writes what
it saw; the tests below check: loss finite, every trainable parameter changed (and nothing frozen),
both ranks hold the same parameters after the steps and compute identical logits with them, the
gathered weights load into a plain HF model with the same logits, policy and reference are sharded
per block, and the advantages equal the 1-rank computation over the union of both ranks'
completions. Why torchrun and not Lightning's own launcher: it kills the surviving rank when one
fails, so a broken run fails fast instead of waiting out the collective timeout. (The user path,
``python -m museg_lit.train trainer=fsdp_cpu``, uses Lightning's launcher and runs the same code.)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from museg_lit.rl.advantages import group_advantages
from tests.optional import require_cuda

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_NEW_TOKENS = (8, 14)  # per rank: completions of different lengths on the two ranks
STEPS = 2


# ---------------------------------------------------------------- worker (runs under torchrun)
# tag -> (generation_split, extra overrides)
RUNS = {
    "split1": (1, []),
    "split2": (2, ["model.gradient_checkpointing=true"]),  # + activation checkpointing under FSDP
    "lora": (1, ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8"]),
    # the GPU settings of trainer=fsdp: bf16 compute over fp32 master weights, fp32 reductions
    "bf16": (1, ["trainer.strategy.param_dtype=bfloat16", "trainer.strategy.reduce_dtype=float32"]),
}


def _full_state(model) -> dict:
    """The gathered weights, as a checkpoint / export reads them (a collective: every rank calls it;
    with ``cpu_offload`` only rank 0 receives them, the others get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _worker(out: Path, checkpoint: Path, data: Path, tag: str, trainer: str = "fsdp_cpu", *more: str) -> None:
    import lightning as L
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch.distributed.fsdp import FSDPModule

    from museg_lit.config import compose
    from tests.integration.test_training import _overrides, _run, length_variance_reward

    rank = int(os.environ["RANK"])
    split, extra = RUNS[tag]
    cfg = compose(_overrides(
        out, data, checkpoint, f"trainer={trainer}", f"trainer.max_steps={STEPS}", "trainer.enable_progress_bar=false",
        f"trainer.strategy.generation_split={split}", "optim.optimizer.lr=1e-3", "optim.scheduler=null",
        "rollout.num_generations=4", "data.batch_size=1", "data.shuffle=false", "seed=0", *extra, *more,
    ), output_dir=out / tag)
    L.seed_everything(0)
    run = _run(cfg, length_variance_reward)
    assert isinstance(run.trainer.strategy, ModelParallelStrategy)
    module = run.module
    module.rollout_cfg = replace(module.rollout_cfg, max_new_tokens=MAX_NEW_TOKENS[rank])
    scored: list[dict] = []
    rollouts: list = []
    initial: dict = {}
    score = module._roll_out

    def recording_score(batch, timings):
        if not scored:  # first step, before any update: the sharded initial weights (rank 0 gets them)
            initial.update({k: v.clone() for k, v in _full_state(module.policy).items()})
        result = score(batch, timings)
        rollouts.append(result.rollout)
        scored.append({
            "idx": [s.idx for s in result.samples], "rewards": result.rewards.total.clone(),
            "advantages": result.advantages.detach().cpu().clone(), "width": result.rollout.completion_ids.shape[1],
            "texts": list(result.rollout.texts),
        })
        return result

    module._roll_out = recording_score
    run.trainer.fit(module, datamodule=run.datamodule)

    equality = _shared_prefix_equality(module, rollouts[0])
    policy, reference = module.policy, module.reference
    # after the optimizer step every FSDP unit is resharded: each rank holds its DTensor shards only
    local_numel = sum(p.to_local().numel() for p in policy.parameters())
    # each rank all-gathers every parameter itself and fingerprints it: the ranks must agree
    digest = [(float(t.double().sum()), float(t.double().abs().max())) for t in
              (p.full_tensor() for p in policy.parameters())]
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    probe = torch.arange(1, 17).unsqueeze(0)  # [1, 16] a fixed text-only input
    policy.eval()  # no LoRA dropout: the ranks draw different dropout masks
    with torch.no_grad():
        logits = policy(input_ids=probe).logits.float().cpu()  # a collective forward: both ranks run it
    full = _full_state(policy)
    result = {
        "loss": float(run.trainer.callback_metrics["train/loss"]),
        "global_step": run.trainer.global_step,
        "scored": scored,
        "logits": logits,
        "policy_fsdp_modules": sum(isinstance(m, FSDPModule) for m in policy.modules()),
        "reference_fsdp_modules": None if reference is None else sum(isinstance(m, FSDPModule) for m in reference.modules()),
        "reference_requires_grad": reference is not None and any(p.requires_grad for p in reference.parameters()),
        "local_numel": local_numel,
        "digest": digest,
        "total_numel": sum(p.numel() for p in policy.parameters()),
        "trainable": trainable,
        "optimizer_params": sum(len(g["params"]) for g in module.optimizers().optimizer.param_groups),
        "rank_group": (module.rank_group.size, module.rank_group.rank),
        "checkpointing": getattr(getattr(policy, "model", None), "is_activation_checkpointing", None),
        "policy_dtypes": {p.dtype for p in policy.parameters()},
        "reference_dtypes": None if reference is None else {p.dtype for p in reference.parameters()},
        "probe": probe,
        "shared_prefix": equality,
    }
    if rank == 0:
        result["full_state"], result["initial_state"] = full, initial
    torch.save(result, out / f"{tag}_rank{rank}.pt")


def _shared_prefix_equality(module, rollout) -> dict:
    """The same rollout through both log-prob layouts (packed shared prefix vs G prompt copies) on
    the sharded policy: per-token log-prob and local gradient-shard differences. Dropout (LoRA's)
    is switched off: the two layouts would draw different masks."""
    for m in module.policy.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    mask = rollout.completion_mask
    out = {}
    for share in (False, True):
        module.rollout_cfg = replace(module.rollout_cfg, share_prefix=share)
        module.policy.zero_grad(set_to_none=True)
        logp = module._logprobs(module.policy, rollout)  # a collective forward + backward on every rank
        ((logp * mask).sum() / mask.sum()).backward()
        out[share] = (logp.detach().float(), {n: p.grad.to_local().detach().float().clone()
                                              for n, p in module.policy.named_parameters() if p.grad is not None})
    module.policy.zero_grad(set_to_none=True)
    (repeated, g_rep), (shared, g_sh) = out[False], out[True]
    rel = max(float((g_rep[n] - g_sh[n]).norm() / g_rep[n].norm().clamp_min(1e-8)) for n in g_rep if g_rep[n].numel())
    return {"logp_diff": float((repeated - shared)[mask.bool()].abs().max()), "grad_rel": rel,
            "same_params": g_rep.keys() == g_sh.keys(), "num_generations": rollout.num_generations}


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--trainer", default="fsdp_cpu")
    parser.add_argument("--runs", nargs="+", default=list(RUNS))
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for tag in args.runs:  # one process group, several fits
        _worker(args.out, args.checkpoint, args.data, tag, args.trainer, *args.overrides)


# ---------------------------------------------------------------- the tests (launch the worker)
def _launch(out: Path, checkpoint: Path, data: Path, *args: str, nproc: int = 2, timeout: float = 240) -> float:
    """Run the worker under ``torchrun`` with ``nproc`` processes; returns the wall time in seconds."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "tests.integration.test_fsdp", "--worker", "--out", str(out), "--checkpoint", str(checkpoint),
           "--data", str(data), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    # own process group: on a hang (the failure this test exists to catch) kill torchrun and the ranks
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"{nproc}-process FSDP run hung (deadlock?) and was killed:\n{log[-6000:]}")
    assert proc.returncode == 0, f"{nproc}-process FSDP run failed (rc {proc.returncode}):\n{log[-8000:]}"
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory, tiny_checkpoint, synthetic_data) -> dict:
    out = tmp_path_factory.mktemp("fsdp")
    elapsed = _launch(out, tiny_checkpoint, synthetic_data)
    print(f"2-process FSDP worker: {elapsed:.1f} s")
    return {tag: [torch.load(out / f"{tag}_rank{r}.pt", weights_only=False) for r in (0, 1)] for tag in RUNS}


@pytest.mark.gpu
def test_fsdp_bf16_on_gpus(tmp_path, tiny_checkpoint, synthetic_data):
    """trainer=fsdp as users run it: NCCL, bf16 compute over fp32 masters, on up to 2 GPUs."""
    require_cuda()
    nproc = min(2, torch.cuda.device_count())
    _launch(tmp_path, tiny_checkpoint, synthetic_data, "--trainer", "fsdp", "--runs", "split1", "lora", "--",
            f"trainer.devices={nproc}", nproc=nproc, timeout=600)
    for tag in ("split1", "lora"):
        results = [torch.load(tmp_path / f"{tag}_rank{r}.pt", weights_only=False) for r in range(nproc)]
        r0 = results[0]
        assert r0["global_step"] == STEPS and torch.isfinite(torch.tensor(r0["loss"]))
        assert r0["policy_dtypes"] == {torch.float32}
        assert r0["reference_dtypes"] == (None if tag == "lora" else {torch.bfloat16})
        changed = {n for n in r0["full_state"] if not torch.equal(r0["full_state"][n], r0["initial_state"][n])}
        assert set(r0["trainable"]) <= changed
        for r in results[1:]:
            assert torch.allclose(r["logits"], r0["logits"], atol=1e-2)


@pytest.mark.parametrize("tag", list(RUNS))
def test_fsdp_trains_and_ranks_agree(fsdp_results, tag, tiny_checkpoint):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from museg_lit.distributed.sharding import shardable_blocks

    r0, r1 = fsdp_results[tag]
    lora = tag == "lora"
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint, local_files_only=True).eval()
    n_blocks = len(shardable_blocks(base))  # decoder layers + vision blocks
    for r in (r0, r1):
        assert r["global_step"] == STEPS
        assert torch.isfinite(torch.tensor(r["loss"]))
        # one FSDP unit per block plus the root, for the policy and for the reference
        # (with LoRA the reference is the policy with its adapter disabled: no second model)
        assert r["policy_fsdp_modules"] == n_blocks + 1
        assert r["reference_fsdp_modules"] == (None if lora else n_blocks + 1)
        assert not r["reference_requires_grad"]
        # each rank stores about half of the policy (dim-0 shards; odd sizes round up)
        assert 0.45 * r["total_numel"] <= r["local_numel"] <= 0.55 * r["total_numel"]
        assert r["optimizer_params"] == len(r["trainable"]) > 0
        assert len(r["scored"]) == STEPS
    assert r0["checkpointing"] is (tag == "split2")
    # fp32 master weights always; the frozen reference is stored in the compute dtype
    assert r0["policy_dtypes"] == {torch.float32}
    assert r0["reference_dtypes"] == {"bf16": {torch.bfloat16}, "lora": None}.get(tag, {torch.float32})
    # rank 1 decoded longer than rank 0 ever could (different lengths, and no deadlock)
    assert all(s["width"] <= MAX_NEW_TOKENS[0] for s in r0["scored"])
    assert any(s["width"] > MAX_NEW_TOKENS[0] for s in r1["scored"])
    # the ranks hold the same parameters after the steps and compute the same logits with them
    assert r0["digest"] == r1["digest"]
    assert torch.equal(r0["logits"], r1["logits"])
    # every trainable parameter changed, nothing frozen did
    initial, full = r0["initial_state"], r0["full_state"]
    trainable = set(r0["trainable"])
    changed = {n for n in full if not torch.equal(full[n], initial[n])}
    assert trainable <= changed, f"trainable parameters that did not change: {sorted(trainable - changed)[:5]}"
    if lora:
        assert all("lora_" in n for n in trainable) and all("lora_" in n for n in changed)
    if tag in ("lora", "bf16"):
        return
    # the sharded run started from the checkpoint, and its gathered weights are a plain HF model
    # computing the same logits as the sharded one
    assert all(torch.equal(initial[n], p) for n, p in base.state_dict().items())
    base.load_state_dict(full)
    with torch.no_grad():
        assert torch.allclose(base(input_ids=r0["probe"]).logits, r0["logits"], atol=1e-5)


def test_fsdp_groups_on_one_rank_match_one_rank_advantages(fsdp_results):
    """split1: each rank holds whole groups of G=4 (different prompts per rank); the advantages are
    exactly those of the 1-rank computation on the same rewards."""
    r0, r1 = fsdp_results["split1"]
    assert r0["rank_group"] == (1, 0) and r1["rank_group"] == (1, 0)
    for s0, s1 in zip(r0["scored"], r1["scored"], strict=True):
        assert s0["idx"] != s1["idx"]  # the distributed sampler gave the ranks different prompts
        for s in (s0, s1):
            assert torch.equal(s["advantages"], group_advantages(s["rewards"], 4).advantages)


def test_fsdp_split_groups_match_one_rank_advantages(fsdp_results):
    """split2: each prompt's G=4 completions are split 2 + 2 over the ranks; the rewards gathered
    per group give exactly the advantages of one rank holding all 4."""
    r0, r1 = fsdp_results["split2"]
    assert r0["rank_group"] == (2, 0) and r1["rank_group"] == (2, 1)
    for s0, s1 in zip(r0["scored"], r1["scored"], strict=True):
        assert s0["idx"] == s1["idx"]  # the two ranks share the prompts
        assert s0["texts"] != s1["texts"]  # ... but sample different completions
        b = len(s0["idx"])
        union = torch.cat([s0["rewards"].view(b, 2), s1["rewards"].view(b, 2)], dim=1).reshape(-1)  # [B*4]
        expected = group_advantages(union, 4).advantages.view(b, 4)  # [B, 4]
        assert torch.allclose(s0["advantages"], expected[:, :2].reshape(-1), atol=1e-6)
        assert torch.allclose(s1["advantages"], expected[:, 2:].reshape(-1), atol=1e-6)


@pytest.mark.parametrize("tag", ["split1", "split2", "lora"])
def test_fsdp_shared_prefix_equals_repeated_prompts(fsdp_results, tag):
    """Under FSDP2 (fp32), with activation checkpointing (split2, G/2 = 2 completions per rank) and
    LoRA: packed shared-prefix log-probs and gradients equal those of G prompt copies."""
    for rank in (0, 1):
        eq = fsdp_results[tag][rank]["shared_prefix"]
        assert eq["same_params"] and eq["num_generations"] == (2 if tag == "split2" else 4)
        assert eq["logp_diff"] < 1e-4, (tag, rank, eq)
        assert eq["grad_rel"] < 1e-3, (tag, rank, eq)


if __name__ == "__main__":
    _main()
