"""Functions that the ``slurm`` tier runs inside SLURM jobs (submitit pickles them by reference)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import submitit

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_RESTART_COUNT", "SLURM_CONF")


def describe_task(x: int) -> dict:
    """The task's identity as SLURM and submitit see it."""
    env = submitit.JobEnvironment()
    return {
        "x2": 2 * x,
        "hostname": socket.gethostname(),
        "global_rank": env.global_rank,
        "num_tasks": env.num_tasks,
        **{k: os.environ.get(k) for k in SLURM_VARS},
    }


class CountedStarts(submitit.helpers.Checkpointable):
    """Writes ``start-<n>.json`` on every start; sleeps (waiting to be requeued) until ``starts`` starts.

    Requeued by SLURM (``scontrol requeue``) the job reruns the pickled submission; requeued by submitit's
    USR2 handler it runs what :meth:`checkpoint` returned (here: the same callable and arguments).
    """

    def __call__(self, marker_dir: str, starts: int = 2, sleep_s: float = 300.0) -> dict:
        folder = Path(marker_dir)
        n = len(list(folder.glob("start-*.json")))
        record = {k: os.environ.get(k) for k in SLURM_VARS} | {"pid": os.getpid(), "time": time.time()}
        (folder / f"start-{n}.json").write_text(json.dumps(record))
        if n + 1 < starts:
            time.sleep(sleep_s)
            return {"starts": n + 1, "requeued": False}
        return {"starts": n + 1, "requeued": True, "restart_count": os.environ.get("SLURM_RESTART_COUNT")}
