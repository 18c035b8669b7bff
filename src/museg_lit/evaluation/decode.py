"""Each video decoded once, ahead of generation: queries grouped by video, decoded in DataLoader
workers while the model generates, and flattened into left-padded batches of ``batch_size`` prompts.

Charades-STA's 3,720 queries need 1,334 decodes instead of 3,720. A video that exists but cannot be
decoded yields its queries with ``clip=None`` and the error (they become "no prediction"). The
``blank`` ablation (:func:`ablate_clip`) keeps a clip's frame count, size and timing but zeroes
its pixels.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from museg_lit.data.frames import FrameSpec
from museg_lit.data.skips import resolve_video
from museg_lit.data.video import VideoClip, VideoDecodeError, load_video
from museg_lit.evaluation.types import EvalItem

__all__ = [
    "VIDEO_ABLATIONS",
    "DecodedVideo",
    "VideoGroupDataset",
    "ablate_clip",
    "decode_groups",
    "group_by_video",
    "iter_batches",
]

VIDEO_ABLATIONS = ("none", "blank")


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


@dataclass
class DecodedVideo:
    """The queries on one video and its decoded clip, or ``clip=None`` and the decode ``error``."""

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


def ablate_clip(clip: VideoClip, ablation: str) -> VideoClip:
    """``blank``: the clip with every pixel 0 (black), its frame count, size, fps and timestamps kept,
    so the prompt has the same video tokens at the same 3D positions and only the content is gone."""
    if ablation == "none":
        return clip
    if ablation == "blank":
        return replace(clip, frames=torch.zeros_like(clip.frames))  # [T, 3, H, W] uint8
    raise ValueError(f"unknown video ablation {ablation!r}; known: {list(VIDEO_ABLATIONS)}")
