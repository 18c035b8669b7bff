"""Row operations on a processor batch whose video patches are flattened across videos.

``pixel_values_videos`` is ``[sum_i T_i*H_i*W_i, D]`` (the patches of all videos concatenated), so
repeating or selecting prompts must split it per video with ``video_grid_thw`` first.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["repeat_visual_batch", "select_visual_rows"]


def _video_chunks(inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
    sizes = inputs["video_grid_thw"].prod(dim=-1).tolist()  # patches per video
    return torch.split(inputs["pixel_values_videos"], sizes, dim=0)


def repeat_visual_batch(inputs: dict[str, Tensor], repeats: int) -> dict[str, Tensor]:
    """Repeat every prompt ``repeats`` times, prompt-major, including the flattened video patches."""
    if repeats == 1:
        return dict(inputs)
    out: dict[str, Tensor] = {}
    for key, value in inputs.items():
        if key == "pixel_values_videos":
            out[key] = torch.cat([c for c in _video_chunks(inputs) for _ in range(repeats)], dim=0)  # [G*sum, D]
        elif isinstance(value, Tensor):
            out[key] = value.repeat_interleave(repeats, dim=0)  # [B*G, ...]
        else:
            out[key] = value
    return out


def select_visual_rows(inputs: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """Keep the prompts ``rows`` (bool ``[B]``), video patches included."""
    keep = rows.nonzero().squeeze(1).tolist()
    out: dict[str, Tensor] = {}
    for key, value in inputs.items():
        if key == "pixel_values_videos":
            chunks = _video_chunks(inputs)
            out[key] = torch.cat([chunks[i] for i in keep], dim=0)  # [sum over kept prompts, D]
        elif isinstance(value, Tensor):
            out[key] = value[rows]
        else:
            out[key] = value
    return out
