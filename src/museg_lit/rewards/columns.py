"""Reward inputs, one row per completion: a prompt's annotation fields repeated for its G completions.

Rewards score completions one by one (``fn(completions, solution, **columns)``), but the fields they
read (``solution``, ``duration``, ``task``, ...) belong to the prompt; with the rollout's
prompt-major layout ``[p0g0, p0g1, ..., p1g0, ...]`` each field is repeated G times in a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["completion_columns"]


def completion_columns(samples: Sequence[Any], num_generations: int) -> tuple[list, dict[str, list]]:
    """``(solution, columns)`` aligned to the ``len(samples) * num_generations`` completion rows.

    ``samples`` are :class:`~museg_lit.data.annotations.GroundingSample` (anything with ``solution``
    and ``columns()``). Example: two samples with durations 10 and 20, G=2 -> ``columns["duration"]
    == [10, 10, 20, 20]``.
    """
    solution = [s.solution for s in samples for _ in range(num_generations)]
    columns: dict[str, list] = {}
    for s in samples:
        for key, value in s.columns().items():
            columns.setdefault(key, []).extend([value] * num_generations)
    return solution, columns
