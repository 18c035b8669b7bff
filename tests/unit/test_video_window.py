"""``load_video_window``: only [start, end] of a video, with the same sampling rule as a whole
video (qwen-vl-utils' ``calculate_video_frame_range`` + ``smart_nframes`` + even ``linspace``),
real video times in ``timestamps``. Pattern videos (tests/videos.py) carry each frame's index
in its pixels, so the decoded frames are checked to be the indices claimed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared video helpers
from museg_lit.data.video import (  # noqa: E402
    VideoDecodeError,
    frame_range,
    load_video,
    load_video_window,
    window_frame_indices,
)
from videos import make_video, read_pattern_index  # noqa: E402

NATIVE = {"min_pixels": 112 * 56, "max_pixels": 112 * 56}  # identity resize for 112x56 videos


@pytest.mark.parametrize(("total", "fps", "start", "end", "expected"), [
    (40, 4.0, 2.1, 6.0, (9, 24, 16)),     # ceil(8.4) = 9, floor(24.0) = 24
    (40, 4.0, 0.0, 10.0, (0, 39, 40)),    # the whole video: last frame is total - 1
    (40, 4.0, -3.0, 99.0, (0, 39, 40)),   # clamped to [0, 10 s]
    (50, 25.0, 1.0, 1.5, (25, 37, 13)),   # floor(37.5) = 37
])
def test_frame_range_by_hand(total, fps, start, end, expected):
    assert frame_range(total, fps, start, end) == expected


def test_frame_range_refuses_a_window_without_two_frames():
    with pytest.raises(ValueError, match="fewer than 2 frames"):
        frame_range(40, 4.0, 5.0, 5.1)  # ceil(20) = 20, floor(20.4) = 20


def test_window_indices_spread_evenly_like_linspace():
    assert window_frame_indices(25, 37, 2) == [25, 37]
    assert window_frame_indices(9, 24, 4) == [9, 14, 19, 24]  # 9 + 15 * k / 3


def test_window_clip_has_the_window_frames_at_video_times(tmp_path):
    # 8 s at 25 fps = 200 frames; window [2, 4] s: frames 50..100 (51 frames), 2 s * 2 fps = 4 samples
    path = make_video(tmp_path / "v.mp4", fps=25, seconds=8, size=(112, 56), bframes=2, gop=25)
    clip = load_video_window(path, 2.0, 4.0, fps=2.0, **NATIVE)
    assert clip.frame_indices == [50, 67, 83, 100]  # linspace(50, 100, 4) = 50, 66.67, 83.33, 100
    assert [read_pattern_index(f.numpy()) for f in clip.frames] == clip.frame_indices
    assert clip.timestamps == pytest.approx([2.0, 2.68, 3.32, 4.0])  # video seconds, not clip seconds
    assert clip.sample_fps == pytest.approx(4 / 51 * 25)  # sampled / window frames * video fps
    assert clip.duration == pytest.approx(8.0) and clip.total_frames == 200  # the whole video's


def test_whole_window_equals_load_video(tmp_path):
    path = make_video(tmp_path / "v.mp4", fps=25, seconds=3, size=(112, 56))
    whole, window = load_video(path, **NATIVE), load_video_window(path, 0.0, 3.0, **NATIVE)
    assert window.frame_indices == whole.frame_indices and window.sample_fps == pytest.approx(whole.sample_fps)
    assert (window.frames == whole.frames).all()


def test_an_empty_window_is_a_decode_error(tmp_path):
    path = make_video(tmp_path / "v.mp4", fps=25, seconds=2, size=(112, 56))
    with pytest.raises(VideoDecodeError, match="fewer than 2 frames"):
        load_video_window(path, 5.0, 6.0, **NATIVE)  # beyond the end: both ends clamp to 2 s
