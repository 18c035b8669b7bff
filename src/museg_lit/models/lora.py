"""LoRA adapters on the policy (peft).

With LoRA the reference model is *the policy with its adapter disabled* — no second copy of the
weights in memory (the module calls :func:`reference_context`). Adapters go on the language model's
attention and MLP projections; with ``freeze_vision=False`` also on the vision blocks' attention
(``qkv``, ``proj``) and MLP, otherwise the vision tower stays frozen. Departure from MUSEG: MUSEG
fine-tunes all weights; LoRA is an option for memory-bound runs and sweeps.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

LANGUAGE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VISION_TARGETS = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSpec:
    """``model.lora.*``: ``enabled=true`` wraps the policy in a peft LoRA adapter."""

    enabled: bool = False
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    language_targets: list[str] = field(default_factory=lambda: list(LANGUAGE_TARGETS))
    vision_targets: list[str] = field(default_factory=lambda: list(VISION_TARGETS))


def target_regex(spec: LoraSpec, *, vision: bool) -> str:
    """peft ``target_modules`` regex (full-name match).

    Example: language targets (q_proj,) and no vision ->
    ``.*language_model.*\\.(q_proj)``.
    """
    parts = [rf".*language_model.*\.({'|'.join(spec.language_targets)})"]
    if vision and spec.vision_targets:
        parts.append(rf".*visual\.blocks.*\.({'|'.join(spec.vision_targets)})")
    return "|".join(f"(?:{p})" for p in parts)


def apply_lora(model: torch.nn.Module, spec: LoraSpec, *, train_vision: bool) -> torch.nn.Module:
    """Wrap ``model`` in a ``PeftModel`` with a LoRA adapter; only adapter weights train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, bias="none",
        target_modules=target_regex(spec, vision=train_vision),
    )
    # no task_type: a plain PeftModel forwards every keyword (pixel_values_videos, mm_token_type_ids,
    # logits_to_keep, ...) to Qwen2.5-VL unchanged
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextmanager
def reference_context(model: torch.nn.Module):
    """Inside this context a LoRA policy computes as its base model (the reference)."""
    with model.disable_adapter() if is_lora(model) else nullcontext():
        yield
