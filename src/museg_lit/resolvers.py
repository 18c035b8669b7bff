"""The project's OmegaConf resolvers (``${museg.<name>:...}`` in ``conf/``), registered once when the
package is imported, so every entry point, every launcher's job and every test composes the same
config.

Why ``paths.root_dir`` has its own resolver: Hydra's ``${hydra:...}`` resolver reads the
``HydraConfig`` singleton, which a multirun sets only inside each job. The sweeper and the
launchers resolve ``hydra.sweep.dir`` (and the submitit launchers ``submitit_folder``) in the
launching process, before any job; ``hydra.sweep.dir`` -> ``paths.log_dir`` -> ``paths.root_dir``,
so a root of ``${oc.env:MUSEG_ROOT,${hydra:runtime.cwd}}`` failed there ("HydraConfig was not set"),
with or without ``MUSEG_ROOT``: OmegaConf resolves a resolver's default argument before the
resolver runs. :func:`root_dir` needs no Hydra singleton, and gives every job the launch's root.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["ROOT_ENV", "at_least_one", "register_resolvers", "root_dir"]

ROOT_ENV = "MUSEG_ROOT"


def root_dir() -> str:
    """``$MUSEG_ROOT`` (made absolute) if set and non-empty, else the current directory.

    Registered with ``use_cache=True``: the value is computed once per config, in the process that
    composes it. A multirun's launching process resolves it first (for ``hydra.sweep.dir``), and
    Hydra copies the launching config's resolver cache into every job's config
    (``ConfigLoader.load_sweep_config``, the mechanism that keeps ``${now:...}`` equal across
    jobs), so a job gets the launch's root even when it runs elsewhere (a SLURM ``setup`` line
    that changes directory, another ``MUSEG_ROOT`` on the compute node)."""
    env = os.environ.get(ROOT_ENV, "").strip()
    if env:
        return str(Path(env).expanduser().absolute())
    return os.getcwd()


def at_least_one(value) -> int:
    """``max(1, int(value))``: one SLURM task per GPU, and one task on a node without GPUs
    (``hydra.launcher.gpus_per_node=0``; sbatch refuses ``--ntasks-per-node=0``).

    >>> at_least_one(8), at_least_one(0), at_least_one(None)
    (8, 1, 1)
    """
    return max(1, int(value or 0))


def register_resolvers() -> None:
    """Register every ``museg.*`` resolver (idempotent).

    - ``${museg.root:}``: :func:`root_dir` (``conf/paths/default.yaml``);
    - ``${museg.at_least_one:<n>}``: :func:`at_least_one` (``conf/hydra/launcher/slurm.yaml``);
    - ``${museg.run_dir:<parent>,<run_name>,<overrides>,<resume>}`` and
      ``${museg.run_dir_name:<run_name>,<overrides>}``: the training run directory
      (``conf/train.yaml``; :func:`museg_lit.checkpointing.run_dir`).
    """

    def run_dir(parent, run_name, overrides, resume):
        from museg_lit.checkpointing import run_dir as checkpointing_run_dir

        return checkpointing_run_dir(parent, run_name, overrides, resume)

    def run_dir_name(run_name, overrides):
        from museg_lit.checkpointing import run_dir_name as checkpointing_run_dir_name

        return checkpointing_run_dir_name(run_name, list(overrides or []))

    if not OmegaConf.has_resolver("museg.root"):
        OmegaConf.register_new_resolver("museg.root", root_dir, use_cache=True)
    for name, fn in (("museg.at_least_one", at_least_one), ("museg.run_dir", run_dir),
                     ("museg.run_dir_name", run_dir_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
