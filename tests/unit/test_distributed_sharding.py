"""FSDP2 sharding helpers: settings, block choice, and rank-safe unshard-once generation (2 processes, gloo)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from museg_lit.distributed.sharding import ShardingConfig, cast_parameters, shardable_blocks
from tests.unit.test_distributed_advantages import run_on_ranks


def _tiny(path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, local_files_only=True).eval()


# ---------------------------------------------------------------- settings and block choice
def test_sharding_config_dtypes():
    gpu = ShardingConfig()  # bf16 compute over fp32 master weights, fp32 reductions
    assert gpu.policy_dtype == torch.float32 and gpu.reference_dtype == torch.bfloat16
    mp = gpu.mp_policy()
    assert (mp.param_dtype, mp.reduce_dtype) == (torch.bfloat16, torch.float32)
    cpu = ShardingConfig(param_dtype=None, reduce_dtype=None)  # fp32 everywhere, nothing cast
    assert cpu.policy_dtype is None and cpu.reference_dtype is None
    with pytest.raises(ValueError, match="unknown dtype"):
        ShardingConfig(param_dtype="bf17")
    with pytest.raises(ValueError, match="generation_split"):
        ShardingConfig(generation_split=0)


def test_blocks_are_decoder_layers_and_vision_blocks(tiny_checkpoint):
    model = _tiny(tiny_checkpoint)
    names = [type(b).__name__ for b in shardable_blocks(model)]
    cfg = model.config
    assert names.count("Qwen2_5_VLVisionBlock") == cfg.vision_config.depth
    assert names.count("Qwen2_5_VLDecoderLayer") == cfg.text_config.num_hidden_layers
    with pytest.raises(ValueError, match="_no_split_modules"):
        shardable_blocks(torch.nn.Linear(2, 2))


def test_cast_parameters_keeps_buffers(tiny_checkpoint):
    model = _tiny(tiny_checkpoint)
    buffers = {n: b.dtype for n, b in model.named_buffers()}
    cast_parameters(model, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert {n: b.dtype for n, b in model.named_buffers()} == buffers  # rotary inv_freq stays fp32


def test_fsdp2_strategy_is_lightnings_model_parallel_strategy():
    from lightning.pytorch.strategies import ModelParallelStrategy

    from museg_lit.config import compose
    from museg_lit.distributed.strategy import FSDP2Strategy

    cfg = compose(["trainer=fsdp", "logger=none", "callbacks=none"])
    from hydra.utils import instantiate

    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDP2Strategy) and isinstance(strategy, ModelParallelStrategy)
    assert strategy.sharding == ShardingConfig()  # bf16 / fp32 reductions / fp32 masters
    assert cfg.trainer.precision == "32-true"  # mixed precision is FSDP's, not autocast


# ---------------------------------------------------------------- 2 processes
def _sharded_generation_body(rank: int, world: int, checkpoint: str):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from museg_lit.distributed.ranks import mesh_groups
    from museg_lit.distributed.sharding import _reshards_after_forward, shard_model, unshard_for_generation

    torch.manual_seed(0)
    plain, sharded, reference = _tiny(checkpoint), _tiny(checkpoint), _tiny(checkpoint)
    mesh = init_device_mesh("cpu", (world,))
    shard_model(sharded, mesh)
    shard_model(reference, mesh, frozen=True)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])  # [1, 6] text only
    # rank-dependent numbers of decoding steps: without unshard-once this deadlocks
    new_tokens = 3 + 6 * rank
    with unshard_for_generation(sharded):
        out = sharded.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                               synced_gpus=False)  # [1, 6+new]
        for _ in range(rank * 3):  # extra forwards on rank 1 only: still no collective
            sharded(input_ids=ids)
    expected = plain.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    flags = {n: _reshards_after_forward(m) for n, m in sharded.named_modules() if isinstance(m, FSDPModule)}
    resharded = all(isinstance(p, DTensor) for p in sharded.parameters())
    # a training forward/backward of the sharded model equals the plain model's (same input on both ranks)
    sharded.train()
    plain.train()
    loss = sharded(input_ids=ids, labels=ids).loss
    loss.backward()
    plain(input_ids=ids, labels=ids).loss.backward()
    pairs = list(zip(sharded.parameters(), plain.parameters(), strict=True))
    grads_equal = all((p.grad is None) == (q.grad is None) for p, q in pairs) and all(
        torch.allclose(p.grad.full_tensor(), q.grad, atol=1e-5) for p, q in pairs if q.grad is not None
    )  # text-only input: the vision tower has no gradient in either model
    with torch.no_grad():
        reference(input_ids=ids)
    reference_resharded = all(isinstance(p, DTensor) for p in reference.parameters())  # frozen root too
    # Lightning's (data_parallel=1, tensor_parallel=2) mesh -> FSDP over both ranks, both share prompts
    lmesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("data_parallel", "tensor_parallel"))
    flat, group = mesh_groups(lmesh, generation_split=world)
    try:
        mesh_groups(lmesh, generation_split=1)
        mismatch_raises = False
    except ValueError:
        mismatch_raises = True
    dist.barrier()
    return {"out": out, "expected": expected, "flags": flags, "resharded": resharded, "grads_equal": grads_equal,
            "reference_resharded": reference_resharded, "flat": (flat.ndim, flat.size()),
            "group": (group.size, group.rank), "mismatch_raises": mismatch_raises}


def test_unshard_once_generation_is_rank_safe_and_exact(tmp_path, tiny_checkpoint):
    results = run_on_ranks(_sharded_generation_body, tmp_path, str(tiny_checkpoint), timeout=150)
    for rank, res in enumerate(results):
        assert res["out"].shape[1] == 6 + 3 + 6 * rank  # different lengths on the two ranks
        assert torch.equal(res["out"], res["expected"])  # same tokens as the unsharded model
        # after the context every unit is sharded again, with its reshard-after-forward restored:
        # blocks reshard, the root (embeddings / LM head, needed again in backward) does not
        assert res["resharded"]
        assert res["flags"].pop("") is False and all(res["flags"].values())
        assert res["grads_equal"]
        assert res["reference_resharded"]
        assert res["flat"] == (1, 2) and res["group"] == (2, rank) and res["mismatch_raises"]
