"""Held-out grounding evaluation during training (a Lightning callback).

Every ``every_n_steps`` optimizer steps the current policy answers a held-out split greedily (the
evaluation protocol of :mod:`museg_lit.evaluation.runner`, usually with fewer new tokens) and the
callback logs ``val/m_iou``, ``val/mean_f1_single`` (single-segment samples) and
``val/mean_f1_multi`` (multi-segment samples) plus the other MUSEG metrics under ``val/``, to every
trainer logger, and the timeline picture to MLflow (``val_timeline/step_000050.png``).

The split's videos are decoded once, on the first evaluation, and kept in memory: the split is
small (``max_samples``) and the same clips are reused at every evaluation. With ``synthetic`` set
and the annotation file missing, the split is generated first (global rank 0, then a barrier).
Every rank evaluates (generation under sharded strategies needs all ranks); loggers write on rank 0.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from museg_lit.data.frames import FrameSpec
from museg_lit.data.synthetic import SyntheticSpec, generate_synthetic_dataset
from museg_lit.evaluation.benchmark import GroundingBenchmark
from museg_lit.evaluation.decode import DecodedVideo, decode_groups, group_by_video, iter_batches
from museg_lit.evaluation.generate import generate_answers
from museg_lit.evaluation.plots import plot_timeline
from museg_lit.evaluation.types import EvalItem
from museg_lit.tracking import mlflow_loggers

log = logging.getLogger(__name__)

__all__ = ["GroundingEvalCallback"]


class GroundingEvalCallback(L.Callback):
    """Evaluate ``pl_module.policy`` / ``pl_module.processor`` on a held-out split every N steps.

    Args:
        annotation_file: MUSEG-schema JSONL (per-sample ``task``) or MUSEG evaluation JSON.
        video_root: folder the annotation's video paths are relative to.
        every_n_steps: evaluate after optimizer steps N, 2N, ... (and at the end of training).
        max_samples: first N samples of the split (None: all).
        template: question template (evaluation protocol: ``frame_selection_thinking``).
        frames: frame sampling of the split's videos.
        batch_size: prompts per ``generate`` call.
        max_new_tokens: completion budget (512 in the published protocol).
        synthetic: generate the split with :func:`generate_synthetic_dataset` if the file is missing.
        num_timeline: queries in the logged timeline picture.
    """

    def __init__(
        self,
        annotation_file: str,
        video_root: str,
        every_n_steps: int = 50,
        max_samples: int | None = 32,
        template: str = "frame_selection_thinking",
        frames: FrameSpec | None = None,
        batch_size: int = 4,
        max_new_tokens: int = 512,
        synthetic: SyntheticSpec | None = None,
        num_timeline: int = 8,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.annotation_file, self.video_root = annotation_file, video_root
        self.every_n_steps, self.max_samples = every_n_steps, max_samples
        self.frames = frames or FrameSpec()
        self.batch_size, self.max_new_tokens, self.num_timeline = batch_size, max_new_tokens, num_timeline
        self.synthetic = synthetic
        self.benchmark = GroundingBenchmark(template)
        self._decoded: list[DecodedVideo] | None = None
        self._last_step = -1
        self.last_metrics: dict[str, float] = {}

    # ---- data ----
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.synthetic is not None and not Path(self.annotation_file).exists():
            if trainer.is_global_zero:
                generate_synthetic_dataset(self.synthetic)
            trainer.strategy.barrier("grounding_eval_split")

    def _split(self) -> list[DecodedVideo]:
        if self._decoded is None:
            items = self.benchmark.load(self.annotation_file)[: self.max_samples]
            self._decoded = list(decode_groups(group_by_video(items), self.video_root, self.frames))
            for dv in self._decoded:
                if dv.error:
                    log.warning("held-out video %s could not be decoded (%s): its queries score 0", dv.items[0].video, dv.error)
        return self._decoded

    # ---- evaluation ----
    @torch.no_grad()
    def evaluate(self, policy, processor) -> tuple[dict[str, float], list[dict]]:
        """Metrics (``val/...``) and per-sample rows for the current policy."""
        decoded = self._split()
        rows: dict[str, dict] = {}
        start = time.perf_counter()
        for batch in iter_batches(((dv.items, dv) for dv in decoded), self.batch_size):
            ok = [(it, dv) for it, dv in batch if dv.clip is not None]
            texts = generate_answers(policy, processor, [self.benchmark.question(it) for it, _ in ok],
                                     [dv.clip for _, dv in ok], max_new_tokens=self.max_new_tokens) if ok else []
            outputs = {it.id: t for (it, _), t in zip(ok, texts, strict=True)}
            for it, dv in batch:
                rows[it.id] = self._row(it, outputs.get(it.id, ""), dv)
        items = [it for dv in decoded for it in dv.items]
        raw, _, _ = self.benchmark.score(items, rows)
        metrics = {}
        for key, value in raw.items():
            name = key.split("/", 1)[-1]  # mixed splits are scored per task: "tvg/m_iou" -> "m_iou"
            if name != "tot":
                metrics[f"val/{name}"] = float(value)
        metrics["val/no_prediction"] = sum(r["prediction"] is None for r in rows.values()) / len(rows)
        metrics["time/val_generate_s"] = time.perf_counter() - start
        return metrics, [rows[it.id] for it in items]

    def _row(self, item: EvalItem, output: str, dv: DecodedVideo) -> dict:
        row = {"id": item.id, "video": item.video, "task": item.task, "question": item.question,
               "groundtruth": item.groundtruth, "output": output, "error": dv.error,
               "duration": dv.clip.duration if dv.clip is not None else None}
        row.update(self.benchmark.record(item, output))
        return row

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return
        self._last_step = step
        metrics, records = self.evaluate(pl_module.policy, pl_module.processor)
        self.last_metrics = metrics
        # straight to the loggers: pl_module.log would be thinned by trainer.log_every_n_steps
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        loggers = mlflow_loggers(trainer)
        if loggers and trainer.is_global_zero:
            with tempfile.TemporaryDirectory() as tmp:
                path = plot_timeline(records, Path(tmp) / f"step_{step:06d}.png", num=self.num_timeline,
                                     title=f"held-out split, step {step}")
                for lg in loggers:
                    lg.experiment.log_artifact(lg.run_id, str(path), artifact_path="val_timeline")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # global_step counts optimizer steps; with gradient accumulation several batches share one
        if trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:
            self._run(trainer, pl_module)
