"""FSDP2 sharding of Qwen2.5-VL (policy and reference) and unshard-once generation.

:func:`shard_model` applies ``torch.distributed.fsdp.fully_shard`` to every transformer block —
the model's ``_no_split_modules``: ``Qwen2_5_VLDecoderLayer`` (language model) and
``Qwen2_5_VLVisionBlock`` (vision tower) — and then to the root, which takes the remaining
parameters (embeddings and tied LM head, patch embedding, patch merger, final norm). One
all-gather / reduce-scatter per block keeps the peak of unsharded weights at about one block.

Precision (:class:`ShardingConfig`): on GPU the sharded policy keeps **fp32 master weights** (the
optimizer state is fp32) and FSDP all-gathers and computes in ``param_dtype`` (bf16) and reduces
gradients in ``reduce_dtype`` (fp32) — what MUSEG got from DeepSpeed bf16. The frozen reference
needs no master copy, so it is stored in ``param_dtype`` directly (half the memory). On CPU tests
``param_dtype=None`` keeps everything fp32.

Generation (:func:`unshard_for_generation`): HF ``generate`` runs one forward per new token.
Under plain FSDP every forward all-gathers every block, so (a) a rank whose completions all hit
EOS stops calling forward while the others wait in an all-gather: deadlock, and (b) even in
lock-step (HF ``synced_gpus=True``, which keeps finished ranks running dummy forwards) each token
re-gathers the whole model: for a 7B model and 4,096 completion tokens ~60 TB of traffic per
rollout; and (c) transformers 5 encodes the video once *before* decoding by calling the vision
tower directly (``get_video_features``), outside the root's forward hooks, so the root-owned
patch embedding / merger would not even be gathered. We therefore **unshard once per rollout**: all-gather every FSDP group once, switch off
reshard-after-forward, decode with no collective at all (ranks may stop at different lengths), then
reshard. The cost is one full copy of the weights in ``param_dtype`` per rank during generation
(15 GB for 7B in bf16) — the same trade TRL (ZeRO-3 ``unwrap_model_for_generation``) and verl
make. Departure from MUSEG: MUSEG generated with vLLM on a separate GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from museg_lit.models.factory import DTYPES

__all__ = [
    "ShardingConfig",
    "cast_parameters",
    "shard_model",
    "shardable_blocks",
    "unshard_for_generation",
]


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)} or null") from None


@dataclass(frozen=True)
class ShardingConfig:
    """FSDP2 settings (``trainer.strategy.*`` of ``conf/trainer/fsdp.yaml``).

    Attributes:
        param_dtype: dtype of all-gathered parameters and of compute (``bfloat16`` on GPU);
            ``None`` keeps the stored dtype (fp32 CPU tests).
        reduce_dtype: dtype of the gradient reduce-scatter (``float32``: fp32 reductions).
        master_dtype: dtype of the sharded trainable policy parameters (and thus of the
            optimizer state) when ``param_dtype`` is set; ``float32`` = fp32 master weights.
        reshard_after_forward: free each block's gathered weights after its forward (ZeRO-3);
            ``False`` keeps them until backward (ZeRO-2-like: faster, more memory).
        generation_split: ranks that share each prompt; each generates ``G / generation_split``
            of its completions and rewards are gathered within the group (TRL's layout).
    """

    param_dtype: str | None = "bfloat16"
    reduce_dtype: str | None = "float32"
    master_dtype: str = "float32"
    reshard_after_forward: bool = True
    generation_split: int = 1

    def __post_init__(self):
        for name in (self.param_dtype, self.reduce_dtype, self.master_dtype):
            _dtype(name)  # fail at config time, not after loading weights
        if self.generation_split < 1:
            raise ValueError("generation_split must be >= 1")

    def mp_policy(self) -> MixedPrecisionPolicy:
        return MixedPrecisionPolicy(param_dtype=_dtype(self.param_dtype), reduce_dtype=_dtype(self.reduce_dtype))

    @property
    def policy_dtype(self) -> torch.dtype | None:
        """Storage dtype of the sharded policy: fp32 master weights under mixed precision."""
        return _dtype(self.master_dtype) if self.param_dtype is not None else None

    @property
    def reference_dtype(self) -> torch.dtype | None:
        """Storage dtype of the frozen reference: the compute dtype (no optimizer, no master copy)."""
        return _dtype(self.param_dtype)


def _hf_model(model: nn.Module) -> nn.Module:
    """The transformers model under an optional peft wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def shardable_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks to shard one by one, in module order.

    They are the classes transformers itself refuses to split across devices
    (``_no_split_modules``): for Qwen2.5-VL the decoder layers and the vision blocks.

    Raises:
        ValueError: the model names no such class, or none is found (sharding only the root
            would gather the whole model at once, silently defeating FSDP).
    """
    names = set(getattr(_hf_model(model), "_no_split_modules", None) or [])
    if not names:
        raise ValueError(f"{type(model).__name__} declares no _no_split_modules: cannot pick FSDP blocks")
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"no module of the classes {sorted(names)} found in {type(model).__name__}")
    return blocks


def cast_parameters(model: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """Cast the floating-point *parameters* (not buffers) of ``model`` to ``dtype`` in place.

    Buffers keep their dtype on purpose: ``Module.to(bf16)`` would also round the fp32 rotary
    ``inv_freq`` buffers, which changes positions' embeddings on long videos.
    """
    if dtype is None:
        return model
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    return model


def _enable_activation_checkpointing(model: nn.Module) -> None:
    # transformers' own (non-reentrant) checkpointing of each GradientCheckpointingLayer: the
    # recomputation re-enters the block's FSDP pre-forward hook, so the block is all-gathered again
    # in backward, which FSDP2 supports. Non-reentrant, because reentrant checkpointing drops the
    # gradients of blocks whose inputs need no grad (a frozen vision tower).
    hf = _hf_model(model)
    # `is_activation_checkpointing` is the transformers >= 5.2x name of `is_gradient_checkpointing`
    enabled = hf.is_activation_checkpointing if hasattr(hf, "activation_checkpointing_enable") else (
        hf.is_gradient_checkpointing)
    if enabled:
        return
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def shard_model(
    model: nn.Module,
    mesh: DeviceMesh,
    *,
    mp_policy: MixedPrecisionPolicy | None = None,
    reshard_after_forward: bool = True,
    activation_checkpointing: bool = False,
    frozen: bool = False,
) -> int:
    """``fully_shard`` each block of ``model`` over the 1-D ``mesh``, then the root; returns the number
    of blocks sharded. The model is modified in place (its class becomes ``FSDP<cls>``).

    The root of a trained model is sharded with ``reshard_after_forward=False``: its parameters
    (embeddings, LM head) are the last used in forward and the first in backward, so freeing them in
    between would only add an all-gather. A ``frozen`` model (the reference) has no backward: its
    root reshards after forward too, or its gathered embeddings / LM head (~2 GB for 7B) would stay.
    """
    if mesh.ndim != 1:
        raise ValueError(f"shard_model needs a 1-D device mesh, got {mesh.ndim}-D")
    if activation_checkpointing:
        _enable_activation_checkpointing(model)
    policy = mp_policy or MixedPrecisionPolicy()
    blocks = shardable_blocks(model)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=frozen and reshard_after_forward)
    return len(blocks)


def _fsdp_modules(model: nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def _reshards_after_forward(module: FSDPModule) -> bool:
    # FSDP2 has a setter but no getter: a group reshards after forward iff it has a post-forward mesh
    groups = module._get_fsdp_state()._fsdp_param_groups
    return any(g.post_forward_mesh_info is not None for g in groups)


@contextmanager
def unshard_for_generation(model: nn.Module) -> Iterator[None]:
    """Inside: every FSDP group of ``model`` is all-gathered once and stays gathered, so forward
    passes (HF ``generate``'s decoding loop) issue **no collective**. A no-op for unsharded models.

    Every rank must enter and leave the context together (the all-gathers are collectives), but
    between the two each rank may run any number of forwards — this is what makes generation
    rank-safe when ranks produce completions of different lengths.
    """
    modules = _fsdp_modules(model)
    if not modules:
        yield
        return
    # FSDP2 picks its root lazily, at the first forward of the outermost module. transformers 5
    # runs the vision tower *before* that forward (generate encodes the video once, via
    # get_video_features), which would make a vision block claim to be the root; so initialise the
    # root now. (There is no public API for this; _lazy_init is idempotent.)
    modules[0]._get_fsdp_state()._lazy_init()
    flags = [_reshards_after_forward(m) for m in modules]
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
    handles = [m.unshard(async_op=True) for m in modules]  # issue all all-gathers, then wait
    for handle in handles:
        if handle is not None:
            handle.wait()
    try:
        yield
    finally:
        for m, flag in zip(modules, flags, strict=True):
            m.reshard()
            m.set_reshard_after_forward(flag, recurse=False)

