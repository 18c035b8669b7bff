"""Wall-clock timing of the stages of a step (logged as ``time/<stage>``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["timed"]


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent inside to ``timings[name]`` (stages entered several times accumulate)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
