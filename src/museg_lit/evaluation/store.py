"""The resumable files of one evaluation run: ``predictions.jsonl`` (:class:`PredictionStore`, one
row per query, appended and flushed per batch) and ``run_meta.json`` (:func:`read_meta`, the
settings a rerun must match to resume).

Each row carries a fingerprint of its query (:func:`item_key`: video, question, prompt, ground
truth, task, frame settings), so a query whose annotation changed in place (same id) is asked
again and scored with its new prediction; a killed evaluation loses at most one batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from museg_lit.data.annotations import AnnotationError
from museg_lit.evaluation.types import EvalItem

log = logging.getLogger(__name__)

__all__ = ["META_FILE", "METRICS_FILE", "PREDICTIONS_FILE", "PredictionStore", "item_key", "read_meta"]

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
META_FILE = "run_meta.json"


def item_key(item: EvalItem, prompt: str, frames: dict) -> str:
    """Fingerprint of what ``item`` asks and how it is scored: the first 16 hex digits of the
    sha256 of its video path, raw question, templated ``prompt``, ground truth, task, benchmark
    fields (``extra``) and frame settings. Stored in each prediction row (``item_key``); a stored
    prediction is reused only while its item still has the same key."""
    content = {"video": item.video, "question": item.question, "prompt": prompt, "groundtruth": item.groundtruth,
               "task": item.task, "extra": item.extra, "frames": frames}
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class PredictionStore:
    """Append-only ``predictions.jsonl``: one row per sample, flushed per batch.

    Reading tolerates a torn last line (no newline at its end: the process was killed mid-append),
    drops it with a warning and cuts it from the file, so the next append starts on a fresh line;
    any other line that is not a UTF-8 JSON object with an ``id`` is an :class:`AnnotationError`
    naming ``file:line``. Rows carry their item's ``item_key`` (:func:`item_key`): for each id the
    last row with the current key wins, so rows of an item changed since are ignored. Rows with an
    ``error`` (video not decodable) do not count as done, so a rerun retries them.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def rows(self) -> list[dict]:
        """All rows in file order (a torn last line dropped and cut from the file)."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        body, newline, tail = raw.rpartition(b"\n")  # tail: the bytes after the last newline
        rows = [self._parse(line, n) for n, line in enumerate(body.split(b"\n"), 1) if line.strip()]
        if tail.strip():
            last_line = body.count(b"\n") + 1 + bool(newline)
            try:
                rows.append(self._parse(tail, last_line))
            except AnnotationError:
                log.warning("%s:%d: dropping a torn last line (an interrupted write)", self.path, last_line)
                with open(self.path, "r+b") as f:  # cut it so that appends stay line-aligned
                    f.truncate(len(raw) - len(tail))
        return rows

    def _parse(self, line: bytes, number: int) -> dict:
        """One row: strict UTF-8, a JSON object with an ``id``; else AnnotationError naming file:line."""
        where, fix = f"{self.path}:{number}", "remove the line or pass resume=false"
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise AnnotationError(f"{where}: not UTF-8 (byte {line[exc.start]:#04x} at column {exc.start + 1}); {fix}") from None
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{where}: not valid JSON ({exc.msg}: column {exc.colno}); {fix}") from None
        if not isinstance(row, dict) or "id" not in row:
            raise AnnotationError(f'{where}: not a prediction row (a JSON object with an "id"); {fix}')
        return row

    def load(self) -> dict[str, dict]:
        """The last row of each id, whatever its ``item_key``."""
        return {str(row["id"]): row for row in self.rows()}

    def load_matching(self, keys: dict[str, str], rows: list[dict] | None = None) -> dict[str, dict]:
        """For each id of ``keys``, its last row whose ``item_key`` is ``keys[id]`` (ids without one are absent)."""
        latest = {}
        for row in self.rows() if rows is None else rows:
            if (i := str(row["id"])) in keys and row.get("item_key") == keys[i]:
                latest[i] = row
        return latest

    def done_ids(self) -> set[str]:
        """Ids whose last row is a prediction (no ``error``), whatever its ``item_key``."""
        return {i for i, row in self.load().items() if not row.get("error")}

    def reset(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def append(self, rows: list[dict]) -> None:
        """Write ``rows`` as JSON lines at the end (on a fresh line) and fsync."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with open(self.path, "a+b") as f:
            if _ends_mid_line(f):  # e.g. an edited file whose last row lacks its newline
                text = "\n" + text
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


def _ends_mid_line(f) -> bool:
    """True if the binary file ``f`` is not empty and does not end with a newline."""
    if f.seek(0, os.SEEK_END) == 0:
        return False
    f.seek(-1, os.SEEK_END)
    return f.read(1) != b"\n"


def read_meta(path: Path) -> dict:
    """``run_meta.json`` as a dict; AnnotationError naming the file if it is not a UTF-8 JSON object."""
    fix = "delete it or pass resume=false to start over"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError
        raise AnnotationError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(meta, dict):
        raise AnnotationError(f"{path}: not a JSON object; {fix}")
    return meta
