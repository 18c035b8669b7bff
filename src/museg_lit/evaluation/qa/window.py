"""The window stage 2 decodes: the grounded segment, widened by a margin, inside the video.

Pure arithmetic on seconds; :func:`answer_window` is the whole rule. LongVTG-R1 does not publish
how its "ground-then-answer" turns a grounding into the clip it answers from (no public code);
this is our reconstruction: the hull of the predicted segments (a multi-segment answer covers
its first start to its last end), ``margin_s`` added on both sides, clipped to ``[0, duration]``,
widened around its centre to at least ``min_window_s`` (a 0.2 s grounding still yields frames);
the whole video when the grounding is unparsable or lies outside the video.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["FALLBACK_REASONS", "Window", "answer_window"]

FALLBACK_REASONS = ("unparsable", "outside_video", "window_decode")  # the last: set by the runner


class Window(NamedTuple):
    start: float  # seconds
    end: float  # seconds
    fallback: bool  # True: the whole video, because the grounding could not be used
    reason: str | None  # None, or one of FALLBACK_REASONS


def answer_window(prediction: list[list[float]] | None, duration: float, margin_s: float,
                  min_window_s: float = 1.0) -> Window:
    """The window ``[start, end]`` (seconds) to answer from.

    Worked examples (duration 30 s, margin 2 s, min_window 1 s):

    * ``[[10, 14]]`` -> [8, 16]; ``[[10, 12], [20, 21]]`` -> hull [10, 21] -> [8, 23];
    * ``[[0.5, 3]]`` -> [-1.5, 5] clipped -> [0, 5]; ``[[27, 40]]`` -> [25, 42] -> [25, 30];
    * ``[[40, 45]]`` (beyond the end) -> whole video [0, 30], fallback ``outside_video``;
    * ``None`` (no parsable answer) -> [0, 30], fallback ``unparsable``;
    * margin 0, ``[[10, 10.2]]`` -> widened around 10.1 to [9.6, 10.6].
    """
    if not duration > 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if not prediction:
        return Window(0.0, float(duration), True, "unparsable")
    lo, hi = min(s for s, _ in prediction), max(e for _, e in prediction)
    if lo >= duration or hi <= 0:
        return Window(0.0, float(duration), True, "outside_video")
    start, end = max(0.0, lo - margin_s), min(float(duration), hi + margin_s)
    if end - start < min_window_s:
        if min_window_s >= duration:
            return Window(0.0, float(duration), False, None)
        centre = (start + end) / 2
        start = min(max(0.0, centre - min_window_s / 2), duration - min_window_s)
        end = start + min_window_s
    return Window(round(float(start), 6), round(float(end), 6), False, None)
