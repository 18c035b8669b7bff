"""E.T. Bench (Liu et al., NeurIPS 2024) as MUSEG evaluates it: prompt, loading, per-sample rows, scores.

MUSEG's ``src/eval_et_bench.py`` sends each sample's ``q`` wrapped in :data:`ETBENCH_TEMPLATE` (the
same instruction for all 12 tasks; greedy, 512 new tokens, the frame settings of the grounding
sets), keeps the content of the single ``<answer>...</answer>`` (else ``""``;
:func:`museg_lit.rewards.parsing.extract_answer`) and scores it with
E.T. Bench's ``compute_metrics.py``. That scoring is re-implemented for all 12 tasks in
:mod:`museg_lit.evaluation.etbench_metrics` (:func:`etbench_metrics`, re-exported here; its
docstring lists the departures). Six tasks (``rar``, ``eca``, ``rvq``, ``gvq``, ``dvc``, ``slc``)
need the sentence-similarity model all-MiniLM-L6-v2 from a local folder (config key
``sentsim_model``, :mod:`museg_lit.evaluation.sentsim`), checked before the video model loads.

:meth:`ETBenchBenchmark.score` flattens the result into metrics ``<task>/<source>/<key>`` (keys of
the reference's ``metrics.json`` in snake case: ``f1_0.5``, ``m_rec``, ``sentsim``...), the task
means ``<task>/<key>``, the merged columns ``ref/acc``, ``gnd/f1`` (also ``grounding_f1``),
``cap/f1``, ``cap/sim``, ``com/rec`` and MUSEG's average ``avg`` (fractions; x100 is the table),
with pycocoevalcap installed also ``dvc/<source>/bleu_4``, ``meteor`` (Java), ``rouge_l``, ``cider``,
and keeps the whole result for ``metrics.json`` and the bar chart
(:func:`museg_lit.evaluation.etbench_plots.plot_etbench_table`).
"""

from __future__ import annotations

import re
from pathlib import Path

from museg_lit.data import annotations
from museg_lit.evaluation.etbench_metrics import (
    ALL_TASKS,
    SENTSIM_TASKS,
    TASK_GROUPS,
    _iou,
    dvc_format,
    etbench_metrics,
    evs_scores,
    parse_timestamps,
    tal_scores,
    tem_scores,
    tvg_scores,
    vhd_scores,
)
from museg_lit.evaluation.types import EvalItem
from museg_lit.rewards.parsing import extract_answer

__all__ = [
    "ALL_TASKS",
    "ETBENCH_TEMPLATE",
    "GROUNDING_TASKS",
    "SENTSIM_TASKS",
    "SUPPORTED_TASKS",
    "ETBenchBenchmark",
    "etbench_metrics",
    "flat_metrics",
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

GROUNDING_TASKS = TASK_GROUPS["gnd"]
SUPPORTED_TASKS = ALL_TASKS
# the task's headline key in the reference's metrics.json (its Overall column)
_HEADLINE = {**{t: "Acc" for t in TASK_GROUPS["ref"]}, **{t: "F1" for t in (*TASK_GROUPS["gnd"], *TASK_GROUPS["cap"])},
             "tem": "mRec", "gvq": "mRec"}


def is_etbench_file(path: str | Path) -> bool:
    """True for an existing E.T. Bench annotation JSON: a ``.json`` file whose first record has
    ``task``, ``source`` and ``q`` (:func:`museg_lit.data.annotations.detect_format`)."""
    path = Path(path)
    return path.suffix == ".json" and path.is_file() and annotations.detect_format(path) == "et_bench"


def _read_items(path: str | Path, subset_file: str | Path | None, tasks: list[str] | None):
    """(items kept, every (task, source) of the file among ``tasks``, the subset or None)."""
    if tasks is not None and (unknown := sorted(set(tasks) - set(ALL_TASKS))):
        raise ValueError(f"data.tasks: unknown E.T. Bench tasks {unknown}; known: {list(ALL_TASKS)}")
    read = annotations.read_et_bench_json(path, tasks=tasks, subset=subset_file)
    items = []
    for rec in read.records:
        extra = {k: rec.raw[k] for k in ("source", "duration", "p", "o", "g", "src") if k in rec.raw}
        items.append(EvalItem(f"{rec.task}/{rec.source}/{rec.idx}", rec.video, rec.q, rec.raw.get("tgt"), rec.task, extra))
    return items, read.groups, read.subset


def load_etbench_items(path: str | Path, subset_file: str | Path | None = None, tasks: list[str] | None = None):
    """E.T. Bench samples as :class:`museg_lit.evaluation.types.EvalItem` (id ``task/source/idx``),
    all 12 tasks, ``tgt`` as the file has it (the scorer reads the reference's shapes); parsed by
    :func:`museg_lit.data.annotations.read_et_bench_json`, as the grounding samples are.

    ``subset_file``: MUSEG's / E.T. Bench's ``subset.json`` ({task: {source: [idx, ...]}}, 470 samples).
    ``tasks``: keep only these tasks (an unknown name is a ``ValueError``).
    """
    return _read_items(path, subset_file, tasks)[0]


def sample_score(task: str, answer: str, tgt) -> dict:
    """Per-sample parse for the JSONL and the pictures: ``prediction`` and ``iou`` (None where no IoU applies).

    ``vhd``: ``[[x, x]]`` of the first number; ``dvc`` / ``slc``: the parsed event times; option
    tasks: the option letter when the answer states one (``(B)``, ``B.``), else None (the
    similarity fallback decides at scoring); ``gvq`` also the segment.
    """
    if task == "vhd":
        m = re.search(r"[-+]?\d*\.\d+|[-+]?\d+", answer)
        return {"prediction": [[float(m.group(0))] * 2] if m else None, "iou": None}
    if task in ("dvc", "slc"):
        return {"prediction": dvc_format(answer)[0], "iou": None}
    if task in ("rar", "eca", "rvq"):
        m = re.search(r"\(([A-Za-z])\)", answer) or re.match(r"\s*(?:best option:)?\s*\(?\s*([A-Za-z])(?:[.,) ]|$)",
                                                               answer, re.IGNORECASE)
        return {"prediction": m.group(1).upper() if m else None, "iou": None}
    pred = parse_timestamps(answer)
    iou = None
    if task in ("tvg", "epm", "tem", "gvq") and tgt is not None:
        iou = float(_iou(tgt, pred[0]).max()) if pred else 0.0
    return {"prediction": pred, "iou": iou}


# ------------------------------------------------------------------------------------------------
# Metric names.
# ------------------------------------------------------------------------------------------------

_KEY_NAMES = {"Total": "total", "Failed": "failed", "mIoU": "m_iou", "mRec": "m_rec", "Acc": "acc", "F1": "f1",
              "SentSim": "sentsim"}


def metric_name(key: str) -> str:
    """Snake-case metric name of a reference key (MLflow allows no ``@``): ``F1@0.5`` -> ``f1_0.5``."""
    if "@" in key:
        head, t = key.split("@")
        return f"{head.lower()}_{t}"
    return _KEY_NAMES.get(key, key.lower())


_OLD_KEYS = {"tvg": tvg_scores, "epm": tvg_scores, "tem": tem_scores, "tal": tal_scores, "evs": evs_scores,
             "vhd": vhd_scores}


def score_task(task: str, rows: list[dict]) -> dict[str, float]:
    """Metrics of one (task, source) group of JSONL rows (``answer``, ``groundtruth``) for the tasks
    that need no sentence model, in snake case (``f1_0.5``); :func:`etbench_metrics` does all tasks."""
    if task not in _OLD_KEYS:
        raise ValueError(f"score_task covers {sorted(_OLD_KEYS)}; use etbench_metrics for {task!r}")
    out = _OLD_KEYS[task]([{"a": r["answer"], "tgt": r["groundtruth"]} for r in rows])
    return {metric_name(k): v for k, v in out.items()}


def flat_metrics(result: dict) -> dict[str, float]:
    """:func:`etbench_metrics`' result as flat metrics (fractions): ``<task>/<source>/<key>``,
    ``<task>/<key>`` (mean over sources), ``ref/acc``, ``gnd/f1`` (= ``grounding_f1``), ``cap/f1``,
    ``cap/sim``, ``com/rec`` and ``avg``, for what is present."""
    metrics: dict[str, float] = {}
    for task, by_source in sorted(result["per_task"].items()):
        for source, out in sorted(by_source.items()):
            metrics.update({f"{task}/{source}/{metric_name(k)}": float(v) for k, v in out.items()})
    for name, value in result["task_means"].items():
        task, sim = (name[:-4], True) if name.endswith("_sim") else (name, False)
        metrics[f"{task}/{'sentsim' if sim else metric_name(_HEADLINE[task])}"] = value
    merged = {"Acc (ref)": "ref/acc", "F1 (gnd)": "gnd/f1", "F1 (cap)": "cap/f1", "Sim (cap)": "cap/sim",
              "Rec (com)": "com/rec"}
    for column, name in merged.items():
        if result["merged"].get(column) is not None:
            metrics[name] = result["merged"][column] / 100
    if all(f"{t}/f1" in metrics for t in GROUNDING_TASKS):  # E.T. Bench's "F1 (gnd)" before rounding
        metrics["grounding_f1"] = sum(metrics[f"{t}/f1"] for t in GROUNDING_TASKS) / len(GROUNDING_TASKS)
    if result["avg"] is not None:
        metrics["avg"] = result["avg"] / 100
    return metrics


class ETBenchBenchmark:
    """E.T. Bench as a :class:`museg_lit.evaluation.benchmark.Benchmark` of :class:`museg_lit.evaluation.runner.EvalRunner`.

    ``sentsim_model``: local folder of all-MiniLM-L6-v2 (needed by :data:`SENTSIM_TASKS`; checked
    by :meth:`check` before the video model loads, loaded when scoring).
    """

    name = "etbench"

    def __init__(self, subset_file: str | None = None, tasks: list[str] | None = None,
                 sentsim_model: str | None = None):
        self.subset_file, self.tasks, self.sentsim_model = subset_file, tasks, sentsim_model
        self._groups: list[tuple[str, str]] = []
        self._subset: dict | None = None
        self.result: dict | None = None  # the last etbench_metrics result

    def load(self, path):
        items, self._groups, self._subset = _read_items(path, self.subset_file, self.tasks)
        return items

    def check(self, items) -> None:
        """Fail now (``sentsim_model: ...``) if a task that needs the sentence model has no usable folder."""
        from museg_lit.evaluation.sentsim import check_sentsim_path

        need = sorted({it.task for it in items} & set(SENTSIM_TASKS))
        if need:
            check_sentsim_path(self.sentsim_model, need)

    def question(self, item) -> str:
        return ETBENCH_TEMPLATE.replace("{}", item.question, 1)

    def record(self, item, output: str) -> dict:
        answer = extract_answer(output, default="", strip=True)
        return {"answer": answer, **sample_score(item.task, answer, item.groundtruth)}

    def score(self, items, rows: dict[str, dict]) -> tuple[dict[str, float], str, str]:
        records = []
        for it in items:
            e = it.extra
            rec = {"task": it.task, "source": e.get("source", ""), "idx": it.id.rsplit("/", 1)[-1], "video": it.video,
                   "tgt": it.groundtruth, "a": rows[it.id]["answer"], **{k: e[k] for k in ("o", "p", "g") if k in e}}
            records.append(rec)
        subset = None
        if self._subset is not None:
            # as the reference's --subset: a source of the file with no subset sample stays an (empty) group
            have = {(r["task"], r["source"]) for r in records}
            records += [{"task": t, "source": s, "idx": None} for t, s in self._groups if (t, s) not in have]
            subset = {t: {s: [r["idx"] for r in records if (r["task"], r["source"]) == (t, s) and r["idx"] is not None]
                          for s in {src for tt, src in self._groups if tt == t}} for t in {t for t, _ in self._groups}}
        sentsim = None
        if {it.task for it in items} & set(SENTSIM_TASKS):
            from museg_lit.evaluation.sentsim import load_sentsim

            sentsim = load_sentsim(self.sentsim_model)
        from museg_lit.evaluation.caption_metrics import available

        # BLEU / METEOR / ROUGE-L / CIDEr where pycocoevalcap is installed (pip install '.[caption]')
        self.result = etbench_metrics(records, sentsim, subset=subset, caption_metrics=available())
        metrics = flat_metrics(self.result)
        tasks = sorted(self.result["per_task"])
        headline = "avg" if "avg" in metrics else "grounding_f1" if "grounding_f1" in metrics else \
            f"{tasks[0]}/{metric_name(_HEADLINE[tasks[0]])}"
        return metrics, headline, "+".join(tasks)

    def plots(self, out_dir, title: str = "") -> dict:
        """The E.T. Bench table as a bar chart per task group (``etbench_table.png``)."""
        from museg_lit.evaluation.etbench_plots import plot_etbench_table

        if self.result is None:
            return {}
        return {"etbench_table": plot_etbench_table(self.result, Path(out_dir) / "etbench_table.png", title=title)}
