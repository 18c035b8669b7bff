"""Shared fixtures. No test may reach the network: the HF hub is forced offline here.

Skips: a test may skip only for something optional, through :func:`skip_optional` /
:func:`require_module` (the reason names the package or device and how to get it). Under CI
(``CI=true``) any other skip fails the test: a documented default command must never be skipped
because its dependency is missing (that is a packaging bug, not an optional feature).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MUSEG = REPO_ROOT.parent / "shared" / "data" / "museg"

from tests.optional import OPTIONAL  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and os.environ.get("CI", "").lower() in ("1", "true")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if OPTIONAL not in reason:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, but only optional packages or devices may be missing there: {reason}"


@pytest.fixture(scope="session")
def museg_data_dir() -> Path:
    """The real MUSEG annotation files (../shared/data/museg); skips when absent."""
    if not (SHARED_MUSEG / "stage_1.jsonl").exists():
        pytest.skip(f"MUSEG annotation files not found at {SHARED_MUSEG} (the shared/ folder beside the checkout)")
    return SHARED_MUSEG


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny Qwen2.5-VL checkpoint directory, built once per test session."""
    from museg_lit.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-qwen2_5_vl")


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Eight generated grounding videos + train.jsonl, built once per test session."""
    from museg_lit.data.synthetic import SyntheticSpec, generate_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(SyntheticSpec(out_dir=str(out), num_samples=8, seed=0))
    return out
