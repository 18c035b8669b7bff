"""Shared fixtures. No test may reach the network: the HF hub is forced offline here."""

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


@pytest.fixture(scope="session")
def museg_data_dir() -> Path:
    """The real MUSEG annotation files (../shared/data/museg); skips when absent."""
    if not (SHARED_MUSEG / "stage_1.jsonl").exists():
        pytest.skip(f"MUSEG annotation files not found at {SHARED_MUSEG}")
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
