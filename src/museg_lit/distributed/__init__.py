"""Multi-process training: FSDP2 sharding of policy / reference, the Lightning strategy that carries
the sharding settings, rank helpers, and cross-rank GRPO group statistics.

Design in one paragraph (details in each module's docstring):

* ``trainer=fsdp`` builds :class:`~museg_lit.distributed.strategy.FSDP2Strategy`, Lightning's
  ``ModelParallelStrategy`` with a pure-FSDP device mesh. ``GRPOModule.configure_model`` applies
  ``fully_shard`` per decoder layer and per vision block, then to the root
  (:func:`~museg_lit.distributed.sharding.shard_model`), to the policy (fp32 master weights, bf16
  compute on GPU) and to the frozen reference (stored in the compute dtype, no optimizer state).
* Generation: unshard once per rollout (:func:`~museg_lit.distributed.sharding.unshard_for_generation`), so
  decoding runs no collective at all and ranks may stop at different lengths.
* Rewards and advantages: a prompt's G completions live on one rank by default; with
  ``generation_split=k`` the k ranks of a group share each prompt, generate ``G/k`` completions each,
  and all-gather rewards within the group (:func:`~museg_lit.distributed.ranks.gathered_group_advantages`).
* Rank safety: under FSDP every forward and backward is a collective, so every rank must run the
  same number of them. Generation runs none (unsharded); the log-prob passes run once per rollout
  chunk on every rank; a step whose videos all failed to decode on *one* rank is skipped on *all*
  (:func:`~museg_lit.distributed.ranks.all_ranks_agree`); DAPO's per-rank refills (a data-dependent
  number of extra forwards) are refused with more than one rank.
"""

from __future__ import annotations

import importlib

# Names resolve lazily (PEP 562): `museg_lit.distributed.ranks` needs only torch, while the
# strategy pulls in Lightning and the sharding module transformers; spawned test workers and
# rank helpers should not pay for both.
_EXPORTS = {
    "FSDP2Strategy": "strategy",
    "RankGroup": "ranks",
    "ShardingConfig": "sharding",
    "all_ranks_agree": "ranks",
    "cast_parameters": "sharding",
    "gathered_group_advantages": "ranks",
    "is_distributed": "ranks",
    "mesh_groups": "ranks",
    "shard_model": "sharding",
    "shardable_blocks": "sharding",
    "unshard_for_generation": "sharding",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
