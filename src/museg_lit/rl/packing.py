"""One prompt and its G completions as one sequence, ``[P | C_1 | ... | C_G]`` (Prefix Grouper).

GRPO scores G completions of the same prompt. The usual log-prob pass (TRL, verl, EasyR1, MUSEG)
repeats the prompt G times: ``G * (P + C)`` tokens, the vision tower G times. Packed, a group is
``P + G * C`` tokens and the video is encoded once. What makes the packed sequence compute exactly
what the repeated one does:

* **attention**: a prompt token attends causally to the prompt; a token of completion ``g``
  attends to the whole prompt and causally to earlier tokens of completion ``g`` only (never to
  another completion) — :func:`group_attention_mask`;
* **positions**: the prompt keeps its 3D positions; every completion starts again at the
  prompt's next position (``max + 1``), as in generation — :func:`packed_positions`;
* **logits**: completion ``g``'s first token is predicted from the prompt's last position, its
  ``k``-th from its own ``(k-1)``-th token — :func:`logit_positions`.

Costs (B prompts, P prompt tokens, G completions of C tokens, hidden d): the linear layers and the
vision tower see ``B * (P + G*C)`` tokens instead of ``B * G * (P + C)``; attention is a dense
masked ``L x L`` product with ``L = P + G*C`` (about ``L^2 * d`` per layer, vs ``G (P + C)^2 d``
repeated: smaller whenever ``G*C`` is small next to ``P``, which is the GRPO case: P ~ 3.6k,
C ~ 0.5k); the boolean mask itself is ``B * L^2`` bytes (58 MB per prompt at L = 7,600). The mask
is an arbitrary 4D mask, so the packed pass needs ``sdpa`` or ``eager`` attention (flash-attn
kernels take no such mask).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["PackedGroups", "group_attention_mask", "logit_positions", "pack_groups", "packed_positions"]


class PackedGroups(NamedTuple):
    input_ids: Tensor  # [B, L] with L = P + G*C
    attention_mask: Tensor  # [B, 1, L, L] bool: True = may attend
    position_ids: Tensor  # [3, B, L]
    logit_index: Tensor  # [G*C]: the position whose logits predict each completion token


def group_attention_mask(prompt_mask: Tensor, completion_mask: Tensor, num_generations: int) -> Tensor:
    """``[B, 1, L, L]`` bool mask of the packed groups.

    ``prompt_mask`` ``[B, P]`` (left padding 0), ``completion_mask`` ``[B*G, C]`` prompt-major.
    Query ``i`` sees key ``j`` iff ``j <= i``, key ``j`` is a real token, and ``j`` is in the
    prompt or in ``i``'s own completion. Every query also sees itself, so padding rows are never
    fully masked (sdpa would return NaN there); padding is never a key of a real token.

    Example (P = 2, G = 2, C = 1; rows are queries)::

        p0 1 0 0 0
        p1 1 1 0 0
        c1 1 1 1 0
        c2 1 1 0 1
    """
    b, p = prompt_mask.shape
    g = num_generations
    c = completion_mask.shape[1]
    device = prompt_mask.device
    segment = torch.cat([torch.zeros(p, dtype=torch.long, device=device),
                         torch.arange(1, g + 1, device=device).repeat_interleave(c)])  # [L]
    length = segment.shape[0]
    index = torch.arange(length, device=device)
    causal = index.view(1, -1) <= index.view(-1, 1)  # [L, L] key <= query
    same_block = (segment.view(1, -1) == 0) | (segment.view(1, -1) == segment.view(-1, 1))  # [L, L]
    real = torch.cat([prompt_mask.bool(), completion_mask.bool().reshape(b, g * c)], dim=1)  # [B, L]
    mask = (causal & same_block).unsqueeze(0) & real.unsqueeze(1)  # [B, L, L]
    mask |= torch.eye(length, dtype=torch.bool, device=device)
    return mask.unsqueeze(1)  # [B, 1, L, L]


def packed_positions(prompt_position_ids: Tensor, next_position: Tensor, num_generations: int, completion_length: int) -> Tensor:
    """``[3, B, P + G*C]``: the prompt's positions, then each completion at ``next_position + k``."""
    steps = torch.arange(completion_length, device=next_position.device)  # [C]
    tail = (next_position.view(-1, 1) + steps).repeat(1, num_generations)  # [B, G*C]
    return torch.cat([prompt_position_ids, tail.unsqueeze(0).expand(3, -1, -1)], dim=2)  # [3, B, L]


def logit_positions(prompt_length: int, num_generations: int, completion_length: int) -> Tensor:
    """``[G*C]``: for completion ``g``, position ``P - 1`` then ``P + g*C + k`` for ``k < C - 1``.

    Example: P = 3, G = 2, C = 2 -> [2, 3, 2, 5]."""
    p, c = prompt_length, completion_length
    starts = p + c * torch.arange(num_generations).view(-1, 1)  # [G, 1]
    own = starts + torch.arange(c - 1).view(1, -1)  # [G, C-1]
    first = torch.full((num_generations, 1), p - 1)  # [G, 1]
    return torch.cat([first, own], dim=1).reshape(-1)  # [G*C]


def pack_groups(
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    prompt_position_ids: Tensor,
    next_position: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    num_generations: int,
) -> PackedGroups:
    """Pack B prompts ``[B, P]`` with their ``B*G`` completions ``[B*G, C]`` (prompt-major)."""
    b, p = prompt_ids.shape
    c = completion_ids.shape[1]
    if completion_ids.shape[0] != b * num_generations:
        raise ValueError(f"{completion_ids.shape[0]} completions for {b} prompts x {num_generations} generations")
    input_ids = torch.cat([prompt_ids, completion_ids.reshape(b, num_generations * c)], dim=1)  # [B, L]
    return PackedGroups(
        input_ids,
        group_attention_mask(prompt_mask, completion_mask, num_generations),
        packed_positions(prompt_position_ids, next_position, num_generations, c),
        logit_positions(p, num_generations, c).to(prompt_ids.device),
    )
