"""``trainer=fsdp``: Lightning's ``ModelParallelStrategy`` set up for pure FSDP2 plus the sharding settings.

Lightning's ``ModelParallelStrategy`` launches the processes, builds the device mesh, gives every
data-parallel replica its own slice of the data and saves distributed checkpoints; the module applies
the parallelism itself in ``configure_model`` (here: ``fully_shard``, see
:mod:`museg_lit.distributed.sharding`). Why a (thin) subclass rather than the class itself:

* Lightning's ``"auto"`` mesh is ``(data_parallel = nodes, tensor_parallel = GPUs per node)``, made
  for FSDP across nodes + tensor parallelism within a node. Pure FSDP needs every rank to be its own
  data-parallel replica, i.e. ``data_parallel = world size``, which is only known once the launcher
  has set up nodes and devices; :meth:`setup_environment` fills it in then.
* the strategy carries :class:`~museg_lit.distributed.sharding.ShardingConfig` (mixed precision,
  resharding, generation split) to ``GRPOModule.configure_model``, as Lightning's own
  ``FSDPStrategy`` carries its ``mixed_precision`` argument.

No tensor parallelism is applied: the mesh's second dimension (Lightning names it
``tensor_parallel``) has size ``generation_split`` and groups the ranks that share each prompt
(see :mod:`museg_lit.distributed.ranks`); FSDP shards over all ranks.

Use Lightning ``precision="32-true"`` with this strategy: mixed precision comes from FSDP2's
``MixedPrecisionPolicy`` (``param_dtype``), not from autocast.
"""

from __future__ import annotations

from datetime import timedelta

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy

from museg_lit.distributed.sharding import ShardingConfig

__all__ = ["FSDP2Strategy"]


class FSDP2Strategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` with a pure-FSDP mesh and :class:`ShardingConfig` attached as ``sharding``.

    Args:
        param_dtype, reduce_dtype, master_dtype, reshard_after_forward, generation_split:
            see :class:`ShardingConfig`.
        save_distributed_checkpoint: each rank saves its shard (Lightning's default).
        process_group_backend: ``None`` = NCCL on GPU, gloo on CPU.
        timeout: collective timeout (a rank stuck longer than this fails instead of hanging).
    """

    def __init__(
        self,
        param_dtype: str | None = "bfloat16",
        reduce_dtype: str | None = "float32",
        master_dtype: str = "float32",
        reshard_after_forward: bool = True,
        generation_split: int = 1,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        self.sharding = ShardingConfig(param_dtype=param_dtype, reduce_dtype=reduce_dtype, master_dtype=master_dtype,
                                       reshard_after_forward=reshard_after_forward, generation_split=generation_split)
        super().__init__(data_parallel_size="auto", tensor_parallel_size=generation_split,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timeout)

    def setup_environment(self) -> None:
        # every rank is a data-parallel replica, except that `generation_split` ranks share prompts
        world = self.num_nodes * self.num_processes
        split = self.sharding.generation_split
        if world % split:
            raise ValueError(f"generation_split={split} does not divide the world size {world} "
                             f"({self.num_nodes} nodes x {self.num_processes} devices)")
        self._data_parallel_size = world // split
        super().setup_environment()
