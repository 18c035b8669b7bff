"""Small synthetic test videos whose frames carry their own frame index.

Shared helpers for the test suite (import as ``from videos import make_video`` once ``tests/`` is on
``sys.path``). Videos are written with PyAV, so no ffmpeg binary is needed; ``make_video_ffmpeg``
uses the ffmpeg CLI for a "produced by the real tool" variant when it is installed.

Every frame made by :func:`pattern_frame` shows, along its top edge, four grey 16x16 blocks that
spell the frame index in base 16 (most significant block first, grey level ``8 + 16 * digit``).
:func:`read_pattern_index` reads that index back from a decoded frame, so a test can check *which*
frame a decoder returned instead of trusting pixel diffs. Grey blocks survive 4:2:0 chroma
subsampling and ordinary lossy coding (levels are 16 apart, coding error is a few levels); the
rest of the frame is a colour gradient that moves with the index, so neighbouring frames differ
everywhere and colour conversion is exercised.

Import this module (PyAV) before ``decord``: decord loads its own FFmpeg 4.1 libraries with
``RTLD_GLOBAL``, after which PyAV's libvpx encoder fails to open (decoding is unaffected).
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BLOCK = 16  # side of one index block, in pixels
DIGITS = 4  # index blocks per frame: indices 0 .. 16**4 - 1
MIN_PATTERN_WIDTH = BLOCK * DIGITS  # frames narrower than this cannot carry the full index

# Encoder settings per codec: fast, and good enough quality that the index blocks stay readable.
_CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast", "crf": "18"},
    "mpeg4": {"flags": "+qscale", "global_quality": str(2 * 118)},  # -q:v 2 (118 = FF_QP2LAMBDA)
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "1M"},
}


def as_rate(fps: float | int | str | Fraction) -> Fraction:
    """Frame rate as an exact fraction; NTSC-style floats map to their x/1001 rationals.

    ``as_rate(23.976) == Fraction(24000, 1001)``, ``as_rate(29.97) == Fraction(30000, 1001)``,
    ``as_rate(25) == Fraction(25)``; strings such as ``"30000/1001"`` are parsed as written.
    """
    if isinstance(fps, Fraction):
        return fps
    if isinstance(fps, str):
        return Fraction(fps)
    ntsc = float(fps) * 1.001
    if abs(ntsc - round(ntsc)) < 1e-3 and abs(float(fps) - round(float(fps))) > 1e-3:
        return Fraction(round(ntsc) * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def _triangle(v: np.ndarray) -> np.ndarray:
    """0 -> 255 -> 0 triangle wave of period 510: a gradient that moves without wrapping around.

    A wrapping (mod 256) gradient would put a hard colour edge somewhere in every frame, which is
    both unlike real video and the worst case for chroma subsampling.
    """
    return 255 - np.abs(v % 510 - 255)


def pattern_frame(index: int, height: int, width: int) -> np.ndarray:
    """RGB frame ``[H, W, 3]`` uint8 for frame ``index``: index blocks on a moving colour gradient."""
    if not 0 <= index < 16**DIGITS:
        raise ValueError(f"index {index} does not fit in {DIGITS} base-16 blocks")
    y = np.arange(height, dtype=np.int64)[:, None]  # [H, 1]
    x = np.arange(width, dtype=np.int64)[None, :]  # [1, W]
    shift = 9 * index  # moves the gradient every frame, so any off-by-one frame is visible
    r = _triangle(x * 255 // max(width - 1, 1) + shift)  # [1, W]
    g = _triangle(y * 255 // max(height - 1, 1) + 2 * shift)  # [H, 1]
    b = _triangle((x + y) * 2 + 3 * shift)  # [H, W]
    frame = np.stack(np.broadcast_arrays(r, g, b), axis=-1).astype(np.uint8)  # [H, W, 3]
    digits = [(index // 16 ** (DIGITS - 1 - k)) % 16 for k in range(DIGITS)]
    for k, digit in enumerate(digits):
        frame[:BLOCK, k * BLOCK : (k + 1) * BLOCK] = 8 + 16 * digit
    return frame


def read_pattern_index(frame: np.ndarray) -> int:
    """Index written by :func:`pattern_frame`, read from a decoded RGB frame.

    Accepts ``[H, W, 3]`` or ``[3, H, W]`` (numpy or anything ``np.asarray`` takes) at the
    *original* resolution; each block is read from its central 8x8 pixels, averaged over channels.
    """
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)  # [H, W, 3]
    index = 0
    for k in range(DIGITS):
        block = arr[4 : BLOCK - 4, k * BLOCK + 4 : (k + 1) * BLOCK - 4].astype(np.float64)
        digit = int(np.clip(np.rint((block.mean() - 8) / 16), 0, 15))
        index = index * 16 + digit
    return index


def vfr_timestamps(n_frames: int, fps: float | Fraction) -> list[Fraction]:
    """Presentation times (seconds) of a variable-frame-rate clip around ``fps``.

    Frame gaps cycle through 0.5x, 1x, 2x and 1x the nominal period, so the clip has no single
    frame rate and its average rate is the nominal one.
    """
    period = 1 / as_rate(fps)
    gaps = [period / 2, period, period * 2, period]
    times, t = [], Fraction(0)
    for i in range(n_frames):
        times.append(t)
        t += gaps[i % len(gaps)]
    return times


def make_video(
    path: str | Path,
    *,
    fps: float | str | Fraction = 25,
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    bframes: int = 0,
    gop: int | None = None,
    vfr: bool = False,
    rotation: int = 0,
    audio: bool = False,
    n_frames: int | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write a pattern video with PyAV and return its path.

    Args:
        path: output file; the container follows the suffix (``.mp4``, ``.webm``, ``.mkv``, ``.avi``).
        fps: nominal frame rate (``23.976`` and ``29.97`` become the exact NTSC rationals).
        seconds: duration; the clip has ``round(seconds * fps)`` frames unless ``n_frames`` is given.
        size: ``(width, height)``. 4:2:0 formats need even sizes for libx264; use ``yuv444p`` for odd.
        codec: PyAV encoder name: ``libx264`` (H.264), ``mpeg4`` (MPEG-4 Part 2), ``libvpx-vp9``, ...
        bframes: maximum consecutive B-frames (0 = none); ignored by VP9.
        gop: keyframe interval in frames (encoder default when ``None``).
        vfr: frame gaps follow :func:`vfr_timestamps` instead of a constant period.
        rotation: display-matrix rotation in degrees, counter-clockwise (PyAV's convention).
        audio: also mux a quiet AAC (or Opus, for webm) track.
        n_frames: exact frame count, overrides ``seconds``.
        options: extra encoder options, merged over the per-codec defaults.
        container_options: muxer options, e.g. ``{"movflags": "+faststart"}`` for an mp4 whose
            index precedes the media data.
    """
    path = Path(path)
    rate = as_rate(fps)
    width, height = size
    n = n_frames if n_frames is not None else max(1, round(seconds * rate))
    times = vfr_timestamps(n, rate) if vfr else [i / rate for i in range(n)]
    # A fine time base gives VFR clips exact timestamps; CFR clips use 1/fps like most encoders.
    time_base = Fraction(1, 90000) if vfr else 1 / rate

    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = time_base
        opts = dict(_CODEC_OPTIONS.get(codec, {}))
        if gop is not None:
            opts["g"] = str(gop)
        if codec != "libvpx-vp9":
            opts["bf"] = str(bframes)
        opts.update(options or {})
        stream.options = opts
        if rotation:
            stream.set_display_rotation(rotation)
        astream = None
        if audio:
            acodec = "libopus" if path.suffix == ".webm" else "aac"
            astream = container.add_stream(acodec, rate=48000)
            astream.layout = "stereo"

        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(pattern_frame(i, height, width), format="rgb24")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None:
            _encode_silence(container, astream, float(times[-1] + 1 / rate))
    return path


def _encode_silence(container: av.container.OutputContainer, astream, seconds: float) -> None:
    """Encode ``seconds`` of near-silence (a quiet 440 Hz tone) into ``astream``."""
    rate, chunk = 48000, 960
    total = int(seconds * rate)
    for start in range(0, total, chunk):
        t = (np.arange(chunk) + start) / rate
        tone = (0.01 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        samples = np.stack([tone, tone])  # [2, chunk] planar stereo
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        for packet in astream.encode(frame):
            container.mux(packet)
    for packet in astream.encode():
        container.mux(packet)


def make_audio_only(path: str | Path, *, seconds: float = 1.0) -> Path:
    """Write a file with one AAC audio stream and no video stream (container from the suffix)."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        astream = container.add_stream("aac", rate=48000)
        astream.layout = "stereo"
        _encode_silence(container, astream, seconds)
    return path


def make_video_ffmpeg(
    path: str | Path,
    *,
    fps: float | str | Fraction = 25,
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    extra_args: list[str] | None = None,
) -> Path:
    """Write ffmpeg's ``testsrc2`` pattern (plus a sine audio track) with the ffmpeg CLI.

    These frames do not carry a readable index; use them for "made by the real tool" coverage
    (ffmpeg's default muxer settings, edit lists, audio interleaving). Raises ``FileNotFoundError``
    when no ``ffmpeg`` binary is on ``PATH``.
    """
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FileNotFoundError("ffmpeg CLI not found on PATH")
    path = Path(path)
    rate = as_rate(fps)
    width, height = size
    cmd = [
        exe, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={rate.numerator}/{rate.denominator}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", f"{seconds}", "-c:v", codec, "-pix_fmt", pix_fmt, *(extra_args or []),
        "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path
