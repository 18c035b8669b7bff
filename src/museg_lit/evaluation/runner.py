"""Inference runner for grounding benchmarks: MUSEG's published evaluation protocol, resumable.

Protocol (``src/eval_grounding.py`` / ``src/eval_et_bench.py`` of the MUSEG release): greedy
decoding, at most 512 new tokens, frames at fps 2 with min_pixels 16*28*28 and total_pixels
3584*28*28 (:mod:`museg_lit.data.video`), the question wrapped in the ``frame_selection_thinking``
template and Qwen's chat template (default system prompt). Scores are
:func:`museg_lit.evaluation.metrics.grounding_metrics` (or :mod:`museg_lit.evaluation.etbench`).

How it runs:

* Queries are **grouped by video** (first-appearance order) and each video is decoded **once**,
  in DataLoader workers that decode ahead while the model generates; Charades-STA's 3,720 queries
  need 1,334 decodes instead of 3,720. Consecutive queries form left-padded batches of
  ``batch_size`` prompts.
* Every finished batch is appended to ``predictions.jsonl`` in ``output_dir`` and flushed, so a
  killed evaluation loses at most one batch: a rerun with the same ``output_dir`` skips the
  queries already there (``run_meta.json`` guards against resuming with another model or setting).
  Each row carries a fingerprint of its query (``item_key``: video, question, prompt, ground
  truth, task, frame settings), so a query whose annotation changed in place (same id) is asked
  again and scored with its new prediction.
* All videos are checked to exist *before* the model loads (:class:`MissingVideosError` says how
  many are missing, where they were looked for and how to get them). A video that exists but
  cannot be decoded makes its queries "no prediction" (score 0, logged, ``error`` in the JSONL);
  a later rerun retries them.

Departures from MUSEG: Hugging Face ``generate`` instead of vLLM (same greedy argmax; batched
padding changes floating-point sums, so a rare near-tie token can differ). As in MUSEG, nothing of
the checkpoint's ``generation_config.json`` (Qwen's ``repetition_penalty=1.05``, ``top_k=1``...) is
applied, and positions follow the rule the checkpoints were trained with
(:mod:`museg_lit.models.generation`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from museg_lit.data import annotations
from museg_lit.data.annotations import AnnotationError
from museg_lit.data.datamodule import FrameSpec
from museg_lit.data.skips import missing_videos, resolve_video
from museg_lit.data.video import VideoClip, VideoDecodeError, load_video
from museg_lit.evaluation.metrics import HEADLINE_METRIC, grounding_metrics, parse_prediction, sample_iou
from museg_lit.models.generation import GREEDY, SpecialTokens, generate
from museg_lit.models.processing import encode_prompts
from museg_lit.prompts import render_question, video_messages

log = logging.getLogger(__name__)

__all__ = [
    "EvalItem",
    "EvalResult",
    "EvalRunner",
    "MissingVideosError",
    "VIDEO_ABLATIONS",
    "ablate_clip",
    "PredictionStore",
    "answer_text",
    "fill_store",
    "generate_answers",
    "group_by_video",
    "item_key",
    "iter_batches",
    "missing_videos",
]

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
META_FILE = "run_meta.json"

# Where each benchmark's videos come from (MUSEG README, "Evaluation / Data Preparation"), keyed by
# the first folder of the annotation's video paths.
VIDEO_SOURCES: dict[str, str] = {
    "charades": "Charades-STA uses the Charades videos, 480p version: Charades_v1_480.zip from the AI2 "
    "site (https://prior.allenai.org/projects/charades), unzipped into <video root>/charades/",
    "thumos14": "THUMOS14: the validation set (TH14_validation_set_mp4.zip) from the THUMOS14 site "
    "(https://www.crcv.ucf.edu/THUMOS14/), unzipped into <video root>/thumos14/",
    "thumos15": "THUMOS15: the validation set (thumos15_validation_complete.zip) from the THUMOS15 site "
    "(http://www.thumos.info/), unzipped into <video root>/thumos15/",
    "perception_test": "Perception Test: the validation videos (valid_videos.zip) linked from "
    "https://github.com/google-deepmind/perception_test, unzipped into <video root>/perception_test/",
}
ETBENCH_SOURCE_HINT = (
    "E.T. Bench: the videos of its Hugging Face dataset PolyU-ChenLab/ETBench (videos/<source>.tar.gz "
    "for each source), unpacked into <video root>/<source>/ (MUSEG re-muxes them with "
    "data/eval/et_bench/process_videos.py; optional)"
)


class MissingVideosError(FileNotFoundError):
    """Videos named by the annotations are not on disk; the message says which, where and how to get them."""


@dataclass(frozen=True)
class EvalItem:
    """One benchmark query. ``question`` is the raw query; ``extra`` holds benchmark-specific fields
    (E.T. Bench: ``source``, options, ...) that the scorer needs."""

    id: str
    video: str
    question: str
    groundtruth: Any
    task: str
    extra: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    """What one evaluation produced: metrics over *all* samples (resumed ones included) and files."""

    dataset: str
    task: str
    metrics: dict[str, float]
    headline: str
    records: list[dict]
    output_dir: Path
    files: dict[str, Path]
    num_generated: int
    timings: dict[str, float]


# ------------------------------------------------------------------------------------------------
# Pure helpers: grouping, batching, answer extraction.
# ------------------------------------------------------------------------------------------------


def group_by_video(items: Iterable[EvalItem]) -> list[tuple[str, list[EvalItem]]]:
    """``[(video, [items...]), ...]`` in order of each video's first appearance.

    >>> a, b, c = (EvalItem(str(i), v, "q", [[0, 1]], "tvg") for i, v in enumerate("xyx"))
    >>> [(v, [it.id for it in g]) for v, g in group_by_video([a, b, c])]
    [('x', ['0', '2']), ('y', ['1'])]
    """
    groups: dict[str, list[EvalItem]] = {}
    for item in items:
        groups.setdefault(item.video, []).append(item)
    return list(groups.items())


def iter_batches(decoded: Iterable[tuple[list[EvalItem], Any]], batch_size: int) -> Iterator[list[tuple[EvalItem, Any]]]:
    """Flatten ``(items of one video, payload)`` into batches of ``batch_size`` ``(item, payload)``.

    A batch may span videos and a video may span batches; the payload (decoded clip) is shared,
    never decoded again. Example: groups of 3 and 2 items, batch 2 -> sizes 2, 2, 1.
    """
    pending: list[tuple[EvalItem, Any]] = []
    for items, payload in decoded:
        for item in items:
            pending.append((item, payload))
            if len(pending) == batch_size:
                yield pending
                pending = []
    if pending:
        yield pending


def fill_store(store: PredictionStore, batches: Iterable, run_batch, *, total: int, done: int, unit: str,
               desc: str, progress: bool = True) -> int:
    """Run ``run_batch`` on each batch and append its rows to ``store`` as they come (a killed run
    loses at most one batch); returns the rows made without an error. The progress bar starts at
    ``done``, so "2/6" after a restart shows where it picked up."""
    generated = 0
    bar = tqdm(total=total, initial=done, unit=unit, desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        for batch in batches:
            rows = run_batch(batch)
            store.append(rows)
            generated += sum(1 for r in rows if not r["error"])
            bar.update(len(rows))
    finally:
        bar.close()
    return generated


def answer_text(output: str) -> str:
    """Content of the single ``<answer>...</answer>`` of an output (MUSEG's extraction), else ``""``."""
    if output.count("<answer>") != 1 or output.count("</answer>") != 1:
        return ""
    start, end = output.find("<answer>") + len("<answer>"), output.rfind("</answer>")
    return output[start:end].strip() if end >= start else ""


def missing_videos_message(missing: list[Path], total: int, video_root: str | Path, dataset: str,
                           etbench: bool = False) -> str:
    root = Path(video_root).resolve()
    examples = ", ".join(str(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
    folders = sorted({p.relative_to(root).parts[0] for p in missing if p.is_relative_to(root)})
    hints = [VIDEO_SOURCES[f] for f in folders if f in VIDEO_SOURCES]
    if etbench or not hints:
        hints.append(ETBENCH_SOURCE_HINT if etbench else "see the README section 'Evaluation'")
    return (
        f"{dataset}: {len(missing)} of {total} videos are missing under the video root {root} "
        f"(looked for {examples}). How to get them: {'; '.join(dict.fromkeys(hints))}. "
        "Then pass VIDEO_ROOT=DIR to make (or data.video_root=DIR)."
    )


# ------------------------------------------------------------------------------------------------
# Resumable per-sample JSONL.
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# Decoding (once per video) and generation.
# ------------------------------------------------------------------------------------------------


@dataclass
class DecodedVideo:
    items: list[EvalItem]
    clip: VideoClip | None
    error: str | None
    decode_s: float


class VideoGroupDataset(Dataset):
    """One element per video: its queries and its decoded clip (or the decode error)."""

    def __init__(self, groups: list[tuple[str, list[EvalItem]]], video_root: str, frames: FrameSpec):
        self.groups, self.video_root, self.frames = groups, video_root, frames

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> DecodedVideo:
        video, items = self.groups[i]
        start = time.perf_counter()
        f = self.frames
        kwargs = dict(fps=f.fps, min_frames=f.min_frames, max_frames=f.max_frames, min_pixels=f.min_pixels,
                      max_pixels=f.max_pixels, total_pixels=f.total_pixels, timeout_s=f.timeout_s)
        try:
            path = resolve_video(self.video_root, video)
            if getattr(f, "cache_dir", None):  # on-disk clip cache: re-evaluations skip decoding
                from museg_lit.data.cache import load_video_cached

                clip = load_video_cached(path, cache_dir=f.cache_dir, **kwargs)
            else:
                clip = load_video(path, **kwargs)
        except VideoDecodeError as exc:
            return DecodedVideo(items, None, str(exc), time.perf_counter() - start)
        return DecodedVideo(items, clip, None, time.perf_counter() - start)


def _first(batch):  # batch_size=None passes single elements through; keep them untouched
    return batch


def decode_groups(groups, video_root: str, frames: FrameSpec, num_workers: int = 0) -> Iterator[DecodedVideo]:
    """Decoded videos in order; with workers, decoding runs ahead of generation."""
    loader = DataLoader(VideoGroupDataset(groups, video_root, frames), batch_size=None, shuffle=False,
                        num_workers=num_workers, collate_fn=_first, prefetch_factor=2 if num_workers else None)
    yield from loader


VIDEO_ABLATIONS = ("none", "blank")


def ablate_clip(clip: VideoClip, ablation: str) -> VideoClip:
    """``blank``: the clip with every pixel 0 (black), its frame count, size, fps and timestamps kept,
    so the prompt has the same video tokens at the same 3D positions and only the content is gone."""
    if ablation == "none":
        return clip
    if ablation == "blank":
        return replace(clip, frames=torch.zeros_like(clip.frames))  # [T, 3, H, W] uint8
    raise ValueError(f"unknown video ablation {ablation!r}; known: {list(VIDEO_ABLATIONS)}")


def chat_prompt(processor, question: str) -> str:
    return processor.apply_chat_template(video_messages(question), tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate_answers(model, processor, questions: list[str], clips: list[VideoClip], *, max_new_tokens: int) -> list[str]:
    """Greedy completions (special tokens removed) for ``B`` templated questions about ``B`` clips:
    vLLM's ``temperature=0`` (pure argmax, no repetition penalty, whatever the checkpoint's
    ``generation_config.json`` says), positions by the checkpoints' rule
    (:func:`museg_lit.models.generation.generate`)."""
    inputs = encode_prompts(processor, [chat_prompt(processor, q) for q in questions],
                            [c.frames for c in clips], [c.sample_fps for c in clips])
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    sampling = replace(GREEDY, max_new_tokens=max_new_tokens)
    completions = generate(model, inputs, sampling, SpecialTokens.of(model, processor.tokenizer))  # [B, C]
    return processor.tokenizer.batch_decode(completions, skip_special_tokens=True)


# ------------------------------------------------------------------------------------------------
# Benchmarks: how to load, prompt and score.
# ------------------------------------------------------------------------------------------------


class GroundingBenchmark:
    """MUSEG's grounding sets (Charades-STA, THUMOS14/15, Perception Test): ``tvg`` or ``tal``."""

    name = "grounding"

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

    def question(self, item: EvalItem) -> str:
        return render_question(item.question, self.template)

    def record(self, item: EvalItem, output: str) -> dict:
        row = {"answer": answer_text(output), "prediction": parse_prediction(output),
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


# ------------------------------------------------------------------------------------------------
# The runner.
# ------------------------------------------------------------------------------------------------


class EvalRunner:
    """Evaluate one model on one benchmark file; see the module docstring for the protocol.

    Args:
        annotation_file: MUSEG evaluation JSON (``charades_sta.json``...), a MUSEG-schema JSONL, or
            E.T. Bench's annotation JSON (detected by its ``task`` / ``source`` / ``q`` keys).
        annotation_format: see :data:`museg_lit.data.annotations.ANNOTATION_FORMATS` (``auto``
            guesses; ``perception_test`` forces ``tal`` as MUSEG does).
        video_root: folder the annotations' video paths are relative to.
        output_dir: where ``predictions.jsonl``, ``metrics.json`` and the PNGs go (stable per
            dataset and model, so that a rerun resumes).
        dataset: display / metric name (``eval/<dataset>/m_iou``).
        template: question template (:data:`museg_lit.prompts.TEMPLATES`).
        frames: frame sampling (the protocol's values are in ``conf/data/*.yaml``).
        task: ``tvg`` | ``tal`` | None (None: ``tal`` if any sample has several segments).
        batch_size: prompts per ``generate`` call (MUSEG: 10 sequences per vLLM step).
        max_new_tokens: 512 in the protocol.
        decode_workers: DataLoader workers decoding videos ahead of generation.
        max_samples: evaluate only the first N queries (quick checks).
        resume: reuse ``predictions.jsonl`` rows of an earlier, interrupted run of the same setting.
        num_timeline: queries drawn in the timeline picture.
        subset_file / tasks: E.T. Bench only (MUSEG's subset.json; task filter).
        sentsim_model: E.T. Bench only: local folder of all-MiniLM-L6-v2, needed by its option and
            captioning tasks (checked in :meth:`prepare`, before the model loads).
        video_ablation: ``none``, or ``blank``: every frame black, with the clip's frame count, size
            and timing kept (same tokens, same 3D positions), to measure how much the answers owe
            to the pixels (:func:`ablate_clip`). Part of the settings a rerun must match.
    """

    def __init__(
        self,
        annotation_file: str,
        video_root: str,
        output_dir: str,
        dataset: str = "eval",
        template: str = "frame_selection_thinking",
        frames: FrameSpec | None = None,
        task: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 512,
        decode_workers: int = 0,
        max_samples: int | None = None,
        resume: bool = True,
        num_timeline: int = 12,
        subset_file: str | None = None,
        tasks: list[str] | None = None,
        annotation_format: str = "auto",
        progress: bool = True,
        video_ablation: str = "none",
        sentsim_model: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if video_ablation not in VIDEO_ABLATIONS:
            raise ValueError(f"video_ablation must be one of {list(VIDEO_ABLATIONS)}, got {video_ablation!r}")
        self.video_ablation = video_ablation
        self.annotation_file, self.video_root = str(annotation_file), str(video_root)
        self.output_dir, self.dataset = Path(output_dir), dataset
        self.frames = frames or FrameSpec(fps=2.0, min_frames=4, max_frames=768, min_pixels=16 * 28 * 28,
                                          max_pixels=768 * 28 * 28, total_pixels=3584 * 28 * 28)
        self.batch_size, self.max_new_tokens, self.decode_workers = batch_size, max_new_tokens, decode_workers
        self.max_samples, self.resume, self.num_timeline, self.progress = max_samples, resume, num_timeline, progress
        self.template, self.task, self.annotation_format = template, task, annotation_format
        self.benchmark = self._pick_benchmark(subset_file, list(tasks) if tasks else None, sentsim_model)
        self.store = PredictionStore(self.output_dir / PREDICTIONS_FILE)
        self._items: list[EvalItem] | None = None
        self._keys: dict[str, str] | None = None
        self._done: set[str] | None = None
        self._model_id: str | None = None

    def _pick_benchmark(self, subset_file: str | None, tasks: list[str] | None, sentsim_model: str | None = None):
        from museg_lit.evaluation import etbench

        if self.annotation_format == "et_bench" or (
                self.annotation_format == "auto" and etbench.is_etbench_file(self.annotation_file)):
            return etbench.ETBenchBenchmark(subset_file=subset_file, tasks=tasks, sentsim_model=sentsim_model)
        if subset_file or tasks:
            raise ValueError("subset_file / tasks apply to E.T. Bench annotation files only")
        return GroundingBenchmark(self.template, self.task, self.annotation_format)

    # ---- before the model loads ----
    def items(self) -> list[EvalItem]:
        if self._items is None:
            items = self.benchmark.load(self.annotation_file)
            if self.max_samples is not None:
                items = items[: self.max_samples]
            if not items:
                raise AnnotationError(f"{self.annotation_file}: no samples to evaluate")
            ids = [it.id for it in items]
            if len(set(ids)) != len(ids):
                raise AnnotationError(f"{self.annotation_file}: sample ids are not unique")
            self._items = items
        return self._items

    def check_videos(self) -> None:
        """Raise :class:`MissingVideosError` unless every video exists (cheap: one stat per video)."""
        videos = [it.video for it in self.items()]
        missing = missing_videos(videos, self.video_root)
        if missing:
            raise MissingVideosError(missing_videos_message(
                missing, len(set(videos)), self.video_root, self.dataset,
                etbench=self.benchmark.name == "etbench"))

    def frame_settings(self) -> dict:
        """The frame settings that change what the model sees (not the timeout or the cache folder)."""
        settings = {k: v for k, v in asdict(self.frames).items() if k not in ("timeout_s", "cache_dir")}
        if self.video_ablation != "none":  # absent otherwise: earlier predictions keep their keys
            settings["video_ablation"] = self.video_ablation
        return settings

    def settings(self, model_id: str) -> dict:
        """What must match for a rerun to resume the JSONL (``run_meta.json``)."""
        return {"model": model_id, "annotation_file": str(Path(self.annotation_file).resolve()),
                "template": self.template, "frames": self.frame_settings(), "max_new_tokens": self.max_new_tokens,
                "max_samples": self.max_samples}

    def item_keys(self) -> dict[str, str]:
        """``{id: item_key}`` of every item (:func:`item_key`): what a stored row must match to be reused."""
        if self._keys is None:
            frames = self.frame_settings()
            self._keys = {it.id: item_key(it, self.benchmark.question(it), frames) for it in self.items()}
        return self._keys

    def prepare(self, model_id: str) -> set[str]:
        """Everything that can fail before the model loads: annotations, videos, the resume check.

        Returns the ids already done (resume: a stored prediction whose item is unchanged) and
        writes ``run_meta.json``.
        """
        self.check_videos()
        if hasattr(self.benchmark, "check"):  # E.T. Bench: the sentence model's folder
            self.benchmark.check(self.items())
        self.output_dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.output_dir / META_FILE
        settings = self.settings(model_id)
        settings.pop("max_samples")  # a longer run may extend a quick one
        if self.resume and self.store.path.exists() and meta_path.exists():
            self._check_meta(meta_path, settings)
        if not self.resume:
            self.store.reset()
        meta_path.write_text(json.dumps(settings, indent=2))
        self._done = self._resumable()
        self._model_id = model_id
        return self._done

    def _check_meta(self, meta_path: Path, settings: dict) -> None:
        """Raise ValueError unless ``run_meta.json`` records the same ``settings``."""
        old = _read_meta(meta_path)
        old.pop("max_samples", None)
        diff = sorted(k for k in settings if old.get(k) != json.loads(json.dumps(settings[k])))
        if diff:
            raise ValueError(
                f"{self.output_dir} holds predictions made with other settings (differ: {', '.join(diff)}); "
                "pass resume=false to start over, or name=... for another output directory")

    def _resumable(self) -> set[str]:
        """Ids whose stored prediction can be reused; logs how many stored ones are redone because
        their item changed (or was stored before rows carried an ``item_key``)."""
        keys = self.item_keys()
        rows = self.store.rows()
        matching = self.store.load_matching(keys, rows)
        stale = {str(r["id"]) for r in rows if str(r["id"]) in keys} - set(matching)
        if stale:
            keyless = {str(r["id"]) for r in rows if "item_key" not in r} & stale
            log.warning("%s: %d stored predictions no longer match their annotation and are redone%s",
                        self.store.path, len(stale),
                        f" ({len(keyless)} written without an item_key by an older version)" if keyless else "")
        return {i for i, row in matching.items() if not row.get("error")}

    # ---- the evaluation ----
    def run(self, model, processor, *, model_id: str = "") -> EvalResult:
        """Generate the missing predictions, then score all samples and draw the pictures
        (calls :meth:`prepare` unless it ran already for ``model_id``)."""
        from museg_lit.evaluation.plots import plot_all

        items = self.items()
        done = self._done if self._model_id == model_id and self._done is not None else self.prepare(model_id)
        todo = [it for it in items if it.id not in done]
        if done:
            log.info("resuming %s: %d of %d samples already in %s", self.dataset, len(done), len(items), self.store.path)
        timings = {"decode_s": 0.0, "generate_s": 0.0}
        batches = iter_batches(self._decoded(todo, timings), self.batch_size)
        generated = fill_store(self.store, batches, lambda b: self._run_batch(model, processor, b, timings),
                               total=len(items), done=len(items) - len(todo), unit="query",
                               desc=f"eval {self.dataset}", progress=self.progress)
        rows = self.store.load_matching(self.item_keys())  # superseded rows of changed items are left out
        missing = [it.id for it in items if it.id not in rows]
        if missing:  # cannot happen unless the file was edited meanwhile
            raise RuntimeError(f"{self.store.path}: no prediction for ids {missing[:5]}")
        metrics, headline, task = self.benchmark.score(items, rows)
        records = [rows[it.id] for it in items]
        metrics["no_prediction"] = sum(r.get("prediction") is None for r in records) / len(records)
        metrics["video_errors"] = float(sum(bool(r.get("error")) for r in records))
        files = {"predictions": self.store.path, "metrics": self.output_dir / METRICS_FILE}
        files.update(plot_all(records, self.output_dir, title=self.dataset, task=task, num_timeline=self.num_timeline))
        if hasattr(self.benchmark, "plots"):  # E.T. Bench: its table as bars
            files.update(self.benchmark.plots(self.output_dir, title=self.dataset))
        summary = {"dataset": self.dataset, "task": task, "headline_metric": headline,
                   "headline_percent": round(100 * metrics[headline], 1) if headline in metrics else None,
                   "metrics": metrics, "num_samples": len(items), "num_generated_now": generated,
                   "timings_s": timings, "settings": self.settings(model_id)}
        if getattr(self.benchmark, "result", None) is not None:  # E.T. Bench: per_task / overall / merged / avg
            summary["etbench"] = self.benchmark.result
        files["metrics"].write_text(json.dumps(summary, indent=2) + "\n")
        return EvalResult(self.dataset, task, metrics, headline, records, self.output_dir, files, generated, timings)

    def _decoded(self, todo: list[EvalItem], timings: dict) -> Iterator[tuple[list[EvalItem], DecodedVideo]]:
        for dv in decode_groups(group_by_video(todo), self.video_root, self.frames, self.decode_workers):
            timings["decode_s"] += dv.decode_s
            if dv.clip is not None and self.video_ablation != "none":
                dv = replace(dv, clip=ablate_clip(dv.clip, self.video_ablation))
            if dv.error:
                log.warning("video %s could not be decoded: %s; its %d queries count as no prediction",
                            dv.items[0].video, dv.error, len(dv.items))
            yield dv.items, dv

    def _run_batch(self, model, processor, batch: list[tuple[EvalItem, DecodedVideo]], timings: dict) -> list[dict]:
        ok = [(it, dv) for it, dv in batch if dv.clip is not None]
        outputs: dict[str, str] = {}
        if ok:
            start = time.perf_counter()
            texts = generate_answers(model, processor, [self.benchmark.question(it) for it, _ in ok],
                                     [dv.clip for _, dv in ok], max_new_tokens=self.max_new_tokens)
            timings["generate_s"] += time.perf_counter() - start
            outputs = {it.id: text for (it, _), text in zip(ok, texts, strict=True)}
        rows = []
        for it, dv in batch:
            output = outputs.get(it.id, "")
            row = {"id": it.id, "item_key": self.item_keys()[it.id], "video": it.video, "task": it.task,
                   "question": it.question, "groundtruth": it.groundtruth, "output": output}
            row.update(self.benchmark.record(it, output))
            row["duration"] = dv.clip.duration if dv.clip is not None else None
            row["error"] = dv.error
            if it.extra:
                row["extra"] = it.extra
            rows.append(row)
        return rows


def _read_meta(path: Path) -> dict:
    """``run_meta.json`` as a dict; AnnotationError naming the file if it is not a UTF-8 JSON object."""
    fix = "delete it or pass resume=false to start over"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError
        raise AnnotationError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(meta, dict):
        raise AnnotationError(f"{path}: not a JSON object; {fix}")
    return meta


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_eval_model(spec, device: str = "auto"):
    """Policy (eval mode, no grads) and processor of a :class:`museg_lit.models.factory.ModelSpec`."""
    from museg_lit.models.factory import load_policy, load_processor

    processor = load_processor(spec)
    model = load_policy(spec).eval().requires_grad_(False).to(resolve_device(device))
    return model, processor


def log_eval_run(loggers: list, result: EvalResult) -> None:
    """Metrics ``eval/<dataset>/<name>`` and the JSONL, metrics JSON and PNGs as artifacts, then close the run."""
    from lightning.pytorch.loggers import MLFlowLogger

    prefix = f"eval/{result.dataset}"
    metrics = {f"{prefix}/{k}": float(v) for k, v in result.metrics.items()}
    metrics.update({f"{prefix}/time/{k}": v for k, v in result.timings.items()})
    for lg in loggers:
        lg.log_metrics(metrics, step=0)
        if isinstance(lg, MLFlowLogger):
            client, run_id = lg.experiment, lg.run_id
            client.set_tag(run_id, "mlflow.runName", f"{result.dataset}/{result.output_dir.name}")
            client.set_tag(run_id, "eval_output_dir", str(result.output_dir))
            for key, path in result.files.items():
                client.log_artifact(run_id, str(path), artifact_path="plots" if path.suffix == ".png" else None)
                log.debug("logged %s", key)
        lg.finalize("success")
