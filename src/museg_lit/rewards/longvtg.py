"""LongVTG-R1 rewards: single-segment IoU and the dense Center Distance reward (CenDist).

LongVTG-R1 (ICLR 2026 submission) has no public code: this is a *reconstruction* from the paper's
description. Its total reward is ``R = R_format + R_IoU + alpha * R_cendist``; ``R_format`` is
MUSEG's format reward (``museg.py``) and ``alpha`` is a weight of the reward schedule.

Both rewards read the answer with the same parser as MUSEG's matching rewards
(:func:`museg_lit.rewards.parsing.parse_answer_segments`: one ``<answer>``, items ``s-e`` with
``0 <= s < e``) and compare the *first* predicted segment with the *first* ground-truth segment
(LongVTG-R1 grounds one moment per query). A malformed or empty answer scores 0.

Departures / choices the paper leaves open:

- CenDist normalises by the video ``duration`` column. When it is missing, ``None``, non-finite or
  ``<= 0`` (MUSEG's Charades rows carry no duration), we fall back to ``max(gt end, pred end)``, the
  shortest duration consistent with both segments. This makes the reward stricter than with the
  true duration (a larger denominator gives a larger reward), so compare runs on data with durations.
- Centres are computed as ``0.5 * s + 0.5 * e`` (equal to ``(s + e) / 2`` except that it cannot
  overflow), and the result is clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

from museg_lit.rewards.parsing import normalize_solution, parse_answer_segments

__all__ = ["cendist_reward", "iou_reward"]


def _first_pairs(completions: list[Any], solution: list[Any]):
    """Yield (first pred, first gt) per sample, or None when either is missing."""
    for completion, gt in zip(completions, solution, strict=True):
        pred = parse_answer_segments(completion)
        gts = normalize_solution(gt)
        yield (pred[0], gts[0]) if pred and gts else None


def _iou(pred: list[float], gt: list[float]) -> float:
    inter = max(0.0, min(pred[1], gt[1]) - max(pred[0], gt[0]))
    union = (pred[1] - pred[0]) + (gt[1] - gt[0]) - inter
    if not union > 0:
        return 0.0
    return min(1.0, max(0.0, inter / union))


def iou_reward(completions: list[Any], solution: list[Any], **columns: Any) -> list[float]:
    """Temporal IoU of the first predicted segment with the first ground-truth segment, in [0, 1].

    Worked example (gt 10-20; first pred 15-25, the second pred is ignored)::

        >>> iou_reward(["<think>.</think><answer>15-25 0-5</answer>"], [[[10, 20]]])
        [0.3333333333333333]

    (intersection 15-20 = 5, union 10-25 = 15 -> 5 / 15 = 1/3.)
    """
    return [0.0 if pair is None else _iou(*pair) for pair in _first_pairs(completions, solution)]


def _valid_duration(value: Any) -> float | None:
    try:
        d = float(value)
    except (TypeError, ValueError):
        return None
    return d if math.isfinite(d) and d > 0 else None


def _cendist(pred: list[float], gt: list[float], duration: float | None) -> float:
    if duration is None:
        duration = max(gt[1], pred[1])  # fallback (departure): pred[1] > 0, so this is positive
        if not (math.isfinite(duration) and duration > 0):
            return 0.0
    c_pred = 0.5 * pred[0] + 0.5 * pred[1]
    c_gt = 0.5 * gt[0] + 0.5 * gt[1]
    value = 1.0 - abs(c_pred - c_gt) / duration
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


def cendist_reward(completions: list[Any], solution: list[Any], **columns: Any) -> list[float]:
    """LongVTG-R1 Center Distance: ``clip(1 - |c_pred - c_gt| / duration, 0, 1)``, in [0, 1].

    ``c`` is the centre of the first predicted / first ground-truth segment; ``duration`` comes from
    the ``duration`` column; if it is missing or invalid, ``max(gt end, pred end)`` is used instead.
    Unlike IoU it stays informative when the prediction does not overlap the ground truth.

    Worked example (gt 10-20, c = 15; pred 20-30, c = 25; |dc| = 10)::

        >>> cendist_reward(["<think>.</think><answer>20-30</answer>"] * 2, [[[10, 20]]] * 2,
        ...                duration=[100.0, None])
        [0.9, 0.6666666666666667]

    (duration 100 -> 1 - 10/100 = 0.9; no duration -> max(20, 30) = 30 -> 1 - 10/30 = 2/3.)
    """
    durations = columns.get("duration")
    if durations is None:
        durations = [None] * len(completions)
    return [
        0.0 if pair is None else _cendist(*pair, _valid_duration(d))
        for pair, d in zip(_first_pairs(completions, solution), durations, strict=True)
    ]
