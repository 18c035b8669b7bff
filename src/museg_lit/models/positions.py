"""Qwen2.5-VL's 3D rotary positions (M-RoPE), by the rule the released checkpoints were trained with.

Every forward pass the platform makes passes these positions explicitly (``position_ids``), so the
model never computes its own. Why: transformers 5.2x changed the rule. Its ``get_rope_index``
starts the text after a video at ``video start + max(h, w) / 2`` (not after the largest position
so far) and places generated tokens from the overall maximum, so on a 300 s clip at 2 fps the
question after the video sits at positions 17-129 instead of 614-726, and generation and the
log-prob pass put the completion at different positions. MUSEG-3B/7B (and Qwen2.5-VL itself)
were trained with the rule of transformers 4.50 and vLLM, reproduced here:

* a text run starts at (largest position so far + 1), or 0 at the start, and counts up by one on
  all three axes;
* a video of grid ``(t, h, w)`` (patches; ``h/m, w/m`` tokens per frame pair after the
  ``m x m`` merger) with ``second_per_grid_t`` seconds per temporal patch gets, for temporal
  index ``i``, the t-position ``int(i * second_per_grid_t * tokens_per_second)`` computed in
  float32, h-positions ``0..h/m-1`` and w-positions ``0..w/m-1``, all offset by (largest
  position so far + 1); an image is the same with ``second_per_grid_t = 0``;
* generated token ``k`` of a row sits at ``(prompt max + 1 + k)`` on all three axes.

Positions of padding (attention mask 0) are 1, as transformers 4.50 left them; they are never
attended to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Positions", "RopeSpec", "completion_positions", "mrope_positions", "prompt_positions", "sequence_positions"]

PAD_POSITION = 1


@dataclass(frozen=True)
class RopeSpec:
    """What the position rule needs from a checkpoint's config."""

    video_token_id: int
    image_token_id: int | None = None
    spatial_merge_size: int = 2
    tokens_per_second: float = 2.0

    @classmethod
    def from_config(cls, config) -> RopeSpec:
        """From a ``Qwen2_5_VLConfig`` (the model's ``config``; peft / FSDP wrappers forward it)."""
        vision = config.vision_config
        return cls(video_token_id=int(config.video_token_id), image_token_id=getattr(config, "image_token_id", None),
                   spatial_merge_size=int(vision.spatial_merge_size),
                   tokens_per_second=float(getattr(vision, "tokens_per_second", 2)))


class Positions(NamedTuple):
    position_ids: Tensor  # [3, B, L] long
    next_position: Tensor  # [B] long: where the first generated token sits (prompt max + 1)


def _vision_positions(grid: Tensor, seconds: float, spec: RopeSpec, start: int) -> Tensor:
    """``[3, t*h*w/m^2]`` positions of one video (or image: ``seconds = 0``) starting at ``start``."""
    t, h, w = (int(x) for x in grid.tolist())
    gh, gw = h // spec.spatial_merge_size, w // spec.spatial_merge_size
    # float32 as in transformers 4.50 / vLLM: (i * second_per_grid_t) * tokens_per_second, truncated
    seconds32 = torch.tensor(seconds, dtype=torch.float32)
    t_idx = (torch.arange(t, dtype=torch.float32) * seconds32 * torch.tensor(spec.tokens_per_second,
                                                                            dtype=torch.float32)).long()  # [t]
    grid_t = t_idx.view(t, 1, 1).expand(t, gh, gw)
    grid_h = torch.arange(gh).view(1, gh, 1).expand(t, gh, gw)
    grid_w = torch.arange(gw).view(1, 1, gw).expand(t, gh, gw)
    return torch.stack([grid_t, grid_h, grid_w]).reshape(3, -1) + start  # [3, t*gh*gw]


def mrope_positions(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    spec: RopeSpec,
    *,
    video_grid_thw: Tensor | None = None,
    second_per_grid_ts: Tensor | list[float] | None = None,
    image_grid_thw: Tensor | None = None,
) -> Positions:
    """3D positions ``[3, B, L]`` of a (left- or right-padded) batch and each row's next position.

    Videos are the runs of ``spec.video_token_id`` in each row (images: ``image_token_id``), taken
    in order from ``video_grid_thw`` ``[num_videos, 3]`` / ``second_per_grid_ts`` ``[num_videos]``
    across the batch, as the processor emits them. A run whose length is not ``t*h*w/m^2`` raises.

    Example (tokens per second 2, merge 2): 3 text tokens, a video of grid (2, 4, 4) at 1 s per
    grid (8 tokens), 2 text tokens ->
    t: 0 1 2 | 3 3 3 3 5 5 5 5 | 6 7;  h: 0 1 2 | 3 3 4 4 3 3 4 4 | 6 7;
    w: 0 1 2 | 3 4 3 4 3 4 3 4 | 6 7;  next position 8.
    """
    batch, length = input_ids.shape
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    ids_cpu, mask_cpu = input_ids.detach().cpu(), mask.detach().cpu()
    seconds = [float(s) for s in (second_per_grid_ts.tolist() if torch.is_tensor(second_per_grid_ts)
                                  else (second_per_grid_ts or []))]
    visions = {spec.video_token_id: (video_grid_thw, seconds)}
    if spec.image_token_id is not None:
        visions[spec.image_token_id] = (image_grid_thw, None)
    used = dict.fromkeys(visions, 0)
    out = torch.full((3, batch, length), PAD_POSITION, dtype=torch.long)
    next_position = torch.zeros(batch, dtype=torch.long)
    for b in range(batch):
        ids = ids_cpu[b][mask_cpu[b]].tolist()  # the row's real tokens
        pieces: list[Tensor] = []
        start, i, n = 0, 0, len(ids)
        while i < n:
            token = ids[i]
            j = i + 1
            if token in visions:
                while j < n and ids[j] == token:
                    j += 1
                grids, secs = visions[token]
                k = used[token]
                if grids is None or k >= len(grids):
                    raise ValueError(f"row {b}: more vision runs of token {token} than grids were given")
                grid = grids[k].detach().cpu()
                expected = int(grid.prod()) // spec.spatial_merge_size**2
                if j - i != expected:
                    raise ValueError(f"row {b}: a vision run of {j - i} tokens, but grid {grid.tolist()} "
                                     f"needs {expected}")
                second = 0.0 if secs is None else (secs[k] if k < len(secs) else 1.0)
                piece = _vision_positions(grid, second, spec, start)
                used[token] = k + 1
            else:
                while j < n and ids[j] not in visions:
                    j += 1
                piece = (torch.arange(j - i) + start).expand(3, -1)  # [3, text run]
            pieces.append(piece)
            start = int(piece.max()) + 1
            i = j
        if pieces:
            out[:, b, mask_cpu[b]] = torch.cat(pieces, dim=1)
        next_position[b] = start
    return Positions(out.to(input_ids.device), next_position.to(input_ids.device))


def completion_positions(next_position: Tensor, length: int) -> Tensor:
    """``[3, N, length]`` positions of ``length`` generated tokens: ``next_position + k`` on every axis."""
    steps = torch.arange(length, device=next_position.device)  # [C]
    return (next_position.view(-1, 1) + steps).unsqueeze(0).expand(3, -1, -1)  # [3, N, C]


def prompt_positions(model, inputs: dict[str, Tensor]) -> Positions:
    """Positions of a processor batch (``input_ids``, ``attention_mask``, visual grids) for ``model``."""
    return mrope_positions(
        inputs["input_ids"], inputs.get("attention_mask"), RopeSpec.from_config(model.config),
        video_grid_thw=inputs.get("video_grid_thw"), second_per_grid_ts=inputs.get("second_per_grid_ts"),
        image_grid_thw=inputs.get("image_grid_thw"),
    )


def sequence_positions(model, prompt_inputs: dict[str, Tensor], completion_length: int) -> Tensor:
    """``[3, N, P + C]``: the prompt's positions followed by those of ``completion_length`` generated tokens."""
    prompt = prompt_positions(model, prompt_inputs)
    tail = completion_positions(prompt.next_position, completion_length)  # [3, N, C]
    return torch.cat([prompt.position_ids, tail], dim=2)  # [3, N, P+C]
