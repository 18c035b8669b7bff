"""Per-token log-probabilities of completions under a causal LM (policy, reference or old policy).

Two layouts, the same numbers (within float rounding; tested):

* **shared prefix** (``num_generations = G > 1``, the default in training): ``prompt_inputs``
  holds the B prompts once and each prompt is packed with its G completions into one sequence
  ``[P | C_1 | ... | C_G]`` under a block mask (:mod:`museg_lit.rl.packing`, the Prefix Grouper
  layout, arXiv 2506.05433). The vision tower runs once per prompt and the decoder sees
  ``P + G*C`` tokens per group instead of ``G * (P + C)``; gradients reach the prompt's
  activations (and a trainable vision tower) through every completion, summed, exactly as the
  repeated layout sums them over the G copies. Why packing and not a KV cache kept with grad:
  Hugging Face drops the cache under gradient checkpointing (the decoder layers re-run without
  it), and a packed sequence is an ordinary forward, so checkpointing, LoRA and FSDP2 need nothing
  special. Cost: a dense ``L x L`` mask per prompt (``L = P + G*C``) and ``sdpa``/``eager``
  attention only.
* **repeated** (``num_generations = 1``): ``prompt_inputs`` already holds one prompt per
  completion row (TRL's layout); kept for comparison (``rollout.share_prefix=false``).

``video_features`` (the merged vision-tower output of each prompt's video) skips the vision tower
altogether; the module passes them only where they are provably the same numbers (frozen vision
tower, see :mod:`museg_lit.module`).

Only the completion positions are materialised (``logits_to_keep``), and log-softmax is taken one
row at a time: the full ``[N, L, V]`` log-softmax of a 150k-token vocabulary is what makes naive
GRPO implementations run out of memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from museg_lit.models.batch import visual_inputs
from museg_lit.models.positions import prompt_positions, sequence_positions
from museg_lit.rl.packing import pack_groups


def selective_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """``log_softmax(logits)[..., index]`` without the full log-softmax tensor.

    Shapes: logits ``[N, C, V]``, index ``[N, C]`` -> ``[N, C]`` (float32 for stability).
    """
    out = []
    for row_logits, row_index in zip(logits, index, strict=True):  # [C, V], [C]
        row = row_logits.float()
        picked = row.gather(-1, row_index.unsqueeze(-1)).squeeze(-1)  # [C]
        out.append(picked - torch.logsumexp(row, dim=-1))  # [C]
    return torch.stack(out)  # [N, C]


def completion_logprobs(
    model: torch.nn.Module,
    prompt_inputs: dict[str, Tensor],
    completion_ids: Tensor,
    completion_mask: Tensor,
    *,
    num_generations: int = 1,
    temperature: float = 1.0,
    video_features: tuple[Tensor, ...] | None = None,
) -> Tensor:
    """Log-probs ``[B*G, C]`` of ``completion_ids`` ``[B*G, C]`` (prompt-major) given their prompts.

    ``prompt_inputs``: ``input_ids``/``attention_mask`` ``[B, P]`` (left-padded) and the visual
    tensors (``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``) of B prompts.
    ``num_generations``: completions per prompt (G); with 1, ``prompt_inputs`` is already one
    prompt per row. ``temperature`` divides the logits (1.0 = TRL 0.15 / MUSEG, which did not rescale).
    """
    if num_generations == 1:
        logits = _repeated_logits(model, prompt_inputs, completion_ids, completion_mask, video_features)
    else:
        logits = _packed_logits(model, prompt_inputs, completion_ids, completion_mask, num_generations, video_features)
    if temperature != 1.0:
        logits = logits / temperature
    return selective_log_softmax(logits, completion_ids)  # [N, C]


def rollout_logprobs(model: torch.nn.Module, rollout, *, share_prefix: bool = True, temperature: float = 1.0) -> Tensor:
    """Log-probs ``[B*G, C]`` of a :class:`~museg_lit.rl.rollout.Rollout`'s completions under ``model``:
    packed with their shared prompt (``share_prefix``, reusing the rollout's vision features when it
    kept any), else against G prompt copies."""
    if share_prefix:
        return completion_logprobs(model, rollout.prompt_inputs, rollout.completion_ids, rollout.completion_mask,
                                   num_generations=rollout.num_generations, temperature=temperature,
                                   video_features=rollout.video_features)
    return completion_logprobs(model, rollout.expanded_inputs, rollout.completion_ids, rollout.completion_mask,
                               temperature=temperature)


def _repeated_logits(model, prompt_inputs, completion_ids, completion_mask, video_features) -> Tensor:
    """``[N, C, V]`` logits of the N rows ``[P | C]``, one prompt copy per completion."""
    c = completion_ids.shape[1]
    prompt_mask = prompt_inputs["attention_mask"]
    input_ids = torch.cat([prompt_inputs["input_ids"], completion_ids], dim=1)  # [N, P+C]
    attention_mask = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)  # [N, P+C]
    position_ids = sequence_positions(model, prompt_inputs, c)  # [3, N, P+C]: generation's positions
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=c + 1, use_cache=False, **visual_inputs(prompt_inputs, video_features))
    return out.logits[:, :-1, :]  # [N, C, V]: position t predicts token t+1


def _packed_logits(model, prompt_inputs, completion_ids, completion_mask, num_generations, video_features) -> Tensor:
    """``[B*G, C, V]`` logits from B packed sequences ``[P | C_1 | ... | C_G]``."""
    b = prompt_inputs["input_ids"].shape[0]
    c = completion_ids.shape[1]
    prompt = prompt_positions(model, prompt_inputs)  # [3, B, P], [B]
    packed = pack_groups(prompt_inputs["input_ids"], prompt_inputs["attention_mask"], prompt.position_ids,
                         prompt.next_position, completion_ids, completion_mask, num_generations)
    out = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask, position_ids=packed.position_ids,
                logits_to_keep=packed.logit_index, use_cache=False, **visual_inputs(prompt_inputs, video_features))
    return out.logits.reshape(b * num_generations, c, -1)  # [B, G*C, V] -> [B*G, C, V]
