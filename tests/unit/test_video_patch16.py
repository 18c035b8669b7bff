"""``load_video(..., patch_size=16)`` against qwen-vl-utils 0.0.14 (Qwen3-VL), from recorded outputs.

``tests/fixtures/qwen3_vl_reference/frame_sampling.json`` holds what 0.0.14's
``fetch_video(ele, image_patch_size=P)`` (decord backend) returned for 4 small videos x 12
settings x P in (16, 14). Every case ``load_video`` / ``load_video_window`` can express is checked
here: frame count, source frame indices, H x W, ``sample_fps``, ``timestamps = index / fps`` and
the frames themselves (sha256 of the float32 tensor; 0.0.14 resizes the uint8 frames and then
casts, so ``clip.frames.float()`` must give the same bytes). Patch 14 runs through the same table:
0.0.14 at patch 14 equals 0.0.10, which ``load_video`` reproduces by default.

Not expressible, hence skipped: ``nframes`` (a fixed frame count) and ``resized_height`` /
``resized_width``. ``video_start`` / ``video_end`` map to :func:`load_video_window`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from museg_lit.data.cache import cache_key, load_video_cached
from museg_lit.data.video import load_video, load_video_window, pixel_defaults

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qwen3_vl_reference"
REFERENCE = json.loads((FIXTURES / "frame_sampling.json").read_text())
LOAD_VIDEO_KEYS = {"fps", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels"}
WINDOW_KEYS = {"video_start", "video_end"}
UNSUPPORTED = {"nframes", "resized_height", "resized_width"}


def _case_id(case: dict) -> str:
    return f"p{case['image_patch_size']}-{case['video']}-{case['setting']}"


CASES = REFERENCE["cases"]
COVERED = [c for c in CASES if not set(c["ele"]) & UNSUPPORTED]
SKIPPED = [c for c in CASES if set(c["ele"]) & UNSUPPORTED]


def _load(case: dict):
    ele = dict(case["ele"])
    path = FIXTURES / REFERENCE["videos"][case["video"]]["file"]
    settings = {k: v for k, v in ele.items() if k in LOAD_VIDEO_KEYS}
    assert set(ele) <= LOAD_VIDEO_KEYS | WINDOW_KEYS, ele
    if WINDOW_KEYS & set(ele):
        return load_video_window(path, ele["video_start"], ele["video_end"],
                                 patch_size=case["image_patch_size"], **settings)
    return load_video(path, patch_size=case["image_patch_size"], **settings)


def test_fixture_coverage():
    # 4 videos x 12 settings x 2 patch sizes; nframes5, nframes6 and resized are not expressible.
    assert len(CASES) == 96
    assert {c["setting"] for c in SKIPPED} == {"nframes5", "nframes6", "resized"}
    assert len(COVERED) == 72
    assert {c["image_patch_size"] for c in COVERED} == {14, 16}


@pytest.mark.parametrize("case", COVERED, ids=_case_id)
def test_matches_qwen_vl_utils_0_0_14(case):
    clip = _load(case)
    meta = case["metadata"]
    assert len(clip.frames) == case["n_frames"]
    assert clip.frame_indices == case["frames_indices"]
    assert tuple(clip.frames.shape) == (case["n_frames"], 3, case["height"], case["width"])
    assert clip.video_fps == pytest.approx(meta["fps"], rel=1e-12)
    assert clip.sample_fps == pytest.approx(case["sample_fps"], rel=1e-12)
    assert clip.timestamps == pytest.approx([i / meta["fps"] for i in case["frames_indices"]], rel=1e-12)
    factor = 2 * case["image_patch_size"]
    assert case["height"] % factor == 0 and case["width"] % factor == 0
    frames = clip.frames.float().contiguous()  # [T, 3, H, W]
    assert hashlib.sha256(frames.numpy().tobytes()).hexdigest() == case["frames"]["sha256"]


def test_patch16_defaults_are_0_0_14_constants():
    c = REFERENCE["constants_0_0_14"]
    min_pixels, max_pixels, total = pixel_defaults(16)
    assert min_pixels == c["VIDEO_MIN_TOKEN_NUM"] * 32 * 32 == 131072
    assert max_pixels == c["VIDEO_MAX_TOKEN_NUM"] * 32 * 32 == 786432
    assert total == c["MODEL_SEQ_LEN"] * 32 * 32 * 0.9
    assert pixel_defaults(14) == (128 * 28 * 28, 768 * 28 * 28, 90316800)


def test_bad_patch_size_is_rejected():
    path = FIXTURES / "videos" / "v15_64x48_23f.mp4"
    with pytest.raises(ValueError, match="patch_size"):
        load_video(path, patch_size=15)


def test_cache_key_and_cached_load_carry_patch_size(tmp_path):
    path = FIXTURES / "videos" / "v10_96x72_50f.mp4"
    explicit = dict(min_pixels=1024, max_pixels=4096)
    assert cache_key(path, **explicit) != cache_key(path, patch_size=16, **explicit)
    # None resolves to the patch size's defaults before hashing.
    assert cache_key(path) == cache_key(path, min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28)
    assert cache_key(path, patch_size=16) == cache_key(path, patch_size=16, min_pixels=131072, max_pixels=786432)
    for patch in (14, 16, 16):  # the second 16 is a cache hit
        clip = load_video_cached(path, cache_dir=tmp_path, patch_size=patch)
        assert clip.frames.shape[-1] % (2 * patch) == 0
        assert clip.frames.shape[-2:] == load_video(path, patch_size=patch).frames.shape[-2:]
