"""Rollout: sample G completions per prompt with HF ``generate`` and mask them.

The prompt batch is expanded to G rows per prompt *before* generation (prompt-major order, the
layout :func:`museg_lit.rl.advantages.group_advantages` expects), so the same expanded inputs serve
generation and the log-prob passes. Generation itself goes through
:func:`museg_lit.models.generation.generate` (sampling settings, positions, budgets).
Departure from the DESIGN target: the vision tower still runs once per row in ``generate`` (G
times per prompt); sharing it is future work (see README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from museg_lit.models.generation import Sampling, SpecialTokens, generate


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


def completion_mask(
    completion_ids: Tensor, eos_token_ids: list[int] | tuple[int, ...], budgets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Mask ``[N, C]`` keeping tokens up to and including the first EOS, and ``truncated`` ``[N]``.

    ``budgets`` ``[N]`` (new tokens allowed per row): a row ends at its budget whatever follows, and
    is truncated when no EOS falls within it (vLLM's ``finish_reason="length"``).

    Example: ids [[5, 9, 2, 0]] with eos {2} -> mask [[1, 1, 1, 0]], truncated [False];
    with budget [2] -> mask [[1, 1, 0, 0]], truncated [True].
    """
    n, c = completion_ids.shape
    device = completion_ids.device
    positions = torch.arange(c, device=device).expand(n, c)  # [N, C]
    limit = torch.full((n,), c, device=device) if budgets is None else budgets.to(device).clamp(max=c)  # [N]
    is_eos = torch.isin(completion_ids, torch.tensor(list(eos_token_ids), device=device))  # [N, C]
    is_eos &= positions < limit.unsqueeze(1)
    has_eos = is_eos.any(dim=1)  # [N]
    last = torch.where(has_eos, is_eos.int().argmax(dim=1), limit - 1)  # [N] last kept index
    return (positions <= last.unsqueeze(1)).long(), ~has_eos


def completion_budgets(attention_mask: Tensor, max_new_tokens: int, max_total_tokens: int | None) -> Tensor:
    """New tokens allowed per row ``[N]``: ``min(max_new_tokens, max_total_tokens - prompt length)``.

    MUSEG's vLLM ran with ``max_model_len = 4096``: prompt + completion <= 4096 tokens, so a
    3.6k-token prompt leaves ~500. Example: prompt lengths [3600, 100], 4096 new, total 4096 ->
    [496, 3996]."""
    budgets = torch.full((attention_mask.shape[0],), max_new_tokens, device=attention_mask.device)  # [N]
    if max_total_tokens is not None:
        budgets = budgets.clamp(max=max_total_tokens - attention_mask.sum(dim=1))
    return budgets


@torch.no_grad()
def generate_rollout(
    model: torch.nn.Module,
    tokenizer,
    prompt_inputs: dict[str, Tensor],
    *,
    num_generations: int,
    sampling: Sampling | None = None,
    tokens: SpecialTokens | None = None,
    max_total_tokens: int | None = None,
    synced_gpus: bool | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    eos_token_ids: list[int] | None = None,
    pad_token_id: int | None = None,
    suppress_token_ids: list[int] | None = None,
) -> Rollout:
    """Sample ``num_generations`` completions per prompt; returns tokens, masks and texts.

    Sampling uses exactly ``sampling`` (:mod:`museg_lit.models.generation`: never the checkpoint's
    defaults), positions by the checkpoints' rule, and per-row budgets
    (:func:`completion_budgets`). Vision placeholders are never sampled: a ``<|video_pad|>`` in a
    completion would be taken for a visual slot by the log-prob forward pass and break it (MUSEG
    dropped such tokens from vLLM's output instead). ``synced_gpus``: see
    :func:`museg_lit.models.generation.generate`; under FSDP the module unshards the policy first
    and passes ``False`` (see :mod:`museg_lit.distributed.sharding`).

    The DESIGN keywords (``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``,
    ``eos_token_ids``, ``pad_token_id``, ``suppress_token_ids``) still work and build ``sampling``
    / ``tokens`` when those are not given (repetition penalty 1.0).
    """
    if sampling is None:
        if max_new_tokens is None:
            raise TypeError("generate_rollout needs sampling= (or max_new_tokens=)")
        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
    if tokens is None:
        if eos_token_ids is None or pad_token_id is None:
            raise TypeError("generate_rollout needs tokens= (or eos_token_ids= and pad_token_id=)")
        tokens = SpecialTokens(tuple(eos_token_ids), int(pad_token_id), tuple(suppress_token_ids or ()))
    expanded = repeat_visual_batch(prompt_inputs, num_generations)
    budgets = completion_budgets(expanded["attention_mask"], sampling.max_new_tokens, max_total_tokens)  # [N]
    if bool((budgets < 1).any()):
        raise ValueError(f"a prompt of {int(expanded['attention_mask'].sum(1).max())} tokens leaves no room under "
                         f"max_total_tokens={max_total_tokens} (the data module skips such prompts)")
    completion_ids = generate(model, expanded, sampling, tokens, budgets=budgets, suppress_vision=True,
                              synced_gpus=synced_gpus)  # [N, C]
    mask, truncated = completion_mask(completion_ids, tokens.eos_token_ids, budgets)
    completion_ids = completion_ids.masked_fill(mask == 0, tokens.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(expanded, completion_ids, mask, truncated, texts)
