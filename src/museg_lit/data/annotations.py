"""Annotation formats, normalised to one sample type (:class:`GroundingSample`).

* MUSEG training JSONL (``stage_1.jsonl`` / ``stage_2.jsonl``): one object per line with
  ``idx, problem, solution, video, duration (optional), task``.
* MUSEG evaluation JSON (``charades_sta.json``, ``thumos14.json``, ...): a list of objects with
  ``video, question, groundtruth``; the task is ``tal`` when a ground truth has several segments
  in any sample of the file (THUMOS), else ``tvg`` (Charades-STA), or given explicitly.
* Perception Test in MUSEG's evaluation format (``perception_test.json``): the same schema, always
  ``tal`` (MUSEG's ``eval_grounding_perception_test.sh`` passes ``--eval_method tal`` even though
  many queries have one segment). The file is not in the MUSEG snapshot we could read; the schema
  is the one MUSEG's ``eval_grounding.py`` reads from every grounding file.
* E.T. Bench (Liu et al., NeurIPS 2024; PolyU-ChenLab/ETBench ``etbench_txt_v1.0.json``, which
  MUSEG evaluates as ``data/eval/et_bench/et_bench.json``): a list of objects with
  ``version, idx, task, source, video, duration, q`` and, depending on the task, ``src`` (input
  timestamps), ``tgt`` (target timestamps), ``p``/``o`` (options), ``g`` (captions); schema from
  E.T. Bench's ``docs/BENCHMARK.md``, ``tgt`` shapes from its ``compute_metrics.py``:
  ``[s, e]`` for ``tvg``/``epm``/``gvq``; ``[[s, e], ...]`` for ``tal``/``evs``/``tem``/``dvc``/
  ``slc``; for ``vhd`` either ``[[s, e], ...]`` or one such list per annotator. See
  :func:`load_et_bench_json` for how these become samples.

Every error names the file and the line (JSONL) or list index (JSON) and the offending key.
Segments with ``end < start``, a negative start, or an end beyond the duration follow
``segment_policy``: ``keep`` (MUSEG's training files: the rewards see the raw ``solution``, so
such segments are kept unchanged and only counted), ``clip`` (clip to [0, duration]; drop the
sample if nothing is left), ``drop`` (drop the sample) or ``error``. Structure errors (not a list
of numeric pairs) are errors under every policy. A :class:`LoadReport` counts what was loaded, clipped,
dropped (bad data) and filtered (left out on purpose: task filter, E.T. Bench subset), so that
``loaded + dropped + filtered`` equals the records read.
Departure from MUSEG: MUSEG's loader trusts its files; we validate because user data is not MUSEG's.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TASKS = ("tvg", "tal")
SEGMENT_POLICIES = ("keep", "clip", "drop", "error")
ANNOTATION_FORMATS = ("auto", "museg_train", "museg_eval", "perception_test", "et_bench")

# E.T. Bench's 12 tasks, by its groups (referring, grounding, captioning, complex understanding).
ET_BENCH_TASKS = ("rar", "eca", "rvq", "tvg", "epm", "tal", "evs", "vhd", "dvc", "slc", "tem", "gvq")
# E.T. Bench task -> our task type, for the tasks whose `tgt` holds segments. Single-target tasks
# become "tvg"; tasks with a list of target segments become "tal" (for `tem` any one of them is a
# correct answer and for `vhd` the answer is a point inside one: E.T. Bench scores them its own way,
# see museg_lit.evaluation.etbench; `subtask` keeps the original name).
ET_BENCH_SEGMENT_TASKS: dict[str, str] = {
    "tvg": "tvg", "epm": "tvg", "gvq": "tvg",
    "tal": "tal", "evs": "tal", "vhd": "tal", "tem": "tal", "dvc": "tal", "slc": "tal",
}  # fmt: skip
# Option tasks: the answer is a choice, `tgt` is absent, nothing to ground.
ET_BENCH_OPTION_TASKS = ("rar", "eca", "rvq")
# Default selection of E.T. Bench *grounding samples* (load_et_bench_json: training, grounding
# metrics): its grounding tasks plus `tem`. The E.T. Bench evaluation
# (museg_lit.evaluation.etbench) reads the same file with read_et_bench_json and scores all 12 tasks.
ET_BENCH_DEFAULT_TASKS = ("tvg", "epm", "tal", "evs", "vhd", "tem")


class AnnotationError(ValueError):
    """A malformed annotation; the message names file, line/index and key."""


@dataclass(frozen=True)
class GroundingSample:
    """One grounding question about one video.

    ``solution`` is a list of ``[start, end]`` segments in seconds; ``video`` is the path as written
    in the annotation (relative to the video root); ``source`` is ``file:line`` (or ``file[index]``)
    for error messages. ``subtask`` / ``dataset`` are set for benchmarks with their own task names
    (E.T. Bench: ``subtask="epm"``, ``dataset="ego4d_nlq"``) and None for MUSEG's files.
    """

    idx: str
    problem: str
    solution: list[list[float]]
    video: str
    task: str
    duration: float | None = None
    source: str = ""
    subtask: str | None = None
    dataset: str | None = None

    def columns(self) -> dict:
        """The per-sample fields a reward function receives (besides completions/solution)."""
        d = asdict(self)
        d.pop("solution")
        return d


@dataclass
class LoadReport:
    """Counts of what loaders kept, clipped, dropped and filtered (log them with :meth:`as_metrics`).

    ``loaded`` samples were returned; ``clipped`` of them had a segment clipped; ``kept_invalid`` of
    them hold such a segment unchanged (``segment_policy=keep``). ``dropped`` counts
    records rejected for bad data by reason (``bad_segment``: invalid under ``segment_policy=drop``;
    ``empty_after_clip``: nothing left after clipping); ``filtered`` counts records left out on
    purpose (``task_not_selected``, ``not_in_subset``). One report may accumulate several files.
    """

    loaded: int = 0
    clipped: int = 0
    kept_invalid: int = 0
    dropped: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def num_filtered(self) -> int:
        return sum(self.filtered.values())

    @property
    def total(self) -> int:
        """Records read: ``loaded + num_dropped + num_filtered``."""
        return self.loaded + self.num_dropped + self.num_filtered

    def as_metrics(self, prefix: str = "data/") -> dict[str, float]:
        """Flat metrics, e.g. ``{"data/loaded": 5600.0, "data/dropped/bad_segment": 2.0, ...}``."""
        out = {
            f"{prefix}loaded": float(self.loaded),
            f"{prefix}clipped": float(self.clipped),
            f"{prefix}kept_invalid": float(self.kept_invalid),
            f"{prefix}dropped": float(self.num_dropped),
            f"{prefix}filtered": float(self.num_filtered),
        }
        out.update({f"{prefix}dropped/{k}": float(v) for k, v in sorted(self.dropped.items())})
        out.update({f"{prefix}filtered/{k}": float(v) for k, v in sorted(self.filtered.items())})
        return out

    def summary(self) -> str:
        """One line for logs: ``loaded 5598 (clipped 3), dropped 2 (bad_segment 2), filtered 0``."""

        def detail(counter: Counter) -> str:
            return f" ({', '.join(f'{k} {v}' for k, v in sorted(counter.items()))})" if counter else ""

        return (
            f"loaded {self.loaded} (clipped {self.clipped}, kept invalid {self.kept_invalid}), dropped {self.num_dropped}{detail(self.dropped)}, "
            f"filtered {self.num_filtered}{detail(self.filtered)}"
        )


def _check_policy(segment_policy: str) -> None:
    if segment_policy not in SEGMENT_POLICIES:
        raise ValueError(f"segment_policy must be one of {SEGMENT_POLICIES}, got {segment_policy!r}")


def _number(value, where: str, what: str) -> float:
    """A JSON number, exactly: ``int`` or ``float``, finite. Strings, booleans (``true`` is an
    ``int`` in Python), ``NaN`` and ``Infinity`` (which ``json`` accepts) are errors naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnnotationError(f"{where}: {what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _check_segments(
    segments, *, where: str, key: str, duration: float | None, policy: str, report: LoadReport
) -> tuple[list[list[float]] | None, str]:
    """Validate ``[[s, e], ...]``; returns the (possibly clipped) list, or None and the drop reason."""
    if not isinstance(segments, list) or not segments:
        raise AnnotationError(
            f"{where}: key {key!r} must be a non-empty list of [start, end] pairs, got {segments!r}"
        )
    out: list[list[float]] = []
    bad = False
    for seg in segments:
        if not (isinstance(seg, (list, tuple)) and len(seg) == 2):
            raise AnnotationError(f"{where}: segment {seg!r} of key {key!r} is not a [start, end] pair")
        s = _number(seg[0], where, f"the start of segment {seg!r} of key {key!r}")
        e = _number(seg[1], where, f"the end of segment {seg!r} of key {key!r}")
        invalid = e < s or s < 0 or (duration is not None and e > duration + 1e-6)
        if policy == "keep":  # unchanged, numbers exactly as the file has them
            bad = bad or invalid
            out.append([seg[0], seg[1]])
            continue
        if invalid:
            bad = True
            if policy == "error":
                raise AnnotationError(
                    f"{where}: segment [{s}, {e}] is invalid (key {key!r}: end < start, negative, "
                    f"or beyond duration {duration})"
                )
            if policy == "drop":
                return None, "bad_segment"
            s, e = max(0.0, min(s, e)), max(s, e)
            if duration is not None:
                s, e = min(s, duration), min(e, duration)
            if e <= s:
                continue
        out.append([s, e])
    if not out:
        return None, "empty_after_clip"
    if bad and policy == "keep":
        report.kept_invalid += 1
    elif bad:
        report.clipped += 1
    return out, ""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: is a directory, not an annotation file") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _read_json_list(path: Path, what: str) -> list:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    return data


def jsonl_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed row)`` of every non-blank line of a JSONL file; a line that is not JSON
    (or a missing / non-UTF-8 file) is an :class:`AnnotationError` naming ``file:line``."""
    path = Path(path)
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def json_list_rows(path: str | Path, what: str) -> Iterator[tuple[str, Any]]:
    """``(file[i], row)`` of a file holding one JSON list of ``what``."""
    path = Path(path)
    for i, row in enumerate(_read_json_list(path, what)):
        yield f"{path}[{i}]", row


def _require(obj: dict, key: str, where: str):
    if key not in obj:
        raise AnnotationError(f"{where}: missing key {key!r}")
    return obj[key]


def _duration(obj: dict, where: str) -> float | None:
    duration = obj.get("duration")
    if duration is None:
        return None
    value = _number(duration, where, "key 'duration'")
    if value <= 0:
        raise AnnotationError(f"{where}: key 'duration' must be > 0 seconds, got {duration!r}")
    return value


def load_museg_jsonl(
    path: str | Path, *, segment_policy: str = "clip", report: LoadReport | None = None
) -> list[GroundingSample]:
    """Read a MUSEG training JSONL file (``stage_1.jsonl``) into samples.

    Blank lines are skipped; a line that is not JSON raises :class:`AnnotationError` naming it.
    """
    _check_policy(segment_policy)
    path = Path(path)
    report = report if report is not None else LoadReport()
    samples: list[GroundingSample] = []
    for lineno, obj in jsonl_rows(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise AnnotationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        sample = _to_sample(
            obj,
            where=where,
            idx=str(obj.get("idx", lineno - 1)),
            problem_key="problem",
            solution_key="solution",
            task=obj.get("task"),
            policy=segment_policy,
            report=report,
        )
        if sample is not None:
            samples.append(sample)
    return samples


def load_museg_eval_json(
    path: str | Path,
    *,
    task: str | None = None,
    segment_policy: str = "clip",
    report: LoadReport | None = None,
) -> list[GroundingSample]:
    """Read a MUSEG evaluation JSON (``charades_sta.json``, ``thumos14.json``)."""
    _check_policy(segment_policy)
    path = Path(path)
    report = report if report is not None else LoadReport()
    data = _read_json_list(path, "samples")
    if task is None:
        multi = any(isinstance(d, dict) and len(d.get("groundtruth") or []) > 1 for d in data)
        task = "tal" if multi else "tvg"
    samples = []
    for i, obj in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(obj, dict):
            raise AnnotationError(f"{where}: expected a JSON object")
        sample = _to_sample(
            obj, where=where, idx=str(i), problem_key="question", solution_key="groundtruth",
            task=task, policy=segment_policy, report=report,
        )  # fmt: skip
        if sample is not None:
            samples.append(sample)
    return samples


def load_perception_test_json(
    path: str | Path, *, segment_policy: str = "clip", report: LoadReport | None = None
) -> list[GroundingSample]:
    """Read MUSEG's ``perception_test.json`` (evaluation schema); every sample is ``tal``."""
    return load_museg_eval_json(path, task="tal", segment_policy=segment_policy, report=report)


def _to_sample(
    obj: dict, *, where: str, idx: str, problem_key: str, solution_key: str, task, policy: str,
    report: LoadReport,
) -> GroundingSample | None:  # fmt: skip
    problem = _require(obj, problem_key, where)
    video = _require(obj, "video", where)
    if not isinstance(problem, str):
        raise AnnotationError(f"{where}: key {problem_key!r} must be a string, got {type(problem).__name__}")
    if not isinstance(video, str):
        raise AnnotationError(f"{where}: key 'video' must be a string, got {type(video).__name__}")
    if task not in TASKS:
        raise AnnotationError(f"{where}: key 'task' must be one of {TASKS}, got {task!r}")
    duration = _duration(obj, where)
    segments, reason = _check_segments(
        _require(obj, solution_key, where), where=where, key=solution_key, duration=duration, policy=policy,
        report=report,
    )  # fmt: skip
    if segments is None:
        report.dropped[reason] += 1
        log.warning("%s: dropped (%s, segment_policy=%s)", where, reason, policy)
        return None
    report.loaded += 1
    return GroundingSample(
        idx=idx, problem=problem, solution=segments, video=video, task=task, duration=duration, source=where
    )


# ---------------------------------------------------------------------------------------------
# E.T. Bench
# ---------------------------------------------------------------------------------------------


def _is_pair(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and not isinstance(value[0], (list, tuple))


def _et_bench_segments(tgt, *, where: str, subtask: str) -> list:
    """E.T. Bench ``tgt`` as a list of ``[s, e]`` (validated later by :func:`_check_segments`)."""
    if not isinstance(tgt, list) or not tgt:
        raise AnnotationError(f"{where}: key 'tgt' of task {subtask!r} must be a non-empty list, got {tgt!r}")
    if _is_pair(tgt):  # tvg / epm / gvq: one flat [s, e]
        return [list(tgt)]
    if all(isinstance(t, list) and t and not _is_pair(t) and all(_is_pair(x) for x in t) for t in tgt):
        # vhd with several annotators: [[[s, e], ...], ...]; any annotator's segment counts as a hit
        # in E.T. Bench's vhd metric, so the union (in annotator order) is the ground truth.
        return [list(seg) for annotator in tgt for seg in annotator]
    return tgt  # [[s, e], ...]; malformed entries are reported by _check_segments


def _read_subset(subset: str | Path | Mapping | None) -> Mapping | None:
    if subset is None or isinstance(subset, Mapping):
        return subset
    path = Path(subset)
    if not path.is_file():
        raise AnnotationError(f"{path}: E.T. Bench subset file not found")
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise AnnotationError(f"{path}: expected an E.T. Bench subset {{task: {{source: [idx, ...]}}}}")
    return data


@dataclass(frozen=True)
class ETBenchRecord:
    """One record of E.T. Bench's annotation JSON, its required keys checked; ``raw`` is the whole
    object (``duration``, ``tgt``, ``src``, ``p``, ``o``, ``g``, ... as the file has them)."""

    where: str  # file[index], for error messages
    task: str
    source: str
    idx: object  # as in the file (an int in the release); the subset lists it as is
    video: str
    q: str
    raw: dict


@dataclass(frozen=True)
class ETBenchFile:
    """What :func:`read_et_bench_json` kept: ``records`` in file order; ``groups`` every
    ``(task, source)`` of the selected tasks (also those the subset leaves empty, which E.T. Bench's
    ``--subset`` scoring still lists); ``subset`` as read (None without one)."""

    records: list[ETBenchRecord]
    groups: list[tuple[str, str]]
    subset: Mapping | None


def read_et_bench_json(
    path: str | Path,
    *,
    tasks: Iterable[str] | None = None,
    subset: str | Path | Mapping | None = None,
    report: LoadReport | None = None,
) -> ETBenchFile:
    """Parse E.T. Bench's annotation JSON once: the one reader behind :func:`load_et_bench_json`
    (grounding samples) and the E.T. Bench evaluation (:mod:`museg_lit.evaluation.etbench`).

    Every record must be an object with ``task`` (one of :data:`ET_BENCH_TASKS`), ``source`` and
    ``idx``; records outside ``tasks`` (None: all) or outside ``subset`` (MUSEG's / E.T. Bench's
    ``subset.json``, a path or ``{task: {source: [idx, ...]}}``) are counted in ``report.filtered``
    (``task_not_selected``, ``not_in_subset``); kept ones need ``video`` and ``q`` strings.
    """
    path = Path(path)
    report = report if report is not None else LoadReport()
    selected = set(ET_BENCH_TASKS) if tasks is None else set(tasks)
    subset_ids = _read_subset(subset)
    records: list[ETBenchRecord] = []
    groups: dict[tuple[str, str], None] = {}
    for i, obj in enumerate(_read_json_list(path, "E.T. Bench samples")):
        where = f"{path}[{i}]"
        if not isinstance(obj, dict):
            raise AnnotationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        task = _require(obj, "task", where)
        source = _require(obj, "source", where)
        idx = _require(obj, "idx", where)
        if task not in ET_BENCH_TASKS:
            raise AnnotationError(f"{where}: unknown E.T. Bench task {task!r}; known: {list(ET_BENCH_TASKS)}")
        if task not in selected:
            report.filtered["task_not_selected"] += 1
            continue
        groups[(task, source)] = None
        if subset_ids is not None and idx not in subset_ids.get(task, {}).get(source, ()):
            report.filtered["not_in_subset"] += 1
            continue
        q = _require(obj, "q", where)
        video = _require(obj, "video", where)
        if not isinstance(q, str):
            raise AnnotationError(f"{where}: key 'q' must be a string, got {type(q).__name__}")
        if not isinstance(video, str):
            raise AnnotationError(f"{where}: key 'video' must be a string, got {type(video).__name__}")
        records.append(ETBenchRecord(where, task, source, idx, video, q, obj))
    return ETBenchFile(records, list(groups), subset_ids)


def load_et_bench_json(
    path: str | Path,
    *,
    tasks: Iterable[str] | None = ET_BENCH_DEFAULT_TASKS,
    subset: str | Path | Mapping | None = None,
    segment_policy: str = "clip",
    report: LoadReport | None = None,
) -> list[GroundingSample]:
    """Read E.T. Bench's annotation JSON (``etbench_txt_v1.0.json``) into grounding samples
    (:func:`read_et_bench_json`, then each record's ``tgt`` as segments).

    Args:
        tasks: E.T. Bench tasks to keep (default: ``tvg, epm, tal, evs, vhd, tem``); None keeps every
            task with segment targets (adds ``gvq, dvc, slc``). The option tasks ``rar, eca, rvq``
            have no segments to ground and are rejected with a ``ValueError``.
        subset: MUSEG's / E.T. Bench's ``subset.json`` (path or parsed ``{task: {source: [idx]}}``,
            470 samples); records outside it are counted as ``filtered/not_in_subset``.

    Each kept record becomes ``GroundingSample(idx="<task>/<source>/<idx>", problem=q,
    solution=tgt as [[s, e], ...], video=video, task=ET_BENCH_SEGMENT_TASKS[task], duration,
    subtask=task, dataset=source)``. ``problem`` is E.T. Bench's full prompt ``q``; MUSEG appends
    its own E.T. Bench instruction, not the grounding template (see museg_lit.evaluation.etbench).
    The ``vid``-style file (timestamps in ``q`` replaced by ``<vid>`` tokens) is refused.
    """
    _check_policy(segment_policy)
    selected = set(ET_BENCH_SEGMENT_TASKS) if tasks is None else set(tasks)
    unknown = selected - set(ET_BENCH_SEGMENT_TASKS)
    if unknown:
        options = sorted(unknown & set(ET_BENCH_OPTION_TASKS))
        raise ValueError(
            f"E.T. Bench tasks {sorted(unknown)} cannot be loaded as grounding samples"
            + (f" ({', '.join(options)}: option tasks, no target segments)" if options else "")
            + f"; choose from {sorted(ET_BENCH_SEGMENT_TASKS)}"
        )
    report = report if report is not None else LoadReport()
    samples: list[GroundingSample] = []
    for rec in read_et_bench_json(path, tasks=selected, subset=subset, report=report).records:
        where, obj = rec.where, rec.raw
        if "<vid>" in rec.q:
            raise AnnotationError(
                f"{where}: key 'q' holds <vid> tokens: this is E.T. Bench's vid-style file; "
                "use etbench_txt_v1.0.json (timestamps as text)"
            )
        duration = _duration(obj, where)
        tgt = _et_bench_segments(_require(obj, "tgt", where), where=where, subtask=rec.task)
        segments, reason = _check_segments(
            tgt, where=where, key="tgt", duration=duration, policy=segment_policy, report=report
        )
        if segments is None:
            report.dropped[reason] += 1
            log.warning("%s: dropped (%s, segment_policy=%s)", where, reason, segment_policy)
            continue
        report.loaded += 1
        samples.append(GroundingSample(
            idx=f"{rec.task}/{rec.source}/{rec.idx}", problem=rec.q, solution=segments, video=rec.video,
            task=ET_BENCH_SEGMENT_TASKS[rec.task], duration=duration, source=where,
            subtask=rec.task, dataset=str(rec.source),
        ))  # fmt: skip
    return samples


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """``museg_train`` for ``.jsonl``; for JSON, ``et_bench`` if the first record has ``task``,
    ``source`` and ``q``, else ``museg_eval``. Perception Test is never guessed (it is the
    ``museg_eval`` schema): ask for ``perception_test`` explicitly."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return "museg_train"
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(65536)
    except (OSError, UnicodeDecodeError):
        return "museg_eval"  # the loader reports the problem with the file
    # A cheap look at the first record instead of parsing a large file twice.
    first = head.lstrip()[1:].split("}", 1)[0] if head.lstrip().startswith("[") else ""
    if all(f'"{key}"' in first for key in ("task", "source", "q")):
        return "et_bench"
    return "museg_eval"


def load_annotations(
    path: str | Path,
    *,
    annotation_format: str = "auto",
    segment_policy: str = "clip",
    report: LoadReport | None = None,
    task: str | None = None,
    tasks: Iterable[str] | None = None,
    subset_file: str | Path | None = None,
) -> list[GroundingSample]:
    """Load any supported annotation file; ``annotation_format`` is one of :data:`ANNOTATION_FORMATS`.

    ``task`` (``tvg``/``tal``) overrides the task of a MUSEG evaluation file; ``tasks`` and
    ``subset_file`` apply to E.T. Bench only (``tasks=None`` there means its default selection).
    """
    if annotation_format not in ANNOTATION_FORMATS:
        raise ValueError(f"annotation_format must be one of {ANNOTATION_FORMATS}, got {annotation_format!r}")
    fmt = detect_format(path) if annotation_format == "auto" else annotation_format
    if fmt != "et_bench" and (tasks is not None or subset_file is not None):
        raise ValueError(f"{path}: tasks / subset_file apply to E.T. Bench files only (format {fmt!r})")
    if fmt == "museg_train":
        samples = load_museg_jsonl(path, segment_policy=segment_policy, report=report)
    elif fmt == "museg_eval":
        samples = load_museg_eval_json(path, task=task, segment_policy=segment_policy, report=report)
    elif fmt == "perception_test":
        samples = load_perception_test_json(path, segment_policy=segment_policy, report=report)
    else:
        samples = load_et_bench_json(
            path, tasks=ET_BENCH_DEFAULT_TASKS if tasks is None else tasks, subset=subset_file,
            segment_policy=segment_policy, report=report,
        )  # fmt: skip
    check_unique_ids(samples)
    return samples


def check_unique_ids(samples: Iterable[GroundingSample]) -> None:
    """Raise naming both places when two samples share an id (rollout reuse, resume and evaluation
    records are keyed on it)."""
    first: dict[str, str] = {}
    for sample in samples:
        if sample.idx in first:
            raise AnnotationError(f"{sample.source}: id {sample.idx!r} repeats (first at {first[sample.idx]})")
        first[sample.idx] = sample.source


def fit_to_duration(sample: GroundingSample, duration: float, policy: str) -> GroundingSample | None:
    """Check a sample whose file gives no duration against its decoded video's ``duration``, under
    ``policy`` as at load: ``keep`` returns it unchanged, ``clip`` clips its segments, ``drop``
    returns None, ``error`` raises naming the sample. Samples with a duration were checked at load."""
    if sample.duration is not None or policy == "keep":
        return sample
    where = f"{sample.source} (decoded duration {duration:.3f}s of {sample.video})"
    segments, _ = _check_segments(sample.solution, where=where, key="solution", duration=duration, policy=policy,
                                  report=LoadReport())
    return None if segments is None else replace(sample, solution=segments)


def task_counts(samples: Iterable[GroundingSample]) -> dict[str, int]:
    return dict(Counter(s.task for s in samples))
