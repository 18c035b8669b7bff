"""Answer parsing shared by the grounding rewards (MUSEG matching rewards, LongVTG-R1 IoU/CenDist).

A completion answers with ``<answer>s-e s-e ...</answer>`` (seconds). Following MUSEG's
``reward_global_matching`` / ``reward_local_matching`` (``src/train.py`` of the release):

- the text must contain exactly one ``<answer>`` and exactly one ``</answer>``, in that order;
- the answer is split on whitespace; each item is split on ``-`` and ``float(t[0])``, ``float(t[1])``
  must succeed (so ``1-2-3`` parses as ``[1, 2]``: MUSEG only reads the first two fields);
- every segment needs ``0 <= s < e``.

Any violation makes :func:`parse_answer_segments` return ``None`` (reward 0). An empty answer parses
as ``[]`` (no segments): the matching rewards then score it as MUSEG does (see ``museg.py``).

Departure from MUSEG: non-finite numbers (``inf``, ``nan``; Python's ``float`` accepts them) are
rejected here. MUSEG rejects ``nan`` through ``s < e`` too, but accepts ``0-inf``, for which its local
matching returns NaN; we return 0 instead so that a NaN never reaches the advantages.
"""

from __future__ import annotations

import math
import re
from numbers import Real
from typing import Any

__all__ = [
    "Segment",
    "completion_text",
    "extract_answer",
    "normalize_solution",
    "parse_answer_segments",
    "parse_segments",
]

Segment = list[float]  # [start_s, end_s]

_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of one completion: a ``str`` as is; a TRL conversational completion
    (``[{"role": "assistant", "content": ...}]``) -> the content of its last message; else ``""``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list | tuple) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # multimodal-style parts: keep the text ones
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def extract_answer(text: str, *, default: str | None = None, strip: bool = False) -> str | None:
    """Content of the single ``<answer>...</answer>`` (MUSEG's extraction, in its training rewards
    and its evaluation scripts alike); ``default`` unless there is exactly one of each tag with the
    opening tag first (a text that is not a ``str`` has no answer either).

    The two sides differ only in what they keep, hence the parameters: the rewards take the content
    as it is and tell a malformed completion (``None``) from an empty answer (``""``); the evaluation
    (:func:`museg_lit.evaluation.metrics.parse_prediction`, the ``answer`` of each prediction row)
    strips it and has ``""`` for both (``default="", strip=True``).

    >>> extract_answer("<think>x</think><answer> 1-2 </answer>")
    ' 1-2 '
    >>> extract_answer("<think>x</think><answer> 1-2 </answer>", default="", strip=True)
    '1-2'
    >>> extract_answer("<answer>1-2</answer><answer>3-4</answer>") is None  # two answers
    True
    >>> extract_answer("</answer>1-2<answer>", default=""), extract_answer("<answer>1-2", default="")
    ('', '')
    """
    # str.count counts non-overlapping occurrences, exactly what len(re.findall(tag)) does in MUSEG.
    if not isinstance(text, str) or text.count(_ANSWER_OPEN) != 1 or text.count(_ANSWER_CLOSE) != 1:
        return default
    match = _ANSWER_RE.search(text)  # None when </answer> comes before <answer>
    if match is None:
        return default
    return match.group(1).strip() if strip else match.group(1)


def parse_segments(answer: str) -> list[Segment] | None:
    """Parse answer content into ``[[s, e], ...]`` (given order); ``None`` on any malformed item.

    >>> parse_segments("12.50-17.80 3-4")
    [[12.5, 17.8], [3.0, 4.0]]
    >>> parse_segments("1-2-3")  # MUSEG quirk: only the first two fields are read
    [[1.0, 2.0]]
    >>> parse_segments("5-3") is None, parse_segments("12.5") is None, parse_segments("")
    (True, True, [])
    """
    segments: list[Segment] = []
    for item in answer.split():  # MUSEG: content.strip().split() == content.split()
        fields = item.split("-")
        try:
            start, end = float(fields[0]), float(fields[1])
        except (ValueError, IndexError):
            return None
        if not (math.isfinite(start) and math.isfinite(end)):
            return None  # departure: see module docstring
        if not (start >= 0 and end >= 0 and start < end):
            return None
        segments.append([start, end])
    return segments


def parse_answer_segments(completion: Any) -> list[Segment] | None:
    """:func:`extract_answer` then :func:`parse_segments`; ``None`` means "malformed, reward 0".

    >>> parse_answer_segments("<think>...</think><answer>0.00-5.20 7.10-9.00</answer>")
    [[0.0, 5.2], [7.1, 9.0]]
    """
    answer = extract_answer(completion_text(completion))
    return None if answer is None else parse_segments(answer)


def _is_number(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def normalize_solution(solution: Any) -> list[Segment]:
    """Ground truth of one sample as ``[[s, e], ...]`` floats. ``None`` -> ``[]``; a flat pair
    ``[s, e]`` is wrapped (MUSEG wraps it only when ``s`` is an ``int``). Raises ``ValueError`` on
    anything else: a malformed ground truth is a data bug, not a bad completion.

    >>> normalize_solution([[1, 2.5]]), normalize_solution([3.0, 4.0])
    ([[1.0, 2.5]], [[3.0, 4.0]])
    """
    if solution is None:
        return []
    items = list(solution)
    if items and _is_number(items[0]):
        items = [items]
    try:
        out = [[float(seg[0]), float(seg[1])] for seg in items]
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"malformed ground-truth segments {solution!r}: expected [[start, end], ...]") from exc
    if any(len(seg) != 2 for seg in items):
        raise ValueError(f"malformed ground-truth segments {solution!r}: each segment needs [start, end]")
    return out
