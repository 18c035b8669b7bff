"""Grounding metrics of MUSEG's evaluation (``src/eval_grounding.py`` of the release), vectorised.

Pipeline per raw model output: content of the single ``<answer>...</answer>`` (else ``""``;
:func:`museg_lit.rewards.parsing.extract_answer`, the rule the training rewards use too) -> all
numbers matching ``\\d+\\.*\\d*`` -> consecutive pairs ``[s, e]``; an odd count, an unparsable number
(``1..5``) or any ``s >= e`` means *no prediction*, which scores 0 everywhere.

- ``task="tvg"`` (single segment, Charades-STA): IoU of the first prediction with the first ground
  truth; ``m_iou`` = mean IoU; ``f1_single_t`` = share of samples with IoU >= t
  (t in 0.1, 0.3, 0.5, 0.7; it is R1@t); ``mean_f1_single`` = mean of the four.
- ``task="tal"`` (multi segment, THUMOS, Perception Test): IoU matrix gt x pred; a sample scores 0
  at threshold t if its max IoU < t, else F1 of recall (share of gt whose best IoU >= t) and
  precision (share of predictions whose best IoU >= t), 0 unless both > 0; ``f1_multi_t`` = mean
  over all samples; ``mean_f1_multi`` = mean of the four.

**Convention: every value is a fraction in [0, 1]** (as MUSEG's script returns them), never a
percentage; ``tot`` is the sample count. The paper / README table prints these values x 100 with one
decimal: Charades-STA 59.7 (MUSEG-7B) corresponds to ``m_iou == 0.597``; THUMOS14 29.7 to
``mean_f1_multi == 0.297``. ``HEADLINE_METRIC`` names that column per task (our reading of the paper:
the table image itself does not name its metric). Use ``100 * value`` to compare with the table.

Numerics follow the reference bit for bit where it matters at a threshold: MUSEG computes IoUs with
``nncore.ops.temporal_iou`` on float32 tensors, so we do too (numpy float32, same operation order).
tvg thresholds are compared after ``.item()``, i.e. in float64 — an IoU of exactly 7/10 is
float32(0.7) = 0.69999999 < 0.7 and does *not* count at 0.7 — while tal thresholds are compared on
the float32 tensor, where it *does* count. Sums over samples are left-to-right (``np.cumsum``), like
the reference's Python loop. Departure: an IoU that is NaN in float32 (timestamps beyond float32
range, or two segments that both collapse to zero length in float32) counts as 0 instead of turning
``m_iou`` into NaN; empty inputs, mismatched lengths and unknown tasks raise ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np

from museg_lit.rewards.parsing import extract_answer

__all__ = [
    "HEADLINE_METRIC",
    "THRESHOLDS",
    "grounding_metrics",
    "parse_prediction",
    "sample_iou",
]

THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
# The metric the MUSEG README table reports for each task (x 100).
HEADLINE_METRIC: dict[str, str] = {"tvg": "m_iou", "tal": "mean_f1_multi"}

_NUMBER_RE = re.compile(r"\d+\.*\d*")


def parse_prediction(output: str) -> list[list[float]] | None:
    """Predicted segments of one raw output, or ``None`` for *no prediction* (scores 0).

    >>> parse_prediction("<think>...</think><answer>12.50-17.80 20-25.5</answer>")
    [[12.5, 17.8], [20.0, 25.5]]
    >>> parse_prediction("<answer>from 3 to 9.5 seconds</answer>")  # any text around numbers is fine
    [[3.0, 9.5]]
    >>> [parse_prediction(o) for o in ("<answer>1-2 3</answer>", "<answer>5-3</answer>", "1-2", "<answer></answer>")]
    [None, None, None, None]
    """
    numbers = _NUMBER_RE.findall(extract_answer(output, default="", strip=True))
    if not numbers or len(numbers) % 2:
        return None
    try:
        values = [float(x) for x in numbers]
    except ValueError:  # "1..5" matches the regex but is not a float
        return None
    pairs = [[values[i], values[i + 1]] for i in range(0, len(values), 2)]
    if any(not s < e for s, e in pairs):
        return None
    return pairs


def _as_segments(gt: Any, index: int) -> list[tuple[float, float]]:
    items = list(gt) if gt is not None else []
    if items and isinstance(items[0], Real) and not isinstance(items[0], bool):
        items = [items]  # a flat [s, e]
    try:
        segs = [(float(s), float(e)) for s, e in items]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"groundtruths[{index}] = {gt!r} is not [[start, end], ...]") from exc
    if not segs:
        raise ValueError(f"groundtruths[{index}] is empty")
    return segs


def _temporal_iou(a_s: np.ndarray, a_e: np.ndarray, b_s: np.ndarray, b_e: np.ndarray) -> np.ndarray:
    """Element-wise IoU in float32 with nncore's operation order: inter / (area_a + area_b - inter)."""
    a_s, a_e, b_s, b_e = (x.astype(np.float32, copy=False) for x in (a_s, a_e, b_s, b_e))
    with np.errstate(all="ignore"):
        inter = np.clip(np.minimum(a_e, b_e) - np.maximum(a_s, b_s), 0, None)  # [P] float32
        iou = inter / ((a_e - a_s) + (b_e - b_s) - inter)  # [P] float32
    return np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)  # departure: NaN -> 0


def _left_sum(x: np.ndarray) -> float:
    """Left-to-right sum (np.cumsum is sequential, np.sum is pairwise), like the reference's loop."""
    return float(np.cumsum(x, dtype=np.float64)[-1]) if len(x) else 0.0


def _pack(preds: Sequence[list[list[float]] | None], gts: Sequence[list[tuple[float, float]]]):
    """Flatten ragged per-sample segment lists into arrays + per-sample counts."""
    n_gt = np.fromiter((len(g) for g in gts), dtype=np.int64, count=len(gts))  # [N]
    n_pred = np.fromiter((len(p) if p else 0 for p in preds), dtype=np.int64, count=len(preds))  # [N]
    gt_flat = np.array([x for g in gts for seg in g for x in seg], dtype=np.float64).reshape(-1, 2)  # [sum n_gt, 2]
    pred_flat = np.array([x for p in preds if p for seg in p for x in seg], dtype=np.float64).reshape(-1, 2)
    return n_gt, n_pred, gt_flat, pred_flat


def _single_ious(n_gt, n_pred, gt_flat, pred_flat) -> np.ndarray:
    """IoU (float32) of first pred vs first gt per sample; 0 where there is no prediction. [N]"""
    gt_first = gt_flat[np.cumsum(n_gt) - n_gt]  # [N, 2]
    has = n_pred > 0  # [N]
    pred_first_idx = (np.cumsum(n_pred) - n_pred)[has]
    iou = np.zeros(len(n_gt), dtype=np.float32)  # [N]
    if has.any():
        pf = pred_flat[pred_first_idx]  # [K, 2]
        iou[has] = _temporal_iou(gt_first[has, 0], gt_first[has, 1], pf[:, 0], pf[:, 1])
    return iou


def _multi_f1(n_gt, n_pred, gt_flat, pred_flat) -> np.ndarray:
    """Per-sample F1 at each threshold (float64). [N, len(THRESHOLDS)]"""
    n = len(n_gt)
    out = np.zeros((n, len(THRESHOLDS)), dtype=np.float64)
    pairs = n_gt * n_pred  # [N], 0 for samples without a prediction
    total = int(pairs.sum())
    if total == 0:
        return out
    # Every (gt i, pred j) pair of every sample, ordered by sample, then gt, then pred.
    sample = np.repeat(np.arange(n), pairs)  # [P]
    k = np.arange(total) - np.repeat(np.cumsum(pairs) - pairs, pairs)  # [P] index within the sample
    m = n_pred[sample]  # [P]
    gt_idx = (np.cumsum(n_gt) - n_gt)[sample] + k // m  # [P] row of gt_flat
    pred_idx = (np.cumsum(n_pred) - n_pred)[sample] + k % m  # [P] row of pred_flat
    iou = _temporal_iou(gt_flat[gt_idx, 0], gt_flat[gt_idx, 1], pred_flat[pred_idx, 0], pred_flat[pred_idx, 1])

    valid = pairs > 0  # [N]
    sample_max = np.zeros(n, dtype=np.float32)
    np.maximum.at(sample_max, sample, iou)  # [N] iou >= 0, so 0 is a neutral start
    best_gt = np.zeros(len(gt_flat), dtype=np.float32)  # [sum n_gt] best IoU of each gt over preds
    np.maximum.at(best_gt, gt_idx, iou)
    best_pred = np.zeros(len(pred_flat), dtype=np.float32)  # [sum n_pred] best IoU of each pred over gts
    np.maximum.at(best_pred, pred_idx, iou)
    gt_sample = np.repeat(np.arange(n), n_gt)  # [sum n_gt]
    pred_sample = np.repeat(np.arange(n), n_pred)  # [sum n_pred]

    for t_i, t in enumerate(THRESHOLDS):
        t32 = np.float32(t)  # torch compares a float32 tensor with a Python float in float32
        hit_gt = np.bincount(gt_sample, weights=best_gt >= t32, minlength=n)  # [N] counts
        hit_pred = np.bincount(pred_sample, weights=best_pred >= t32, minlength=n)  # [N]
        with np.errstate(divide="ignore", invalid="ignore"):
            # .float().mean() in float32, then .item() -> float64 for the F1 arithmetic
            rec = (hit_gt.astype(np.float32) / n_gt.astype(np.float32)).astype(np.float64)  # [N]
            prc = (hit_pred.astype(np.float32) / n_pred.astype(np.float32)).astype(np.float64)  # [N]
            f1 = 2 * prc * rec / (prc + rec)  # [N]
        ok = valid & (sample_max >= t32) & (prc > 0) & (rec > 0)
        out[ok, t_i] = f1[ok]
    return out


def grounding_metrics(outputs: list[str], groundtruths: list[list[list[float]]], task: str) -> dict:
    """MUSEG's grounding metrics over raw model ``outputs`` (fractions in [0, 1]; see module doc).

    Worked example (tvg; gt 0-10 three times; preds 0-5 -> IoU 0.5, 0-10 -> IoU 1, none -> 0)::

        >>> out = ["<answer>0-5</answer>", "<answer>0.00-10.00</answer>", "<answer>?</answer>"]
        >>> m = grounding_metrics(out, [[[0, 10]]] * 3, "tvg")
        >>> m["tot"], m["m_iou"], m["f1_single_0.5"], m["f1_single_0.7"]
        (3, 0.5, 0.6666666666666666, 0.3333333333333333)
        >>> m["mean_f1_single"] == (2 + 2 + 2 + 1) / 3 / 4
        True

    (m_iou = (0.5 + 1 + 0) / 3 = 0.5; IoU >= 0.1, 0.3, 0.5: 2 of 3 samples; IoU >= 0.7: 1 of 3.)
    """
    if task not in HEADLINE_METRIC:
        raise ValueError(f"unknown task {task!r}: expected one of {sorted(HEADLINE_METRIC)}")
    if len(outputs) != len(groundtruths):
        raise ValueError(f"{len(outputs)} outputs but {len(groundtruths)} groundtruths")
    n = len(outputs)
    if n == 0:
        raise ValueError("grounding_metrics needs at least one sample")
    preds = [parse_prediction(o) for o in outputs]
    gts = [_as_segments(g, i) for i, g in enumerate(groundtruths)]
    packed = _pack(preds, gts)

    stat: dict[str, float | int] = {"tot": n}
    if task == "tvg":
        iou = _single_ious(*packed).astype(np.float64)  # [N] .item() of float32 values
        stat["m_iou"] = _left_sum(iou) / n
        counts = [int((iou >= t).sum()) for t in THRESHOLDS]  # float64 comparison, as after .item()
        for t, c in zip(THRESHOLDS, counts, strict=True):
            stat[f"f1_single_{t}"] = c / n
        stat["mean_f1_single"] = sum(counts) / n / len(THRESHOLDS)
    else:
        f1 = _multi_f1(*packed)  # [N, 4]
        sums = [_left_sum(f1[:, i]) for i in range(len(THRESHOLDS))]
        for t, s in zip(THRESHOLDS, sums, strict=True):
            stat[f"f1_multi_{t}"] = s / n
        stat["mean_f1_multi"] = _left_sum(np.array(sums)) / n / len(THRESHOLDS)
    return stat


def sample_iou(output: str, groundtruth: list[list[float]]) -> float:
    """Per-sample IoU as counted in ``m_iou``: first prediction vs first ground truth (float32
    arithmetic, returned as a Python float); 0.0 when there is no prediction.

    >>> sample_iou("<answer>0-5</answer>", [[0, 10]]), sample_iou("no answer", [[0, 10]])
    (0.5, 0.0)
    """
    packed = _pack([parse_prediction(output)], [_as_segments(groundtruth, 0)])
    return float(_single_ious(*packed)[0])
