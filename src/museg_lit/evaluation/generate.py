"""Greedy answers of a model to templated questions about decoded clips (MUSEG's evaluation decoding).

vLLM's ``temperature=0`` of the MUSEG release: pure argmax, no repetition penalty, whatever the
checkpoint's ``generation_config.json`` says (Qwen's ``repetition_penalty=1.05``, ``top_k=1``...);
positions by the rule the checkpoints were trained with (:mod:`museg_lit.models.generation`).
Departure: Hugging Face ``generate`` instead of vLLM (same greedy argmax; batched padding changes
floating-point sums, so a rare near-tie token can differ).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from museg_lit.data.video import VideoClip
from museg_lit.models.generation import GREEDY, SpecialTokens, generate
from museg_lit.models.processing import encode_prompts
from museg_lit.prompts import video_messages

__all__ = ["chat_prompt", "generate_answers"]


def chat_prompt(processor, question: str) -> str:
    """``question`` about one video in Qwen's chat template (default system prompt), ready to answer."""
    return processor.apply_chat_template(video_messages(question), tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate_answers(
    model, processor, questions: list[str], clips: list[VideoClip], *, max_new_tokens: int
) -> list[str]:
    """Greedy completions (special tokens removed) for ``B`` templated questions about ``B`` clips:
    vLLM's ``temperature=0`` (pure argmax, no repetition penalty, whatever the checkpoint's
    ``generation_config.json`` says), positions by the checkpoints' rule
    (:func:`museg_lit.models.generation.generate`)."""
    inputs = encode_prompts(
        processor,
        [chat_prompt(processor, q) for q in questions],
        [c.frames for c in clips],
        [c.sample_fps for c in clips],
        timestamps=[c.timestamps for c in clips],  # Qwen3-VL writes them as text
    )
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    sampling = replace(GREEDY, max_new_tokens=max_new_tokens)
    completions = generate(model, inputs, sampling, SpecialTokens.of(model, processor.tokenizer))  # [B, C]
    return processor.tokenizer.batch_decode(completions, skip_special_tokens=True)
