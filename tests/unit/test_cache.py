"""On-disk clip cache: hits equal decodes, keys follow file and settings, bad entries are misses,
and processes writing the same entry at once leave one complete entry."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared video helpers

from museg_lit.data import cache as cache_mod  # noqa: E402
from museg_lit.data.cache import ClipCache, cache_key, get_cache, load_video_cached  # noqa: E402
from museg_lit.data.video import VideoDecodeError, load_video  # noqa: E402
from videos import make_video  # noqa: E402

SETTINGS = dict(
    fps=2.0, min_frames=4, max_frames=16, min_pixels=28 * 28, max_pixels=56 * 56, total_pixels=None
)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 3 s at 10 fps, 64x48: decodes in a few ms, yields 6 frames at fps 2.
    return make_video(tmp_path_factory.mktemp("cache_video") / "v.mp4", fps=10, seconds=3.0)


@pytest.fixture(autouse=True)
def fresh_caches():
    cache_mod._CACHES.clear()  # per-directory stats start at zero in every test
    yield
    cache_mod._CACHES.clear()


def _entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.clip"))


def _assert_same_clip(a, b) -> None:
    assert torch.equal(a.frames, b.frames)
    assert a.frames.dtype == torch.uint8
    for name in (
        "sample_fps",
        "timestamps",
        "duration",
        "frame_indices",
        "video_fps",
        "total_frames",
        "path",
    ):
        assert getattr(a, name) == getattr(b, name), name


def test_miss_then_hit_returns_the_decoded_clip(video, tmp_path):
    reference = load_video(video, **SETTINGS)
    first = load_video_cached(video, cache_dir=tmp_path, **SETTINGS)  # miss: decode + write
    second = load_video_cached(video, cache_dir=tmp_path, **SETTINGS)  # hit: read back
    _assert_same_clip(first, reference)
    _assert_same_clip(second, reference)
    stats = get_cache(tmp_path).stats
    assert (stats.misses, stats.hits, stats.corrupt) == (1, 1, 0)
    (entry,) = _entries(tmp_path)
    assert entry.parent.name == entry.stem[:2]  # two-character fan-out directory
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


def test_cache_off_writes_nothing(video, tmp_path):
    clip = load_video_cached(video, cache_dir=None, **SETTINGS)
    assert clip.frames.shape[0] == 6 and not list(tmp_path.iterdir())


def test_key_changes_with_settings_and_file(video, tmp_path):
    base = cache_key(video, **SETTINGS)
    assert base == cache_key(video, **{**SETTINGS, "fps": 2})  # 2 == 2.0: same entry
    for change in (
        {"fps": 1.0},
        {"min_frames": 6},
        {"max_frames": 8},
        {"min_pixels": 56 * 56},
        {"max_pixels": 28 * 28 * 9},
        {"total_pixels": 10**6},
    ):
        assert cache_key(video, **{**SETTINGS, **change}) != base, change
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(video.read_bytes())
    os.utime(copy, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns))
    assert cache_key(copy, **SETTINGS) != base  # another path, same bytes and mtime
    copy_key = cache_key(copy, **SETTINGS)
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 1_000_000))
    assert cache_key(copy, **SETTINGS) != copy_key  # touched: mtime_ns differs


def test_default_total_pixels_is_resolved_into_the_key(video, monkeypatch):
    # total_pixels=None means qwen-vl-utils' budget, which the environment can override.
    default = cache_key(video, **SETTINGS)
    monkeypatch.setenv("VIDEO_MAX_PIXELS", str(28 * 28 * 64))
    assert cache_key(video, **SETTINGS) != default


def test_decoder_version_is_in_the_key(video, monkeypatch):
    before = cache_key(video, **SETTINGS)
    monkeypatch.setattr(cache_mod, "DECODER_VERSION", "test-bump")
    assert cache_key(video, **SETTINGS) != before


def test_rewritten_video_is_decoded_again(tmp_path):
    path = make_video(tmp_path / "v.mp4", fps=10, seconds=3.0)
    cache_dir = tmp_path / "cache"
    first = load_video_cached(path, cache_dir=cache_dir, **SETTINGS)
    make_video(path, fps=10, seconds=5.0)  # same path, new content (and size/mtime)
    second = load_video_cached(path, cache_dir=cache_dir, **SETTINGS)
    assert (first.frames.shape[0], second.frames.shape[0]) == (6, 10)
    assert get_cache(cache_dir).stats.hits == 0 and len(_entries(cache_dir)) == 2


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip_payload_byte", "garbage", "empty", "bad_header_json", "foreign_key"],
)
def test_corrupt_entry_is_a_miss_and_is_replaced(video, tmp_path, damage, caplog):
    reference = load_video_cached(video, cache_dir=tmp_path, **SETTINGS)
    (entry,) = _entries(tmp_path)
    data = bytearray(entry.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_payload_byte":
        data[-10] ^= 0xFF  # caught by the CRC only: size and header are intact
    elif damage == "garbage":
        data = bytearray(b"not a clip at all" * 10)
    elif damage == "empty":
        data = bytearray()
    elif damage == "bad_header_json":
        data[12] = ord("#")  # first header byte: '{' -> '#'
    elif damage == "foreign_key":
        other = cache_key(video, **{**SETTINGS, "fps": 1.0})
        key = entry.stem
        data = bytearray(bytes(data).replace(key.encode(), other.encode(), 1))
    entry.write_bytes(bytes(data))

    cache_mod._CACHES.clear()
    clip = load_video_cached(video, cache_dir=tmp_path, **SETTINGS)
    _assert_same_clip(clip, reference)
    stats = get_cache(tmp_path).stats
    assert (stats.hits, stats.misses, stats.corrupt) == (0, 1, 1)
    assert "unreadable entry" in caplog.text
    # ... and the entry was rewritten: the next load is a clean hit.
    again = load_video_cached(video, cache_dir=tmp_path, **SETTINGS)
    _assert_same_clip(again, reference)
    assert stats.hits == 1


def test_unwritable_cache_dir_does_not_fail_the_load(video, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    clip = load_video_cached(video, cache_dir=blocker, **SETTINGS)
    assert clip.frames.shape[0] == 6
    assert get_cache(blocker).stats.write_errors == 1 and "cannot write" in caplog.text


def test_decode_errors_pass_through_and_are_not_cached(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        load_video_cached(bad, cache_dir=tmp_path / "cache", **SETTINGS)
    with pytest.raises(VideoDecodeError, match="does not exist"):
        load_video_cached(tmp_path / "missing.mp4", cache_dir=tmp_path / "cache", **SETTINGS)
    assert not _entries(tmp_path)


def _write_same_entry(video, cache_dir, key, clip, rounds, barrier) -> None:
    """Child process: write the entry for ``key`` ``rounds`` times, reading it back after each write."""
    barrier.wait()  # start both writers together
    cache = ClipCache(cache_dir)
    for _ in range(rounds):
        assert cache.put(key, clip) is not None
        read = cache.get(key, video)
        # A reader racing the other writer sees a complete entry every time, never a torn one.
        # (numpy, not torch.equal: torch's OpenMP pool does not survive fork.)
        assert read is not None and np.array_equal(read.frames.numpy(), clip.frames.numpy())


def test_concurrent_writers_leave_one_complete_entry(video, tmp_path):
    # fork: the children only write and read files (no decoding, no torch kernels that would use
    # the parent's OpenMP pool), so forking is safe and costs milliseconds where spawn would
    # re-import torch.
    ctx = mp.get_context("fork")
    key, clip = cache_key(video, **SETTINGS), load_video(video, **SETTINGS)
    barrier = ctx.Barrier(2)
    writers = [
        ctx.Process(target=_write_same_entry, args=(video, tmp_path, key, clip, 50, barrier))
        for _ in range(2)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    assert [w.exitcode for w in writers] == [0, 0]
    assert len(_entries(tmp_path)) == 1 and not list(tmp_path.rglob("*.tmp"))
    cache = ClipCache(tmp_path)
    _assert_same_clip(cache.get(key, video), clip)
    assert cache.stats.corrupt == 0
