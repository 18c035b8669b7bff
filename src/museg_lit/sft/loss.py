"""Teacher-forced cross-entropy on the answer tokens only.

The prompt (system text, the video's placeholder tokens, the question) is context, never a
target: the loss reads the model's log-probs at the answer positions alone, computed by the same
packed-free pass and 3D positions as GRPO's log-probs (:func:`museg_lit.rl.logprobs.completion_logprobs`),
so SFT and RL train the very token distribution that generation samples from.
:func:`sft_labels` spells the same masking out as Hugging Face ``labels`` (``-100`` = ignored),
which the tests use to check the loss against the library's own cross-entropy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from museg_lit.rl.logprobs import completion_logprobs

__all__ = ["IGNORE_INDEX", "answer_logprobs", "masked_nll", "sft_labels"]

IGNORE_INDEX = -100  # Hugging Face / PyTorch cross-entropy's "no target here"


def answer_logprobs(model: torch.nn.Module, inputs: dict[str, Tensor], answer_ids: Tensor, answer_mask: Tensor) -> Tensor:
    """Per-token log-probs ``[B, C]`` of the right-padded answers ``[B, C]`` after their prompts ``[B, P]``."""
    return completion_logprobs(model, inputs, answer_ids, answer_mask)


def masked_nll(logp: Tensor, mask: Tensor) -> Tensor:
    """Mean negative log-likelihood over the tokens where ``mask`` ``[B, C]`` is 1 (all answers' tokens
    weigh alike, as in Hugging Face's ``labels`` loss); 0 with a graph when no token is masked in."""
    mask = mask.to(logp.dtype)
    return -(logp * mask).sum() / mask.sum().clamp(min=1.0)


def sft_labels(prompt_ids: Tensor, answer_ids: Tensor, answer_mask: Tensor) -> Tensor:
    """Hugging Face ``labels`` ``[B, P + C]`` of the sequences ``[prompt | answer]``: the answer's own ids
    where ``answer_mask`` is 1, ``-100`` on every prompt token and on the answers' padding."""
    ignored = torch.full_like(prompt_ids, IGNORE_INDEX)  # [B, P]
    answer = answer_ids.masked_fill(answer_mask == 0, IGNORE_INDEX)  # [B, C]
    return torch.cat([ignored, answer], dim=1)  # [B, P+C]
