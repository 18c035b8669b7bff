"""MUSEG rewards (arXiv 2505.20715): format (stage 1 / stage 2) and segment matching (global + local).

Reproduces ``reward_format``, ``reward_format_n_timestamp``, ``reward_global_matching``,
``reward_local_matching`` and ``reward_segment_matching`` of the MUSEG release (``src/train.py``)
value for value, quirks included (each one is commented where it happens):

- ``format``: an empty answer (``<answer></answer>``) scores 1.0; ``1-2-3`` is a well-formed item;
  the timestamp check uses ``str(float(x))`` as an *unescaped* regex, so its ``.`` matches any
  character (``1.0`` is found in "110"), and ``12`` in the answer must appear as ``12.0`` in the think;
- ``global_matching``: predictions are merged, ground truth is not, so overlapping ground-truth
  segments can push the reward above 1 (the documented range [0, 1] holds for disjoint ground truth,
  which is what MUSEG's data has apart from a few dozen rows);
- ``local_matching``: padding with ``[1e9, 1e9 + 1]`` makes an empty answer score a tiny positive
  value (about 5e-9) rather than 0.

Departures: rewards take plain strings (TRL conversational completions are also accepted), ignore
unknown columns instead of requiring MUSEG's ``problem``/``task``/``idx``, and never log to files.
Non-finite timestamps (``0-inf``) score 0 in the matching rewards (MUSEG: NaN in local matching),
and local matching is clamped to [0, 1] against last-ulp rounding. Sums are left-to-right loops, not
``sum()``, because Python 3.12 changed ``sum()`` of floats to compensated summation and MUSEG ran
on Python 3.11.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from museg_lit.rewards.parsing import (
    Segment,
    completion_text,
    normalize_solution,
    parse_answer_segments,
)

__all__ = [
    "format_no_timestamp_reward",
    "format_reward",
    "global_matching_reward",
    "local_matching_reward",
    "segment_matching_reward",
]

_FORMAT_RE = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# Local matching pads the shorter list with this far-away segment (MUSEG's constant).
_PAD: Segment = [1e9, 1e9 + 1]


def _left_sum(values: Iterable[float]) -> float:
    """Left-to-right float sum, i.e. Python 3.11's ``sum()`` (3.12+ compensates rounding)."""
    total = 0.0
    for v in values:
        total += v
    return total


# --------------------------------------------------------------------------------------- format


def _format_score(text: str, check_timestamps: bool) -> float:
    if any(text.count(tag) != 1 for tag in _TAGS):
        return 0.0
    match = _FORMAT_RE.search(text)
    if match is None:
        return 0.0
    think, answer = match.groups()
    numbers: list[float] = []
    # Quirk: an empty answer has no items, so it keeps 1.0.
    for item in answer.split():
        fields = item.split("-")
        try:
            # Quirk: only fields[0] and fields[1] are read, so "1-2-3" is well-formed; no s < e check.
            numbers.extend([float(fields[0]), float(fields[1])])
        except (ValueError, IndexError):
            return 0.2
    if check_timestamps:
        for x in numbers:
            # Quirk (kept on purpose): str(x) is used as a regex *unescaped*, so "." is a wildcard
            # ("1.0" matches "110"), and an integer answer "12" must appear as "12.0" (or "12x0").
            hits = len(re.findall(str(x), think, re.DOTALL))
            if hits < 1 or hits > 10:
                return 0.6
    return 1.0


def format_reward(completions: list[Any], solution: list[Any] | None = None, **columns: Any) -> list[float]:
    """Stage-1 format reward (MUSEG ``format``), in {0, 0.2, 0.6, 1.0}.

    0 unless the completion is ``<think>T</think><answer>A</answer>`` (surrounding whitespace allowed)
    with exactly one of each tag; 0.2 if an item of ``A`` does not parse as ``s-e``; 0.6 if a number of
    ``A`` occurs (as the regex ``str(float(x))``) in ``T`` fewer than 1 or more than 10 times; else 1.0.

    Worked example::

        >>> format_reward(["<think>It starts at 12.5s and ends at 17.8s.</think><answer>12.50-17.80</answer>",
        ...                "<think>The man jumps.</think><answer>12.50-17.80</answer>",
        ...                "<think>t</think><answer>12.5 to 17.8</answer>",
        ...                "Answer: <answer>1-2</answer>"], [[[12.5, 17.8]]] * 4)
        [1.0, 0.6, 0.2, 0.0]

    (``12.50`` -> ``str(12.5)`` = "12.5" found once in the think, "17.8" once -> 1.0; no timestamp in
    the think -> 0.6; item "12.5" has no "-" -> 0.2; no think tags -> 0.)
    """
    return [_format_score(completion_text(c), check_timestamps=True) for c in completions]


def format_no_timestamp_reward(
    completions: list[Any], solution: list[Any] | None = None, **columns: Any
) -> list[float]:
    """Stage-2 format reward (MUSEG ``format_n_timestamp``): :func:`format_reward` without the
    timestamp-in-think check, in {0, 0.2, 1.0}.

    Worked example::

        >>> format_no_timestamp_reward(["<think>The man jumps.</think><answer>12.50-17.80</answer>",
        ...                             "<think>t</think><answer>12.5</answer>"], [[[12.5, 17.8]]] * 2)
        [1.0, 0.2]
    """
    return [_format_score(completion_text(c), check_timestamps=False) for c in completions]


# ------------------------------------------------------------------------------ segment matching


def _merge(segments: list[Segment]) -> list[Segment]:
    """Sort by start and merge overlapping or touching segments (``prev.end >= next.start``).

    MUSEG merges the first overlapping adjacent pair and restarts; on a start-sorted list that
    converges to the same connected components as this single pass (min/max only, so bit-identical).
    """
    merged: list[Segment] = []
    for start, end in sorted(segments, key=lambda s: s[0]):
        if merged and merged[-1][1] >= start:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _global_score(pred: list[Segment], gts: list[Segment]) -> float:
    if not gts:
        return 0.0  # MUSEG: gts[0] raises IndexError -> 0
    merged = _merge(pred)
    all_gt = _left_sum(e - s for s, e in gts)
    all_sel = _left_sum(e - s for s, e in merged)
    overlap = 0.0
    for gs, ge in gts:  # ground truth is *not* merged (quirk: overlapping gt counts twice)
        for ps, pe in merged:
            overlap += max(0.0, min(pe, ge) - max(ps, gs))
    try:
        precision, recall = overlap / (all_sel + 1e-6), overlap / (all_gt + 1e-6)
        return 2 * precision * recall / (precision + recall + 1e-6)
    except ZeroDivisionError:  # only for degenerate gt (negative total length); MUSEG -> 0
        return 0.0


def _local_score(pred: list[Segment], gts: list[Segment]) -> float:
    gts, pred = list(gts), list(pred)
    # Pair in the given order (no sorting); pad the shorter list with a far-away segment.
    if len(gts) < len(pred):
        gts.extend([_PAD] * (len(pred) - len(gts)))
    elif len(pred) < len(gts):
        pred.extend([_PAD] * (len(gts) - len(pred)))
    if not gts:
        return 0.0  # both empty: MUSEG divides by len(scores) == 0 -> exception -> 0
    scores = []
    try:
        for (gs, ge), (ps, pe) in zip(gts, pred, strict=True):
            inter = max(0.0, min(ge, pe) - max(gs, ps))
            union = ge - gs + pe - ps - inter  # same evaluation order as MUSEG (bit-identical)
            enclosure = max(ge, pe) - min(gs, ps)
            # GIoU = IoU - (C - U) / C in [-1, 1], mapped to [0, 1].
            scores.append((1 + inter / union - (enclosure - union) / enclosure) / 2)
    except ZeroDivisionError:  # zero union/enclosure only from rounding on degenerate input; MUSEG -> 0
        return 0.0
    reward = _left_sum(scores) / len(scores)
    return min(1.0, max(0.0, reward))  # clamp last-ulp rounding (e.g. C - U = -1 ulp)


def _matching(completions: list[Any], solution: list[Any], score) -> list[float]:
    rewards = []
    for completion, gt in zip(completions, solution, strict=True):
        pred = parse_answer_segments(completion)
        rewards.append(0.0 if pred is None else float(score(pred, normalize_solution(gt))))
    return rewards


def global_matching_reward(completions: list[Any], solution: list[Any], **columns: Any) -> list[float]:
    """MUSEG global matching: F1 of the total overlap between merged predictions and ground truth.

    Predictions are sorted and merged (``prev.end >= next.start``); ``ov`` = sum over all
    (gt, merged pred) pairs of the intersection length; ``P = ov / (sum pred len + 1e-6)``,
    ``R = ov / (sum gt len + 1e-6)``; reward ``2PR / (P + R + 1e-6)``. In [0, 1] for disjoint ground
    truth; 0 for a malformed or empty answer.

    Worked example (gt 0-10 and 20-30; preds 5-15 and 12-25 merge into 5-25)::

        >>> r = global_matching_reward(["<think>.</think><answer>5-15 12-25</answer>"], [[[0, 10], [20, 30]]])
        >>> round(r[0], 6)  # ov = 5 + 5 = 10, P = R = 10 / 20 -> F1 = 0.5 (minus the 1e-6 terms)
        0.499999
    """
    return _matching(completions, solution, _global_score)


def local_matching_reward(completions: list[Any], solution: list[Any], **columns: Any) -> list[float]:
    """MUSEG local matching: mean GIoU (mapped to [0, 1]) of the i-th prediction with the i-th gt.

    No sorting; the shorter list is padded with ``[1e9, 1e9 + 1]``; per pair
    ``(1 + IoU - (C - U) / C) / 2`` with ``C`` the enclosing span and ``U`` the union. In [0, 1];
    0 for a malformed answer.

    Worked example (gt 0-10, pred 5-20: I = 5, U = 20, C = 20)::

        >>> local_matching_reward(["<think>.</think><answer>5-20</answer>"], [[[0, 10]]])
        [0.625]

    (IoU = 5 / 20 = 0.25, (C - U) / C = 0 -> (1 + 0.25 - 0) / 2 = 0.625.)
    """
    return _matching(completions, solution, _local_score)


def segment_matching_reward(completions: list[Any], solution: list[Any], **columns: Any) -> list[float]:
    """MUSEG segment matching = global matching + local matching, in [0, 2].

    Worked example (gt 0-10, pred 0-10)::

        >>> r = segment_matching_reward(["<think>.</think><answer>0-10</answer>"], [[[0, 10]]])
        >>> round(r[0], 5)  # global: P = R = 10 / (10 + 1e-6) -> 0.9999994; local: IoU 1, C = U -> 1
        2.0
    """
    return [
        g + loc
        for g, loc in zip(
            global_matching_reward(completions, solution), local_matching_reward(completions, solution), strict=True
        )
    ]
