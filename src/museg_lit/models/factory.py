"""Build the policy, the reference model and the processor from a :class:`ModelSpec`.

Hydra builds the spec (``conf/model/*.yaml`` with ``_target_: museg_lit.models.ModelSpec``); the
LightningModule calls :func:`load_policy`, :func:`load_reference` and :func:`load_processor`.
Nothing is ever downloaded: real checkpoints are loaded from a local directory with
``local_files_only=True``, and the tiny model is built on the spot (``museg_lit.models.tiny``).

Departures from MUSEG's TRL setup: the reference model is a separate frozen copy loaded from the
same path (as TRL does without PEFT); ``freeze_vision`` freezes the whole vision tower including
the patch merger (MUSEG trains all weights; the switch exists for memory-bound sweeps).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen3VLProcessor

from museg_lit.errors import ConfigError
from museg_lit.models.lora import LoraSpec, apply_lora
from museg_lit.models.tiny import TINY_DEFAULTS, build_tiny_checkpoint

__all__ = [
    "DTYPES",
    "ModelSpec",
    "checkpoint_model_type",
    "default_tiny_dir",
    "load_policy",
    "load_processor",
    "load_reference",
    "require_trainable",
    "resolve_model_path",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# Bump when the tiny model's recipe (tokenizer corpus, sizes, init) changes, so that the default
# cache directory of an older build is not reused.
_TINY_RECIPE_VERSION = 2


@dataclass
class ModelSpec:
    """Which model to load and how.

    Attributes:
        name: display name, or the Hub id the weights came from (used in the download hint).
        path: local checkpoint directory. For ``tiny`` it is where the tiny checkpoint is built
            (``None`` -> a cache directory, see :func:`default_tiny_dir`).
        tiny: build and use the embedded tiny Qwen2.5-VL instead of real weights.
        dtype: ``float32`` | ``bfloat16`` | ``float16`` (or ``fp32`` / ``bf16`` / ``fp16``).
        attn_implementation: ``sdpa`` | ``eager`` | ``flash_attention_2`` (needs ``pip install .[gpu]``).
        gradient_checkpointing: enable non-reentrant activation checkpointing on the policy.
        freeze_vision: freeze the vision tower (patch embed, blocks, merger) of the policy.
        seed: weight-initialisation seed of the tiny model (ignored for real checkpoints).
        lora: LoRA adapter settings (``lora.enabled=true``); the reference is then the policy
            with the adapter disabled, and :func:`load_reference` is not used.
    """

    name: str
    path: str | None = None
    tiny: bool = False
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    freeze_vision: bool = False
    seed: int = 0
    lora: LoraSpec | None = None

    @property
    def uses_lora(self) -> bool:
        return self.lora is not None and self.lora.enabled


def default_tiny_dir(seed: int = 0) -> Path:
    """Cache directory of the tiny checkpoint: ``$MUSEG_LIT_CACHE`` or ``~/.cache/museg_lit``.

    The name carries a hash of the recipe so that a changed recipe never reuses a stale build.
    """
    root = os.environ.get("MUSEG_LIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "museg_lit"
    )
    recipe = json.dumps({"v": _TINY_RECIPE_VERSION, "sizes": TINY_DEFAULTS}, sort_keys=True, default=list)
    digest = hashlib.sha1(recipe.encode()).hexdigest()[:8]
    return Path(root) / f"tiny-qwen2_5_vl-seed{seed}-{digest}"


def _download_hint(spec: ModelSpec) -> str:
    repo = spec.name if "/" in spec.name else "Qwen/Qwen2.5-VL-7B-Instruct"
    where = (
        "model.path is not set"
        if spec.path is None
        else f"model.path={spec.path} holds no checkpoint (config.json)"
    )
    return (
        f"{where}: download the weights with `hf download {repo} --local-dir DIR` "
        "(huggingface_hub >= 1.0; formerly `huggingface-cli download`) and pass model.path=DIR, "
        "or use model.tiny=true for the built-in tiny model"
    )


def resolve_model_path(spec: ModelSpec) -> Path:
    """Local checkpoint directory for ``spec``; builds the tiny checkpoint if needed.

    Raises:
        FileNotFoundError: a real (non-tiny) spec whose path is unset or holds no ``config.json``;
            the one-line message says how to get the weights.
        ConfigError: its ``config.json`` is not a JSON object (the message names the file).
    """
    if spec.tiny:
        path = build_tiny_checkpoint(spec.path or default_tiny_dir(spec.seed), seed=spec.seed)
    elif spec.path is None or not (Path(spec.path).expanduser() / "config.json").is_file():
        raise FileNotFoundError(_download_hint(spec))
    else:
        path = Path(spec.path).expanduser()
    _check_config_json(path / "config.json")
    return path


# The checkpoint's `model_type` decides the family, never its folder name. Processors of every
# listed family load; the model passes (positions, prefix sharing, sharding) exist for Qwen2.5-VL
# only so far, so a policy of another family is refused rather than run with Qwen2.5-VL's rules.
PROCESSORS = {"qwen2_5_vl": Qwen2_5_VLProcessor, "qwen3_vl": Qwen3VLProcessor}
TRAINABLE = ("qwen2_5_vl",)


def checkpoint_model_type(path: str | Path) -> str:
    """``model_type`` of the checkpoint folder's ``config.json`` (``qwen2_5_vl``, ``qwen3_vl``, ...)."""
    config = json.loads((Path(path) / "config.json").read_text())
    return str(config.get("model_type", ""))


def _family(path: Path, allowed) -> str:
    model_type = checkpoint_model_type(path)
    if model_type not in allowed:
        raise ConfigError(
            f"{path / 'config.json'}: model_type {model_type!r} is not supported here (supported: "
            f"{', '.join(allowed)}); Qwen3-VL prompts and frames are in place, its model passes are not yet")
    return model_type


def require_trainable(spec: ModelSpec) -> str:
    """The checkpoint's family, or a ConfigError (one line, before any data work) when training and
    evaluation cannot run it yet."""
    return _family(resolve_model_path(spec), TRAINABLE)


def _check_config_json(path: Path) -> None:
    """Raise ConfigError naming ``path`` unless it is a UTF-8 JSON object (transformers' own error
    for a broken ``config.json`` names no file)."""
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError
        raise ConfigError(
            f"{path}: not valid JSON ({exc}); model.path must be a Hugging Face checkpoint folder"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a JSON object; model.path must be a Hugging Face checkpoint folder")


def _dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}") from None


def _check_attn(impl: str) -> None:
    # Fail before loading gigabytes of weights, with the fix in the message.
    if impl == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError(
            "attn_implementation='flash_attention_2' needs the flash-attn package (CUDA only): "
            "run `pip install .[gpu]`, or set model.attn_implementation=sdpa"
        )


def _load(spec: ModelSpec) -> Qwen2_5_VLForConditionalGeneration:
    _check_attn(spec.attn_implementation)
    dtype = _dtype(spec.dtype)
    path = resolve_model_path(spec)
    _family(path, TRAINABLE)
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=dtype, attn_implementation=spec.attn_implementation, local_files_only=True
    )


def load_policy(spec: ModelSpec) -> Qwen2_5_VLForConditionalGeneration:
    """The trainable policy (returned in eval mode, as ``from_pretrained`` leaves it; Lightning
    switches it to train mode in ``fit``)."""
    model = _load(spec)
    if spec.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (e.g. a frozen vision tower) and
        # with torch.compile; the reentrant variant would silently drop their gradients.
        # (`activation_checkpointing_enable` is the transformers >= 5.2x name of
        # `gradient_checkpointing_enable`, which is deprecated.)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec.freeze_vision:
        model.model.visual.requires_grad_(False)
    if spec.uses_lora:
        model = apply_lora(model, spec.lora, train_vision=not spec.freeze_vision)
    return model


def load_reference(spec: ModelSpec) -> Qwen2_5_VLForConditionalGeneration:
    """A frozen copy of the initial policy for the KL term: eval mode, no gradients."""
    model = _load(spec)
    model.eval()
    model.requires_grad_(False)
    return model


def load_processor(spec: ModelSpec) -> Qwen2_5_VLProcessor | Qwen3VLProcessor:
    """The checkpoint's processor (tokenizer, image/video processors, chat template), of the family
    its ``config.json`` names."""
    path = resolve_model_path(spec)
    return PROCESSORS[_family(path, tuple(PROCESSORS))].from_pretrained(path, local_files_only=True)
