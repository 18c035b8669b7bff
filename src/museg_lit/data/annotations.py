"""Annotation formats, normalised to one sample type.

* MUSEG training JSONL (``stage_1.jsonl`` / ``stage_2.jsonl``): one object per line with
  ``idx, problem, solution, video, duration (optional), task``.
* MUSEG evaluation JSON (``charades_sta.json``, ``thumos14.json``, ...): a list of objects with
  ``video, question, groundtruth``; the task is ``tal`` when a ground truth has several segments
  in any sample of the file (THUMOS), else ``tvg`` (Charades-STA), or given explicitly.

Every error names the file and the line (JSONL) or list index (JSON) and the offending key.
Segments with ``end < start`` or beyond the duration follow ``segment_policy``:
``clip`` (clip to [0, duration], drop if empty), ``drop`` (drop the sample) or ``error``.
Departure from MUSEG: MUSEG's loader trusts its files; we validate because user data is not MUSEG's.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TASKS = ("tvg", "tal")
SEGMENT_POLICIES = ("clip", "drop", "error")


class AnnotationError(ValueError):
    """A malformed annotation; the message names file, line/index and key."""


@dataclass(frozen=True)
class GroundingSample:
    """One grounding question about one video.

    ``solution`` is a list of ``[start, end]`` segments in seconds; ``video`` is the path as written
    in the annotation (relative to the video root); ``source`` is ``file:line`` for error messages.
    """

    idx: str
    problem: str
    solution: list[list[float]]
    video: str
    task: str
    duration: float | None = None
    source: str = ""

    def columns(self) -> dict:
        """The per-sample fields a reward function receives (besides completions/solution)."""
        d = asdict(self)
        d.pop("solution")
        return d


@dataclass
class LoadReport:
    """Counts of what a loader kept, clipped and dropped (logged as ``data/...`` metrics)."""

    loaded: int = 0
    clipped: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())


def _check_segments(
    segments, *, where: str, duration: float | None, policy: str, report: LoadReport
) -> list[list[float]] | None:
    """Validate ``[[s, e], ...]``; returns the (possibly clipped) list or None to drop."""
    if not isinstance(segments, list) or not segments:
        raise AnnotationError(f"{where}: 'solution' must be a non-empty list of [start, end] pairs, got {segments!r}")
    out: list[list[float]] = []
    bad = False
    for seg in segments:
        if not (isinstance(seg, (list, tuple)) and len(seg) == 2):
            raise AnnotationError(f"{where}: segment {seg!r} is not a [start, end] pair")
        try:
            s, e = float(seg[0]), float(seg[1])
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: segment {seg!r} holds a non-number") from None
        invalid = e < s or s < 0 or (duration is not None and e > duration + 1e-6)
        if invalid:
            bad = True
            if policy == "error":
                raise AnnotationError(
                    f"{where}: segment [{s}, {e}] is invalid (end < start, negative, or beyond duration {duration})"
                )
            if policy == "drop":
                return None
            s, e = max(0.0, min(s, e)), max(s, e)
            if duration is not None:
                s, e = min(s, duration), min(e, duration)
            if e <= s:
                continue
        out.append([s, e])
    if bad:
        report.clipped += 1
    return out or None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _require(obj: dict, key: str, where: str):
    if key not in obj:
        raise AnnotationError(f"{where}: missing key {key!r}")
    return obj[key]


def load_museg_jsonl(
    path: str | Path, *, segment_policy: str = "clip", report: LoadReport | None = None
) -> list[GroundingSample]:
    """Read a MUSEG training JSONL file (``stage_1.jsonl``) into samples.

    Blank lines are skipped; a line that is not JSON raises :class:`AnnotationError` naming it.
    """
    if segment_policy not in SEGMENT_POLICIES:
        raise ValueError(f"segment_policy must be one of {SEGMENT_POLICIES}, got {segment_policy!r}")
    path = Path(path)
    report = report if report is not None else LoadReport()
    samples: list[GroundingSample] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
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
    path = Path(path)
    report = report if report is not None else LoadReport()
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of samples")
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
        )
        if sample is not None:
            samples.append(sample)
    return samples


def _to_sample(
    obj: dict, *, where: str, idx: str, problem_key: str, solution_key: str, task, policy: str,
    report: LoadReport,
) -> GroundingSample | None:
    problem = _require(obj, problem_key, where)
    video = _require(obj, "video", where)
    if not isinstance(problem, str) or not isinstance(video, str):
        raise AnnotationError(f"{where}: {problem_key!r} and 'video' must be strings")
    if task not in TASKS:
        raise AnnotationError(f"{where}: key 'task' must be one of {TASKS}, got {task!r}")
    duration = obj.get("duration")
    if duration is not None:
        try:
            duration = float(duration)
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: key 'duration' is not a number: {duration!r}") from None
    segments = _check_segments(
        _require(obj, solution_key, where), where=where, duration=duration, policy=policy, report=report
    )
    if segments is None:
        report.dropped["bad_segment"] += 1
        log.warning("%s: dropped (invalid segments, segment_policy=%s)", where, policy)
        return None
    report.loaded += 1
    return GroundingSample(idx=idx, problem=problem, solution=segments, video=video, task=task,
                           duration=duration, source=where)


def task_counts(samples: Iterable[GroundingSample]) -> dict[str, int]:
    return dict(Counter(s.task for s in samples))
