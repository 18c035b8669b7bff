"""What an evaluation works on and what it produces: one query (:class:`EvalItem`) and the result
of a run (:class:`EvalResult`). Shared by the runners, the benchmarks and the training callback."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalItem", "EvalResult"]


@dataclass(frozen=True)
class EvalItem:
    """One benchmark query. ``question`` is the raw query; ``extra`` holds benchmark-specific fields
    (E.T. Bench: ``source``, options, ...) that the scorer needs."""

    id: str
    video: str
    question: str
    groundtruth: Any
    task: str
    extra: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    """What one evaluation produced: metrics over *all* samples (resumed ones included) and files."""

    dataset: str
    task: str
    metrics: dict[str, float]
    headline: str
    records: list[dict]
    output_dir: Path
    files: dict[str, Path]
    num_generated: int
    timings: dict[str, float]
