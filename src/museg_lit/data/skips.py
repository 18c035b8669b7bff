"""Samples that cannot train, found early and bounded: missing videos at setup, skips during training.

* At setup, before the model loads, every referenced video is checked to exist (one ``stat`` each,
  no decode; :func:`missing_videos`). If more than ``data.max_skip_fraction`` of the samples lack
  their video (a wrong ``data.video_root``), the run stops in seconds with "N of M videos missing
  under video_root=..." and the first paths; fewer are dropped with a warning and counted
  (``data/missing_videos``).
* During training a sample whose video cannot be decoded, or whose prompt leaves no room to
  generate, is replaced by another sample (:mod:`museg_lit.data.datamodule`), so every optimizer
  step trains on a full batch and ``max_steps`` counts real updates. :class:`SkipCounter` counts
  the draws and the skips (``data/skipped``, ``data/skip_fraction``) and stops the run with the
  first failures listed once more than ``data.max_skip_fraction`` of the draws failed (checked
  from :data:`MIN_DRAWS` draws on, so that one bad file early in a short run does not stop it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from museg_lit.data.video import VideoDecodeError
from museg_lit.errors import DataError

__all__ = ["MIN_DRAWS", "SkipCounter", "missing_video_paths", "missing_videos", "missing_videos_error", "resolve_video"]

MIN_DRAWS = 20  # draws before the skip budget is enforced
EXAMPLES = 3  # paths / failures quoted in a message


def resolve_video(video_root: str | Path, relative: str, *, source: str = "") -> Path:
    """Join ``relative`` onto the root, refusing paths that escape it (``../../etc/passwd``)."""
    root = Path(video_root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise VideoDecodeError(path, f"path {relative!r} ({source or 'annotation'}) escapes the video root {root}")
    return path


def missing_video_paths(videos: Iterable[str], video_root: str | Path) -> dict[str, Path]:
    """``{video: resolved path}`` of the videos (relative to ``video_root``) that are not files (one stat each)."""
    missing = {}
    for video in dict.fromkeys(videos):  # unique, in order
        try:
            path = resolve_video(video_root, video)
        except VideoDecodeError:  # escapes the root: as good as missing
            path = Path(video_root) / video
        if not path.is_file():
            missing[video] = path
    return missing


def missing_videos(videos: Iterable[str], video_root: str | Path) -> list[Path]:
    """Resolved paths of the videos (relative to ``video_root``) that are not files."""
    return list(missing_video_paths(videos, video_root).values())


def missing_videos_error(missing: list[Path], total: int, video_root: str | Path, *, source: str,
                         max_fraction: float) -> DataError:
    """``<source>: N of M videos missing under video_root=<root> (first: a, b, c)``."""
    examples = ", ".join(str(p) for p in missing[:EXAMPLES]) + (", ..." if len(missing) > EXAMPLES else "")
    return DataError(f"{source}: {len(missing)} of {total} videos missing under data.video_root="
                     f"{Path(video_root).resolve()} (first: {examples}); more than data.max_skip_fraction="
                     f"{max_fraction:g} of the samples: check data.video_root")


@dataclass
class SkipCounter:
    """Running counts of sample draws and skips over a fit, with the skip budget.

    ``drawn`` counts every sample the loader tried (replacements included); ``skipped`` those that
    failed; ``first`` keeps the first failures (``(source, reason)``) for the stop message.
    """

    max_fraction: float = 0.1
    drawn: int = 0
    skipped: int = 0
    first: list[tuple[str, str]] = field(default_factory=list)

    def add(self, drawn: int, failures: list[tuple[str, str]]) -> None:
        self.drawn += drawn
        self.skipped += len(failures)
        self.first.extend(failures[: max(0, EXAMPLES - len(self.first))])

    @property
    def fraction(self) -> float:
        return self.skipped / self.drawn if self.drawn else 0.0

    def exceeded(self) -> bool:
        """More than ``max_fraction`` of at least :data:`MIN_DRAWS` draws failed."""
        return self.drawn >= MIN_DRAWS and self.fraction > self.max_fraction

    def error(self) -> DataError:
        failures = "; ".join(f"{source}: {reason}" for source, reason in self.first)
        return DataError(f"{self.skipped} of {self.drawn} samples drawn were skipped ({self.fraction:.0%}), more "
                         f"than data.max_skip_fraction={self.max_fraction:g}; first failures: {failures}")

    def as_metrics(self) -> dict[str, float]:
        return {"data/skipped": float(self.skipped), "data/skip_fraction": self.fraction}

    # checkpointed with the module, so a resumed run keeps its budget
    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "skipped": self.skipped, "first": [list(f) for f in self.first]}

    def load_state_dict(self, state: dict) -> None:
        self.drawn, self.skipped = int(state["drawn"]), int(state["skipped"])
        self.first = [tuple(f) for f in state.get("first", [])]
