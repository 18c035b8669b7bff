"""Unit tests for museg_lit.data.video: the qwen-vl-utils arithmetic and the streaming decoder.

Decode tests use small pattern videos (tests/videos.py) whose frames carry their own index, and
sizes of whole 28-pixel patches (112x56) with ``min_pixels = max_pixels = 112 * 56`` so that the
resize is the identity and the index can be read back from the output.
"""

from __future__ import annotations

import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared video helpers
from museg_lit.data import video as video_mod  # noqa: E402
from museg_lit.data.video import (  # noqa: E402
    VideoClip,
    VideoDecodeError,
    default_total_pixels,
    frame_indices,
    load_video,
    smart_nframes,
    smart_resize,
    video_max_pixels,
)
from tests.optional import require_ffmpeg_cli  # noqa: E402
from videos import make_audio_only, make_video, read_pattern_index  # noqa: E402

PATCH = 28 * 28
NATIVE = {"min_pixels": 112 * 56, "max_pixels": 112 * 56}  # identity resize for 112x56 videos


def pattern_indices(clip: VideoClip) -> list[int]:
    return [read_pattern_index(frame.numpy()) for frame in clip.frames]


# ---------------------------------------------------------------------------------------------
# smart_nframes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "video_fps", "kwargs", "expected"),
    [
        # 50 / 25 s * 2 fps = 4.0 -> clamp to [4, 768] -> 4
        (50, 25.0, {}, 4),
        # 72 / 23.976 * 2 = 6.006 -> floor to even -> 6
        (72, 24000 / 1001, {}, 6),
        # 101 / 25 * 2 = 8.08 -> 8
        (101, 25.0, {}, 8),
        # 30 / 30 * 2 = 2.0 -> raised to min_frames 4
        (30, 30.0, {}, 4),
        # min_frames 5 is first ceiled to 6: max(4.0, 6) = 6
        (50, 25.0, {"min_frames": 5}, 6),
        # 36000 / 60 * 2 = 1200 -> capped at max_frames 768
        (36000, 60.0, {}, 768),
        # max_frames 7 is first floored to 6: 300 / 30 * 2 = 20 -> 6
        (300, 30.0, {"max_frames": 7}, 6),
        # 3 frames: min(4, 3) = 3 -> floor to even -> 2
        (3, 25.0, {}, 2),
        # more frames wanted than exist: 10 / 5 * 30 = 60 -> capped at total_frames 10
        (10, 5.0, {"fps": 30.0}, 10),
        # sparse sampling: 600 / 30 * 0.5 = 10
        (600, 30.0, {"fps": 0.5}, 10),
    ],
)
def test_smart_nframes(total, video_fps, kwargs, expected):
    assert smart_nframes(total, video_fps, **kwargs) == expected


def test_smart_nframes_rejects_a_single_frame():
    # min(max(0.08, 4), 768, 1) = 1 -> floored to 0, below FRAME_FACTOR 2
    with pytest.raises(ValueError, match="nframes should be in"):
        smart_nframes(1, 25.0)


@pytest.mark.parametrize("video_fps", [0.0, float("nan"), float("inf"), -25.0])
def test_smart_nframes_rejects_bad_fps(video_fps):
    with pytest.raises(ValueError, match="video_fps"):
        smart_nframes(50, video_fps)


# ---------------------------------------------------------------------------------------------
# frame_indices
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "nframes", "expected"),
    [
        # linspace(0, 49, 4) = 0, 16.33, 32.67, 49
        (50, 4, [0, 16, 33, 49]),
        # step 71 / 5 = 14.2: 0, 14.2, 28.4, 42.6, 56.8, 71
        (72, 6, [0, 14, 28, 43, 57, 71]),
        # 0, 1.5, 3: 1.5 rounds half-to-even up to 2
        (4, 3, [0, 2, 3]),
        # 0, 2.5, 5: 2.5 rounds half-to-even down to 2
        (6, 3, [0, 2, 5]),
        # every frame
        (5, 5, [0, 1, 2, 3, 4]),
    ],
)
def test_frame_indices(total, nframes, expected):
    assert frame_indices(total, nframes) == expected


def test_frame_indices_uses_float32_like_qwen():
    # Exactly, point 762 of linspace(0, 18945, 768) is 762 * 18945 / 767 = 18821 + 383/767
    # = 18821.4993, which rounds to 18821. torch's float32 linspace lands on or above .5
    # (float32 spacing there is 0.002) and qwen-vl-utils, using it, picks frame 18822.
    assert frame_indices(18946, 768)[762] == 18822
    assert round(762 * 18945 / 767) == 18821


# ---------------------------------------------------------------------------------------------
# video_max_pixels and smart_resize
# ---------------------------------------------------------------------------------------------


def test_default_total_pixels(monkeypatch):
    monkeypatch.delenv("VIDEO_MAX_PIXELS", raising=False)
    assert default_total_pixels() == 90316800  # int(128000 * 28 * 28 * 0.9)
    monkeypatch.setenv("VIDEO_MAX_PIXELS", "1000000")  # qwen-vl-utils' override, same name
    assert default_total_pixels() == 1000000


@pytest.mark.parametrize(
    ("nframes", "min_pixels", "max_pixels", "total_pixels", "expected"),
    [
        # default budget: 90316800 / 4 * 2 = 45158400 -> capped at 768 * 784 = 602112
        (4, 128 * PATCH, 768 * PATCH, 90316800, 602112),
        # MUSEG: 3584 * 784 / 448 * 2 = 12544 -> floor int(16 * 784 * 1.05) = 13171 wins
        (448, 16 * PATCH, 768 * PATCH, 3584 * PATCH, 13171),
        # budget per frame 1e6 / 6 * 2 = 333333.33 stays a float
        (6, 4 * PATCH, 768 * PATCH, 1_000_000, 1_000_000 / 6 * 2),
        # the caller's max_pixels is lower than the budget: 50000
        (4, 4 * PATCH, 50_000, 90316800, 50_000),
    ],
)
def test_video_max_pixels(nframes, min_pixels, max_pixels, total_pixels, expected):
    assert video_max_pixels(nframes, min_pixels, max_pixels, total_pixels) == expected


@pytest.mark.parametrize(
    ("height", "width", "min_pixels", "max_pixels", "expected"),
    [
        # 240x320: round to 252x308 = 77616 < 100352 -> beta = sqrt(100352 / 76800) = 1.1431
        # -> ceil(274.3 / 28) * 28 = 280, ceil(365.8 / 28) * 28 = 392
        (240, 320, 128 * PATCH, 768 * PATCH, (280, 392)),
        # 70 = 2.5 patches rounds half-even to 2 (56); 98 = 3.5 rounds to 4 (112)
        (70, 98, 0, 10**9, (56, 112)),
        # 1080x1920: 1092x1932 > 602112 -> beta = sqrt(2073600 / 602112) = 1.8558
        # -> floor(582.0 / 28) * 28 = 560, floor(1034.6 / 28) * 28 = 1008
        (1080, 1920, 128 * PATCH, 768 * PATCH, (560, 1008)),
        # tiny frames grow to one patch
        (10, 10, 0, 10**9, (28, 28)),
        # odd 239x321: 252x308 too small -> beta = sqrt(100352 / 76719) = 1.1437 -> 280x392
        (239, 321, 128 * PATCH, 768 * PATCH, (280, 392)),
        # portrait 160x90: 168x84 too small -> beta = 2.6399 -> ceil(15.09) = 16, ceil(8.49) = 9
        (160, 90, 128 * PATCH, 768 * PATCH, (448, 252)),
        # aspect ratio exactly 200 is allowed
        (2, 400, 0, 10**9, (28, 392)),
    ],
)
def test_smart_resize(height, width, min_pixels, max_pixels, expected):
    assert smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels) == expected


def test_smart_resize_needs_the_unrounded_pixel_cap():
    # 36 frames of 1080x1920 under total_pixels 2048 * 784: cap = 1605632 / 36 * 2 = 89201.78.
    # The downscaled height is sqrt(1080 / 1920 * cap) = sqrt(50176.0) = 224 = 8 patches; with
    # the cap truncated to 89201 it is 223.9996, which floors to 7 patches (196).
    cap = video_max_pixels(36, 16 * PATCH, 768 * PATCH, 2048 * PATCH)
    assert cap == pytest.approx(89201.777, abs=1e-3)
    assert smart_resize(1080, 1920, min_pixels=16 * PATCH, max_pixels=cap) == (224, 392)
    assert smart_resize(1080, 1920, min_pixels=16 * PATCH, max_pixels=int(cap)) == (196, 392)


def test_smart_resize_rejects_extreme_aspect_ratio():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(2, 402, min_pixels=0, max_pixels=10**9)  # 201 > 200


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("h264_bframes.mp4", {"fps": 25, "seconds": 2, "bframes": 3, "gop": 12}),
        ("h264_ntsc.mp4", {"fps": 23.976, "seconds": 3, "bframes": 2}),
        ("h264_60fps.mp4", {"fps": 60, "seconds": 1}),
        ("mpeg4_bframes.avi", {"fps": 25, "seconds": 2, "codec": "mpeg4", "bframes": 2, "gop": 12}),
        ("mpeg4.mp4", {"fps": 29.97, "seconds": 2, "codec": "mpeg4"}),
        ("vp9.webm", {"fps": 25, "seconds": 2, "codec": "libvpx-vp9", "gop": 10}),
        ("with_audio.mp4", {"fps": 25, "seconds": 2, "audio": True}),
    ],
)
def test_decodes_the_sampled_frames(tmp_path, name, kwargs):
    path = make_video(tmp_path / name, size=(112, 56), **kwargs)
    clip = load_video(path, **NATIVE)
    rate = kwargs["fps"] if kwargs["fps"] not in (23.976, 29.97) else round(kwargs["fps"] * 1.001) / 1.001
    n = round(kwargs["seconds"] * rate)
    assert clip.total_frames == n
    assert clip.video_fps == pytest.approx(rate, rel=1e-9)
    expected_n = smart_nframes(n, clip.video_fps)
    assert clip.frame_indices == frame_indices(n, expected_n)
    assert clip.frames.dtype == torch.uint8
    assert tuple(clip.frames.shape) == (expected_n, 3, 56, 112)  # [T, 3, H, W]
    assert pattern_indices(clip) == clip.frame_indices  # the right frames, not just the count
    assert clip.sample_fps == expected_n / n * clip.video_fps
    assert clip.path == str(path)


def test_clip_timing(tmp_path):
    # 2 s at 25 fps = 50 frames; 4 frames at linspace(0, 49, 4) -> [0, 16, 33, 49]
    clip = load_video(make_video(tmp_path / "v.mp4", fps=25, seconds=2, size=(112, 56)), **NATIVE)
    assert clip.frame_indices == [0, 16, 33, 49]
    assert clip.timestamps == pytest.approx([0.0, 0.64, 1.32, 1.96])  # index / 25
    assert clip.duration == pytest.approx(2.0)  # 50 / 25
    assert clip.sample_fps == pytest.approx(2.0)  # 4 / 50 * 25
    with pytest.raises(AttributeError):
        clip.duration = 3.0  # frozen


def test_variable_frame_rate_uses_the_average_rate(tmp_path):
    # Gaps cycle 1/60, 1/30, 1/15, 1/30 s: 90 frames span 89 gaps = 2.9833 s; FFmpeg's average
    # rate is frames / stream duration = 90 / (2.9833 + 1/30 for the last frame) = 1800 / 67.
    path = make_video(tmp_path / "vfr.mp4", fps=30, n_frames=90, size=(112, 56), vfr=True, bframes=2)
    clip = load_video(path, **NATIVE)
    assert clip.total_frames == 90
    assert clip.video_fps == pytest.approx(1800 / 67)
    assert clip.frame_indices == frame_indices(90, 6)  # 90 / 26.87 * 2 = 6.7 -> 6
    assert pattern_indices(clip) == clip.frame_indices


def test_resizes_odd_and_portrait_frames(tmp_path):
    odd = load_video(make_video(tmp_path / "odd.mp4", size=(321, 239), pix_fmt="yuv444p"))
    assert tuple(odd.frames.shape[1:]) == (3, 280, 392)  # smart_resize(239, 321), see above
    portrait = load_video(make_video(tmp_path / "tall.webm", size=(90, 160), codec="libvpx-vp9"))
    assert tuple(portrait.frames.shape[1:]) == (3, 448, 252)  # smart_resize(160, 90)


def test_applies_display_rotation_like_decord(tmp_path):
    # Stored 112x56 with a 90-degree (counter-clockwise) display matrix: decord rotates the
    # frames to 56 wide x 112 high, and so do we.
    path = make_video(tmp_path / "rot.mp4", size=(112, 56), rotation=90)
    clip = load_video(path, **NATIVE)
    assert tuple(clip.frames.shape[1:]) == (3, 112, 56)
    upright = [read_pattern_index(torch.rot90(f, -1, dims=(1, 2)).numpy()) for f in clip.frames]
    assert upright == clip.frame_indices


def test_sparse_sampling_seeks_and_stays_exact(tmp_path, monkeypatch):
    # 20 s at 25 fps with a keyframe every 10 frames; at 0.25 fps we want 4 of 500 frames:
    # linspace(0, 499, 4) = [0, 166.33, 332.67, 499].
    path = make_video(tmp_path / "long.mp4", fps=25, seconds=20, size=(112, 56), bframes=2, gop=10)
    decoded = []
    original = video_mod._decoded_frames

    def counting(*args, **kwargs):
        for frame in original(*args, **kwargs):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video_mod, "_decoded_frames", counting)
    monkeypatch.setattr(video_mod, "_frames_by_count", None)  # the fallback must not be needed
    clip = load_video(path, fps=0.25, **NATIVE)
    assert clip.frame_indices == [0, 166, 333, 499]
    assert pattern_indices(clip) == [0, 166, 333, 499]
    # Each seek lands on the keyframe before the target (<= 10 frames early) and the decoder
    # runs a few frames past it, so far fewer than all 500 frames get decoded.
    assert len(decoded) < 120


def test_stream_copy_cut_counts_discarded_packets_like_decord(tmp_path):
    ffmpeg = require_ffmpeg_cli()  # cuts with an edit list
    source = make_video(tmp_path / "src.mp4", fps=25, seconds=4, size=(112, 56), bframes=2, gop=50)
    cut = tmp_path / "cut.mp4"
    # Stream copy from 0.5 s: the mp4 keeps frames 0-12 (from the keyframe) flagged "discard".
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-ss", "0.5", "-i", str(source), "-c", "copy", str(cut)], check=True
    )
    clip = load_video(cut, **NATIVE)
    # decord counts all 100 packets, so qwen samples 8 of 100; decoding yields frames 13..99
    # (87 frames), and decord's sequential read repeats the last one for indices 87..99.
    assert clip.total_frames == 100
    assert clip.frame_indices == [0, 14, 28, 42, 57, 71, 85, 99]
    assert pattern_indices(clip) == [13, 27, 41, 55, 70, 84, 98, 99]


def test_falls_back_to_counting_frames_when_pts_do_not_match(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", fps=25, seconds=2, size=(112, 56), bframes=2)

    def desync(*args, **kwargs):
        raise video_mod._Desync("simulated")
        yield  # a generator, like the real strategy

    monkeypatch.setattr(video_mod, "_frames_by_pts", desync)
    clip = load_video(path, **NATIVE)
    assert pattern_indices(clip) == clip.frame_indices == [0, 16, 33, 49]


def _decoder_stopping_after(monkeypatch, n_frames: int) -> None:
    """Make the decoder output only the first `n_frames` frames, like a damaged tail."""
    original = video_mod._decoded_frames

    def stopping(*args, **kwargs):
        for i, frame in enumerate(original(*args, **kwargs)):
            if i == n_frames:
                return
            yield frame

    monkeypatch.setattr(video_mod, "_decoded_frames", stopping)


def test_short_damaged_tail_repeats_the_last_decoded_frame(tmp_path, monkeypatch):
    # 50 frames, sampled at [0, 16, 33, 49]; frames 45..49 never come out of the decoder
    # (5 of 50, within the 25 % decord-style allowance): index 49 shows frame 44.
    path = make_video(tmp_path / "v.mp4", fps=25, seconds=2, size=(112, 56))
    _decoder_stopping_after(monkeypatch, 45)
    assert pattern_indices(load_video(path, **NATIVE)) == [0, 16, 33, 44]


def test_long_damaged_tail_is_rejected(tmp_path, monkeypatch):
    # Only 10 of 50 frames decode: 40 missing > 25 % of 50.
    path = make_video(tmp_path / "v.mp4", fps=25, seconds=2, size=(112, 56))
    _decoder_stopping_after(monkeypatch, 10)
    assert_decode_error(path, "only 10 of 50 frames")


def test_streaming_converts_only_sampled_frames(tmp_path, monkeypatch):
    # 30 s at 10 fps = 300 frames; at 0.5 fps we sample 14. Only those 14 may be converted to
    # RGB, and at most one full-resolution RGB frame may be alive at any time.
    path = make_video(tmp_path / "long.webm", fps=10, seconds=30, size=(112, 56), codec="libvpx-vp9")
    alive: list[weakref.ref] = []
    peak = 0
    original = video_mod._to_rgb

    def tracking(*args, **kwargs):
        nonlocal peak
        peak = max(peak, sum(ref() is not None for ref in alive))
        image = original(*args, **kwargs)
        alive.append(weakref.ref(image))
        return image

    monkeypatch.setattr(video_mod, "_to_rgb", tracking)
    clip = load_video(path, fps=0.5, **NATIVE)
    assert len(clip.frame_indices) == 14  # 300 / 10 * 0.5 = 15 -> floored to even
    assert len(alive) == 14
    assert peak <= 1
    assert pattern_indices(clip) == clip.frame_indices


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def assert_decode_error(path: Path, match: str, **kwargs) -> None:
    with pytest.raises(VideoDecodeError, match=match) as info:
        load_video(path, **kwargs)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    assert_decode_error(tmp_path / "nope.mp4", "does not exist")


def test_directory(tmp_path):
    assert_decode_error(tmp_path, "not a regular file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert_decode_error(path, "empty")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    assert_decode_error(path, "not a readable media file")


def test_truncated_mp4(tmp_path):
    # The default mp4 layout puts the index (moov) last: half a file has no index at all.
    data = make_video(tmp_path / "full.mp4", seconds=2).read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert_decode_error(path, "not a readable media file")


def test_truncated_faststart_mp4(tmp_path):
    # With the index first, the demuxer reads up to the cut and flags the last packet corrupt.
    full = make_video(tmp_path / "full.mp4", seconds=2, container_options={"movflags": "+faststart"})
    data = full.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * 0.6)])
    assert_decode_error(path, "truncated")


def test_audio_only_file(tmp_path):
    assert_decode_error(make_audio_only(tmp_path / "speech.mp4"), "no video stream")


def test_single_frame_video(tmp_path):
    assert_decode_error(make_video(tmp_path / "still.mp4", n_frames=1), "1 frame")


def test_extreme_aspect_ratio(tmp_path):
    path = make_video(tmp_path / "strip.mp4", n_frames=4, size=(404, 2), pix_fmt="yuv444p")
    assert_decode_error(path, "aspect ratio")  # 404 / 2 = 202 > 200


def test_timeout(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=2)
    assert_decode_error(path, "timeout_s", timeout_s=1e-9)
    assert load_video(path, timeout_s=60).total_frames == 50  # a generous limit is no limit


def test_bad_fps_argument(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        load_video(make_video(tmp_path / "v.mp4"), fps=0)
