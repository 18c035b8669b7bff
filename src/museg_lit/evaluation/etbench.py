"""E.T. Bench (Liu et al., NeurIPS 2024) as MUSEG evaluates it: prompt, answer parsing and metrics.

MUSEG's ``src/eval_et_bench.py`` sends each sample's ``q`` wrapped in :data:`ETBENCH_TEMPLATE`
(greedy, 512 new tokens, the same frame settings as the grounding sets), keeps the content of the
single ``<answer>...</answer>`` (else ``""``) and scores it with E.T. Bench's
``compute_metrics.py``. This module re-implements that scoring for the tasks that need no extra
model or Java:

* grounding: ``tvg`` and ``epm`` (mIoU, F1@{0.1,0.3,0.5,0.7} = share of samples whose first
  predicted segment reaches the IoU, F1 = their mean), ``tal`` (multi-segment F1 as in MUSEG's
  grounding metric), ``evs`` (per-second overlap F1 on a 1,000 s grid, averaged over the samples
  that produced a prediction), ``vhd`` (hit if the first number of the answer lies inside a
  ground-truth segment of any annotator);
* complex: ``tem`` (IoU of the first prediction with the best-matching ground truth, R@t, mRec).

Per source the numbers are rounded to 5 decimals (as the reference does before averaging); a task
is the mean over its sources; ``grounding_f1`` = mean of the five grounding tasks' F1 (E.T.
Bench's "F1 (gnd)" column).

**Not yet supported** (a clear ``NotImplementedError`` before any model loads): captioning
(``dvc``, ``slc``: METEOR/ROUGE-L/CIDEr need pycocoevalcap with Java, and SentSim needs
all-MiniLM-L6-v2) and the option tasks (``rar``, ``eca``, ``rvq``, ``gvq``: their fallback matches
free-text answers to options by sentence similarity with all-MiniLM-L6-v2). Evaluate the supported
tasks with ``data.tasks=[tvg,epm,tal,evs,vhd,tem]`` (the default of ``conf/data/et_bench.yaml``).

Departures: an answer with an unparsable number (``1..5``) counts as *failed* instead of crashing
the script; E.T. Bench's hh:mm:ss fallback is unreachable in the reference (a clock string always
matches its plain-number fallback first) and is left out; NaN IoUs count 0 (as in
:mod:`museg_lit.evaluation.metrics`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from museg_lit.data.annotations import AnnotationError
from museg_lit.evaluation.metrics import THRESHOLDS, _temporal_iou

__all__ = [
    "ETBENCH_TEMPLATE",
    "GROUNDING_TASKS",
    "SUPPORTED_TASKS",
    "UNSUPPORTED_TASKS",
    "ETBenchBenchmark",
    "is_etbench_file",
    "load_etbench_items",
    "parse_timestamps",
    "score_task",
]

# MUSEG's E.T. Bench instruction (src/eval_et_bench.py), verbatim; '{}' is the sample's `q`.
ETBENCH_TEMPLATE = (
    "{} First, output reasoning process in <think> </think> tags. The reasoning process must REFER TO "
    "SPECIFIC TIMESTAMPS TO TELL WHERE YOU GET THE INFORMATION FROM THE VIDEO. Then summarize your "
    "reasoning process above and output your answer within <answer> </answer> tags. Make sure to follow "
    'the format requirements. Your output format should be like "<think>...</think><answer>...</answer>".'
)

GROUNDING_TASKS = ("tvg", "epm", "tal", "evs", "vhd")
SUPPORTED_TASKS = (*GROUNDING_TASKS, "tem")
UNSUPPORTED_TASKS = {
    "dvc": "captioning (pycocoevalcap with Java + all-MiniLM-L6-v2 sentence similarity)",
    "slc": "captioning (pycocoevalcap with Java + all-MiniLM-L6-v2 sentence similarity)",
    "rar": "option matching by all-MiniLM-L6-v2 sentence similarity",
    "eca": "option matching by all-MiniLM-L6-v2 sentence similarity",
    "rvq": "option matching by all-MiniLM-L6-v2 sentence similarity",
    "gvq": "option matching by all-MiniLM-L6-v2 sentence similarity",
}
_HEADLINE = {"tvg": "f1", "epm": "f1", "tal": "f1", "evs": "f1", "vhd": "f1", "tem": "m_rec"}


def is_etbench_file(path: str | Path) -> bool:
    """True for E.T. Bench annotation JSON (a list of dicts with ``task``, ``source`` and ``q``)."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    with open(path, encoding="utf-8") as f:
        head = f.read(4096)
    # cheap sniff of the first record instead of parsing a multi-megabyte file twice
    first = head.split("}", 1)[0]
    return head.lstrip().startswith("[") and all(f'"{k}"' in first for k in ("task", "source", "q"))


def load_etbench_items(path: str | Path, subset_file: str | Path | None = None, tasks: list[str] | None = None):
    """E.T. Bench samples as :class:`museg_lit.evaluation.runner.EvalItem` (id ``task/source/idx``).

    ``subset_file``: MUSEG's / E.T. Bench's ``subset.json`` ({task: {source: [idx, ...]}}, 470 samples).
    ``tasks``: keep only these tasks. Unsupported tasks raise ``NotImplementedError`` here, before
    any model is loaded.
    """
    from museg_lit.evaluation.runner import EvalItem

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of E.T. Bench samples")
    subset = None
    if subset_file:
        try:
            subset = json.loads(Path(subset_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AnnotationError(f"{subset_file}: E.T. Bench subset file not found") from None
    items = []
    for i, d in enumerate(data):
        try:
            task, source, idx = d["task"], d["source"], d["idx"]
            video, q = d["video"], d["q"]
        except (KeyError, TypeError):
            raise AnnotationError(f"{path}[{i}]: missing one of task, source, idx, video, q") from None
        if tasks is not None and task not in tasks:
            continue
        if subset is not None and idx not in subset.get(task, {}).get(source, ()):
            continue
        extra = {k: d[k] for k in ("source", "duration", "p", "o", "g", "src") if k in d}
        items.append(EvalItem(f"{task}/{source}/{idx}", video, q, d.get("tgt"), task, extra))
    unsupported = sorted({it.task for it in items} & set(UNSUPPORTED_TASKS))
    if unsupported:
        why = "; ".join(f"{t}: {UNSUPPORTED_TASKS[t]}" for t in unsupported)
        raise NotImplementedError(
            f"E.T. Bench tasks {', '.join(unsupported)} are not yet supported ({why}). "
            f"Evaluate the supported tasks with data.tasks=[{','.join(SUPPORTED_TASKS)}]")
    return items


# ------------------------------------------------------------------------------------------------
# Answer parsing (E.T. Bench's `tvg_format`).
# ------------------------------------------------------------------------------------------------

_RANGE = re.compile(r"(\d+\.*\d*)\s*-\s*(\d+\.*\d*)")
_TO = re.compile(r"(\d+\.*\d*)\s* to \s*(\d+\.*\d*)")
_PLAIN_NUMBER = re.compile(r"\b(\d+\.\d+\b|\b\d+)\b")
_FIRST_NUMBER = re.compile(r"[-+]?\d*\.\d+|[-+]?\d+")
_KEYWORDS = ("starts", "ends", "happens in", "start time", "end time", "start", "end", "happen")


def parse_timestamps(answer: str) -> list[list[float]] | None:
    """Segments in an E.T. Bench answer, each ordered ``[min, max]``; None if there are none.

    Tries, in order: ``a - b`` ranges anywhere; ``a to b``; then the first plain number of every
    sentence that mentions a start/end keyword, paired up.

    >>> parse_timestamps("The event happens in 2.5 - 4.8 seconds and again 9-7.")
    [[2.5, 4.8], [7.0, 9.0]]
    >>> parse_timestamps("It starts at 3 s.\\nIt ends at 6 s."), parse_timestamps("no idea")
    ([[3.0, 6.0]], None)
    """
    ans = answer.lower()
    try:
        pairs = [(float(a), float(b)) for a, b in _RANGE.findall(ans)]
        if not pairs:
            pairs = [(float(a), float(b)) for a, b in _TO.findall(ans)]
        if not pairs:
            sentences = [s for s in re.split(r"[!?\n]", ans) if any(k in s for k in _KEYWORDS)]
            times = [float(found[0]) for s in sentences if (found := _PLAIN_NUMBER.findall(s))]
            times = times[: len(times) // 2 * 2]
            pairs = list(zip(times[0::2], times[1::2], strict=True))
    except ValueError:  # "1..5": the reference crashes; we count the sample as failed
        return None
    return [[s, e] if e > s else [e, s] for s, e in pairs] or None


def _segments(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(-1, 2)  # [K, 2]; a flat [s, e] becomes one row


def _iou(gt, pred) -> np.ndarray:
    """IoU matrix ``[G, P]`` in float32 with nncore's operation order."""
    g, p = _segments(gt), _segments(pred)
    gi, pi = np.meshgrid(np.arange(len(g)), np.arange(len(p)), indexing="ij")
    return _temporal_iou(g[gi, 0], g[gi, 1], p[pi, 0], p[pi, 1])  # [G, P]


def sample_score(task: str, answer: str, tgt) -> dict:
    """Per-sample parse for the JSONL and the pictures: ``prediction`` and ``iou`` (None where no IoU applies)."""
    if task == "vhd":
        m = _FIRST_NUMBER.search(answer)
        return {"prediction": [[float(m.group(0))] * 2] if m else None, "iou": None}
    pred = parse_timestamps(answer)
    iou = None
    if task in ("tvg", "epm", "tem") and tgt is not None:
        iou = float(_iou(tgt, pred[0]).max()) if pred else 0.0
    return {"prediction": pred, "iou": iou}


# ------------------------------------------------------------------------------------------------
# Per-task metrics (E.T. Bench's compute_metrics.py semantics).
# ------------------------------------------------------------------------------------------------


def _first_segment_scores(rows: list[dict], *, best_of_gt: bool) -> tuple[list[float], int]:
    ious, failed = [], 0
    for r in rows:
        pred = parse_timestamps(r["answer"])
        if pred is None:
            failed += 1
            continue
        m = _iou(r["groundtruth"], pred[0])  # [G, 1]
        ious.append(float(m.max() if best_of_gt else m[0, 0]))  # .item(): float64 from here on
    return ious, failed


def score_task(task: str, rows: list[dict]) -> dict[str, float]:
    """Metrics of one (task, source) group of JSONL rows (``answer``, ``groundtruth``)."""
    n = len(rows)
    if task in ("tvg", "epm", "tem"):
        ious, failed = _first_segment_scores(rows, best_of_gt=task == "tem")
        recall = [sum(i >= t for i in ious) / n for t in THRESHOLDS]
        key = "r" if task == "tem" else "f1"
        out = {"total": n, "failed": failed, "m_iou": round(sum(ious) / n, 5)}
        out.update({f"{key}_{t}": round(r, 5) for t, r in zip(THRESHOLDS, recall, strict=True)})
        out["m_rec" if task == "tem" else "f1"] = round(sum(recall) / len(recall), 5)
        return out
    if task == "tal":
        f1, failed = [0.0] * len(THRESHOLDS), 0
        for r in rows:
            pred = parse_timestamps(r["answer"])
            if pred is None:
                failed += 1
                continue
            m = _iou(r["groundtruth"], pred)  # [G, P] float32
            for k, t in enumerate(THRESHOLDS):
                t32 = np.float32(t)
                if m.max() < t32:
                    continue
                rec = float(np.float32((m.max(axis=1) >= t32).mean()))
                prc = float(np.float32((m.max(axis=0) >= t32).mean()))
                f1[k] += 2 * prc * rec / (prc + rec)
        out = {"total": n, "failed": failed}
        out.update({f"f1_{t}": round(v / n, 5) for t, v in zip(THRESHOLDS, f1, strict=True)})
        out["f1"] = round(sum(v / n for v in f1) / len(f1), 5)
        return out
    if task == "evs":
        scores, failed = [], 0
        for r in rows:
            pred = parse_timestamps(r["answer"])
            if pred is None:
                failed += 1
                continue
            # one cell per second, as the reference: a ground-truth map (1) and a prediction map (2),
            # each *assigned*, so overlapping predicted segments count once (MUSEG's compute_metrics)
            gt_map, pred_map = np.zeros(1000, dtype=np.int64), np.zeros(1000, dtype=np.int64)
            for s, e in _segments(r["groundtruth"]).tolist():
                gt_map[max(0, round(s)):round(e)] = 1  # Python round: half to even, like the reference
            for s, e in pred:
                pred_map[max(0, round(s)):round(e)] = 2
            grid = gt_map + pred_map
            tp, fp, fn = (int((grid == v).sum()) for v in (3, 2, 1))
            scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))  # = 2PR/(P+R)
        # quirk kept: averaged over the samples with a prediction only
        return {"total": n, "failed": failed, "f1": round(sum(scores) / len(scores), 5) if scores else 0.0}
    if task == "vhd":
        hit, failed = 0, 0
        for r in rows:
            m = _FIRST_NUMBER.search(r["answer"])
            if not m:
                failed += 1
                continue
            x, gt = float(m.group(0)), r["groundtruth"]
            annotators = gt if isinstance(gt[0][0], (list, tuple)) else [gt]
            hit += any(s <= x <= e for ann in annotators for s, e in ann)
        return {"total": n, "failed": failed, "f1": round(hit / n, 5)}
    raise NotImplementedError(f"E.T. Bench task {task!r}: {UNSUPPORTED_TASKS.get(task, 'unknown task')}")


class ETBenchBenchmark:
    """Benchmark adapter for :class:`museg_lit.evaluation.runner.EvalRunner`."""

    name = "etbench"

    def __init__(self, subset_file: str | None = None, tasks: list[str] | None = None):
        self.subset_file, self.tasks = subset_file, tasks

    def load(self, path):
        return load_etbench_items(path, self.subset_file, self.tasks)

    def question(self, item) -> str:
        return ETBENCH_TEMPLATE.replace("{}", item.question, 1)

    def record(self, item, output: str) -> dict:
        from museg_lit.evaluation.runner import answer_text

        answer = answer_text(output)
        return {"answer": answer, **sample_score(item.task, answer, item.groundtruth)}

    def score(self, items, rows: dict[str, dict]) -> tuple[dict[str, float], str, str]:
        groups: dict[tuple[str, str], list[dict]] = {}
        for it in items:
            row = {"answer": rows[it.id]["answer"], "groundtruth": it.groundtruth}
            groups.setdefault((it.task, it.extra.get("source", "")), []).append(row)
        metrics: dict[str, float] = {}
        per_task: dict[str, list[float]] = {}
        for (task, source), group in sorted(groups.items()):
            out = score_task(task, group)
            metrics.update({f"{task}/{source}/{k}": float(v) for k, v in out.items()})
            per_task.setdefault(task, []).append(out[_HEADLINE[task]])
        for task, values in per_task.items():
            metrics[f"{task}/{_HEADLINE[task]}"] = round(sum(values) / len(values), 5)
        if all(t in per_task for t in GROUNDING_TASKS):
            metrics["grounding_f1"] = sum(metrics[f"{t}/f1"] for t in GROUNDING_TASKS) / len(GROUNDING_TASKS)
        headline = "grounding_f1" if "grounding_f1" in metrics else f"{min(per_task)}/{_HEADLINE[min(per_task)]}"
        return metrics, headline, "+".join(sorted(per_task))
