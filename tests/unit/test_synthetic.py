"""The generated grounding videos: the learning proof's knobs (grid, interval lengths, clocks in the
pixels, shape size, distractor share) do what their docstrings say, and the default draw is unchanged."""

from __future__ import annotations

import json
import random
import re

import pytest

from museg_lit.data.synthetic import (
    COLOURS,
    TIMER_RGB,
    SyntheticSpec,
    _placed_intervals,
    background_level,
    generate_synthetic_dataset,
)
from museg_lit.data.video import load_video


@pytest.mark.parametrize("seed", range(20))
def test_placed_intervals_are_disjoint_sorted_on_the_grid_and_of_the_asked_lengths(seed):
    rng = random.Random(seed)
    duration = 8.0 + 0.5 * rng.randint(0, 16)
    count = rng.randint(1, 3)
    segs = _placed_intervals(rng, duration, count, (1.0, 2.0), 0.5)
    assert len(segs) == count
    for s, e in segs:
        assert 0 <= s < e <= duration
        assert (s * 2).is_integer() and (e * 2).is_integer()  # on the 0.5 s grid
        assert 1.0 <= e - s <= 2.0
    for (_, e1), (s2, _) in zip(segs, segs[1:], strict=False):
        assert s2 - e1 >= 0.5  # at least the gap apart: two events never merge


def test_segment_lengths_that_cannot_fit_three_times_are_refused():
    with pytest.raises(ValueError, match="segment_seconds"):
        SyntheticSpec(out_dir="x", min_duration=6.0, segment_seconds=(1.0, 2.0))  # 3 * 2 + 1 > 6
    with pytest.raises(ValueError, match="distractor_fraction"):
        SyntheticSpec(out_dir="x", distractor_fraction=1.5)
    with pytest.raises(ValueError, match="synthetic.clock"):
        SyntheticSpec(out_dir="x", clock="sundial")


def _split(out_dir, clock: str, shape_radius: float | None):
    spec = SyntheticSpec(out_dir=str(out_dir), num_samples=6, seed=3, width=56, height=56, video_fps=2.0,
                         min_duration=8.0, max_duration=16.0, time_step=0.5, segment_seconds=(1.0, 2.0),
                         distinct_colours=True, clock=clock, shape_radius=shape_radius, distractor_fraction=0.0)
    path = generate_synthetic_dataset(spec)
    return spec, [json.loads(line) for line in path.read_text().splitlines()]


def _clips(spec, rows):
    for row in rows:
        clip = load_video(f"{spec.out_dir}/{row['video']}", fps=2.0, min_frames=4, max_frames=64,
                          min_pixels=56 * 56, max_pixels=56 * 56)
        colour = next(c for c in COLOURS if re.search(rf"\b{c}\b", row["problem"]))
        yield row, clip, colour


def _colour_present(frame, rgb, rows: slice = slice(None), tol=40) -> bool:
    """Whether some pixels of ``frame`` [3, H, W] (in ``rows``) have colour ``rgb``."""
    body = frame[:, rows].int()  # [3, h, W]
    close = (body - frame.new_tensor(rgb).int().view(3, 1, 1)).abs().max(0).values < tol  # [h, W]
    return bool(close.sum() >= 4)


def test_bar_clock_shows_the_time_and_the_target_exactly_inside_its_segments(tmp_path):
    """At 2 fps every sampled frame is an encoded frame at k * 0.5 s: the target's colour is on screen
    exactly when k * 0.5 lies in a ground-truth segment (no distractor here), and the orange bar's
    width is t / max_duration of the frame."""
    spec, rows = _split(tmp_path, "bar", None)
    for row, clip, colour in _clips(spec, rows):
        assert (row["duration"] * 2).is_integer()
        for t, frame in zip(clip.timestamps, clip.frames, strict=True):  # frame: [3, 56, 56]
            inside = any(s <= t < e for s, e in row["solution"])
            assert _colour_present(frame, COLOURS[colour], slice(0, 42)) == inside, (row["video"], t)
            bar = frame[:, -3, :].int()  # [3, W], the bottom row
            orange = ((bar - bar.new_tensor(TIMER_RGB).view(3, 1)).abs().max(0).values < 60).sum().item()
            assert abs(orange - t / spec.max_duration * 56) <= 2, (t, orange)


def test_background_clock_and_quadrant_shapes(tmp_path):
    """The background grey level is background_level(t) (20 -> 180 over max_duration); a shape of
    radius 0.22 * 56 = 12 px sits at a quadrant centre and covers a good part of the frame."""
    spec, rows = _split(tmp_path, "background", 0.22)
    for row, clip, colour in _clips(spec, rows):
        for t, frame in zip(clip.timestamps, clip.frames, strict=True):  # [3, 56, 56]
            inside = any(s <= t < e for s, e in row["solution"])
            assert _colour_present(frame, COLOURS[colour]) == inside, (row["video"], t)
            grey = frame.int().median().item()  # most pixels are background
            assert abs(grey - background_level(t + 0.25, spec.max_duration)) <= 4, (t, grey)
            if inside:
                close = (frame.int() - frame.new_tensor(COLOURS[colour]).int().view(3, 1, 1)).abs().max(0).values < 40
                assert close.float().mean() > 0.08  # >= 8% of the pixels: a triangle of side ~24 px
