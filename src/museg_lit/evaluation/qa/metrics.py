"""Scores of a ground-then-answer run: accuracy of both answers on the same items, and how well
stage 1 found the evidence where the format gives it. Pure functions over ``predictions.jsonl`` rows.

Row fields used: ``answer`` (correct letter), ``gta_letter`` / ``baseline_letter`` (parsed, or
None), ``options``, ``fallback``, ``question_type``, and for the evidence scores ``evidence``,
``grounded`` (predicted segments or None) and ``window`` ([start, end] decoded in stage 2).
"""

from __future__ import annotations

__all__ = ["hull", "interval_iou", "qa_metrics"]


def hull(segments: list[list[float]] | None) -> tuple[float, float] | None:
    """``[[3, 5], [8, 9]]`` -> ``(3, 9)``; None for none."""
    if not segments:
        return None
    return min(s for s, _ in segments), max(e for _, e in segments)


def interval_iou(a: tuple[float, float] | None, b: tuple[float, float] | None) -> float:
    """IoU of two intervals, 0 if either is None. ``(0, 4), (2, 6)`` -> 2 / 6 = 0.3333."""
    if a is None or b is None:
        return 0.0
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def qa_metrics(records: list[dict]) -> dict[str, float]:
    """Accuracy of ground-then-answer (``gta_accuracy``, the headline) and of the whole-video
    baseline (``baseline_accuracy``) over the same items, and:

    * ``delta`` = gta - baseline; ``both_correct`` / ``only_gta`` / ``only_baseline``: shares of items;
    * ``gta_unanswered`` / ``baseline_unanswered``: share without a parsable letter (counted wrong);
    * ``fallback_rate``: share answered from the whole video because stage 1 was unusable;
    * ``chance_accuracy``: mean of 1 / number of options (what a random guess scores);
    * per question type (when there are several): ``gta_accuracy/<type>``, ``baseline_accuracy/<type>``;
    * over items with evidence (``num_with_evidence``): ``evidence_iou``, mean IoU of the grounded
      hull with the evidence hull (0 without a grounding), and ``evidence_in_window``, share whose
      evidence hull lies inside the decoded window.

    Example: 4 items, answers A A B C; gta letters A, B, B, None; baseline A, A, C, C ->
    gta 2/4 = 0.5, baseline 3/4 = 0.75, delta -0.25, both 0.25 (item 1), only_gta 0.25 (item 3),
    only_baseline 0.5 (items 2, 4), gta_unanswered 0.25.
    """
    if not records:
        raise ValueError("no records to score")
    n = len(records)
    gta = [r.get("gta_letter") == r["answer"] for r in records]
    base = [r.get("baseline_letter") == r["answer"] for r in records]
    m: dict[str, float] = {
        "num": float(n),
        "gta_accuracy": sum(gta) / n,
        "baseline_accuracy": sum(base) / n,
        "both_correct": sum(g and b for g, b in zip(gta, base, strict=True)) / n,
        "only_gta": sum(g and not b for g, b in zip(gta, base, strict=True)) / n,
        "only_baseline": sum(b and not g for g, b in zip(gta, base, strict=True)) / n,
        "gta_unanswered": sum(r.get("gta_letter") is None for r in records) / n,
        "baseline_unanswered": sum(r.get("baseline_letter") is None for r in records) / n,
        "fallback_rate": sum(bool(r.get("fallback")) for r in records) / n,
        "chance_accuracy": _mean([1 / len(r["options"]) for r in records]),
    }
    m["delta"] = m["gta_accuracy"] - m["baseline_accuracy"]
    types = sorted({r.get("question_type") or "" for r in records})
    if len(types) > 1:
        for t in types:
            idx = [i for i, r in enumerate(records) if (r.get("question_type") or "") == t]
            m[f"gta_accuracy/{t or 'untyped'}"] = _mean([float(gta[i]) for i in idx])
            m[f"baseline_accuracy/{t or 'untyped'}"] = _mean([float(base[i]) for i in idx])
    with_evidence = [r for r in records if r.get("evidence")]
    m["num_with_evidence"] = float(len(with_evidence))
    if with_evidence:
        m["evidence_iou"] = _mean([interval_iou(hull(r.get("grounded")), hull(r["evidence"])) for r in with_evidence])
        inside = []
        for r in with_evidence:
            ev, win = hull(r["evidence"]), r.get("window")
            inside.append(float(win is not None and win[0] <= ev[0] and ev[1] <= win[1]))
        m["evidence_in_window"] = _mean(inside)
    return m
