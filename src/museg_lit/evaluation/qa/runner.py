"""Ground-then-answer video QA (LongVTG-R1's claim that grounding helps long-video QA), with the
plain whole-video answer as the baseline on the same items, in the same run.

Per question (``python -m museg_lit.eval task=ground_then_answer data=<QA set>``):

1. the whole video is decoded once (``data.frames``: MUSEG's protocol, fps 2, total_pixels
   3584*28*28), shared by the questions on it;
2. **stage 1**: the question becomes the query of a grounding template
   (:func:`~museg_lit.evaluation.qa.answers.grounding_question`, ``gta.grounding_template``) and the
   answer is parsed by MUSEG's rule (:func:`~museg_lit.evaluation.metrics.parse_prediction`);
3. **baseline**: the multiple-choice prompt on the whole video;
4. **stage 2**: the window (:func:`~museg_lit.evaluation.qa.window.answer_window`: grounded hull +-
   ``gta.margin_s``, clipped to the video, whole video on an unparsable grounding: ``fallback``) is
   decoded on its own (:func:`~museg_lit.data.video.load_video_window`: the same frame rule, the
   pixel budget spent on the window's frames only), and the multiple-choice prompt is asked on it.

What the model sees in stage 2: the window's frames at their real video times (``timestamps`` in
the clip are video seconds; ``window_timestamps`` in the row), temporal positions that start at
the window's first frame (Qwen2.5-VL has no absolute clock), and, with ``gta.window_note=true``
(default), the sentence "This clip shows seconds S to E of the video." before the question, so the
clip's time is stated rather than implied.

Rows go to ``predictions.jsonl`` as they are made (resumable: a killed run continues, an item
whose question, options, answer, evidence, prompts, frame settings or ``gta.*`` values changed
is redone, via :func:`~museg_lit.evaluation.store.item_key`); ``metrics.json`` holds
:func:`~museg_lit.evaluation.qa.metrics.qa_metrics`; ``gta_timeline.png`` the picture.

Departures from LongVTG-R1 (no public code: a reconstruction): the grounding query wording, the
window rule (hull + margin, minimum length), the window note, and the answer prompt (Video-MME /
LongVideoBench style letter prompt) are ours; the paper does not specify them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from museg_lit.data.annotations import AnnotationError
from museg_lit.data.frames import FrameSpec
from museg_lit.data.skips import missing_videos, resolve_video
from museg_lit.data.video import VideoClip, VideoDecodeError, load_video_window
from museg_lit.evaluation.decode import DecodedVideo, decode_groups, group_by_video, iter_batches
from museg_lit.evaluation.generate import generate_answers
from museg_lit.evaluation.metrics import parse_prediction
from museg_lit.evaluation.qa.answers import grounding_question, mc_question, parse_option_letter, window_note
from museg_lit.evaluation.qa.loaders import QA_FORMATS, QAItem, load_qa
from museg_lit.evaluation.qa.metrics import qa_metrics
from museg_lit.evaluation.qa.window import answer_window
from museg_lit.evaluation.runner import fill_store
from museg_lit.evaluation.sources import MissingVideosError
from museg_lit.evaluation.store import (
    META_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PredictionStore,
    item_key,
    read_meta,
)
from museg_lit.evaluation.types import EvalItem, EvalResult

log = logging.getLogger(__name__)

__all__ = ["GroundThenAnswerRunner", "TASK"]

TASK = "ground_then_answer"
HEADLINE = "gta_accuracy"
VIDEO_HINTS = {
    "video_mme": "Video-MME: videos_chunked_*.zip of the Hugging Face dataset lmms-lab/Video-MME, unzipped; "
                 "data.video_root = the data/ folder they unpack to",
    "longvideobench": "LongVideoBench: videos.tar.part.* of the Hugging Face dataset longvideobench/LongVideoBench "
                      "(cat videos.tar.part.* > videos.tar; tar -xf videos.tar); data.video_root = its videos/ folder",
    "mlvu": "MLVU: the video/ folder of the Hugging Face dataset MLVU/MVLU; data.video_root = that video/ folder",
    "qa_jsonl": "the generated set is written on first use (conf/data/synthetic_qa.yaml); otherwise the folder "
                "your JSONL's video paths are relative to",
}


class GroundThenAnswerRunner:
    """Ground-then-answer and the whole-video baseline on one multiple-choice QA file.

    Args:
        annotation_file / qa_format: the QA file and its format (:data:`~museg_lit.evaluation.qa.loaders.QA_FORMATS`).
        video_root / output_dir / dataset / frames / batch_size / decode_workers / max_samples /
            resume / num_timeline: as :class:`~museg_lit.evaluation.runner.EvalRunner`.
        grounding_template: stage-1 template (:data:`museg_lit.prompts.TEMPLATES`).
        margin_s: seconds added before and after the grounded segment.
        min_window_s: shortest window decoded (a shorter one is widened around its centre).
        window_note: state the window's seconds in the stage-2 prompt.
        grounding_max_new_tokens / answer_max_new_tokens: generation budgets of stage 1 and of the answers.
    """

    def __init__(
        self,
        annotation_file: str,
        video_root: str,
        output_dir: str,
        qa_format: str,
        dataset: str = "qa",
        frames: FrameSpec | None = None,
        grounding_template: str = "frame_selection_thinking",
        margin_s: float = 2.0,
        min_window_s: float = 1.0,
        window_note: bool = True,
        batch_size: int = 8,
        grounding_max_new_tokens: int = 512,
        answer_max_new_tokens: int = 16,
        decode_workers: int = 0,
        max_samples: int | None = None,
        resume: bool = True,
        num_timeline: int = 12,
        progress: bool = True,
    ):
        if qa_format not in QA_FORMATS:
            raise ValueError(f"qa_format must be one of {list(QA_FORMATS)}, got {qa_format!r}")
        if margin_s < 0 or min_window_s <= 0 or batch_size < 1:
            raise ValueError("margin_s must be >= 0, min_window_s > 0 and batch_size >= 1")
        self.annotation_file, self.video_root, self.qa_format = str(annotation_file), str(video_root), qa_format
        self.output_dir, self.dataset = Path(output_dir), dataset
        self.frames = frames or FrameSpec(fps=2.0, min_frames=4, max_frames=768, min_pixels=16 * 28 * 28,
                                          max_pixels=768 * 28 * 28, total_pixels=3584 * 28 * 28)
        self.grounding_template, self.margin_s, self.min_window_s = grounding_template, margin_s, min_window_s
        self.window_note, self.batch_size, self.decode_workers = window_note, batch_size, decode_workers
        self.grounding_max_new_tokens, self.answer_max_new_tokens = grounding_max_new_tokens, answer_max_new_tokens
        self.max_samples, self.resume, self.num_timeline, self.progress = max_samples, resume, num_timeline, progress
        self.store = PredictionStore(self.output_dir / PREDICTIONS_FILE)
        self._items: list[QAItem] | None = None
        self._keys: dict[str, str] | None = None
        self._done: set[str] | None = None
        self._model_id: str | None = None

    # ---- before the model loads ----
    def items(self) -> list[QAItem]:
        if self._items is None:
            items = load_qa(self.annotation_file, self.qa_format)
            self._items = items[: self.max_samples] if self.max_samples is not None else items
        return self._items

    def check_videos(self) -> None:
        videos = [it.video for it in self.items()]
        missing = missing_videos(videos, self.video_root)
        if missing:
            root = Path(self.video_root).resolve()
            examples = ", ".join(str(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise MissingVideosError(
                f"{self.dataset}: {len(missing)} of {len(set(videos))} videos are missing under the video root {root} "
                f"(looked for {examples}). How to get them: {VIDEO_HINTS[self.qa_format]}. Then pass data.video_root=DIR.")

    def frame_settings(self) -> dict:
        return {k: v for k, v in asdict(self.frames).items() if k not in ("timeout_s", "cache_dir")}

    def gta_settings(self) -> dict:
        return {"grounding_template": self.grounding_template, "margin_s": self.margin_s,
                "min_window_s": self.min_window_s, "window_note": self.window_note,
                "grounding_max_new_tokens": self.grounding_max_new_tokens,
                "answer_max_new_tokens": self.answer_max_new_tokens}

    def settings(self, model_id: str) -> dict:
        """What must match for a rerun to resume (``run_meta.json``); ``gta.*`` changes redo items instead."""
        return {"model": model_id, "task": TASK, "annotation_file": str(Path(self.annotation_file).resolve()),
                "qa_format": self.qa_format, "frames": self.frame_settings()}

    def item_keys(self) -> dict[str, str]:
        if self._keys is None:
            frames, gta = self.frame_settings(), self.gta_settings()
            self._keys = {}
            for it in self.items():
                prompt = grounding_question(it.question, self.grounding_template) + "\n" + mc_question(it.question, it.options)
                as_eval = EvalItem(it.id, it.video, it.question, it.answer, TASK,
                                   {"options": it.options, "evidence": it.evidence, "gta": gta})
                self._keys[it.id] = item_key(as_eval, prompt, frames)
        return self._keys

    def prepare(self, model_id: str) -> set[str]:
        """Annotations, videos and the resume check, before any model loads; returns the ids done."""
        self.check_videos()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        meta_path, settings = self.output_dir / META_FILE, self.settings(model_id)
        if self.resume and self.store.path.exists() and meta_path.exists():
            old = read_meta(meta_path)
            diff = sorted(k for k in settings if old.get(k) != json.loads(json.dumps(settings[k])))
            if diff:
                raise ValueError(f"{self.output_dir} holds predictions made with other settings (differ: "
                                 f"{', '.join(diff)}); pass resume=false to start over, or name=... for another "
                                 "output directory")
        if not self.resume:
            self.store.reset()
        meta_path.write_text(json.dumps(settings, indent=2))
        keys = self.item_keys()
        rows = self.store.rows()
        matching = self.store.load_matching(keys, rows)
        stale = {str(r["id"]) for r in rows if str(r["id"]) in keys} - set(matching)
        if stale:
            log.warning("%s: %d stored predictions no longer match their question or settings and are redone",
                        self.store.path, len(stale))
        self._done = {i for i, row in matching.items() if not row.get("error")}
        self._model_id = model_id
        return self._done

    # ---- the evaluation ----
    def run(self, model, processor, *, model_id: str = "") -> EvalResult:
        from museg_lit.evaluation.qa.plots import plot_gta_timeline  # noqa: PLC0415 (matplotlib)

        items = self.items()
        done = self._done if self._model_id == model_id and self._done is not None else self.prepare(model_id)
        todo = [it for it in items if it.id not in done]
        timings = {"decode_s": 0.0, "window_decode_s": 0.0, "ground_s": 0.0, "answer_s": 0.0}
        batches = iter_batches(self._decoded(todo, timings), self.batch_size)
        generated = fill_store(self.store, batches, lambda b: self._run_batch(model, processor, b, timings),
                               total=len(items), done=len(items) - len(todo), unit="question",
                               desc=f"gta {self.dataset}", progress=self.progress)
        stored = self.store.load_matching(self.item_keys())
        records = [stored[it.id] for it in items if it.id in stored]
        failed = [r for r in records if r.get("error")]
        scored = [r for r in records if not r.get("error")]
        if not scored:
            raise AnnotationError(f"{self.annotation_file}: no question could be answered (first error: "
                                  f"{failed[0]['error'] if failed else 'none'})")
        metrics = qa_metrics(scored)
        metrics["video_errors"] = float(len(failed))
        files = {"predictions": self.store.path, "metrics": self.output_dir / METRICS_FILE,
                 "gta_timeline": plot_gta_timeline(scored, self.output_dir / "gta_timeline.png",
                                                   num=self.num_timeline, title=self.dataset)}
        summary = {"dataset": self.dataset, "task": TASK, "headline_metric": HEADLINE,
                   "headline_percent": round(100 * metrics[HEADLINE], 1), "metrics": metrics,
                   "num_samples": len(items), "num_generated_now": generated, "timings_s": timings,
                   "settings": {**self.settings(model_id), "gta": self.gta_settings()}}
        files["metrics"].write_text(json.dumps(summary, indent=2) + "\n")
        print(f"{self.dataset}: ground-then-answer accuracy {metrics['gta_accuracy']:.4f} vs whole video "
              f"{metrics['baseline_accuracy']:.4f} on the same {len(scored)} questions (chance "
              f"{metrics['chance_accuracy']:.2f}, fallbacks {metrics['fallback_rate']:.0%})")
        return EvalResult(self.dataset, TASK, metrics, HEADLINE, records, self.output_dir, files, generated, timings)

    def _decoded(self, todo: list[QAItem], timings: dict) -> Iterator[tuple[list[QAItem], DecodedVideo]]:
        for dv in decode_groups(group_by_video(todo), self.video_root, self.frames, self.decode_workers):
            timings["decode_s"] += dv.decode_s
            if dv.error:
                log.warning("video %s could not be decoded: %s; its %d questions are retried on the next run",
                            dv.items[0].video, dv.error, len(dv.items))
            yield dv.items, dv

    def _window_clip(self, item: QAItem, whole: VideoClip, start: float, end: float) -> VideoClip:
        if start <= 0.0 and end >= whole.duration:
            return whole  # the window is the whole video: the same frames as the baseline
        f = self.frames
        return load_video_window(resolve_video(self.video_root, item.video), start, end, fps=f.fps,
                                 min_frames=f.min_frames, max_frames=f.max_frames, min_pixels=f.min_pixels,
                                 max_pixels=f.max_pixels, total_pixels=f.total_pixels, timeout_s=f.timeout_s)

    def _run_batch(self, model, processor, batch: list[tuple[QAItem, DecodedVideo]], timings: dict) -> list[dict]:
        ok = [(it, dv.clip) for it, dv in batch if dv.clip is not None]
        out: dict[str, dict] = {}
        if ok:
            t0 = time.perf_counter()
            grounding = generate_answers(model, processor, [grounding_question(it.question, self.grounding_template)
                                                            for it, _ in ok],
                                         [c for _, c in ok], max_new_tokens=self.grounding_max_new_tokens)
            t1 = time.perf_counter()
            baseline = generate_answers(model, processor, [mc_question(it.question, it.options) for it, _ in ok],
                                        [c for _, c in ok], max_new_tokens=self.answer_max_new_tokens)
            timings["ground_s"] += t1 - t0
            timings["answer_s"] += time.perf_counter() - t1
            windows, clips = [], []
            for (it, whole), g in zip(ok, grounding, strict=True):
                w = answer_window(parse_prediction(g), whole.duration, self.margin_s, self.min_window_s)
                t = time.perf_counter()
                try:
                    clip = self._window_clip(it, whole, w.start, w.end)
                except VideoDecodeError as exc:  # fall back to the whole video, recorded
                    log.warning("%s: window [%.2f, %.2f] could not be decoded (%s); answering from the whole video",
                                it.video, w.start, w.end, exc)
                    w, clip = w._replace(start=0.0, end=whole.duration, fallback=True, reason="window_decode"), whole
                timings["window_decode_s"] += time.perf_counter() - t
                windows.append(w)
                clips.append(clip)
            notes = [window_note(w.start, w.end) if self.window_note and not w.fallback else None for w in windows]
            t2 = time.perf_counter()
            staged = generate_answers(model, processor, [mc_question(it.question, it.options, note)
                                                         for (it, _), note in zip(ok, notes, strict=True)],
                                      clips, max_new_tokens=self.answer_max_new_tokens)
            timings["answer_s"] += time.perf_counter() - t2
            for (it, whole), g, b, s, w, clip in zip(ok, grounding, baseline, staged, windows, clips, strict=True):
                gta_letter, base_letter = parse_option_letter(s, it.options), parse_option_letter(b, it.options)
                out[it.id] = {
                    "duration": whole.duration, "grounding_output": g, "grounded": parse_prediction(g),
                    "window": [w.start, w.end], "fallback": w.fallback, "fallback_reason": w.reason,
                    "window_frames": len(clip.timestamps),
                    "window_timestamps": [round(clip.timestamps[0], 4), round(clip.timestamps[-1], 4)],
                    "gta_output": s, "gta_letter": gta_letter, "gta_correct": gta_letter == it.answer,
                    "baseline_output": b, "baseline_letter": base_letter, "baseline_correct": base_letter == it.answer,
                }
        rows = []
        for it, dv in batch:
            row = {"id": it.id, "item_key": self.item_keys()[it.id], "video": it.video, "question": it.question,
                   "options": it.options, "answer": it.answer, "question_type": it.question_type,
                   "evidence": it.evidence}
            row.update(out.get(it.id, {}))
            row["error"] = dv.error
            if it.extra:
                row["extra"] = it.extra
            rows.append(row)
        return rows
