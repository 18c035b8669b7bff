"""LightningDataModule: annotations -> decoded clips -> chat-templated processor batches.

Each sample's video is decoded once (in a DataLoader worker) at the configured fps and pixel budget;
the G rollouts of a prompt share that clip (the module expands tensors, it never decodes again).
A video that is missing at setup drops its sample; one that cannot be decoded (or a prompt that
leaves no room to generate) is skipped with a warning naming the file and replaced by another
sample, so the batch stays full; both are counted and bounded by ``max_skip_fraction``
(:mod:`museg_lit.data.skips`). With ``on_error="raise"`` the first failure stops the run. With ``FrameSpec.cache_dir`` set, decoded clips are
kept on disk (:mod:`museg_lit.data.cache`) and later epochs, runs and ranks re-load them instead of
decoding again. Annotation counts (loaded / clipped / dropped / filtered) are in
``GroundingDataModule.report`` after ``setup``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from museg_lit.data import annotations
from museg_lit.data.annotations import GroundingSample, LoadReport
from museg_lit.data.batch import PromptBatch
from museg_lit.data.cache import load_video_cached
from museg_lit.data.frames import FrameSpec
from museg_lit.data.sampler import (
    ResumableBatchSampler,
    ResumableDataLoader,
    ResumableSampler,
    lightning_progress,
)
from museg_lit.data.skips import missing_video_paths, missing_videos_error, resolve_video
from museg_lit.data.synthetic import SyntheticSpec, generate_synthetic_dataset
from museg_lit.data.video import VideoDecodeError
from museg_lit.errors import DataError
from museg_lit.models.processing import encode_prompts
from museg_lit.prompts import END_OF_TURN, render_question, video_messages

log = logging.getLogger(__name__)


class GroundingDataset(Dataset):
    """Decodes one sample's video; a sample that fails is replaced by another one.

    ``dataset[i]`` returns ``{"sample", "clip", "error", "decode_s", "index", "skipped", "drawn"}``.
    A sample whose video is missing, escapes the root or cannot be decoded is skipped (a warning
    names the file) and replaced by sample :meth:`replacement_index` ``(i, attempt)``, a
    deterministic draw, up to ``max_replacements`` times: the batch stays full, a resumed run
    draws the same replacements, and ``skipped`` lists every failure for the skip budget
    (:class:`museg_lit.data.skips.SkipCounter`). ``clip`` is None only if every draw failed.
    With ``on_error="raise"`` the first failure stops the run (:class:`DataError`).
    A sample whose file gives no ``duration`` has its segments checked against the decoded video's
    duration under ``segment_policy`` (:func:`museg_lit.data.annotations.fit_to_duration`); a
    sample ``drop`` rejects is skipped and replaced like a broken video.
    With ``frames.cache_dir`` set the clip comes from the on-disk cache when present
    (``decode_s`` is then the re-load time) and is written there after a decode.
    """

    def __init__(self, samples: list[GroundingSample], video_root: str, frames: FrameSpec, on_error: str,
                 max_replacements: int = 8, segment_policy: str = "keep"):
        self.samples, self.video_root, self.frames, self.on_error = samples, video_root, frames, on_error
        self.segment_policy = segment_policy
        self.max_replacements = max_replacements
        self.known_bad: dict[int, str] = {}  # index -> reason, in this process (each worker keeps its own)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        item = self.load(i)
        if item["clip"] is not None:
            return {**item, "skipped": [], "drawn": 1}
        replaced = self.replace(i)
        skipped = [(item["sample"].source, item["error"]), *replaced["skipped"]]
        return {**(replaced if replaced["clip"] is not None else item), "skipped": skipped,
                "drawn": 1 + replaced["drawn"], "decode_s": item["decode_s"] + replaced["decode_s"]}

    def replacement_index(self, i: int, attempt: int) -> int:
        """The sample that stands in for sample ``i`` at its ``attempt``-th replacement (never ``i``)."""
        j = random.Random(f"museg-replacement/{i}/{attempt}").randrange(len(self.samples))
        return (j + 1) % len(self.samples) if j == i and len(self.samples) > 1 else j

    def replace(self, i: int) -> dict:
        """The first of sample ``i``'s replacements that loads (``clip`` None if none does)."""
        skipped: list[tuple[str, str]] = []
        item: dict = {"clip": None}
        seconds = 0.0
        for attempt in range(self.max_replacements):
            item = self.load(self.replacement_index(i, attempt))
            seconds += item["decode_s"]
            if item["clip"] is not None:
                break
            skipped.append((item["sample"].source, item["error"]))
        return {**item, "skipped": skipped, "drawn": len(skipped) + (item["clip"] is not None), "decode_s": seconds}

    def mark_bad(self, i: int, reason: str) -> None:
        """Remember that sample ``i`` cannot train (e.g. its prompt is too long), so it is not decoded again."""
        self.known_bad[i] = reason

    def load(self, i: int) -> dict:
        """Sample ``i`` with its clip, or with the error (no replacement)."""
        sample = self.samples[i]
        start = time.perf_counter()
        failed = {"sample": sample, "clip": None, "index": i}
        if i in self.known_bad:
            return {**failed, "error": self.known_bad[i], "decode_s": 0.0}
        try:
            path = resolve_video(self.video_root, sample.video, source=sample.source)
            clip = load_video_cached(
                path, cache_dir=self.frames.cache_dir, fps=self.frames.fps, min_frames=self.frames.min_frames,
                max_frames=self.frames.max_frames, min_pixels=self.frames.min_pixels,
                max_pixels=self.frames.max_pixels, total_pixels=self.frames.total_pixels,
                timeout_s=self.frames.timeout_s,
            )
        except VideoDecodeError as exc:
            if self.on_error == "raise":
                raise DataError(f"{exc} (sample {sample.idx}, {sample.source}; data.on_error=raise)") from exc
            log.warning("skipping sample %s (%s): %s", sample.idx, sample.source, exc)
            self.mark_bad(i, str(exc))
            return {**failed, "error": str(exc), "decode_s": time.perf_counter() - start}
        fitted = annotations.fit_to_duration(sample, clip.duration, self.segment_policy)
        if fitted is None:
            why = f"a segment of {sample.solution} lies beyond the decoded duration {clip.duration:.3f}s (segment_policy=drop)"
            log.warning("skipping sample %s (%s): %s", sample.idx, sample.source, why)
            self.mark_bad(i, why)
            return {**failed, "error": why, "decode_s": time.perf_counter() - start}
        return {"sample": fitted, "clip": clip, "error": None, "index": i, "decode_s": time.perf_counter() - start}


class PromptCollator:
    """Turns decoded samples into one processor batch (left-padded for generation).

    ``max_total_tokens`` (``rollout.max_total_tokens``): a prompt of that many tokens or more leaves
    no room to generate (MUSEG's vLLM refused such prompts); it is skipped with a warning naming
    the sample and its length and, given the ``dataset``, replaced like an undecodable video
    (:meth:`GroundingDataset.replace`, at most ``max_rounds`` rounds). The batch
    (:class:`~museg_lit.data.batch.PromptBatch`) carries
    ``skipped`` (``(source, reason)`` of every failed draw) and ``drawn`` (samples tried).

    ``answers`` (SFT, :class:`museg_lit.sft.config.SFTConfig`): the completion to teach for a sample;
    the batch then also carries ``answer_ids`` / ``answer_mask`` ``[B, C]``, right-padded: the
    answer's tokens followed by the end-of-turn token that stops generation.
    """

    def __init__(self, processor, template: str, system_prompt: str | None = None,
                 max_total_tokens: int | None = None, dataset: GroundingDataset | None = None, max_rounds: int = 4,
                 answers: Callable[[GroundingSample], str] | None = None):
        self.processor, self.template, self.system_prompt = processor, template, system_prompt
        self.max_total_tokens, self.dataset, self.max_rounds = max_total_tokens, dataset, max_rounds
        self.answers = answers

    def prompt_text(self, sample: GroundingSample) -> str:
        question = render_question(sample.problem, self.template)
        return self.processor.apply_chat_template(
            video_messages(question, self.system_prompt), tokenize=False, add_generation_prompt=True
        )

    def __call__(self, items: list[dict]) -> PromptBatch:
        skipped = [failure for it in items for failure in it["skipped"]]
        drawn = sum(it["drawn"] for it in items)
        good = [it for it in items if it["clip"] is not None]
        inputs = self._encode(good)
        for round_ in range(self.max_rounds + 1):
            too_long = self._too_long(good, inputs)
            if not too_long:
                break
            for it, why in too_long.values():
                log.warning("skipping sample %s (%s): %s", it["sample"].idx, it["sample"].source, why)
                skipped.append((it["sample"].source, why))
                if self.dataset is not None:
                    self.dataset.mark_bad(it["index"], why)
            replace = self.dataset is not None and round_ < self.max_rounds
            kept = []
            for pos, it in enumerate(good):
                if pos not in too_long:
                    kept.append(it)
                elif replace:
                    new = self.dataset.replace(it["index"])
                    skipped.extend(new["skipped"])
                    drawn += new["drawn"]
                    if new["clip"] is not None:
                        kept.append(new)
            good = kept
            inputs = self._encode(good)
        samples = [it["sample"] for it in good]
        answer_ids, answer_mask = self.encode_answers(samples) if self.answers is not None else (None, None)
        return PromptBatch(samples, inputs, drawn=drawn, skipped=skipped, decode_s=sum(it["decode_s"] for it in items),
                           answer_ids=answer_ids, answer_mask=answer_mask)

    def encode_answers(self, samples: list[GroundingSample]) -> tuple[torch.Tensor, torch.Tensor]:
        """``answer_ids`` / ``answer_mask`` ``[B, C]`` (right-padded) of the samples' taught answers, each
        closed by the end-of-turn token; ``[B, 0]`` for no sample."""
        if not samples:
            return torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0, dtype=torch.long)
        tokenizer = self.processor.tokenizer
        texts = [self.answers(s) + END_OF_TURN for s in samples]
        enc = tokenizer(texts, padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def _too_long(self, good: list[dict], inputs: dict | None) -> dict[int, tuple[dict, str]]:
        """Positions in ``good`` whose prompt leaves no room under ``max_total_tokens`` -> (item, reason)."""
        if inputs is None or self.max_total_tokens is None:
            return {}
        lengths = inputs["attention_mask"].sum(dim=1).tolist()  # [B] prompt tokens
        return {pos: (it, f"prompt of {n} tokens leaves no room to generate under "
                          f"rollout.max_total_tokens={self.max_total_tokens}")
                for pos, (it, n) in enumerate(zip(good, lengths, strict=True)) if n >= self.max_total_tokens}

    def _encode(self, items: list[dict]) -> dict | None:
        if not items:
            return None
        return dict(encode_prompts(
            self.processor,
            [self.prompt_text(it["sample"]) for it in items],
            [it["clip"].frames for it in items],
            [it["clip"].sample_fps for it in items],
            timestamps=[it["clip"].timestamps for it in items],  # Qwen3-VL writes them as text
        ))


class GroundingDataModule(L.LightningDataModule):
    """Training (and optional validation) batches of grounding prompts.

    ``annotation_file``: MUSEG-schema ``.jsonl`` (or evaluation ``.json``); with ``synthetic`` set and the
    file missing, :func:`generate_synthetic_dataset` writes it first (once, on local rank 0).
    ``processor`` is attached by the entry point (it belongs to the model).
    ``annotation_format``: ``auto`` | ``museg_train`` | ``museg_eval`` | ``perception_test`` |
    ``et_bench``; ``tasks`` / ``subset_file`` select E.T. Bench tasks and its 470-sample subset.
    After ``setup``, ``report`` holds the annotation counts (:meth:`LoadReport.as_metrics`).
    ``max_total_tokens``: prompts that leave no room under this cap are skipped (:class:`PromptCollator`).
    ``global_batch_size``: prompts per optimizer step over all ranks (MUSEG: 14); the builder derives
    gradient accumulation from it (:func:`museg_lit.builders.accumulation_for`).
    ``max_skip_fraction``: the most samples (as a fraction) that may lack their video at setup, or
    fail when drawn during training, before the run stops (:mod:`museg_lit.data.skips`).
    """

    def __init__(
        self,
        annotation_file: str,
        video_root: str,
        template: str = "frame_selection_thinking",
        frames: FrameSpec | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        on_error: str = "skip",
        segment_policy: str = "clip",
        shuffle: bool = True,
        max_samples: int | None = None,
        system_prompt: str | None = None,
        synthetic: SyntheticSpec | None = None,
        processor=None,
        repeat_batches: int = 1,
        repeat_group: int = 1,
        annotation_format: str = "auto",
        tasks: list[str] | None = None,
        subset_file: str | None = None,
        max_total_tokens: int | None = None,
        global_batch_size: int | None = None,
        max_skip_fraction: float = 0.1,
        answers: Callable[[GroundingSample], str] | None = None,
    ):
        super().__init__()
        self.answers = answers  # SFT: the completion taught for each sample (set by the builder)
        self.max_skip_fraction = max_skip_fraction
        self.num_missing_videos = 0  # samples dropped at setup because their video is not there
        self.max_total_tokens = max_total_tokens
        self.global_batch_size = global_batch_size  # read by the builder (gradient accumulation), kept for reference
        if on_error not in ("skip", "raise"):
            raise ValueError(f"data.on_error must be 'skip' or 'raise', got {on_error!r}")
        self.annotation_file, self.video_root, self.template = annotation_file, video_root, template
        self.frames = frames or FrameSpec()
        self.batch_size, self.num_workers, self.on_error = batch_size, num_workers, on_error
        self.segment_policy, self.shuffle, self.max_samples = segment_policy, shuffle, max_samples
        self.system_prompt, self.synthetic, self.processor = system_prompt, synthetic, processor
        self.repeat_batches, self.repeat_group = repeat_batches, repeat_group
        self.annotation_format = annotation_format
        self.tasks, self.subset_file = (list(tasks) if tasks is not None else None), subset_file
        self.report = LoadReport()
        self.train_set: GroundingDataset | None = None

    def prepare_data(self) -> None:
        if self.synthetic is not None and not Path(self.annotation_file).exists():
            generate_synthetic_dataset(self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        samples = annotations.load_annotations(
            self.annotation_file, segment_policy=self.segment_policy, report=self.report,
            annotation_format=self.annotation_format, tasks=self.tasks, subset_file=self.subset_file,
        )  # fmt: skip
        log.info("%s: %s", self.annotation_file, self.report.summary())
        if self.max_samples is not None:
            samples = samples[: self.max_samples]
        if not samples:
            raise DataError(f"{self.annotation_file}: no usable samples")
        samples = self._with_videos(samples)
        self.train_set = GroundingDataset(samples, self.video_root, self.frames, self.on_error,
                                          segment_policy=self.segment_policy)

    def _with_videos(self, samples: list[GroundingSample]) -> list[GroundingSample]:
        """The samples whose video exists (one stat each, before any model loads); stop if more than
        ``max_skip_fraction`` lack it (or any, with ``on_error=raise``)."""
        missing = missing_video_paths([s.video for s in samples], self.video_root)
        if not missing:
            return samples
        kept = [s for s in samples if s.video not in missing]
        lost = len(samples) - len(kept)
        if not kept or self.on_error == "raise" or lost / len(samples) > self.max_skip_fraction:
            raise missing_videos_error(list(missing.values()), len({s.video for s in samples}), self.video_root,
                                       source=str(self.annotation_file), max_fraction=self.max_skip_fraction)
        log.warning("%s: %d of %d samples dropped, their video is missing under %s (first: %s)", self.annotation_file,
                    lost, len(samples), Path(self.video_root).resolve(),
                    ", ".join(map(str, list(missing.values())[:3])))
        self.num_missing_videos = lost
        return kept

    def train_dataloader(self) -> DataLoader:
        if self.processor is None:
            raise RuntimeError("GroundingDataModule.processor is not set; the entry point attaches the model's processor")
        # A resumable order (museg_lit.data.sampler): checkpoints record (epoch, seed, batches consumed)
        # and a resumed run continues with the next unseen batch. The seed is torch's initial seed,
        # i.e. the run's `seed` (seed_everything), the same on every rank. The sampler splits the data
        # over the strategy's data-parallel replicas itself (trainer.use_distributed_sampler=false);
        # ranks that share prompts (generation_split) form one replica.
        trainer = self.trainer
        shard = (getattr(trainer.strategy, "distributed_sampler_kwargs", None) if trainer is not None else None) or {}
        sampler = ResumableSampler(len(self.train_set), shuffle=self.shuffle, seed=torch.initial_seed(),
                                   num_replicas=max(1, shard.get("num_replicas", 1)), rank=shard.get("rank", 0))
        return ResumableDataLoader(
            self.train_set, num_workers=self.num_workers,
            batch_sampler=ResumableBatchSampler(sampler, self.batch_size, self.repeat_group, self.repeat_batches),
            collate_fn=self._collator(),
            persistent_workers=self.num_workers > 0,
            progress=lightning_progress(trainer) if trainer is not None else None,
        )

    def _collator(self) -> PromptCollator:
        return PromptCollator(self.processor, self.template, self.system_prompt, self.max_total_tokens,
                              dataset=self.train_set, answers=self.answers)

    def refill_batches(self, seed: int = 1) -> Iterator[PromptBatch]:
        """Endless batches in a second random order, for DAPO's dynamic-sampling refills."""
        generator = torch.Generator().manual_seed(seed)
        collate = self._collator()
        while True:
            yield from DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator,
                                  collate_fn=collate)
