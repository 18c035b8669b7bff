"""Models: the policy / reference / processor factory, the embedded tiny Qwen2.5-VL, its locally
trained tokenizer and chat template, and prompt encoding for already-decoded videos.

Names are re-exported lazily (PEP 562): ``import museg_lit.models.tokenizer`` or
``from museg_lit.models import build_tokenizer`` does not pay for importing the Qwen2.5-VL
modelling code (seconds) unless a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "DTYPES": "factory",
    "ModelSpec": "factory",
    "default_tiny_dir": "factory",
    "load_policy": "factory",
    "load_processor": "factory",
    "load_reference": "factory",
    "resolve_model_path": "factory",
    "VIDEO_PLACEHOLDER": "processing",
    "encode_prompts": "processing",
    "video_metadata": "processing",
    "TINY_DEFAULTS": "tiny",
    "build_tiny_checkpoint": "tiny",
    "is_complete_checkpoint": "tiny",
    "tiny_config": "tiny",
    "DEFAULT_SYSTEM_PROMPT": "tokenizer",
    "QWEN25VL_CHAT_TEMPLATE": "tokenizer",
    "SPECIAL_TOKENS": "tokenizer",
    "build_tokenizer": "tokenizer",
    "default_corpus": "tokenizer",
    "train_bpe": "tokenizer",
}

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "DTYPES",
    "ModelSpec",
    "QWEN25VL_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TINY_DEFAULTS",
    "VIDEO_PLACEHOLDER",
    "build_tiny_checkpoint",
    "build_tokenizer",
    "default_corpus",
    "default_tiny_dir",
    "encode_prompts",
    "is_complete_checkpoint",
    "load_policy",
    "load_processor",
    "load_reference",
    "resolve_model_path",
    "tiny_config",
    "train_bpe",
    "video_metadata",
]

if TYPE_CHECKING:
    from museg_lit.models.factory import (
        DTYPES,
        ModelSpec,
        default_tiny_dir,
        load_policy,
        load_processor,
        load_reference,
        resolve_model_path,
    )
    from museg_lit.models.processing import VIDEO_PLACEHOLDER, encode_prompts, video_metadata
    from museg_lit.models.tiny import (
        TINY_DEFAULTS,
        build_tiny_checkpoint,
        is_complete_checkpoint,
        tiny_config,
    )
    from museg_lit.models.tokenizer import (
        DEFAULT_SYSTEM_PROMPT,
        QWEN25VL_CHAT_TEMPLATE,
        SPECIAL_TOKENS,
        build_tokenizer,
        default_corpus,
        train_bpe,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
