"""How many frames of a video are decoded and at what size: :class:`FrameSpec`, the frame-sampling
settings of :func:`museg_lit.data.video.load_video` (``data.frames`` in the configs), shared by
training (:mod:`museg_lit.data.datamodule`) and evaluation (:mod:`museg_lit.evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass

from museg_lit.errors import ConfigError
from museg_lit.settings import check_fields, setting

__all__ = ["FrameSpec"]


@dataclass(frozen=True)
class FrameSpec:
    """Frame sampling settings passed to :func:`museg_lit.data.video.load_video`.

    ``cache_dir``: directory of the on-disk clip cache (:mod:`museg_lit.data.cache`), None = off.
    Set it with ``data.frames.cache_dir=/fast/disk/clips``; entries are keyed by file identity and
    the sampling settings above, so one directory can serve several datasets and settings.
    """

    fps: float = setting(2.0, gt=0.0)
    min_frames: int = setting(4, ge=1)
    max_frames: int = setting(768, ge=1)
    min_pixels: int = setting(128 * 28 * 28, ge=1)
    max_pixels: int = setting(768 * 28 * 28, ge=1)
    total_pixels: int | None = setting(None, ge=1)
    timeout_s: float | None = setting(300.0, gt=0.0)
    cache_dir: str | None = None

    def __post_init__(self):
        check_fields(self, "data.frames")
        if self.min_frames > self.max_frames or self.min_pixels > self.max_pixels:
            raise ConfigError(f"data.frames: min_frames={self.min_frames} / min_pixels={self.min_pixels} must not "
                              f"exceed max_frames={self.max_frames} / max_pixels={self.max_pixels}")
