"""Turn chat-templated prompts + already-decoded video clips into a Qwen2.5-VL model batch.

MUSEG feeds the HF processor with clips from qwen-vl-utils' ``fetch_video`` (sampled at 2 fps,
resized to multiples of 28) plus ``fps=sample_fps``; our ``museg_lit.data.video.load_video``
reproduces ``fetch_video``, so the processor must only normalise and patchify.

Findings in transformers 5.23 (``models/qwen2_5_vl/processing_qwen2_5_vl.py``,
``models/qwen2_vl/video_processing_qwen2_vl.py``, ``video_processing_utils.py``, ``video_utils.py``):

* ``second_per_grid_ts`` is computed in ``Qwen2_5_VLProcessor._process_videos`` as
  ``video_processor.temporal_patch_size / metadata.sampled_fps`` per video, where
  ``VideoMetadata.sampled_fps = len(frames_indices) / total_num_frames * fps`` and, when ``fps``
  is unknown, falls back to ``24``. The processor *always* requests metadata
  (``videos_kwargs = {"return_metadata": True}``), but for tensor inputs without
  ``video_metadata`` it builds metadata with ``fps=None``: the result is a silent ``2/24`` for
  every video. An ``fps=`` call argument (the transformers-4 way, and what MUSEG passes) no longer
  reaches this computation; it only feeds frame sampling. We therefore pass
  ``video_metadata=[{"total_num_frames": T, "fps": sample_fps, "frames_indices": range(T), ...}]``,
  i.e. we describe each clip as a complete video recorded at ``sample_fps``, which gives
  ``sampled_fps == sample_fps`` and ``second_per_grid_ts == 2 / sample_fps``, as qwen-vl-utils does.
* Frame sampling happens only with ``do_sample_frames=True`` (the Qwen2-VL default is ``False``;
  we pass ``False`` explicitly so a checkpoint whose ``video_preprocessor_config`` says otherwise
  cannot resample our clips).
* Resizing: with ``do_resize=True`` the processor calls ``smart_resize`` with its own
  min/max pixels and then interpolates (a no-op only when the size is unchanged). We pass
  ``do_resize=False`` so the frames our decoder produced (H, W multiples of 28, within the pixel
  budget it enforces) reach the patchifier bit-exactly, whatever the checkpoint's min/max pixels.
* The model needs ``mm_token_type_ids`` (0 text, 1 image, 2 video) to build the 3D RoPE positions
  (``get_rope_index``); the processor returns it (``return_mm_token_type_ids = True``) and we keep
  it in the batch.

* ``cap_pixels_per_frame`` (a transformers-5 resize option) is irrelevant without resizing; we
  pass ``False`` when the video processor knows the option, only to silence its warning.

Relation to MUSEG's pipeline: MUSEG (transformers 4.50.0) called
``processor(text, videos=video_inputs, fps=fps)`` and got ``second_per_grid_ts = 2 / fps`` from the
``fps`` argument; we obtain the same values through ``video_metadata`` (checked in
``tests/unit/test_processing.py``). This module only builds the processor batch; the 3D positions
the model sees are computed by :mod:`museg_lit.models.positions` (transformers 5.2x's own rule
differs from 4.50's), and the remaining departures are listed in the README's "Fidelity" table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import BatchFeature, Qwen2_5_VLProcessor

from museg_lit.models.families.qwen3_vl import group_times_of_seconds, video_prompt

__all__ = ["VIDEO_PLACEHOLDER", "encode_prompts", "is_qwen3_vl", "video_metadata"]

VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"


def video_metadata(frames: torch.Tensor, sample_fps: float) -> dict:
    """Metadata describing an already-sampled clip so that ``sampled_fps == sample_fps``."""
    t, _, h, w = frames.shape
    return {
        "total_num_frames": t,
        "fps": float(sample_fps),
        "frames_indices": list(range(t)),
        "duration": t / float(sample_fps),
        "height": h,
        "width": w,
    }


def _check_video(i: int, frames: torch.Tensor, fps: float, factor: int, temporal: int) -> None:
    if not (isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8 and frames.ndim == 4):
        raise ValueError(
            f"video {i}: expected a uint8 tensor [T, 3, H, W], got {getattr(frames, 'dtype', type(frames))} "
            f"{tuple(getattr(frames, 'shape', ()))}"
        )
    t, c, h, w = frames.shape
    if c != 3:
        raise ValueError(
            f"video {i}: expected 3 channels in dim 1 ([T, 3, H, W]), got shape {tuple(frames.shape)}"
        )
    # With do_resize=False the patchifier needs exact multiples; our decoder guarantees them.
    if h % factor or w % factor:
        raise ValueError(f"video {i}: H and W must be multiples of {factor}, got {h}x{w}")
    # qwen-vl-utils always returns an even frame count; the processor would silently repeat the
    # last frame otherwise, shifting the time axis of the last temporal patch.
    if t == 0 or t % temporal:
        raise ValueError(f"video {i}: frame count must be a positive multiple of {temporal}, got {t}")
    if not fps > 0:
        raise ValueError(f"video {i}: sample_fps must be > 0, got {fps}")


def is_qwen3_vl(processor) -> bool:
    """Qwen3-VL's processor (also Qwen3.5's, which subclasses it): time as text before each group."""
    return any(cls.__name__ == "Qwen3VLProcessor" for cls in type(processor).__mro__)


def encode_prompts(
    processor: Qwen2_5_VLProcessor,
    texts: list[str],
    videos: list[torch.Tensor],
    sample_fps: list[float],
    timestamps: Sequence[Sequence[float]] | None = None,
) -> BatchFeature:
    """Tokenise chat-templated prompts and patchify their videos, left-padded for generation.

    Args:
        processor: a ``Qwen2_5_VLProcessor`` (tiny or real checkpoint).
        texts: ``B`` chat-templated strings, each with exactly one
            ``<|vision_start|><|video_pad|><|vision_end|>``.
        videos: ``B`` uint8 tensors ``[T, 3, H, W]``, already sampled at ``sample_fps[i]`` and
            resized to multiples of 28; ``T`` even.
        sample_fps: frames per second at which each clip was sampled.
        timestamps: per clip, the seconds of each frame (a clip's ``timestamps``: source frame
            index / source fps); default ``k / sample_fps``. Only Qwen3-VL writes them (its
            ``<t seconds>`` markers, :func:`_encode_qwen3_vl`); Qwen2.5-VL's time is in its positions.

    Returns:
        ``BatchFeature`` with ``input_ids`` ``[B, L]`` and ``attention_mask`` ``[B, L]`` (left padded),
        ``mm_token_type_ids`` ``[B, L]``, ``pixel_values_videos`` ``[sum_i T_i*H_i*W_i/14^2, 3*2*14*14]``,
        ``video_grid_thw`` ``[B, 3]`` = ``(T/2, H/14, W/14)`` and ``second_per_grid_ts`` ``[B]`` =
        ``2 / sample_fps``. Each prompt holds ``prod(grid)/4`` ``<|video_pad|>`` tokens.

    Example:
        >>> batch = encode_prompts(proc, [text], [torch.zeros(4, 3, 56, 56, dtype=torch.uint8)], [2.0])
        >>> batch["video_grid_thw"].tolist(), batch["second_per_grid_ts"].tolist()
        ([[2, 4, 4]], [1.0])
    """
    if not (len(texts) == len(videos) == len(sample_fps)):
        raise ValueError(f"got {len(texts)} texts, {len(videos)} videos and {len(sample_fps)} fps values")
    vp = processor.video_processor
    for i, (text, frames, fps) in enumerate(zip(texts, videos, sample_fps, strict=True)):
        if text.count(processor.video_token) != 1:
            raise ValueError(
                f"prompt {i} must contain exactly one {processor.video_token}, "
                f"found {text.count(processor.video_token)}"
            )
        _check_video(i, frames, fps, vp.patch_size * vp.merge_size, vp.temporal_patch_size)

    extra = {}
    if "cap_pixels_per_frame" in getattr(vp.valid_kwargs, "__annotations__", {}):
        extra["cap_pixels_per_frame"] = False
    if is_qwen3_vl(processor):
        if timestamps is None:
            timestamps = [[k / f for k in range(len(v))] for v, f in zip(videos, sample_fps, strict=True)]
        return _encode_qwen3_vl(processor, texts, videos, timestamps, extra)
    return processor(
        text=list(texts),
        videos=list(videos),
        video_metadata=[video_metadata(v, f) for v, f in zip(videos, sample_fps, strict=True)],
        do_sample_frames=False,  # frames were sampled by our decoder
        do_resize=False,  # ... and resized to multiples of 28 by it
        padding=True,
        padding_side="left",  # generation appends on the right
        return_tensors="pt",
        **extra,
    )


def _encode_qwen3_vl(processor, texts: list[str], videos: list[torch.Tensor],
                     timestamps: Sequence[Sequence[float]], extra: dict) -> BatchFeature:
    """Qwen3-VL: the video processor patchifies; the prompt text, with one ``<t seconds>`` marker
    before each temporal group, is written by :mod:`museg_lit.models.families.qwen3_vl` (not by the
    processor, whose fps falls back to 24 without metadata), then tokenised.

    Returns the processor's keys: ``input_ids`` / ``attention_mask`` / ``mm_token_type_ids`` [B, L]
    (left padded; type 2 at ``<|video_pad|>``), ``pixel_values_videos``, ``video_grid_thw`` [B, 3].
    """
    if len(timestamps) != len(videos):
        raise ValueError(f"got {len(videos)} videos and {len(timestamps)} timestamp lists")
    for i, (frames, seconds) in enumerate(zip(videos, timestamps, strict=True)):
        if len(seconds) != len(frames):
            raise ValueError(f"video {i}: {len(frames)} frames but {len(seconds)} timestamps")
    vp = processor.video_processor
    patches = vp(videos=list(videos), do_sample_frames=False, do_resize=False, return_tensors="pt", **extra)
    grids = patches["video_grid_thw"]  # [B, 3] (T/2, H/16, W/16)
    expanded = []
    for text, grid, seconds in zip(texts, grids.tolist(), timestamps, strict=True):
        times = group_times_of_seconds(seconds, temporal_patch=vp.temporal_patch_size)
        if len(times) != grid[0]:  # the video processor's temporal groups must be ours
            raise ValueError(f"{len(times)} time groups for a video grid of {grid[0]} temporal patches")
        expanded.append(text.replace(VIDEO_PLACEHOLDER, video_prompt(times, (grid[1], grid[2]),
                                                                     spatial_merge=vp.merge_size)))
    tokens = processor.tokenizer(expanded, padding=True, padding_side="left", return_tensors="pt")
    video_id = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
    mm_types = (tokens["input_ids"] == video_id).long() * 2  # [B, L]: 0 text, 2 video
    return BatchFeature({"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
                         "mm_token_type_ids": mm_types, "pixel_values_videos": patches["pixel_values_videos"],
                         "video_grid_thw": grids})
