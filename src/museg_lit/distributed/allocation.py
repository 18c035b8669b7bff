"""What a launcher allocated to this job: the CPU threads torch may use.

torch sizes its intra-op thread pool to every core of the machine. A launcher's job owns only part
of it: ``hydra/launcher=slurm`` asks for ``cpus_per_task`` per task (SLURM sets
``SLURM_CPUS_PER_TASK``), and ``hydra/launcher=submitit_local`` runs a sweep's jobs side by side on
one machine with ``cpus_per_task`` each (submitit's local executor does not pass it on, so it is
read from the job's Hydra config). Without a cap, two local jobs on 2 cores ran 4 threads and the
README's parallel sweep was several times slower than the same jobs one after another
(``experiments/bench_local_sweep.py``). An explicit ``OMP_NUM_THREADS`` always wins.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

__all__ = ["allocated_cpus", "apply_cpu_allocation"]


def allocated_cpus(environ: Mapping[str, str] | None = None, launcher_cpus: int | None = None) -> int | None:
    """CPUs per task of this job, or None outside a launcher's job (or when ``OMP_NUM_THREADS`` is set).

    >>> allocated_cpus({"SLURM_CPUS_PER_TASK": "8"}), allocated_cpus({"SUBMITIT_EXECUTOR": "local"}, 1)
    (8, 1)
    >>> allocated_cpus({}, 1), allocated_cpus({"SLURM_CPUS_PER_TASK": "8", "OMP_NUM_THREADS": "2"})
    (None, None)
    >>> allocated_cpus({"SLURM_CPUS_PER_TASK": "16", "SUBMITIT_EXECUTOR": "local"}, 1)  # local sweep in salloc
    1
    """
    env = os.environ if environ is None else environ
    if env.get("OMP_NUM_THREADS"):
        return None
    executor = env.get("SUBMITIT_EXECUTOR")
    if executor == "local":  # first: a local sweep started inside an allocation shares that allocation
        return max(1, int(launcher_cpus)) if launcher_cpus else None
    if env.get("SLURM_CPUS_PER_TASK") and executor in (None, "slurm"):
        return max(1, int(env["SLURM_CPUS_PER_TASK"]))
    return None


def apply_cpu_allocation() -> int | None:
    """Cap torch's intra-op threads at :func:`allocated_cpus` (the launcher's ``cpus_per_task``), and
    export it as ``OMP_NUM_THREADS``: Lightning's own launcher (``trainer.devices>1`` in a local job)
    otherwise gives each process it starts every core divided by the process count."""
    from hydra.core.hydra_config import HydraConfig

    launcher_cpus = None
    if HydraConfig.initialized():
        launcher_cpus = (HydraConfig.get().get("launcher") or {}).get("cpus_per_task")
    cpus = allocated_cpus(launcher_cpus=launcher_cpus)
    if cpus is not None:
        import torch

        torch.set_num_threads(cpus)
        os.environ["OMP_NUM_THREADS"] = str(cpus)
        log.info("torch threads: %d (the launcher's cpus_per_task)", cpus)
    return cpus
