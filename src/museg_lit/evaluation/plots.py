"""Pictures of one evaluation (PNG, matplotlib's Agg canvas; no pyplot, so no global state or display).

* ``timeline.png``: sampled queries, one row each, over the video's duration: the video (grey), the
  ground-truth segments (green, upper half) and the predicted ones (orange, lower half), the IoU on
  the right. Rows are drawn at evenly spaced ranks of the IoU ordering, best on top, so the picture
  shows hits, near misses and failures rather than a random handful.
* ``iou_hist.png``: per-sample IoU of the samples with a prediction, plus a separate grey "none" bar
  for samples without one (they score 0 in the metrics but are a different failure: format, not
  localisation). The solid line is the mean IoU over all samples (= ``m_iou``). Multi-segment sets
  count ground-truth segments and their best IoU with any prediction instead.
* ``recall_curve.png``: share of samples whose IoU reaches each threshold (single-segment sets) or
  recall of ground-truth segments / precision of predicted segments (multi-segment sets), with
  MUSEG's reported points (R1 / F1 at 0.1, 0.3, 0.5, 0.7) marked and labelled.

Input: the per-sample rows of ``predictions.jsonl`` (``question``, ``groundtruth``, ``prediction``,
``iou``, ``duration``, ``video``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from museg_lit.evaluation.metrics import THRESHOLDS, grounding_metrics

__all__ = ["iou_histogram_figure", "plot_all", "plot_iou_histogram", "plot_recall_curve", "plot_timeline", "recall_curve_figure",
           "short_query", "timeline_figure"]

GT_COLOUR, PRED_COLOUR, VIDEO_COLOUR = "#2a9d4b", "#e8772e", "#e6e6e6"
_QUOTED = re.compile(r"'([^']{2,})'")


def short_query(question: str, width: int = 42) -> str:
    """The query inside a templated question, shortened for a label.

    >>> short_query("Now I will give you the textual sentence: person turn a light on.")
    'person turn a light on'
    >>> short_query("Find all the segments of the action 'billiards'.")
    'billiards'
    """
    quoted = _QUOTED.findall(question)
    text = quoted[-1] if quoted else question.rsplit(": ", 1)[-1]
    text = text.strip().rstrip(".")
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _segments(x) -> list[list[float]]:
    """``[[s, e], ...]`` from a flat pair, a list of pairs, or a list of annotators' lists."""
    if x is None:
        return []
    a = np.asarray(x, dtype=object)
    while a.ndim > 2 or (a.ndim == 2 and a.shape[-1] != 2):
        a = np.asarray(a[0], dtype=object)
    try:
        return np.asarray(a, dtype=float).reshape(-1, 2).tolist()
    except (TypeError, ValueError):
        return []


def style_timeline_axes(ax, num_rows: int, span: float) -> None:
    """A timeline's axes: rows top to bottom, seconds 0..span on x with a light grid, no top/right frame."""
    ax.set_ylim(num_rows - 0.5, -0.5)
    ax.set_xlim(0, span * 1.01)
    ax.set_xlabel("time in the video (s)")
    ax.grid(axis="x", color="#cccccc", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _ious(records: list[dict]) -> np.ndarray:
    return np.array([r["iou"] for r in records if r.get("iou") is not None], dtype=float)


def _row_score(r: dict, task: str) -> float | None:
    """What a timeline row is ranked and labelled by: IoU (single segment) or the sample's mean F1 (multi)."""
    return r.get("f1_multi") if task == "tal" else r.get("iou")


def timeline_figure(records: list[dict], *, num: int = 12, title: str = "", task: str = "tvg") -> Figure:
    """Ground truth vs prediction for ``num`` queries spread over the score ranking (best on top).

    Row ``y`` (0 on top) holds three ``broken_barh`` collections in this order: the video
    (``gid="video:<id>"``), the ground truth (``"gt:<id>"``, upper half) and, if any, the prediction
    (``"pred:<id>"``, lower half); the y tick labels are the short queries."""
    rows = [r for r in records if _segments(r.get("groundtruth"))]
    rows.sort(key=lambda r: -(_row_score(r, task) or 0.0))
    if len(rows) > num:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, num).round().astype(int)]
    fig = _new_figure(11, 1.3 + 0.48 * max(len(rows), 1))
    ax = fig.add_subplot()
    span = 1.0
    for y, r in enumerate(rows):
        gt, pred = _segments(r["groundtruth"]), _segments(r.get("prediction"))
        ends = [e for _, e in gt + pred]
        length = r.get("duration") or max(ends)
        span = max(span, length, *ends)
        rid = r.get("id", y)
        ax.broken_barh([(0, length)], (y - 0.42, 0.84), color=VIDEO_COLOUR, zorder=1, gid=f"video:{rid}")
        ax.broken_barh([(s, e - s) for s, e in gt], (y - 0.36, 0.34), color=GT_COLOUR, zorder=2, gid=f"gt:{rid}")
        if pred:
            ax.broken_barh([(s, max(e - s, span * 0.003)) for s, e in pred], (y + 0.02, 0.34),
                           color=PRED_COLOUR, zorder=2, gid=f"pred:{rid}")
        score = _row_score(r, task)
        if r.get("error"):
            note = "video error"
        elif not pred:
            note = "no prediction"
        else:
            note = "predicted" if score is None else f"{'F1' if task == 'tal' else 'IoU'} {score:.2f}"
        ax.annotate(f"{note}  ·  {Path(str(r.get('video', ''))).stem}", (1.005, y), xycoords=("axes fraction", "data"),
                    va="center", fontsize=8.5, color="#333333")
    ax.set_yticks(range(len(rows)), [short_query(str(r.get("question", ""))) for r in rows], fontsize=9)
    style_timeline_axes(ax, len(rows), span)  # first row (best IoU) on top
    ax.legend(handles=[Patch(color=GT_COLOUR, label="ground truth"), Patch(color=PRED_COLOUR, label="prediction"),
                       Patch(color=VIDEO_COLOUR, label="video length")],
              loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False, fontsize=9)
    ranked_by = "mean F1 over the IoU thresholds" if task == "tal" else "IoU"
    fig.suptitle(f"{title}: {len(rows)} of {len(records)} queries, ranked by {ranked_by} (best on top)",
                 fontsize=10.5, x=0.01, ha="left")
    fig.get_layout_engine().set(w_pad=0.15)
    return fig


def plot_timeline(records: list[dict], path: str | Path, *, num: int = 12, title: str = "", task: str = "tvg") -> Path:
    """Write :func:`timeline_figure` as a PNG; returns its path."""
    timeline_figure(records, num=num, title=title, task=task).savefig(path, dpi=110)
    return Path(path)


def iou_histogram_figure(records: list[dict], *, title: str = "", task: str = "tvg") -> Figure:
    """IoU distribution of samples with a prediction, a 'none' bar for the rest, mean IoU line.

    Multi-segment sets (``task="tal"``) count ground-truth *segments* instead: the best IoU each
    reaches with any predicted segment (first-vs-first IoU means little there).
    """
    if task == "tal":
        with_pred_rows = [r for r in records if r.get("prediction") is not None]
        with_pred, _ = _best_ious(with_pred_rows)
        none = sum(len(_segments(r["groundtruth"])) for r in records if r.get("prediction") is None)
        unit, xlabel = "ground-truth segments", "best IoU of each ground-truth segment with any predicted segment"
    else:
        scored = [r for r in records if r.get("iou") is not None or r.get("prediction") is None]
        with_pred = _ious([r for r in scored if r.get("prediction") is not None])
        none = sum(r.get("prediction") is None for r in scored)
        unit, xlabel = "samples", "IoU with the ground truth (first predicted vs first ground-truth segment)"
    fig = _new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 21)
    counts, _ = np.histogram(with_pred, bins=bins)
    ax.bar(bins[:-1], counts, width=0.05, align="edge", color="#3b75af", edgecolor="white", label="with a prediction")
    ax.bar([-0.1], [none], width=0.07, align="edge", color="#9a9a9a", edgecolor="white", label="no prediction")
    total = len(with_pred) + none
    mean_iou = float(with_pred.sum()) / max(total, 1)  # no prediction counts 0, as in m_iou
    ax.axvline(mean_iou, color="#c0392b", linewidth=1.6, label=f"mean IoU (all {unit}) {mean_iou:.3f}")
    for t in (0.3, 0.5, 0.7):
        ax.axvline(t, color="#777777", linestyle=":", linewidth=1)
    ax.set_xticks([-0.065, *np.linspace(0, 1, 6)], ["none", "0", "0.2", "0.4", "0.6", "0.8", "1"])
    ax.set_xlim(-0.13, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(unit)
    ax.legend(fontsize=8.5, loc="upper right", framealpha=0.92, edgecolor="none")
    ax.set_title(f"{title}  ({total} {unit}, {none} without a prediction)", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


def plot_iou_histogram(records: list[dict], path: str | Path, *, title: str = "", task: str = "tvg") -> Path:
    """Write :func:`iou_histogram_figure` as a PNG; returns its path."""
    iou_histogram_figure(records, title=title, task=task).savefig(path, dpi=110)
    return Path(path)


def _best_ious(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU of every ground-truth segment over the predictions, and of every prediction over the ground truth."""
    gt_best, pred_best = [], []
    for r in records:
        gt, pred = np.array(_segments(r["groundtruth"])).reshape(-1, 2), np.array(_segments(r.get("prediction"))).reshape(-1, 2)
        if len(pred) == 0:
            gt_best.extend([0.0] * len(gt))
            continue
        inter = np.clip(np.minimum(gt[:, None, 1], pred[None, :, 1]) - np.maximum(gt[:, None, 0], pred[None, :, 0]), 0, None)
        union = (gt[:, 1] - gt[:, 0])[:, None] + (pred[:, 1] - pred[:, 0])[None, :] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)  # [G, P]
        gt_best.extend(iou.max(axis=1).tolist())
        pred_best.extend(iou.max(axis=0).tolist())
    return np.array(gt_best), np.array(pred_best)


def recall_curve_figure(records: list[dict], *, task: str = "tvg", title: str = "") -> Figure:
    """Recall against the IoU threshold (in %, thresholds 0.01..1), with MUSEG's four reported
    points (a scatter at :data:`THRESHOLDS`) labelled."""
    ts = np.linspace(0.0, 1.0, 101)[1:]
    fig = _new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    if task == "tal":
        gt_best, pred_best = _best_ious(records)
        ax.plot(ts, [100 * (gt_best >= t).mean() if len(gt_best) else 0 for t in ts], color="#3b75af",
                label="recall of ground-truth segments")
        ax.plot(ts, [100 * (pred_best >= t).mean() if len(pred_best) else 0 for t in ts], color="#8e6bbf",
                linestyle="--", label="precision of predicted segments")
        m = grounding_metrics([r["output"] for r in records], [r["groundtruth"] for r in records], "tal")
        points, label = [m[f"f1_multi_{t}"] for t in THRESHOLDS], "F1 (MUSEG's f1_multi_t)"
        title = f"{title}  mean F1 {100 * m['mean_f1_multi']:.1f}"
    else:
        ious = _ious(records)
        n = max(len(ious), 1)
        ax.plot(ts, [100 * (ious >= t).sum() / n for t in ts], color="#3b75af", label="samples with IoU ≥ threshold")
        points = [float((ious >= t).sum() / n) for t in THRESHOLDS]
        label = "R1@t (MUSEG's f1_single_t)"
        title = f"{title}  mIoU {100 * ious.sum() / n:.1f}"
    ax.scatter(THRESHOLDS, [100 * p for p in points], color="#c0392b", zorder=3, label=label)
    for t, p in zip(THRESHOLDS, points, strict=True):
        ax.annotate(f"{100 * p:.1f}", (t, 100 * p), textcoords="offset points", xytext=(4, 6), fontsize=8.5, color="#c0392b")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 105)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("%")
    ax.grid(color="#dddddd", linewidth=0.6)
    ax.legend(fontsize=8.5, loc="upper right", framealpha=0.92, edgecolor="none")
    ax.set_title(f"{title}  ({len(records)} samples)", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


def plot_recall_curve(records: list[dict], path: str | Path, *, task: str = "tvg", title: str = "") -> Path:
    """Write :func:`recall_curve_figure` as a PNG; returns its path."""
    recall_curve_figure(records, task=task, title=title).savefig(path, dpi=110)
    return Path(path)


def plot_all(records: list[dict], out_dir: str | Path, *, title: str = "", task: str = "tvg",
             num_timeline: int = 12) -> dict[str, Path]:
    """The three pictures into ``out_dir``; returns ``{"timeline": path, ...}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "timeline": plot_timeline(records, out / "timeline.png", num=num_timeline, title=title, task=task),
        "iou_hist": plot_iou_histogram(records, out / "iou_hist.png", title=title, task=task),
        "recall_curve": plot_recall_curve(records, out / "recall_curve.png", task=task, title=title),
    }
