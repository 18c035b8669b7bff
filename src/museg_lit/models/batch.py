"""Row operations on a processor batch whose video patches are flattened across videos.

``pixel_values_videos`` is ``[sum_i T_i*H_i*W_i, D]`` (the patches of all videos concatenated), so
repeating or selecting prompts must split it per video with ``video_grid_thw`` first.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

__all__ = ["TEXT_KEYS", "repeat_visual_batch", "select_visual_rows", "visual_inputs"]

TEXT_KEYS = ("input_ids", "attention_mask")


def visual_inputs(inputs: dict[str, Tensor], video_features: tuple[Tensor, ...] | None = None) -> dict:
    """The forward's visual keyword arguments of a batch: the raw video, or its precomputed
    (merged vision-tower) features, which skip the vision tower.

    ``mm_token_type_ids`` only feeds the library's own position rule, which is never used (every
    forward gets :mod:`museg_lit.models.positions`' positions), so it is not passed."""
    extra = {k: v for k, v in inputs.items() if k not in (*TEXT_KEYS, "mm_token_type_ids")}
    if video_features is not None:
        extra.pop("pixel_values_videos", None)
        extra["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=tuple(video_features))}
    return extra


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
