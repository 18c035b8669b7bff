"""Video decoding and frame sampling, exact to qwen-vl-utils 0.0.10 ``fetch_video`` (decord backend),
and with ``patch_size=16`` to qwen-vl-utils 0.0.14 ``fetch_video(..., image_patch_size=16)`` (Qwen3-VL).

``load_video(path, fps=..., ...)`` returns the frames Qwen2.5-VL sees for a video: which frames
are sampled, how many, their resized height x width and the ``sample_fps`` passed to the
processor all equal ``qwen_vl_utils.fetch_video({"video": path, ...}, return_video_sample_fps=True)``
run with ``FORCE_QWENVL_VIDEO_READER=decord``. The arithmetic lives in four small pure helpers
(``smart_nframes``, ``frame_indices``, ``video_max_pixels``, ``smart_resize``); the decoder follows
decord 0.6.0's definitions of the video it reads:

- ``total_frames`` is the number of *packets* of the best video stream (decord's ``len(vr)`` is
  the size of its packet index, not the container's ``nb_frames``, which is 0 for webm);
- ``video_fps`` is the stream's ``avg_frame_rate`` (decord's ``get_avg_fps()``), not the
  guessed or base rate, which differ on variable-frame-rate files;
- frame ``i`` is the frame with the ``i``-th smallest packet pts (decord sorts its index by pts);
- frames are rotated by the display matrix in steps of 90 degrees, as decord does, and scaled to
  the stream's coded size if a frame arrives at another size.

``patch_size`` (Qwen2.5-VL: 14, the default; Qwen3-VL / Qwen3.5: 16). qwen-vl-utils 0.0.14 keeps
0.0.10's frame rules (``smart_nframes``, the float32 ``linspace(...).round()`` indices,
``sample_fps = n / total * fps``, ``smart_resize``, the ``total_pixels / n * 2`` budget) and
only makes the pixel arithmetic depend on ``image_patch_size``. With ``patch_size=16``:

- sides are multiples of ``2 * patch_size`` = 32 (0.0.10: always 28);
- the defaults are counted in tokens of ``(2 * patch_size)**2`` pixels: ``min_pixels`` 128 tokens
  (131072), the per-frame cap 768 tokens (786432) and ``total_pixels`` ``MODEL_SEQ_LEN`` x 0.9
  tokens = 128000 * 32 * 32 * 0.9 (0.0.14 reads the env var ``MODEL_SEQ_LEN``, default 128000;
  0.0.10 read a pixel count from ``VIDEO_MAX_PIXELS``, which ``patch_size=14`` still does). Pass
  ``min_pixels`` / ``max_pixels`` as ``None`` (their default) to get the defaults of the chosen
  patch size; with ``patch_size=14`` they are exactly the old ``VIDEO_MIN_PIXELS`` /
  ``VIDEO_MAX_PIXELS``, so nothing changes for Qwen2.5-VL;
- 0.0.14 returns float32 frames and ``video_metadata`` (``fps``, ``frames_indices``,
  ``total_num_frames``). The clip still holds uint8 frames: 0.0.14 resizes the decoded uint8
  tensor (the same torchvision call) and only then casts, so ``clip.frames.float()`` is
  bit-identical to its frames (checked by sha256 in ``tests/unit/test_video_patch16.py``);
  its metadata is ``video_fps`` and ``frame_indices`` (absolute source frames, also for a window),
  and ``timestamps[k] = frame_indices[k] / video_fps``, the times Qwen3-VL's ``<t seconds>``
  markers are computed from.

Not exposed (here, as for 0.0.10): ``nframes`` and ``resized_height`` / ``resized_width``. One
edge case differs from both releases: without ``max_pixels`` qwen-vl-utils caps a frame at
``max(min(768 tokens, budget), int(1.05 * min_pixels))``, while ``max_pixels=None`` here also caps
it at 768 tokens, which matters only for ``min_pixels`` above about 731 tokens.

Where this module departs from qwen-vl-utils:

- It decodes with PyAV (FFmpeg 8) instead of decord (which bundles FFmpeg 4.1), and *streams*:
  only sampled frames are converted to RGB, each is resized as soon as it is decoded (on a
  second thread, so that the decoder is fed meanwhile: ``_ResizeWorker``), and the decoder
  seeks to the keyframe of the next sampled frame when that skips enough frames. Peak memory
  is the sampled, resized clip plus a few full-size frames in flight (and a packet index of a
  few dozen bytes per frame), where qwen-vl-utils holds every sampled frame at full resolution and
  then resizes the batch. torch runs single-threaded while frames are decoded (see
  ``_torch_single_thread``), so its OpenMP workers do not starve FFmpeg's decoder threads.
- For H.264 and HEVC it does not decode frames that are neither sampled nor referenced by
  other frames (``skip_frame=NONREF`` on every packet whose pts is not a sampled frame's, see
  ``_decoded_frames``). Sampled frames are bit-identical either way (the reference chain is
  untouched); with B-frames this skips a third to a half of the decode work.
- Frames are uint8 ``[T, 3, H, W]``. qwen-vl-utils resizes the same uint8 tensor with the same
  torchvision call and then casts to float32, so values are equal after ``.float()``. RGB
  conversion is bit-identical to decord's except for 4:2:0 video of *odd height*, which FFmpeg
  4.1 and 8 convert through differently rounded chroma filters (mean abs diff 0.5 to 1.1 on the
  0..255 scale after resizing, on our test patterns; odd widths are exact).
- Frame ``i`` is always the frame with the ``i``-th smallest pts, also where decord's seeking
  returns another one: MPEG-4 Part 2 with B-frames (decord lands several frames early after a
  seek) and mp4 edit lists from stream-copy cuts. For the latter (packets flagged "discard",
  which decord counts but the decoder never outputs) frame ``i`` is the ``i``-th decoded frame
  and the tail repeats the last one: what decord returns when it reads the video sequentially.
- Errors raise ``VideoDecodeError`` naming the file. qwen-vl-utils instead retries any decord
  failure with torchvision's reader, whose frame count and fps definitions differ.
- A stream without ``avg_frame_rate`` (decord returns NaN and qwen-vl-utils falls back to
  torchvision) uses FFmpeg's guessed rate.
- A damaged tail (packets without a decodable frame) repeats the last decoded frame, as decord
  does, for up to a quarter of the video; beyond that, or for a truncated final packet, the file
  is rejected.
- Only the ``fps`` sampling mode is supported (no ``nframes`` or ``resized_height``/``resized_width``).
  ``load_video`` takes no ``video_start``/``video_end`` (qwen-vl-utils 0.0.10's decord backend
  rejects them); :func:`load_video_window` decodes a time window by the rule later qwen-vl-utils
  releases use for ``video_start``/``video_end`` (``calculate_video_frame_range``: the window's
  frames, then the same ``smart_nframes`` / even ``linspace`` sampling inside it).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import av
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

logger = logging.getLogger(__name__)

IMAGE_FACTOR = 28  # resized sides are multiples of the ViT patch (14) x spatial merge (2)
FRAME_FACTOR = 2  # frame counts are multiples of the temporal patch size
MAX_RATIO = 200  # qwen-vl-utils rejects images and videos more elongated than this
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28  # per-frame cap that `total_pixels` can only lower
FPS = 2.0
FPS_MIN_FRAMES = 4
PATCH_SIZES = (14, 16)  # ViT patch: Qwen2.5-VL (qwen-vl-utils 0.0.10) and Qwen3-VL (0.0.14)
VIDEO_MIN_TOKEN_NUM = 128  # 0.0.14's per-frame defaults, in tokens of (2 * patch)**2 pixels
VIDEO_MAX_TOKEN_NUM = 768
FPS_MAX_FRAMES = 768

# Seek only when at least this many frames lie between the decoder and the keyframe of the next
# sampled frame: a seek flushes the (frame-threaded) decoder, which costs about a thread count
# of frames of latency, so short gaps are cheaper to decode through.
_SEEK_MIN_GAP = 32
# Most of the video that may be missing at the end (packets without a decodable frame, beyond
# those an edit list discards) before the file is rejected instead of padded with its last
# frame; decord warns at this fraction.
_MAX_MISSING_FRACTION = 0.25
# Codecs whose bitstream marks non-reference frames (nal_ref_idc / sub-layer non-reference), so
# that skip_frame=NONREF drops exactly the frames no other frame needs. MPEG-4 Part 2 would drop
# its B-frames, but its packed-bitstream AVIs already confuse pts matching; it decodes everything.
_SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})


class VideoDecodeError(ValueError):
    """A video could not be decoded or sampled; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class VideoClip:
    """Sampled, resized frames of one video plus the timing the processor and rewards need."""

    frames: torch.Tensor  # [T, 3, H, W] uint8 RGB
    sample_fps: float  # T / total_frames * video_fps: what qwen-vl-utils passes as video fps
    timestamps: list[float]  # seconds of each sampled frame: frame_indices[t] / video_fps
    duration: float  # total_frames / video_fps, seconds, on the same clock as `timestamps`
    frame_indices: list[int]  # indices into the video's frames (pts order), length T
    video_fps: float  # the stream's average frame rate (decord's get_avg_fps)
    total_frames: int  # packets in the video stream (decord's len(VideoReader))
    path: str


# ---------------------------------------------------------------------------------------------
# Pure helpers: the qwen-vl-utils 0.0.10 arithmetic, testable without any video.
# ---------------------------------------------------------------------------------------------


def _round_to(value: float, factor: int) -> int:
    # Python's round() is round-half-to-even; qwen-vl-utils relies on it, e.g. a 70-pixel side
    # is 2.5 patches and rounds to 2 (56 px), a 98-pixel side is 3.5 and rounds to 4 (112 px).
    return round(value / factor) * factor


def _ceil_to(value: float, factor: int) -> int:
    return math.ceil(value / factor) * factor


def _floor_to(value: float, factor: int) -> int:
    return math.floor(value / factor) * factor


def default_total_pixels() -> int:
    """qwen-vl-utils' ``VIDEO_TOTAL_PIXELS``: 128000 * 28 * 28 * 0.9 = 90316800, unless overridden.

    qwen-vl-utils reads the override from the environment variable ``VIDEO_MAX_PIXELS`` (sic) at
    import time; this reads it at call time so both agree in the same environment.
    """
    return int(float(os.environ.get("VIDEO_MAX_PIXELS", 128000 * 28 * 28 * 0.9)))


def image_factor(patch_size: int = 14) -> int:
    """Resized sides are multiples of this: ``patch_size`` x spatial merge (2); 28 or 32."""
    if patch_size not in PATCH_SIZES:
        raise ValueError(f"patch_size must be one of {PATCH_SIZES}, got {patch_size!r}")
    return 2 * patch_size


def pixel_defaults(patch_size: int = 14) -> tuple[int, int, float]:
    """``(min_pixels, per-frame max_pixels, total_pixels)`` defaults for ``patch_size``.

    14: qwen-vl-utils 0.0.10's ``VIDEO_MIN_PIXELS``, ``VIDEO_MAX_PIXELS`` and
    :func:`default_total_pixels` (unchanged). 16: 0.0.14's ``fetch_video(image_patch_size=16)``,
    128 and 768 tokens of 32 x 32 pixels and ``MODEL_SEQ_LEN * 32 * 32 * 0.9`` (env var
    ``MODEL_SEQ_LEN``, default 128000, read at call time; kept a float as 0.0.14 does).
    """
    factor = image_factor(patch_size)
    if patch_size == 14:
        return VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS, default_total_pixels()
    seq_len = int(float(os.environ.get("MODEL_SEQ_LEN", 128000)))
    return (VIDEO_MIN_TOKEN_NUM * factor * factor, VIDEO_MAX_TOKEN_NUM * factor * factor,
            seq_len * factor * factor * 0.9)


def smart_nframes(
    total_frames: int,
    video_fps: float,
    *,
    fps: float = FPS,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
) -> int:
    """Number of frames to sample: ``duration * fps`` clamped to the limits, floored to even.

    The limits are first snapped to even numbers (``min_frames`` up, ``max_frames`` down), the
    count is capped by ``total_frames``, and the result is floored to a multiple of 2.
    Raises ``ValueError`` when that leaves fewer than 2 frames (a one-frame video).
    """
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if not video_fps > 0 or not math.isfinite(video_fps):
        raise ValueError(f"video_fps must be a positive finite number, got {video_fps}")
    lo = _ceil_to(min_frames, FRAME_FACTOR)
    hi = _floor_to(max_frames, FRAME_FACTOR)
    wanted = total_frames / video_fps * fps  # float: duration in seconds times sampling fps
    nframes = _floor_to(min(min(max(wanted, lo), hi), total_frames), FRAME_FACTOR)
    if not FRAME_FACTOR <= nframes <= total_frames:
        raise ValueError(
            f"nframes should be in [{FRAME_FACTOR}, {total_frames}], got {nframes} "
            f"(total_frames={total_frames}, video_fps={video_fps}, fps={fps}, "
            f"min_frames={min_frames}, max_frames={max_frames})"
        )
    return nframes


def frame_indices(total_frames: int, nframes: int) -> list[int]:
    """Indices of ``nframes`` frames spread evenly over ``[0, total_frames - 1]``, rounded half-even.

    The grid is computed by ``torch.linspace`` in float32, exactly as qwen-vl-utils does: for long
    videos float32 spacing moves some grid points across a ``.5`` boundary, so a float64 (or
    numpy) linspace would pick a different frame now and then.
    """
    if nframes < 1 or total_frames < 1:
        raise ValueError(f"need total_frames >= 1 and nframes >= 1, got {total_frames}, {nframes}")
    return window_frame_indices(0, total_frames - 1, nframes)


def video_max_pixels(
    nframes: int, min_pixels: int, max_pixels: float, total_pixels: float, frame_max_pixels: int = VIDEO_MAX_PIXELS
) -> float:
    """Per-frame pixel cap for a clip of ``nframes`` frames under a ``total_pixels`` budget.

    ``total_pixels / nframes * 2`` (each pair of frames becomes one temporal patch), capped at
    ``frame_max_pixels`` (768 tokens: ``VIDEO_MAX_PIXELS`` for patch 14, 768 * 32 * 32 for patch
    16), floored at ``int(min_pixels * 1.05)``, and then lowered to the caller's ``max_pixels``. The result stays a float: qwen-vl-utils compares and divides by the unrounded
    value, and rounding it would shift ``smart_resize`` at patch boundaries.
    """
    budget = max(min(frame_max_pixels, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return min(max_pixels, budget)


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = IMAGE_FACTOR,
    min_pixels: float,
    max_pixels: float,
) -> tuple[int, int]:
    """``(height, width)`` rounded to multiples of ``factor`` with area in ``[min_pixels, max_pixels]``.

    Each side is first rounded (half-even) to the nearest multiple of ``factor``, at least
    ``factor``. If the area is too large, both sides are scaled by ``sqrt(max_pixels / area)``
    and floored to the factor; if too small, scaled by ``sqrt(min_pixels / area)`` and ceiled.
    Raises ``ValueError`` for an aspect ratio above ``MAX_RATIO`` (200).
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {ratio}")
    h_bar = max(factor, _round_to(height, factor))
    w_bar = max(factor, _round_to(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = _floor_to(height / beta, factor)
        w_bar = _floor_to(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_to(height * beta, factor)
        w_bar = _ceil_to(width * beta, factor)
    return h_bar, w_bar


# ---------------------------------------------------------------------------------------------
# Decoding.
# ---------------------------------------------------------------------------------------------


class _Desync(Exception):
    """Decoded frames do not line up with the packet index; retry with a simpler strategy."""


@dataclass(frozen=True)
class _PacketIndex:
    """decord's view of a video stream, built from one demux pass (no decoding)."""

    pts: list[int]  # pts of every packet, sorted: frame i has pts[i]
    key_positions: list[int]  # frame positions (in `pts` order) of keyframes, sorted
    key_seek_ts: list[int]  # per keyframe, the timestamp to seek to (its dts, else its pts)
    pts_usable: bool  # every packet has a distinct pts, so frames can be matched by pts
    discarded: int  # packets flagged "discard" (outside an mp4 edit list): counted, never shown
    skip_nonref: bool = False  # the codec flags non-reference frames (H.264, HEVC): see _decoded_frames

    @property
    def total_frames(self) -> int:
        return len(self.pts)


class _Deadline:
    def __init__(self, path: str, timeout_s: float | None) -> None:
        self.path, self.timeout_s = path, timeout_s
        self.end = None if timeout_s is None else time.monotonic() + timeout_s

    def check(self) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise VideoDecodeError(self.path, f"decoding took longer than timeout_s={self.timeout_s}")


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, mode="r")
    except av.FFmpegError as e:
        raise VideoDecodeError(path, f"not a readable media file ({e})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise VideoDecodeError(path, f"cannot open file ({e})") from e


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    stream = container.streams.best("video")  # av_find_best_stream, as decord uses
    if stream is None:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    return stream


def _index_packets(path: str, deadline: _Deadline) -> tuple[_PacketIndex, float, int, int]:
    """One demux pass: the packet index, the average fps and the coded size of the video stream."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate  # avg_frame_rate, what decord's get_avg_fps() returns
        if rate is None or rate <= 0:
            rate = stream.guessed_rate
            logger.warning("%s: stream has no average frame rate; using the guessed rate %s", path, rate)
        if rate is None or rate <= 0:
            raise VideoDecodeError(path, "video stream has no frame rate")
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name

        pts: list[int | None] = []
        keys: list[tuple[int | None, int | None]] = []  # (pts, dts) of keyframe packets
        discarded = 0
        last_corrupt = False
        try:
            for packet in container.demux(stream):
                deadline.check()
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    continue  # PyAV's end-of-stream flush marker, not a packet of the file
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append((packet.pts, packet.dts))
                discarded += packet.is_discard
                last_corrupt = packet.is_corrupt
        except av.FFmpegError as e:
            raise VideoDecodeError(path, f"demuxing failed after {len(pts)} packets ({e})") from e

    if not pts:
        raise VideoDecodeError(path, "video stream has no frames")
    if last_corrupt:
        # The demuxer hands out a cut-off final packet flagged corrupt when a file with its
        # index up front (mp4 "faststart") is truncated; decord fails on such files too.
        raise VideoDecodeError(path, f"file is truncated (packet {len(pts) - 1} is incomplete)")
    known = [p for p in pts if p is not None]
    pts_usable = len(known) == len(pts) and len(set(known)) == len(known)
    if pts_usable:
        order = sorted(known)
        position = {p: i for i, p in enumerate(order)}
        key_list = sorted((position[p], d if d is not None else p) for p, d in keys if p in position)
    else:
        # Without distinct pts the only usable notion of "frame i" is the i-th decoded frame.
        order = list(range(len(pts)))
        key_list = []
    index = _PacketIndex(
        pts=order,
        key_positions=[k for k, _ in key_list],
        key_seek_ts=[ts for _, ts in key_list],
        pts_usable=pts_usable,
        discarded=discarded,
        skip_nonref=codec in _SKIP_NONREF_CODECS,
    )
    return index, float(rate), width, height


class _Sampled(NamedTuple):
    """One sampled frame as found by a decoding strategy."""

    position: int  # frame index in the video
    frame: av.VideoFrame
    decoded: int | None  # None, or when the stream ended before `position`: frames it yielded


def _decoded_frames(
    container, stream, deadline: _Deadline, keep_pts: frozenset[int] | None = None
) -> Iterator[av.VideoFrame]:
    """Every frame the decoder outputs from the current position, flushing at end of stream.

    With ``keep_pts``, a packet whose pts is not in it is decoded with ``skip_frame=NONREF``: if
    no other frame references it the decoder drops it unseen (no output), otherwise it is decoded
    as usual. The setting is per packet because frame threads copy it when a packet is submitted.
    """
    context = stream.codec_context
    skipping = False
    for packet in container.demux(stream):
        deadline.check()
        if keep_pts is not None:
            skip = packet.pts not in keep_pts
            if skip != skipping:  # only touch the context when the mode changes
                context.skip_frame = "NONREF" if skip else "DEFAULT"
                skipping = skip
        try:
            yield from stream.decode(packet)
        except av.error.InvalidDataError:
            # A damaged packet: skip it like the ffmpeg CLI does. The frame goes missing, which
            # the pts matcher notices (desync) and the frame counter pads at the end.
            logger.warning("skipping an undecodable packet (pts=%s)", packet.pts)


def _pad_tail(targets: list[int], k: int, frame: av.VideoFrame | None, decoded: int) -> Iterator[_Sampled]:
    """The stream ended before targets[k:]: stand in the last decoded frame, as decord does."""
    if frame is not None:
        for position in targets[k:]:
            yield _Sampled(position, frame, decoded)


def _frames_by_pts(
    path: str, index: _PacketIndex, targets: list[int], deadline: _Deadline, *, allow_seek: bool
) -> Iterator[_Sampled]:
    """Each target frame, found by matching decoded pts against the packet index.

    Seeks (when allowed) to the last keyframe at or before the next target whenever that skips
    more than ``_SEEK_MIN_GAP`` frames. Raises ``_Desync`` if a frame's pts is not in the index or
    a target is passed without being seen, which means seeking or pts matching cannot be trusted.
    """
    position = {p: i for i, p in enumerate(index.pts)}
    # Frames nobody samples and nobody references need not be decoded at all (H.264 / HEVC, where
    # "non-reference" is a flag of the bitstream; other codecs decode everything).
    keep_pts = frozenset(index.pts[t] for t in targets) if index.skip_nonref else None

    def seek_target(k: int, last: int) -> int | None:
        """Timestamp to seek to before looking for targets[k], or None to decode on."""
        if not allow_seek:
            return None
        key = bisect.bisect_right(index.key_positions, targets[k]) - 1
        if key >= 0 and index.key_positions[key] - last > _SEEK_MIN_GAP:
            return index.key_seek_ts[key]
        return None

    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame + slice threads; only sampled frames cost conversion
        k, last, last_frame = 0, -1, None  # next target; position and frame last decoded
        while True:
            seek_ts = seek_target(k, last)
            if seek_ts is not None:
                # backward=True lands on the keyframe at or before seek_ts; mp4 seeks by dts,
                # hence seeking to the keyframe's dts, which is never after its pts.
                try:
                    container.seek(seek_ts, stream=stream, backward=True)
                except av.FFmpegError as e:
                    raise _Desync(f"seek to {seek_ts} failed ({e})") from e
            for frame in _decoded_frames(container, stream, deadline, keep_pts):
                pos = position.get(frame.pts)
                if pos is None:
                    raise _Desync(f"decoded pts {frame.pts} is not in the packet index")
                last, last_frame = pos, frame
                if pos < targets[k]:
                    continue  # an unwanted frame: decoded (unavoidable) but never converted
                if pos > targets[k]:
                    raise _Desync(f"frame {targets[k]} was skipped (next decoded frame is {pos})")
                yield _Sampled(pos, frame, None)
                k += 1
                if k == len(targets):
                    return
                if seek_target(k, last) is not None:
                    break  # seek from the outer loop
            else:
                yield from _pad_tail(targets, k, last_frame, last + 1)
                return


def _frames_by_count(path: str, targets: list[int], deadline: _Deadline) -> Iterator[_Sampled]:
    """Each target frame, where frame i is the i-th frame the decoder outputs from the start."""
    wanted = set(targets)
    k, pos, frame = 0, -1, None
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        for pos, frame in enumerate(_decoded_frames(container, stream, deadline)):
            if pos in wanted:
                yield _Sampled(pos, frame, None)
                k += 1
                if k == len(targets):
                    return
    yield from _pad_tail(targets, k, frame, pos + 1)


def _decode_targets(
    path: str, index: _PacketIndex, targets: list[int], deadline: _Deadline
) -> Iterator[_Sampled]:
    """Sampled frames in increasing position; falls back to simpler strategies on desync.

    Order of attempts: pts matching with keyframe seeks, pts matching decoding straight through,
    then counting decoded frames (decord's own rule when pts are unusable). A later attempt
    re-yields every target from the start, so the consumer simply overwrites.
    """
    strategies = []
    # Packets an mp4 edit list marks "discard" (stream-copy cuts) are in decord's frame count but
    # the decoder never outputs them. decord then effectively counts decoded frames (its seeks
    # land on inconsistent frames), so the one reproducible rule is: frame i = i-th decoded frame.
    if index.pts_usable and not index.discarded:
        if index.key_positions:
            strategies.append(
                ("pts+seek", lambda: _frames_by_pts(path, index, targets, deadline, allow_seek=True))
            )
        strategies.append(("pts", lambda: _frames_by_pts(path, index, targets, deadline, allow_seek=False)))
    strategies.append(("count", lambda: _frames_by_count(path, targets, deadline)))
    for i, (name, make) in enumerate(strategies):
        try:
            yield from make()
            return
        except _Desync as e:
            if i == len(strategies) - 1:
                raise VideoDecodeError(path, f"decoded frames do not match the index ({e})") from e
            logger.info("%s: %s decoding desynchronised (%s); retrying", path, name, e)


def _rotation_steps(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns decord applies for this frame's display matrix."""
    degrees = frame.rotation  # counter-clockwise, from av_display_rotation_get
    # decord only handles exact multiples of 90 (transpose filters); anything else is ignored.
    return (degrees // 90) % 4 if degrees % 90 == 0 else 0


def _to_rgb(frame: av.VideoFrame, width: int, height: int, quarter_turns: int) -> torch.Tensor:
    """Frame -> uint8 ``[3, H, W]`` RGB at the coded size, rotated like decord."""
    if (frame.width, frame.height) == (width, height) or width <= 0 or height <= 0:
        array = frame.to_ndarray(format="rgb24")  # [H, W, 3]
    else:
        # decord's filter graph scales every frame to the stream's coded size (bilinear).
        array = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR")
    image = torch.from_numpy(array).permute(2, 0, 1)  # [3, H, W]
    if quarter_turns:
        image = torch.rot90(image, quarter_turns, dims=(1, 2))  # [3, H', W']
    return image


@contextmanager
def _torch_single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread for the duration, restoring the caller's setting.

    FFmpeg's frame threads already fill the cores while frames are resized one at a time; torch's
    OpenMP workers spin between the many small parallel regions and starve the decoder (measured
    on 2 cores: 80 frames of a 40 s clip took 1.2-2.4 s with 2 torch threads, 0.15 s with 1).
    Inside DataLoader workers torch already runs single-threaded, so this is then a no-op.
    """
    previous = torch.get_num_threads()
    if previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous > 1:
            torch.set_num_threads(previous)


def _check_file(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(path, "file does not exist")
    if not p.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if p.stat().st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")


class _ResizeWorker:
    """Converts (to RGB) and resizes sampled frames on a second thread, in submission order.

    With frame threading FFmpeg only decodes packets the caller has sent; converting and resizing
    each sampled frame on the thread that feeds the decoder leaves the decoder threads idle in
    the meantime. Handing that work to one worker thread (PyAV's swscale call and torch's kernels
    release the GIL) keeps both going: 3.6-3.7 s instead of 4.5-5.5 s for 360 of 5400 frames of
    a 480p H.264 video on 2 busy cores. At most ``max_pending`` decoded frames wait in the queue,
    so memory stays bounded. Frames are written in FIFO order, so when a decoding strategy is
    retried its later writes overwrite the earlier ones. An error is kept in ``error`` (raised
    by the next ``submit`` and checked by the caller after ``close``); the thread keeps draining
    the queue so that the producer never blocks on a dead consumer.
    """

    def __init__(
        self, frames: torch.Tensor, coded_size: tuple[int, int], quarter_turns: int, max_pending: int = 4
    ) -> None:
        self.frames = frames  # [T, 3, h, w] uint8, filled in place
        self.coded_size, self.quarter_turns = coded_size, quarter_turns
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="load_video-resize", daemon=True)
        self._thread.start()

    def submit(self, frame: av.VideoFrame, slots: list[int]) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put((frame, slots))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        previous: tuple[av.VideoFrame, torch.Tensor] | None = None  # a padded tail reuses one frame
        out_size = [self.frames.shape[2], self.frames.shape[3]]
        while (item := self._queue.get()) is not None:
            if self.error is not None:
                continue
            frame, slots = item
            try:
                if previous is not None and previous[0] is frame:
                    resized = previous[1]
                else:
                    rgb = _to_rgb(frame, *self.coded_size, self.quarter_turns)  # [3, H, W]
                    # The call qwen-vl-utils makes (on uint8 it rounds and clamps back to uint8),
                    # one frame at a time so that full-resolution frames never pile up.
                    resized = TF.resize(
                        rgb, out_size, interpolation=InterpolationMode.BICUBIC, antialias=True
                    )  # [3, h, w]
                    previous = (frame, resized)
                for t in slots:
                    self.frames[t] = resized
            except BaseException as e:  # handed over to the caller's thread
                self.error = e


def _sample_frames(
    path: str,
    index: _PacketIndex,
    indices: list[int],
    deadline: _Deadline,
    coded_size: tuple[int, int],
    target_size: Callable[[int, int], tuple[int, int]],
) -> torch.Tensor:
    """Decode, convert and resize the frames at ``indices``; returns uint8 ``[T, 3, h, w]``."""
    coded_width, coded_height = coded_size
    slots: dict[int, list[int]] = {}  # frame index -> output positions (indices may repeat)
    for t, i in enumerate(indices):
        slots.setdefault(i, []).append(t)
    targets = sorted(slots)
    total = index.total_frames

    frames: torch.Tensor | None = None  # [T, 3, h, w] uint8, allocated at the first frame
    filled: set[int] = set()
    worker: _ResizeWorker | None = None
    try:
        with _torch_single_thread():
            try:
                for item in _decode_targets(path, index, targets, deadline):
                    deadline.check()
                    if item.decoded is not None and item.position == targets[-1]:
                        # Judge the tail once, at the last (padded) target.
                        unexplained = total - item.decoded - index.discarded  # discarded: never shown
                        if unexplained > _MAX_MISSING_FRACTION * total:
                            raise VideoDecodeError(
                                path, f"only {item.decoded} of {total} frames could be decoded"
                            )
                        logger.warning(
                            "%s: decoded %d of %d frames; the last one stands in for the rest",
                            path, item.decoded, total,
                        )  # fmt: skip
                    if worker is None:
                        quarter_turns = _rotation_steps(item.frame)
                        width = coded_width if coded_width > 0 else item.frame.width
                        height = coded_height if coded_height > 0 else item.frame.height
                        if quarter_turns % 2:
                            width, height = height, width
                        out_h, out_w = target_size(height, width)
                        frames = torch.empty((len(indices), 3, out_h, out_w), dtype=torch.uint8)  # [T, 3, h, w]
                        worker = _ResizeWorker(frames, coded_size, quarter_turns)
                    worker.submit(item.frame, slots[item.position])
                    filled.add(item.position)
            finally:
                if worker is not None:
                    worker.close()  # waits for queued frames; the worker thread never outlives the call
            if worker is not None and worker.error is not None:
                raise worker.error
    except av.FFmpegError as e:
        raise VideoDecodeError(path, f"decoding failed ({e})") from e
    if frames is None or len(filled) < len(targets):
        raise VideoDecodeError(path, f"decoded {len(filled)} of {len(targets)} sampled frames")
    return frames


def load_video(
    path: str | os.PathLike[str],
    *,
    fps: float = FPS,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: float | None = None,
    timeout_s: float | None = None,
    patch_size: int = 14,
) -> VideoClip:
    """Decode and sample ``path`` like qwen-vl-utils 0.0.10 ``fetch_video`` (decord backend).

    Args:
        path: a local video file.
        fps: sampling rate in frames per second of video.
        min_frames, max_frames: bounds on the sampled frame count (snapped to even numbers).
        min_pixels, max_pixels: per-frame area bounds for the resized frames; ``None`` means the
            default of ``patch_size`` (:func:`pixel_defaults`: 128 and 768 tokens, i.e.
            ``VIDEO_MIN_PIXELS`` / ``VIDEO_MAX_PIXELS`` for patch 14).
        total_pixels: area budget for the whole clip; ``None`` means qwen-vl-utils' default
            (patch 14: ``default_total_pixels()``, 90316800; patch 16: 117964800).
        timeout_s: give up with ``VideoDecodeError`` once decoding has run this long. The check
            runs between packets and frames, so a hang inside a single FFmpeg call (a stalled
            network filesystem, say) is not interrupted; run the call in a worker process with a
            hard kill if that matters.
        patch_size: the ViT patch, 14 (Qwen2.5-VL, qwen-vl-utils 0.0.10) or 16 (Qwen3-VL /
            Qwen3.5, 0.0.14 ``image_patch_size=16``): sides become multiples of ``2 * patch_size``
            and the pixel defaults are counted in its tokens (see the module docstring).

    Returns:
        A ``VideoClip`` with uint8 frames ``[T, 3, H, W]``.

    Raises:
        VideoDecodeError: missing, empty, truncated or non-video files, files with no video
            stream or a single frame, aspect ratio above 200, undecodable frames, timeout.
    """
    return _load(path, None, fps=fps, min_frames=min_frames, max_frames=max_frames, min_pixels=min_pixels,
                 max_pixels=max_pixels, total_pixels=total_pixels, timeout_s=timeout_s, patch_size=patch_size)


def frame_range(total_frames: int, video_fps: float, start: float, end: float) -> tuple[int, int, int]:
    """``(first frame, last frame, frame count)`` of the window ``[start, end]`` seconds.

    The rule of qwen-vl-utils' ``calculate_video_frame_range`` (releases after 0.0.10): both ends
    clamped to ``[0, total_frames / video_fps]``, first = ``ceil(start * fps)``, last =
    ``min(floor(end * fps), total_frames - 1)``. E.g. 40 frames at 4 fps, window [2.1, 6.0]:
    first ceil(8.4) = 9, last floor(24.0) = 24, 16 frames. ``ValueError`` if first >= last.
    """
    max_duration = total_frames / video_fps
    first = math.ceil(max(0.0, min(start, max_duration)) * video_fps)
    last = min(math.floor(max(0.0, min(end, max_duration)) * video_fps), total_frames - 1)
    if first >= last:
        raise ValueError(f"window [{start:g}, {end:g}] s holds fewer than 2 frames (frames {first}..{last})")
    return first, last, last - first + 1


def window_frame_indices(first: int, last: int, nframes: int) -> list[int]:
    """``nframes`` indices spread evenly over ``[first, last]``: qwen-vl-utils'
    ``torch.linspace(first, last, nframes).round()`` (float32; torch.round is half-to-even, like
    Python's round). :func:`frame_indices` is the whole-video case ``[0, total_frames - 1]``."""
    grid = torch.linspace(first, last, nframes, dtype=torch.float32)  # [nframes]
    return grid.round().long().tolist()


def load_video_window(
    path: str | os.PathLike[str],
    start: float,
    end: float,
    *,
    fps: float = FPS,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: float | None = None,
    timeout_s: float | None = None,
    patch_size: int = 14,
) -> VideoClip:
    """Only the seconds ``[start, end]`` of ``path``, sampled like :func:`load_video` samples a
    whole video: the frame count is ``smart_nframes`` of the window's frames (:func:`frame_range`),
    the frames are spread evenly over the window (:func:`window_frame_indices`), and the pixel
    budget (``total_pixels``) is shared by the window's frames only.

    The clip's ``timestamps`` and ``frame_indices`` are the *video's* (a window [60, 70] at 2 fps
    starts at 60.0, not 0.0); ``duration`` and ``total_frames`` stay those of the whole video;
    ``sample_fps`` = sampled frames / window frames * video fps, what qwen-vl-utils passes for the
    window. The model's temporal positions start at the window's first frame (Qwen2.5-VL has no
    absolute clock), so callers that need the model to know *when* the window is must say so in
    the text. ``patch_size`` as for :func:`load_video`; with 16 the clip equals 0.0.14's
    ``fetch_video({"video_start": start, "video_end": end, ...}, image_patch_size=16)``.
    """
    return _load(path, (float(start), float(end)), fps=fps, min_frames=min_frames, max_frames=max_frames,
                 min_pixels=min_pixels, max_pixels=max_pixels, total_pixels=total_pixels, timeout_s=timeout_s,
                 patch_size=patch_size)


def _load(path, window: tuple[float, float] | None, *, fps: float, min_frames: int, max_frames: int,
          min_pixels: int | None, max_pixels: int | None, total_pixels: float | None, timeout_s: float | None,
          patch_size: int) -> VideoClip:
    """:func:`load_video` (``window=None``) or :func:`load_video_window`."""
    path = os.fspath(path)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    factor = image_factor(patch_size)  # ValueError for a patch size other than 14 / 16
    default_min, frame_max_pixels, default_total = pixel_defaults(patch_size)
    min_pixels = default_min if min_pixels is None else min_pixels
    max_pixels = frame_max_pixels if max_pixels is None else max_pixels
    deadline = _Deadline(path, timeout_s)
    _check_file(path)

    index, video_fps, coded_width, coded_height = _index_packets(path, deadline)
    total_frames = index.total_frames
    first, last, count = 0, total_frames - 1, total_frames
    if window is not None:
        try:
            first, last, count = frame_range(total_frames, video_fps, *window)
        except ValueError as e:
            raise VideoDecodeError(path, f"cannot decode a window of {total_frames} frame(s) at {video_fps:g} fps: {e}") from e
    try:
        nframes = smart_nframes(
            count, video_fps, fps=fps, min_frames=min_frames, max_frames=max_frames
        )
    except ValueError as e:
        raise VideoDecodeError(
            path, f"cannot sample {count} frame(s) at {video_fps:g} fps: {e}"
        ) from e
    indices = window_frame_indices(first, last, nframes)  # the whole video: frame_indices(total_frames, nframes)
    budget = default_total if total_pixels is None else total_pixels
    cap = video_max_pixels(nframes, min_pixels, max_pixels, budget, frame_max_pixels)

    def target_size(height: int, width: int) -> tuple[int, int]:
        try:
            return smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=cap)
        except ValueError as e:
            raise VideoDecodeError(path, f"cannot resize a {width}x{height} video: {e}") from e

    if coded_width > 0 and coded_height > 0:
        target_size(coded_height, coded_width)  # fail fast on extreme aspect ratios

    frames = _sample_frames(path, index, indices, deadline, (coded_width, coded_height), target_size)
    return VideoClip(
        frames=frames,
        sample_fps=nframes / max(count, 1e-6) * video_fps,
        timestamps=[i / video_fps for i in indices],
        duration=total_frames / video_fps,
        frame_indices=indices,
        video_fps=video_fps,
        total_frames=total_frames,
        path=path,
    )
