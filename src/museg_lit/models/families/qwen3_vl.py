"""Qwen3-VL: time written as text before each temporal group, and the 3D positions of its prompts,
as transformers **4.57.1** (the version the checkpoints were released with; TimeLens pins it) and
qwen-vl-utils **0.0.14** do them. Tested against outputs recorded from those versions
(``tests/fixtures/qwen3_vl_reference``, ``experiments/reference/record_qwen3_vl.py``).

Status: the first piece of the Qwen3-VL family plug-in (issue 23). ``models/processing.py``
writes Qwen3-VL prompts with these functions (``encode_prompts(..., timestamps=...)``); the
model's forward passes do not use :func:`rope_index` yet.

Time as text:

* a clip of ``T`` sampled frames becomes ``ceil(T / 2)`` temporal groups of 2 frames (an odd count
  repeats the last frame, as the processor pads it); group ``g`` is written
  ``<{t:.1f} seconds><|vision_start|>`` + ``<|video_pad|>`` x (h*w / 4) + ``<|vision_end|>``, the
  marker **before** ``<|vision_start|>`` (lmms-engine#132 wrote it after);
* ``t`` = mean of the group's first and last frame times, each = **source frame index / source
  fps** (LlamaFactory#10335 lost the indices and used ``k / sample_fps``; ms-swift#6523 kept fps
  at 2.0); a missing or non-positive fps is an error here, where transformers silently assumes 24.

Positions (4.57.1 ``Qwen3VLModel.get_rope_index``): each temporal group is positioned like an
image of grid ``(1, h, w)``; time is only in the text:

* a text token sits one past the largest position so far, on all three axes (0 at the start);
* the ``h/2 x w/2`` tokens of a group that starts at ``p`` get ``(p, p + row, p + col)``;
* the token after a group therefore sits at ``p + max(h/2, w/2)``;
* padding (attention mask 0) holds position 1, and the rope delta of a row is
  ``max position + 1 - padded length`` (transformers 5.x: 0 and the unpadded length; decoding
  positions come out equal either way, see ``experiments/reference/qwen3_vl_findings.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["QwenVLPositions", "group_times", "group_times_of_seconds", "rope_index", "time_marker", "video_prompt"]

TEMPORAL_PATCH = 2
SPATIAL_MERGE = 2
PAD_POSITION = 1
VISION_START, VISION_END, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"


def group_times(frame_indices: Sequence[int], source_fps: float | None, *,
                temporal_patch: int = TEMPORAL_PATCH) -> list[float]:
    """Seconds of each temporal group: the mean of its first and last frame's source time.

    >>> group_times([0, 14, 28, 42, 57], 25.0)  # odd count: the last index is repeated
    [0.28, 1.4, 2.28]
    """
    if source_fps is None or not source_fps > 0:
        raise ValueError(f"Qwen3-VL writes each frame group's time from the source video's fps, got "
                         f"{source_fps!r}: pass the fps the frames were decoded at (transformers would "
                         f"silently assume 24)")
    return group_times_of_seconds([i / source_fps for i in frame_indices], temporal_patch=temporal_patch)


def group_times_of_seconds(frame_seconds: Sequence[float], *, temporal_patch: int = TEMPORAL_PATCH) -> list[float]:
    """:func:`group_times` from each frame's time in seconds (``index / source fps``, a clip's
    ``timestamps``): the same floats, since 4.57.1 also divides first and averages after.

    >>> group_times_of_seconds([0.0, 0.56, 1.12])
    [0.28, 1.12]
    """
    seconds = list(frame_seconds)
    if not seconds:
        raise ValueError("a clip needs at least one frame")
    seconds += [seconds[-1]] * (-len(seconds) % temporal_patch)
    # same float order as 4.57.1: (first + last) / 2 of each group
    return [(seconds[g] + seconds[g + temporal_patch - 1]) / 2 for g in range(0, len(seconds), temporal_patch)]


def time_marker(seconds: float) -> str:
    """``<{t:.1f} seconds>``, the text before each group (Python's rounding of the float, as 4.57.1).

    >>> time_marker(0.28), time_marker(2.25)
    ('<0.3 seconds>', '<2.2 seconds>')
    """
    return f"<{seconds:.1f} seconds>"


def video_prompt(times: Sequence[float], grid_hw: tuple[int, int], *, spatial_merge: int = SPATIAL_MERGE) -> str:
    """What a video's ``<|vision_start|><|video_pad|><|vision_end|>`` becomes: one marker and one
    vision span per temporal group; ``grid_hw`` are the patch rows and columns of a frame.

    >>> video_prompt([0.3, 1.4], (2, 4))
    '<0.3 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|><1.4 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>'
    """
    h, w = grid_hw
    pads = VIDEO_PAD * (h * w // (spatial_merge * spatial_merge))
    return "".join(f"{time_marker(t)}{VISION_START}{pads}{VISION_END}" for t in times)


class QwenVLPositions(NamedTuple):
    position_ids: Tensor  # [3, B, L] long: (t, h, w)
    rope_deltas: Tensor  # [B, 1] long: max position + 1 - padded length


def _row_positions(ids: list[int], groups: list[tuple[int, int]], vision_start_id: int,
                   video_pad_id: int) -> tuple[list[tuple[int, int, int]], int]:
    """Positions of one row's real tokens, and how many groups it used."""
    positions: list[tuple[int, int, int]] = []
    nxt, k, g = 0, 0, 0
    while k < len(ids):
        if ids[k] == video_pad_id and k > 0 and ids[k - 1] == vision_start_id:
            if g >= len(groups):
                raise ValueError("more <|vision_start|><|video_pad|> runs than temporal groups in video_grid_thw")
            gh, gw = groups[g]
            positions += [(nxt, nxt + r, nxt + c) for r in range(gh) for c in range(gw)]
            k, g, nxt = k + gh * gw, g + 1, nxt + max(gh, gw)
        else:
            positions.append((nxt, nxt, nxt))
            k, nxt = k + 1, nxt + 1
    return positions, g


def rope_index(input_ids: Tensor, video_grid_thw: Tensor | Sequence[Sequence[int]], *, vision_start_id: int,
               video_pad_id: int, attention_mask: Tensor | None = None,
               spatial_merge: int = SPATIAL_MERGE) -> QwenVLPositions:
    """3D positions of a batch of prompts by the 4.57.1 rule (module docstring).

    ``input_ids`` [B, L]; ``video_grid_thw`` [n_videos, 3] in batch order, as the processor returns
    it; ``attention_mask`` [B, L] (None: no padding).
    """
    B, L = input_ids.shape
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    groups = [(int(h) // spatial_merge, int(w) // spatial_merge)
              for t, h, w in (tuple(map(int, g)) for g in video_grid_thw) for _ in range(t)]
    position_ids = torch.full((3, B, L), PAD_POSITION, dtype=torch.long)  # [3, B, L]
    deltas = torch.zeros(B, 1, dtype=torch.long)  # [B, 1]
    used = 0
    for b in range(B):
        keep = mask[b].bool()  # [L]
        row, n = _row_positions(input_ids[b][keep].tolist(), groups[used:], vision_start_id, video_pad_id)
        used += n
        if row:
            position_ids[:, b, keep] = torch.tensor(row, dtype=torch.long).T  # [3, n_real]
            deltas[b, 0] = max(max(p) for p in row) + 1 - L
    if used != len(groups):
        raise ValueError(f"video_grid_thw has {len(groups)} temporal groups, the prompts {used}")
    return QwenVLPositions(position_ids, deltas)
