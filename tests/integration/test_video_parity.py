"""Parity of ``load_video`` with the real qwen-vl-utils 0.0.10 ``fetch_video`` on decord 0.6.0.

Skipped unless both are installed (``pip install qwen-vl-utils==0.0.10 decord==0.6.0``). For each
generated video and argument set, checks exactly: the frame count decord reports (``len(vr)``),
its fps (``get_avg_fps()``), the number of sampled frames and their indices (re-derived with
qwen's own ``smart_nframes`` and the ``linspace().round()`` it uses), the resized H x W and
``sample_fps``; and that pixels are within mean abs diff 1 (on 0..255) of qwen's float output.

Two kinds of video hit decord *seek* bugs, where ``fetch_video`` returns frames other than the
ones at its own indices: MPEG-4 Part 2 with B-frames, and mp4 edit lists from stream-copy cuts.
There the pixel reference is decord reading the whole video sequentially (which is correct),
sampled at qwen's indices and resized with qwen's exact torchvision call; the test also asserts
that fetch_video's own frames do differ, so a decord fix would show up here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

# PyAV (imported by both modules below) must load before decord: decord loads its bundled FFmpeg 4.1
# libraries with RTLD_GLOBAL, and if it comes first PyAV's libvpx encoder fails to open (EINVAL).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared video helpers
from museg_lit.data.video import load_video  # noqa: E402
from tests.optional import require_module, skip_optional  # noqa: E402
from videos import make_video, make_video_ffmpeg  # noqa: E402

decord = require_module("decord", "decord==0.6.0 (x86-64 Linux wheels only)")
vision_process = require_module("qwen_vl_utils.vision_process", "qwen-vl-utils==0.0.10")

PATCH = 28 * 28
ARGS = {
    # qwen-vl-utils defaults; total_pixels None = its VIDEO_TOTAL_PIXELS budget
    "default": {"fps": 2.0, "min_frames": 4, "max_frames": 768, "min_pixels": 128 * PATCH,
                "max_pixels": 768 * PATCH, "total_pixels": None},
    # MUSEG training / evaluation settings
    "museg": {"fps": 2.0, "min_frames": 4, "max_frames": 448, "min_pixels": 16 * PATCH,
              "max_pixels": 768 * PATCH, "total_pixels": 3584 * PATCH},
    # sparse sampling with a frame cap (exercises keyframe seeks) and a tight pixel budget
    "sparse": {"fps": 0.5, "min_frames": 3, "max_frames": 7, "min_pixels": 32 * PATCH,
               "max_pixels": 256 * PATCH, "total_pixels": 600 * PATCH},
}  # fmt: skip


@dataclass(frozen=True)
class Kind:
    make: dict = field(default_factory=dict)  # make_video arguments
    ffmpeg: bool = False  # made with the ffmpeg CLI (testsrc2 + audio) instead
    cut: float | None = None  # then stream-copy cut from this many seconds (edit list)
    decord_seek_bug: bool = False
    max_mad: float = 1.0


KINDS = {
    "h264_23.976fps_bframes": Kind({"fps": 23.976, "seconds": 5, "size": (160, 120), "bframes": 3, "gop": 12}),
    "h264_25fps_1s": Kind({"fps": 25, "seconds": 1, "size": (64, 48)}),
    "h264_29.97fps_odd_444": Kind({"fps": 29.97, "seconds": 3, "size": (321, 239), "pix_fmt": "yuv444p", "bframes": 2}),
    "h264_60fps_portrait": Kind({"fps": 60, "seconds": 2, "size": (90, 160)}),
    "h264_vfr": Kind({"fps": 30, "seconds": 4, "size": (128, 96), "vfr": True, "bframes": 2}),
    "h264_rotated_90": Kind({"fps": 25, "seconds": 2, "size": (128, 96), "rotation": 90}),
    "h264_20s_long_gop": Kind({"fps": 30, "seconds": 20, "size": (64, 48), "bframes": 3, "gop": 250}),
    "h264_aac_30s_ffmpeg_cli": Kind({"fps": 29.97, "seconds": 30, "size": (160, 90)}, ffmpeg=True),
    "h264_editlist_cut": Kind({"fps": 25, "seconds": 4, "size": (128, 96), "bframes": 2, "gop": 50},
                              cut=0.5, decord_seek_bug=True),
    "mpeg4_mp4": Kind({"fps": 25, "seconds": 3, "size": (160, 120), "codec": "mpeg4"}),
    "mpeg4_avi_bframes": Kind({"fps": 25, "seconds": 3, "size": (160, 120), "codec": "mpeg4", "bframes": 2},
                              decord_seek_bug=True),
    "vp9_webm": Kind({"fps": 25, "seconds": 3, "size": (160, 120), "codec": "libvpx-vp9"}),
    # odd height 4:2:0: FFmpeg 8 and 4.1 interpolate chroma slightly differently (~0.5-0.6 here)
    "vp9_webm_odd_29.97fps": Kind({"fps": 29.97, "seconds": 2, "size": (321, 239), "codec": "libvpx-vp9"}),
    "vp9_webm_vfr": Kind({"fps": 30, "seconds": 4, "size": (128, 96), "codec": "libvpx-vp9", "vfr": True}),
}  # fmt: skip

SUFFIX = {"mpeg4_avi_bframes": ".avi"}


def _make(kind_name: str, kind: Kind, folder: Path) -> Path:
    suffix = ".webm" if kind.make.get("codec") == "libvpx-vp9" else SUFFIX.get(kind_name, ".mp4")
    path = folder / f"{kind_name}{suffix}"
    if kind.ffmpeg:
        make_video_ffmpeg(path, extra_args=["-preset", "veryfast", "-bf", "3"], **kind.make)
    else:
        make_video(path, **kind.make)
    if kind.cut is not None:
        cut = folder / f"{kind_name}_cut{suffix}"
        subprocess.run(
            [shutil.which("ffmpeg") or "ffmpeg", "-v", "error", "-y", "-ss", str(kind.cut), "-i", str(path),
             "-c", "copy", str(cut)],
            check=True,
        )  # fmt: skip
        path = cut
    return path


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    """All parity videos, made once per session."""
    folder = tmp_path_factory.mktemp("parity_videos")
    has_ffmpeg = shutil.which("ffmpeg") is not None
    return {
        name: _make(name, kind, folder)
        for name, kind in KINDS.items()
        if has_ffmpeg or not (kind.ffmpeg or kind.cut is not None)
    }


@pytest.fixture(scope="session", autouse=True)
def decord_only():
    """Force the decord backend and forbid qwen's silent fallback to torchvision's reader."""
    mp = pytest.MonkeyPatch()
    mp.setattr(vision_process, "FORCE_QWENVL_VIDEO_READER", "decord")
    vision_process.get_video_reader_backend.cache_clear()

    def no_fallback(ele):
        raise AssertionError(f"decord failed on {ele['video']}; qwen-vl-utils fell back to torchvision")

    mp.setitem(vision_process.VIDEO_READER_BACKENDS, "torchvision", no_fallback)
    yield
    mp.undo()
    vision_process.get_video_reader_backend.cache_clear()


def qwen_fetch(path: Path, args: dict) -> tuple[torch.Tensor, float]:
    ele = {"video": str(path), **{k: v for k, v in args.items() if v is not None}}
    return vision_process.fetch_video(ele, return_video_sample_fps=True)


def sequential_reference(path: Path, indices: list[int], size: tuple[int, int]) -> torch.Tensor:
    """The frames at ``indices`` from decord reading every frame in order, resized like qwen."""
    vr = decord.VideoReader(str(path))
    everything = torch.from_numpy(vr.get_batch(list(range(len(vr)))).asnumpy())  # [N, H, W, 3]
    picked = everything[indices].permute(0, 3, 1, 2)  # [T, 3, H, W]
    return vision_process.transforms.functional.resize(
        picked, list(size), interpolation=vision_process.InterpolationMode.BICUBIC, antialias=True
    ).float()  # [T, 3, h, w]


def check_parity(path: Path, kind: Kind, args: dict) -> float:
    qwen_video, qwen_sample_fps = qwen_fetch(path, args)  # [T, 3, h, w] float32
    clip = load_video(path, **args)

    vr = decord.VideoReader(str(path))
    total, fps = len(vr), vr.get_avg_fps()
    assert (clip.total_frames, clip.video_fps) == (total, fps)
    ele = {k: args[k] for k in ("fps", "min_frames", "max_frames")}
    nframes = vision_process.smart_nframes(ele, total_frames=total, video_fps=fps)
    qwen_indices = torch.linspace(0, total - 1, nframes).round().long().tolist()
    assert clip.frame_indices == qwen_indices
    assert clip.frames.shape == qwen_video.shape  # [T, 3, h, w]: count and resized size
    assert clip.frames.dtype == torch.uint8
    assert clip.sample_fps == qwen_sample_fps  # exact float equality

    if kind.decord_seek_bug:
        reference = sequential_reference(path, qwen_indices, tuple(qwen_video.shape[2:]))
        buggy = (qwen_video - reference).abs().mean().item()
        mad = (clip.frames.float() - reference).abs().mean().item()
        assert buggy > 5 * max(mad, 1.0), "fetch_video now returns the right frames: drop the workaround"
    else:
        mad = (clip.frames.float() - qwen_video).abs().mean().item()
    assert mad <= kind.max_mad, f"mean abs pixel diff {mad:.3f} > {kind.max_mad}"
    return mad


@pytest.mark.parametrize("args_name", list(ARGS))
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_parity_with_qwen_vl_utils(videos, kind_name, args_name):
    if kind_name not in videos:
        skip_optional("the ffmpeg CLI", "apt-get install ffmpeg (make install does it as root)")
    check_parity(videos[kind_name], KINDS[kind_name], ARGS[args_name])


@pytest.mark.slow
def test_parity_ten_minute_video(tmp_path):
    # 10 min at 25 fps = 15000 frames: max_frames caps the count and frames are ~0.8 s apart.
    kind = Kind({"fps": 25, "seconds": 600, "size": (64, 48), "bframes": 2, "gop": 250})
    path = _make("h264_10min", kind, tmp_path)
    for args in ARGS.values():
        check_parity(path, kind, args)
