"""Rank helpers: which ranks share a prompt, collective agreement on flags, cross-rank group stats.

GRPO normalises each reward against the other completions *of the same prompt*. The data split
decides where those completions live:

* ``generation_split=1`` (default): every rank gets its own prompts (Lightning's distributed
  sampler over all ranks) and generates all G completions of each, so a group lives on one rank and
  its statistics need no communication — identical to the 1-rank computation by construction.
* ``generation_split=k``: the k ranks of a :class:`RankGroup` receive the *same* prompts (the
  sampler runs over ``world / k`` data-parallel replicas) and each generates ``G / k`` completions
  with its own sampling seed. :func:`gathered_group_advantages` all-gathers the rewards within the
  group and normalises over all G, so the advantages equal the 1-rank computation on the union
  (``tests/unit/test_distributed_advantages.py`` proves it on 2 processes). This is TRL's layout;
  it spreads the memory of long completions over more GPUs.

Collective rules (no deadlock): every helper here except :func:`sampling_rng` is a collective — call it on every rank of the
group in the same order, whatever the local data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from museg_lit.rl.advantages import GroupStats, group_advantages, split_group_advantages

__all__ = ["RankGroup", "all_ranks_agree", "gathered_group_advantages", "is_distributed", "mesh_groups"]


@dataclass(frozen=True)
class RankGroup:
    """The ranks that share each prompt: ``size`` of them, this rank is number ``rank`` among them.

    ``process_group`` is ``None`` for a single process (then ``size == 1``).
    """

    size: int = 1
    rank: int = 0
    process_group: dist.ProcessGroup | None = None

    def __post_init__(self):
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank {self.rank} outside a group of {self.size}")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_ranks_agree(flag: bool, device: torch.device | str = "cpu") -> bool:
    """``True`` iff ``flag`` is true on every rank (a MIN all-reduce); ``flag`` itself in one process.

    Used where one rank alone must not take a branch that changes the number of collectives
    (e.g. skipping a step whose videos all failed to decode).
    """
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gathered_group_advantages(
    rewards: Tensor,
    num_generations_local: int,
    group: RankGroup,
    *,
    scale: bool = True,
    eps: float = 1e-4,
    device: torch.device | str | None = None,
) -> GroupStats:
    """Group advantages of this rank's rows ``[B*g]`` when the ``group.size`` ranks of ``group``
    share the same B prompts and each holds ``g`` of the ``G = size*g`` completions of every prompt.

    ``device``: where the collective runs (the CUDA device under NCCL; rewards live on the host).
    With ``group.size == 1`` this is :func:`group_advantages`, no communication.
    """
    if group.size == 1:
        return group_advantages(rewards, num_generations_local, scale=scale, eps=eps)
    local = rewards.detach().to(device or rewards.device, torch.float32)  # [B*g]
    parts = [torch.empty_like(local) for _ in range(group.size)]
    dist.all_gather(parts, local, group=group.process_group)
    stats = split_group_advantages(torch.stack(parts), group.rank, num_generations_local, scale=scale, eps=eps)
    return GroupStats(*(t.to(rewards.device) for t in stats))


def mesh_groups(mesh: DeviceMesh, generation_split: int) -> tuple[DeviceMesh, RankGroup]:
    """From Lightning's ``(data_parallel, tensor_parallel)`` mesh: the 1-D mesh FSDP shards over
    (all ranks) and this rank's :class:`RankGroup` of ranks sharing prompts.

    No tensor parallelism is applied, so the second dimension must have size ``generation_split``
    (:class:`~museg_lit.distributed.strategy.FSDP2Strategy` sets it so). Creating the flattened
    mesh is a collective: call on every rank.
    """
    names = mesh.mesh_dim_names or ()
    if mesh.ndim == 1:
        if generation_split != 1:
            raise ValueError("generation_split > 1 needs a 2-D (data_parallel, tensor_parallel) mesh")
        return mesh, RankGroup()
    share = mesh["tensor_parallel"].size() if "tensor_parallel" in names else 1
    if share != generation_split:
        raise ValueError(
            f"the device mesh has tensor_parallel={share} but generation_split={generation_split}: this module "
            "applies no tensor parallelism; use trainer=fsdp (FSDP2Strategy), which sizes the mesh itself"
        )
    if share == 1:
        return mesh["data_parallel"], RankGroup()
    flat = init_device_mesh(mesh.device_type, (mesh.size(),), mesh_dim_names=("fsdp",))
    sub = mesh["tensor_parallel"]
    return flat, RankGroup(share, sub.get_local_rank(), sub.get_group())


@contextmanager
def sampling_rng(group: RankGroup, step: int, sample_ids: Sequence, device: torch.device) -> Iterator[None]:
    """Ranks that share prompts (``generation_split > 1``) must sample *different* completions,
    but Lightning seeds every rank alike. Inside, the RNG is seeded from (initial seed, step,
    prompts, rank in group) and restored afterwards: different per rank, reproducible on resume,
    and the training RNG stream is left untouched. A no-op with one rank per prompt (no collective)."""
    if group.size == 1:
        yield
        return
    key = f"{torch.initial_seed()}/{step}/{list(sample_ids)}/{group.rank}"
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") & (2**63 - 1)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
        torch.manual_seed(seed)
        yield
