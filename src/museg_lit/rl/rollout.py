"""Rollout: sample G completions per prompt and mask them.

A :class:`Rollout` keeps the B prompts **once** (``prompt_inputs``, with ``num_generations`` = G
recorded) and the completions prompt-major ``[B*G, C]`` (the layout
:func:`museg_lit.rl.advantages.group_advantages` expects). Generation goes through
:func:`museg_lit.models.generation.generate_groups`: with ``share_prefix`` each prompt (vision
tower included) is prefilled once and its KV cache shared by its G rows; the log-prob passes pack
each prompt with its G completions (:mod:`museg_lit.rl.logprobs`). Nothing is ever expanded to
G copies of the video unless ``share_prefix=False`` asks for the repeated comparison path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from museg_lit.models.batch import repeat_visual_batch, select_visual_rows
from museg_lit.models.generation import Sampling, SpecialTokens, generate_groups

__all__ = ["Rollout", "completion_budgets", "completion_mask", "generate_rollout", "repeat_visual_batch",
           "select_rollout", "select_visual_rows"]


@dataclass(frozen=True)
class Rollout:
    prompt_inputs: dict[str, Tensor]  # B prompts once: input_ids/attention_mask [B, P], visual tensors
    completion_ids: Tensor  # [B*G, C] prompt-major
    completion_mask: Tensor  # [B*G, C] 1 up to and including the first EOS
    truncated: Tensor  # [B*G] bool: no EOS within the row's budget
    texts: list[str]  # B*G decoded completions (special tokens removed)
    num_generations: int = 1  # G: completion rows per prompt
    # [B] merged vision-tower outputs from the shared prefill, kept only where later passes may
    # reuse them (frozen vision tower; see museg_lit.module)
    video_features: tuple[Tensor, ...] | None = None

    @property
    def expanded_inputs(self) -> dict[str, Tensor]:
        """One prompt copy per completion row (the repeated log-prob path)."""
        return repeat_visual_batch(self.prompt_inputs, self.num_generations)


def select_rollout(rollout: Rollout, groups: Tensor) -> Rollout:
    """The sub-rollout of the prompts ``groups`` (bool ``[B]``) and their G completions each."""
    g = rollout.num_generations
    rows = groups.repeat_interleave(g)  # [B*G]
    keep = rows.nonzero().squeeze(1).tolist()
    features = rollout.video_features
    if features is not None:
        features = tuple(f for f, k in zip(features, groups.tolist(), strict=True) if k)
    return Rollout(
        select_visual_rows(rollout.prompt_inputs, groups),
        rollout.completion_ids[rows],
        rollout.completion_mask[rows],
        rollout.truncated[rows],
        [rollout.texts[i] for i in keep],
        g,
        features,
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
    share_prefix: bool = True,
    keep_video_features: bool = False,
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
    and passes ``False`` (see :mod:`museg_lit.distributed.sharding`). ``share_prefix``: one
    prefill per prompt (default) or G copies; ``keep_video_features`` stores the prefill's vision
    features in the rollout for later passes to reuse.

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
    g = num_generations
    prompt_mask = prompt_inputs["attention_mask"]  # [B, P]
    budgets = completion_budgets(prompt_mask, sampling.max_new_tokens, max_total_tokens).repeat_interleave(g)  # [B*G]
    if bool((budgets < 1).any()):
        raise ValueError(f"a prompt of {int(prompt_mask.sum(1).max())} tokens leaves no room under "
                         f"max_total_tokens={max_total_tokens} (the data module skips such prompts)")
    out = generate_groups(model, prompt_inputs, sampling, tokens, num_generations=g, budgets=budgets,
                          suppress_vision=True, synced_gpus=synced_gpus, share_prefix=share_prefix)
    mask, truncated = completion_mask(out.completion_ids, tokens.eos_token_ids, budgets)
    completion_ids = out.completion_ids.masked_fill(mask == 0, tokens.pad_token_id)  # [B*G, C]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    features = out.video_features if keep_video_features else None
    return Rollout(dict(prompt_inputs), completion_ids, mask, truncated, texts, g, features)
