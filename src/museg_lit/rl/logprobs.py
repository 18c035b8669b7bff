"""Per-token log-probabilities of completions under a causal LM (policy or reference).

Only the completion positions are materialised (``logits_to_keep``), and log-softmax is taken one
row at a time: the full ``[N, L, V]`` log-softmax of a 150k-token vocabulary is what makes naive
GRPO implementations run out of memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from museg_lit.models.positions import sequence_positions


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
    temperature: float = 1.0,
) -> Tensor:
    """Log-probs ``[N, C]`` of ``completion_ids`` given the (already group-expanded) prompt.

    ``prompt_inputs`` holds ``input_ids``/``attention_mask`` ``[N, P]`` and the visual tensors
    (``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``) for the same N rows.
    ``temperature`` divides the logits (1.0 = TRL 0.15 / MUSEG, which did not rescale).
    """
    c = completion_ids.shape[1]
    input_ids = torch.cat([prompt_inputs["input_ids"], completion_ids], dim=1)  # [N, P+C]
    attention_mask = torch.cat([prompt_inputs["attention_mask"], completion_mask.to(prompt_inputs["attention_mask"].dtype)], dim=1)  # [N, P+C]
    # the positions generation used (museg_lit.models.positions), never the library's own rule;
    # mm_token_type_ids only feeds that rule, so it is not passed
    position_ids = sequence_positions(model, prompt_inputs, c)  # [3, N, P+C]
    extra = {k: v for k, v in prompt_inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=c + 1, use_cache=False, **extra)
    logits = out.logits[:, :-1, :]  # [N, C, V]: position t predicts token t+1
    if temperature != 1.0:
        logits = logits / temperature
    return selective_log_softmax(logits, completion_ids)  # [N, C]
