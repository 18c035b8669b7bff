"""What the runner asks of a benchmark (:class:`Benchmark`) and MUSEG's grounding sets as one
(:class:`GroundingBenchmark`); E.T. Bench's is :class:`museg_lit.evaluation.etbench.ETBenchBenchmark`.

A benchmark loads its file into :class:`~museg_lit.evaluation.types.EvalItem` s, turns an item into
the question the model sees, reads one raw output into the fields of its prediction row, and scores
all rows at the end. Grounding: the question wrapped in a template (``frame_selection_thinking`` in
MUSEG's protocol), scored by :func:`museg_lit.evaluation.metrics.grounding_metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from museg_lit.data import annotations
from museg_lit.evaluation.metrics import HEADLINE_METRIC, grounding_metrics, parse_prediction, sample_iou
from museg_lit.evaluation.types import EvalItem
from museg_lit.prompts import render_question
from museg_lit.rewards.parsing import extract_answer

__all__ = ["Benchmark", "GroundingBenchmark"]


class Benchmark(Protocol):
    """How to load, prompt and score one kind of benchmark file (structural: no base class)."""

    name: str
    result: dict | None  # the last full result (E.T. Bench's tables) for metrics.json, or None

    def load(self, path: str | Path) -> list[EvalItem]:
        """The items of ``path``, in file order (ids unique)."""

    def check(self, items: list[EvalItem]) -> None:
        """Fail now, before the model loads, if scoring ``items`` would fail later."""

    def question(self, item: EvalItem) -> str:
        """The text the model is asked about the item's video."""

    def record(self, item: EvalItem, output: str) -> dict:
        """Fields of the prediction row of ``item`` read from its raw ``output`` (``answer``, ``prediction``, ...)."""

    def score(self, items: list[EvalItem], rows: dict[str, dict]) -> tuple[dict[str, float], str, str]:
        """``(metrics, headline metric name, task label)`` over all ``items``; ``rows`` by item id."""

    def plots(self, out_dir: str | Path, title: str = "") -> dict[str, Path]:
        """The benchmark's own pictures (beyond the runner's timeline, histogram and curve)."""


class GroundingBenchmark:
    """MUSEG's grounding sets (Charades-STA, THUMOS14/15, Perception Test): ``tvg`` or ``tal``."""

    name = "grounding"
    result = None

    def __init__(self, template: str = "frame_selection_thinking", task: str | None = None,
                 annotation_format: str = "auto"):
        if task is not None and task not in HEADLINE_METRIC:
            raise ValueError(f"task must be one of {sorted(HEADLINE_METRIC)} or null, got {task!r}")
        self.template, self.task, self.annotation_format = template, task, annotation_format

    def load(self, path: str | Path) -> list[EvalItem]:
        # .jsonl (training format, e.g. a synthetic held-out split) keeps per-sample tasks; MUSEG's
        # evaluation JSON gets `task` or its file-level guess; perception_test is always tal
        samples = annotations.load_annotations(path, annotation_format=self.annotation_format, task=self.task)
        return [EvalItem(s.idx, s.video, s.problem, s.solution, self.task or s.task) for s in samples]

    def check(self, items: list[EvalItem]) -> None:
        """Nothing to check beyond the annotations (checked by :meth:`load`)."""

    def question(self, item: EvalItem) -> str:
        return render_question(item.question, self.template)

    def record(self, item: EvalItem, output: str) -> dict:
        row = {"answer": extract_answer(output, default="", strip=True), "prediction": parse_prediction(output),
               "iou": sample_iou(output, item.groundtruth)}
        if item.task == "tal":  # this sample's share of mean_f1_multi (ranks the timeline rows)
            row["f1_multi"] = grounding_metrics([output], [item.groundtruth], "tal")["mean_f1_multi"]
        return row

    def score(self, items: list[EvalItem], rows: dict[str, dict]) -> tuple[dict[str, float], str, str]:
        """Metrics, headline metric name, task label; a mixed file is scored per task (``tvg/m_iou``)."""
        tasks = sorted({it.task for it in items})
        metrics: dict[str, float] = {}
        for task in tasks:
            sub = [it for it in items if it.task == task]
            m = grounding_metrics([rows[it.id]["output"] for it in sub], [it.groundtruth for it in sub], task)
            prefix = "" if len(tasks) == 1 else f"{task}/"
            metrics.update({f"{prefix}{k}": float(v) for k, v in m.items()})
        headline = HEADLINE_METRIC[tasks[0]] if len(tasks) == 1 else f"{tasks[0]}/{HEADLINE_METRIC[tasks[0]]}"
        return metrics, headline, "+".join(tasks)

    def plots(self, out_dir: str | Path, title: str = "") -> dict[str, Path]:
        """None: the runner's three pictures are the grounding pictures."""
        return {}
