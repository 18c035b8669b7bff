"""Models: the policy / reference / processor factory, the embedded tiny Qwen2.5-VL, its locally
trained tokenizer and chat template, and prompt encoding for already-decoded videos."""

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
from museg_lit.models.tiny import TINY_DEFAULTS, build_tiny_checkpoint, is_complete_checkpoint, tiny_config
from museg_lit.models.tokenizer import (
    DEFAULT_SYSTEM_PROMPT,
    QWEN25VL_CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    build_tokenizer,
    default_corpus,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "DTYPES",
    "QWEN25VL_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TINY_DEFAULTS",
    "VIDEO_PLACEHOLDER",
    "ModelSpec",
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
    "video_metadata",
]
