"""Inference runner for grounding benchmarks: MUSEG's published evaluation protocol, resumable.

Protocol (``src/eval_grounding.py`` / ``src/eval_et_bench.py`` of the MUSEG release): greedy
decoding, at most 512 new tokens, frames at fps 2 with min_pixels 16*28*28 and total_pixels
3584*28*28 (:mod:`museg_lit.data.video`), the question wrapped in the ``frame_selection_thinking``
template and Qwen's chat template (default system prompt). Scores are
:func:`museg_lit.evaluation.metrics.grounding_metrics` (or :mod:`museg_lit.evaluation.etbench`).

How :class:`EvalRunner` runs, and where each part lives:

* the benchmark (:mod:`museg_lit.evaluation.benchmark`: grounding; :mod:`~museg_lit.evaluation.etbench`)
  loads the items, writes the question, reads each output and scores;
* queries are **grouped by video** and each video is decoded **once**, in DataLoader workers that
  decode ahead while the model generates (:mod:`museg_lit.evaluation.decode`); consecutive
  queries form left-padded batches of ``batch_size`` prompts, answered greedily
  (:mod:`museg_lit.evaluation.generate`);
* every finished batch is appended to ``predictions.jsonl`` in ``output_dir`` and flushed
  (:func:`fill_store`, :mod:`museg_lit.evaluation.store`), so a killed evaluation loses at most
  one batch: a rerun with the same ``output_dir`` skips the queries already there
  (``run_meta.json`` guards against resuming with another model or setting), and asks again a
  query whose annotation changed in place (its ``item_key`` differs);
* all videos are checked to exist *before* the model loads
  (:class:`~museg_lit.evaluation.sources.MissingVideosError` says how many are missing, where they
  were looked for and how to get them). A video that exists but cannot be decoded makes its
  queries "no prediction" (score 0, logged, ``error`` in the JSONL); a later rerun retries them.

Departures from MUSEG: Hugging Face ``generate`` instead of vLLM (same greedy argmax; batched
padding changes floating-point sums, so a rare near-tie token can differ). As in MUSEG, nothing of
the checkpoint's ``generation_config.json`` (Qwen's ``repetition_penalty=1.05``, ``top_k=1``...) is
applied, and positions follow the rule the checkpoints were trained with
(:mod:`museg_lit.models.generation`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from museg_lit.data.annotations import AnnotationError
from museg_lit.data.frames import FrameSpec
from museg_lit.data.skips import missing_videos
from museg_lit.evaluation.benchmark import Benchmark, GroundingBenchmark
from museg_lit.evaluation.decode import (
    VIDEO_ABLATIONS,
    DecodedVideo,
    ablate_clip,
    decode_groups,
    group_by_video,
    iter_batches,
)
from museg_lit.evaluation.etbench import ETBenchBenchmark, is_etbench_file
from museg_lit.evaluation.generate import generate_answers
from museg_lit.evaluation.plots import plot_all
from museg_lit.evaluation.sources import MissingVideosError, missing_videos_message
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

__all__ = ["EvalRunner", "fill_store", "load_eval_model", "log_eval_run", "resolve_device"]


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

    def _pick_benchmark(self, subset_file: str | None, tasks: list[str] | None,
                        sentsim_model: str | None = None) -> Benchmark:
        if self.annotation_format == "et_bench" or (
                self.annotation_format == "auto" and is_etbench_file(self.annotation_file)):
            return ETBenchBenchmark(subset_file=subset_file, tasks=tasks, sentsim_model=sentsim_model)
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
        self.benchmark.check(self.items())  # E.T. Bench: the sentence model's folder
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
        old = read_meta(meta_path)
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
        files.update(self.benchmark.plots(self.output_dir, title=self.dataset))  # E.T. Bench: its table as bars
        summary = {"dataset": self.dataset, "task": task, "headline_metric": headline,
                   "headline_percent": round(100 * metrics[headline], 1) if headline in metrics else None,
                   "metrics": metrics, "num_samples": len(items), "num_generated_now": generated,
                   "timings_s": timings, "settings": self.settings(model_id)}
        if self.benchmark.result is not None:  # E.T. Bench: per_task / overall / merged / avg
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
