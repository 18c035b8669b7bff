"""Fixtures of the ``slurm`` tier: one real single-node SLURM cluster per test session (see cluster.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.optional import skip_optional
from tests.slurm.cluster import (
    APT_PACKAGES,
    SlurmCluster,
    SlurmHarnessError,
    ensure_packages,
    reap_stale_clusters,
)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running cluster (partition ``debug``); ``SLURM_CONF`` points at it in ``os.environ`` meanwhile."""
    if os.geteuid() != 0 and not os.environ.get("MUSEG_REQUIRE_SLURM"):  # make test-slurm requires the tier
        try:
            ensure_packages()
        except SlurmHarnessError:
            skip_optional(
                "SLURM and munge",
                f"apt-get install {' '.join(APT_PACKAGES)} (as root the tier installs them)",
            )
    else:
        ensure_packages()
    # daemons of an earlier session that crashed before its teardown (their pid registry is under
    # pytest's retained base temp dirs)
    reap_stale_clusters(tmp_path_factory.getbasetemp().parent, pattern="pytest-*/slurm*/run/harness.pids")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        cluster.activate()
        yield cluster
    finally:
        cluster.stop()
