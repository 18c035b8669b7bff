"""The answer an SFT warm start teaches: ``<think>T</think><answer>s-e s-e</answer>``.

MUSEG trains with RL only; its stage-1 ``format`` reward pays 1.0 when the completion is
``<think>...</think><answer>...</answer>`` and every number of the answer occurs in the think
(as the text ``str(float(x))``). The target built here meets that by construction: the think is a
template that cites each ground-truth segment, written with ``str(float(x))`` of the very numbers
the answer prints with two decimals (MUSEG's ``X.XX-X.XX``). Departure from the paper: MUSEG has
no SFT stage; this is the warm start a randomly initialised or small model needs before the
grounding rewards carry a signal.
"""

from __future__ import annotations

from typing import Any

from museg_lit.rewards.parsing import normalize_solution

__all__ = ["THINK_TEMPLATE", "answer_numbers", "target_text"]

# {spans}: "from 2.5 to 5.0 seconds", joined with ", " and a final " and ".
THINK_TEMPLATE = "The queried content is visible {spans}."


def answer_numbers(solution: Any) -> list[tuple[str, str]]:
    """Each ground-truth segment as the two strings the answer prints (``"%.2f"``). A segment that is
    empty at that precision is left out: the rewards refuse an answer holding ``s-e`` with
    ``s >= e`` (MUSEG's stage-1 file has two such rows, e.g. ``[19.912, 19.912]``)."""
    pairs = [(f"{s:.2f}", f"{e:.2f}") for s, e in normalize_solution(solution)]
    return [(s, e) for s, e in pairs if float(s) < float(e)]


def _spans(pairs: list[tuple[str, str]]) -> str:
    # str(float("2.50")) == "2.5": exactly what the format reward searches the think for
    spans = [f"from {float(s)} to {float(e)} seconds" for s, e in pairs]
    return spans[0] if len(spans) == 1 else ", ".join(spans[:-1]) + " and " + spans[-1]


def target_text(solution: Any, think_template: str = THINK_TEMPLATE) -> str:
    """The completion an SFT step teaches for ``solution`` (``[s, e]`` or ``[[s, e], ...]``, seconds).

    >>> target_text([[2.5, 5.0], [7.0, 9.25]])
    '<think>The queried content is visible from 2.5 to 5.0 seconds and from 7.0 to 9.25 seconds.</think><answer>2.50-5.00 7.00-9.25</answer>'
    """
    if "{spans}" not in think_template:
        raise ValueError(f"algo.think_template={think_template!r} must contain {{spans}} (the cited segments)")
    pairs = answer_numbers(solution)
    if not pairs:
        raise ValueError(f"solution {solution!r} has no segment to teach (none is longer than 0.01 s)")
    think = think_template.replace("{spans}", _spans(pairs))
    answer = " ".join(f"{s}-{e}" for s, e in pairs)
    return f"<think>{think}</think><answer>{answer}</answer>"
