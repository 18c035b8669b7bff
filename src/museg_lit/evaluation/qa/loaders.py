"""Multiple-choice video QA annotation formats, normalised to one item type (:class:`QAItem`).

Every item has plain option texts (``options``, letters added by the prompt), the correct letter
(``answer``: ``"A"`` for the first option), and, where the format has one, the evidence segment.
Every error is an :class:`~museg_lit.data.annotations.AnnotationError` naming the file and the
row (``file:line`` for JSONL, ``file[index]`` for JSON lists / parquet rows) and the key.

Formats (``data.qa_format``), each schema checked against its primary source:

* ``video_mme``: Video-MME (Fu et al. 2024), the Hugging Face dataset ``lmms-lab/Video-MME``,
  ``videomme/test-00000-of-00001.parquet``. Columns (dataset card ``README.md``, ``dataset_info``):
  ``video_id, duration, domain, sub_category, url, videoID, question_id, task_type, question,
  options, answer``; ``duration`` is the length *category* (``short`` / ``medium`` / ``long``, not
  seconds), ``options`` a list of ``"A. text"`` strings, ``answer`` a letter. Videos: the card's
  ``videos_chunked_*.zip`` unpack to ``data/<videoID>.mp4``, so ``data.video_root`` is that ``data/``
  folder and the video is ``<videoID>.mp4``. Read from the parquet (pyarrow) or from the same rows
  as a JSON list / JSONL (``pandas.read_parquet(...).to_json(orient="records")``). No evidence.
* ``longvideobench``: LongVideoBench (Wu et al. 2024), ``lvb_val.json`` of the Hugging Face dataset
  ``longvideobench/LongVideoBench``. Keys as the official loader reads them
  (github.com/longvideobench/LongVideoBench, ``longvideobench/longvideobench_dataset.py``): ``id``,
  ``video_path`` (under ``videos/``), ``duration`` (seconds), ``question``, ``candidates`` (option
  texts; the loader writes ``"A. text"``), ``correct_choice`` (0-based index; absent in
  ``lvb_test_wo_gt.json``, which therefore cannot be scored). ``question_category``,
  ``topic_category``, ``duration_group``, ``level`` and ``position`` are kept when present;
  ``position`` (the referred moment, used by third-party loaders) is kept raw, not as evidence:
  the primary source does not document its unit. No evidence segment.
* ``mlvu``: MLVU (Zhou et al. 2024) dev set, one JSON list per task (``1_plotQA.json``,
  ``2_needle.json``, ...; the multiple-choice ones; ``8_sub_scene`` / ``9_summary`` are free-form
  and refused). Keys from the released annotation (github.com/FlagOpen/FlagEmbedding
  ``MLVU/data/5_order.json``) and MLVU's own evaluation (github.com/JUNJIE99/MLVU
  ``video_chat/choice_bench.py``: ``video, question, candidates, answer`` with ``answer`` the
  *text* of the correct candidate): ``video, duration, question, candidates, answer,
  question_type``. Videos lie in ``video/<task folder>/`` (the JSON's stem, e.g. ``5_order``, as
  FlagEvalMM's MLVU loader lays them out), so the item's video is ``<json stem>/<video>`` under
  ``data.video_root`` = MLVU's ``video/``. A folder of task files is read whole. No evidence.
* ``qa_jsonl``: this project's own JSONL (the generated set, :mod:`museg_lit.data.synthetic_qa`):
  one object per line with ``id, video, question, options`` (texts), ``answer`` (letter) and
  optional ``duration`` (seconds), ``evidence`` (``[[s, e], ...]`` seconds), ``question_type``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from museg_lit.data.annotations import AnnotationError, json_list_rows, jsonl_rows

__all__ = ["QA_FORMATS", "QAItem", "letter", "load_qa"]

LETTERS = "ABCDEFGHIJ"
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-J])\)?\s*[.:)]\s*")  # "A. text", "(B) text", "C: text"


def letter(index: int) -> str:
    """``0 -> "A"``, ``3 -> "D"``."""
    return LETTERS[index]


@dataclass(frozen=True)
class QAItem:
    """One multiple-choice question about one video.

    ``options`` are the option texts without letters; ``answer`` is the correct letter; ``evidence``
    the segments (seconds) that hold the answer, or None where the format has none; ``duration``
    the video's length in seconds where the annotation gives it (else None: known after decoding).
    """

    id: str
    video: str
    question: str
    options: list[str]
    answer: str
    duration: float | None = None
    evidence: list[list[float]] | None = None
    question_type: str = ""
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Reading rows with their location.
# ------------------------------------------------------------------------------------------------


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` of a JSON list (``file[i]``) or a JSONL file (``file:line``)."""
    if path.suffix == ".jsonl":
        return ((f"{path}:{n}", row) for n, row in jsonl_rows(path))
    return json_list_rows(path, "questions")


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq  # noqa: PLC0415 (only Video-MME's parquet needs it)

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a broken or LFS-pointer file
        raise AnnotationError(f"{path}: not a readable parquet file ({exc}); download it with `hf download "
                              "lmms-lab/Video-MME --repo-type dataset`") from None
    for i, row in enumerate(rows):
        yield f"{path}[{i}]", row


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    return _parquet_rows(path) if path.suffix == ".parquet" else _json_rows(path)


def _get(row: Any, where: str, key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    """``row[key]`` checked for type; AnnotationError naming where and key."""
    if not isinstance(row, dict):
        raise AnnotationError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if key not in row or row[key] is None:
        if optional:
            return None
        raise AnnotationError(f"{where}: missing key {key!r}")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise AnnotationError(f"{where}: key {key!r} must be {names}, got {value!r}")
    return value


def _options(row: Any, where: str, key: str) -> list[str]:
    options = _get(row, where, key, list)
    if not 2 <= len(options) <= len(LETTERS) or not all(isinstance(o, str) for o in options):
        raise AnnotationError(f"{where}: key {key!r} must be a list of 2 to {len(LETTERS)} strings, got {options!r}")
    return options


def _duration(row: Any, where: str, key: str = "duration") -> float | None:
    value = _get(row, where, key, (int, float), optional=True)
    if value is not None and not (math.isfinite(value) and value > 0):
        raise AnnotationError(f"{where}: key {key!r} must be a positive number of seconds, got {value!r}")
    return None if value is None else float(value)


def _answer_letter(row: Any, where: str, key: str, n: int) -> str:
    answer = _get(row, where, key, str).strip()
    if answer not in LETTERS[:n]:
        raise AnnotationError(f"{where}: key {key!r} must be one of {', '.join(LETTERS[:n])}, got {answer!r}")
    return answer


# ------------------------------------------------------------------------------------------------
# The formats.
# ------------------------------------------------------------------------------------------------


def _strip_letters(options: list[str], where: str) -> list[str]:
    """``["A. x", "B. y"]`` -> ``["x", "y"]``; the i-th option must carry the i-th letter."""
    texts = []
    for i, option in enumerate(options):
        m = _LETTER_PREFIX.match(option)
        if not m or m.group(1) != letter(i):
            raise AnnotationError(f"{where}: key 'options' item {i} must start with '{letter(i)}.', got {option!r}")
        texts.append(option[m.end():].strip())
    return texts


def load_video_mme(path: Path) -> list[QAItem]:
    items = []
    for where, row in _rows(path):
        options = _strip_letters(_options(row, where, "options"), where)
        items.append(QAItem(
            id=str(_get(row, where, "question_id", str)), video=f"{_get(row, where, 'videoID', str)}.mp4",
            question=_get(row, where, "question", str), options=options,
            answer=_answer_letter(row, where, "answer", len(options)),
            question_type=str(row.get("task_type") or ""),
            extra={k: row[k] for k in ("duration", "domain", "sub_category", "video_id") if row.get(k) is not None}))
    return items


def load_longvideobench(path: Path) -> list[QAItem]:
    items = []
    for where, row in _rows(path):
        options = _options(row, where, "candidates")
        if row.get("correct_choice") is None:
            raise AnnotationError(f"{where}: missing key 'correct_choice' (lvb_test_wo_gt.json has no answers; "
                                  "evaluate lvb_val.json)")
        choice = _get(row, where, "correct_choice", int)
        if not 0 <= choice < len(options):
            raise AnnotationError(f"{where}: key 'correct_choice' must be in [0, {len(options) - 1}], got {choice}")
        items.append(QAItem(
            id=str(_get(row, where, "id", (str, int))), video=_get(row, where, "video_path", str),
            question=_get(row, where, "question", str), options=options, answer=letter(choice),
            duration=_duration(row, where), question_type=str(row.get("question_category") or ""),
            extra={k: row[k] for k in ("topic_category", "duration_group", "video_id", "level", "position")
                   if row.get(k) is not None}))
    return items


MLVU_FREE_FORM = ("sub_scene", "summary")


def load_mlvu(path: Path) -> list[QAItem]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise AnnotationError(f"{path}: no MLVU task files (*.json) in this folder")
    items = []
    for file in files:
        if any(name in file.stem for name in MLVU_FREE_FORM):
            if path.is_dir():
                continue  # the folder holds the free-form tasks too; they have no options
            raise AnnotationError(f"{file}: MLVU's {file.stem} task is free-form (no candidates); "
                                  "pass a multiple-choice task file or the json/ folder")
        for i, (where, row) in enumerate(_rows(file)):
            options = _options(row, where, "candidates")
            answer = _get(row, where, "answer", str)
            if answer not in options:
                raise AnnotationError(f"{where}: key 'answer' must be one of the candidates, got {answer!r}")
            items.append(QAItem(
                id=f"{file.stem}/{i}", video=f"{file.stem}/{_get(row, where, 'video', str)}",
                question=_get(row, where, "question", str), options=options,
                answer=letter(options.index(answer)), duration=_duration(row, where),
                question_type=str(row.get("question_type") or file.stem)))
    return items


def _evidence(row: Any, where: str) -> list[list[float]] | None:
    value = _get(row, where, "evidence", list, optional=True)
    if value is None:
        return None
    segments = []
    for seg in value:
        ok = (isinstance(seg, list) and len(seg) == 2
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in seg))
        if not ok or not 0 <= seg[0] < seg[1]:
            raise AnnotationError(f"{where}: key 'evidence' must be a list of [start, end] seconds with "
                                  f"0 <= start < end, got {seg!r}")
        segments.append([float(seg[0]), float(seg[1])])
    return segments


def load_qa_jsonl(path: Path) -> list[QAItem]:
    items = []
    for where, row in _rows(path):
        options = _options(row, where, "options")
        items.append(QAItem(
            id=str(_get(row, where, "id", (str, int))), video=_get(row, where, "video", str),
            question=_get(row, where, "question", str), options=options,
            answer=_answer_letter(row, where, "answer", len(options)), duration=_duration(row, where),
            evidence=_evidence(row, where), question_type=str(row.get("question_type") or "")))
    return items


QA_FORMATS: dict[str, Callable[[Path], list[QAItem]]] = {
    "video_mme": load_video_mme,
    "longvideobench": load_longvideobench,
    "mlvu": load_mlvu,
    "qa_jsonl": load_qa_jsonl,
}


def load_qa(path: str | Path, qa_format: str) -> list[QAItem]:
    """Items of ``path`` in ``qa_format`` (:data:`QA_FORMATS`); ids must be unique."""
    path = Path(path)
    if qa_format not in QA_FORMATS:
        raise ValueError(f"unknown QA format {qa_format!r}; known: {', '.join(QA_FORMATS)}")
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found (see the README section 'Ground-then-answer QA')")
    items = QA_FORMATS[qa_format](path)
    if not items:
        raise AnnotationError(f"{path}: no questions")
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise AnnotationError(f"{path}: question id {it.id!r} occurs twice; ids must be unique")
        seen.add(it.id)
    return items
