"""Rollout: sample G completions per prompt with HF ``generate`` and mask them.

The prompt batch is expanded to G rows per prompt *before* generation (prompt-major order, the
layout :func:`museg_lit.rl.advantages.group_advantages` expects), so the same expanded inputs serve
generation and the log-prob passes. Departure from the DESIGN target: the vision tower still runs
once per row in ``generate`` (G times per prompt); sharing it is future work (see README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Rollout:
    prompt_inputs: dict[str, Tensor]  # expanded: input_ids/attention_mask [N, P], visual tensors
    completion_ids: Tensor  # [N, C]
    completion_mask: Tensor  # [N, C] 1 up to and including the first EOS
    truncated: Tensor  # [N] bool: no EOS within max_new_tokens
    texts: list[str]  # N decoded completions (special tokens removed)


def repeat_visual_batch(inputs: dict[str, Tensor], repeats: int) -> dict[str, Tensor]:
    """Repeat every prompt ``repeats`` times, prompt-major, including the flattened video patches.

    ``pixel_values_videos`` is ``[sum_i T_i*H_i*W_i, D]`` (patches of all videos concatenated), so
    it is split per video with ``video_grid_thw`` before repeating.
    """
    if repeats == 1:
        return dict(inputs)
    out: dict[str, Tensor] = {}
    for key, value in inputs.items():
        if key == "pixel_values_videos":
            sizes = inputs["video_grid_thw"].prod(dim=-1).tolist()  # patches per video
            chunks = torch.split(value, sizes, dim=0)
            out[key] = torch.cat([c for c in chunks for _ in range(repeats)], dim=0)  # [G*sum, D]
        elif isinstance(value, Tensor):
            out[key] = value.repeat_interleave(repeats, dim=0)  # [B*G, ...]
        else:
            out[key] = value
    return out


def select_visual_rows(inputs: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """Keep the rows ``rows`` (bool ``[N]``) of an expanded batch, video patches included."""
    keep = rows.nonzero().squeeze(1).tolist()
    out: dict[str, Tensor] = {}
    for key, value in inputs.items():
        if key == "pixel_values_videos":
            sizes = inputs["video_grid_thw"].prod(dim=-1).tolist()
            chunks = torch.split(value, sizes, dim=0)
            out[key] = torch.cat([chunks[i] for i in keep], dim=0)  # [sum over kept rows, D]
        elif isinstance(value, Tensor):
            out[key] = value[rows]
        else:
            out[key] = value
    return out


def select_rollout(rollout: Rollout, rows: Tensor) -> Rollout:
    """The sub-rollout of rows ``rows`` (bool ``[N]``)."""
    keep = rows.nonzero().squeeze(1).tolist()
    return Rollout(
        select_visual_rows(rollout.prompt_inputs, rows),
        rollout.completion_ids[rows],
        rollout.completion_mask[rows],
        rollout.truncated[rows],
        [rollout.texts[i] for i in keep],
    )


def completion_mask(completion_ids: Tensor, eos_token_ids: list[int]) -> tuple[Tensor, Tensor]:
    """Mask ``[N, C]`` keeping tokens up to and including the first EOS, and ``truncated`` ``[N]``.

    Example: ids [[5, 9, 2, 0]] with eos {2} -> mask [[1, 1, 1, 0]], truncated [False].
    """
    is_eos = torch.isin(completion_ids, torch.tensor(eos_token_ids, device=completion_ids.device))  # [N, C]
    has_eos = is_eos.any(dim=1)  # [N]
    n, c = completion_ids.shape
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full((n,), c, device=completion_ids.device))  # [N]
    positions = torch.arange(c, device=completion_ids.device).expand(n, c)  # [N, C]
    return (positions <= first.unsqueeze(1)).long(), ~has_eos


@torch.no_grad()
def generate_rollout(
    model: torch.nn.Module,
    tokenizer,
    prompt_inputs: dict[str, Tensor],
    *,
    num_generations: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    do_sample: bool = True,
    eos_token_ids: list[int],
    pad_token_id: int,
    suppress_token_ids: list[int] | None = None,
    synced_gpus: bool | None = None,
) -> Rollout:
    """Sample ``num_generations`` completions per prompt; returns tokens, masks and texts.

    ``suppress_token_ids`` are never sampled: vision placeholders (``<|video_pad|>`` ...) in a
    completion would be taken for visual slots by the log-prob forward pass and break it.
    ``synced_gpus`` is HF's switch that keeps every rank decoding until all are done (needed only
    when a forward pass issues collectives); ``None`` lets transformers decide. Under FSDP the
    module unshards the policy first and passes ``False`` (see :mod:`museg_lit.distributed.sharding`).
    """
    expanded = repeat_visual_batch(prompt_inputs, num_generations)
    was_training = model.training
    model.eval()
    try:
        sequences = model.generate(
            **expanded,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=top_k if do_sample else None,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_ids,
            pad_token_id=pad_token_id,
            suppress_tokens=suppress_token_ids or None,
            use_cache=True,
            synced_gpus=synced_gpus,
        )  # [N, P+C]
    finally:
        model.train(was_training)
    completion_ids = sequences[:, expanded["input_ids"].shape[1]:]  # [N, C]
    mask, truncated = completion_mask(completion_ids, eos_token_ids)
    completion_ids = completion_ids.masked_fill(mask == 0, pad_token_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(expanded, completion_ids, mask, truncated, texts)
