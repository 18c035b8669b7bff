"""Build a tiny but real Qwen2.5-VL checkpoint on disk, with no network.

``build_tiny_checkpoint(out_dir)`` writes a directory that ``from_pretrained`` loads exactly like a
downloaded Qwen2.5-VL-3B/7B: ``config.json`` + ``model.safetensors`` of a randomly initialised
``Qwen2_5_VLForConditionalGeneration``, ``generation_config.json``, the tokenizer files, and the
``Qwen2_5_VLProcessor`` files (image processor, video processor, chat template). Every code path
of the platform (chat template -> processor -> vision tower -> 3D-RoPE -> generate -> log-probs)
therefore runs unchanged on a laptop or CI; only the sizes differ.

Departures from Qwen's released checkpoints (on purpose):

* sizes: text hidden 128 / 2 layers / 4 heads / 2 kv heads / MLP 256; vision hidden 64 / depth 2 /
  2 heads / MLP 128 (676,288 parameters instead of 3-7B); ``mrope_section`` (4, 6, 6) keeps
  Qwen's 16:24:24 split of the rotary half-dimension (head_dim 32 -> 16). Vision-side geometry is
  Qwen's: patch 14, temporal patch 2, spatial merge 2, window 112, last block full attention,
  ``tokens_per_second`` 2, and out_hidden_size = text hidden.
* vocabulary: our locally trained tokenizer (``museg_lit.models.tokenizer``); the embedding matrix
  is padded to a multiple of 64 (Qwen pads 151,665 tokens to 152,064 the same way) and tied to the
  LM head (as in Qwen2.5-VL-3B).
* weights are random (seeded), so outputs are gibberish until trained; the generation config only
  sets eos (``<|im_end|>``, ``<|endoftext|>``) / pad / bos, not Qwen's sampling defaults
  (top_k=1, top_p=0.001, repetition_penalty=1.05). Either way none of a checkpoint's sampling
  defaults reach a generate call: :mod:`museg_lit.models.generation` swaps the checkpoint's
  config for one built from our settings (tested with Qwen's values in
  ``tests/unit/test_generation.py``).
* the processors use Qwen's real preprocessing values (CLIP mean/std, min_pixels 56*56,
  max_pixels 12,845,056 = 16,384 * 28 * 28) and ``do_sample_frames=False``: our own decoder
  samples and resizes frames, so the processor must not do it again (see ``processing.py``).

``build_tiny_checkpoint(out_dir, family="qwen3_vl")`` writes a tiny **Qwen3-VL** directory instead,
loaded like a downloaded Qwen3-VL-2B/4B/8B-Instruct: ``Qwen3VLForConditionalGeneration`` weights,
and a ``Qwen3VLProcessor`` (``Qwen2VLImageProcessor`` + ``Qwen3VLVideoProcessor``). Its departures
from the released checkpoints:

* sizes (:data:`QWEN3_VL_TINY_DEFAULTS`): text hidden 128 / 3 layers / 4 heads of head_dim 32 /
  2 kv heads / MLP 256; vision hidden 32 / depth 3 / 2 heads / MLP 64, DeepStack from vision blocks
  (0, 1) into the first two text layers (released 2B: depth 24, (5, 11, 17)), a 16 x 16 learned
  position grid (``num_position_embeddings`` 256; released 2304 = 48 x 48). Interleaved M-RoPE with
  ``mrope_section`` (6, 5, 5): the released (24, 20, 20) scaled to head_dim/2 = 16. Kept as released:
  patch 16, temporal patch 2, spatial merge 2, gelu_pytorch_tanh vision MLP, rope_theta 5,000,000,
  max_position_embeddings 262,144, out_hidden_size = text hidden, tied embeddings (as 2B/4B).
* vocabulary: :func:`museg_lit.models.tokenizer.build_qwen3_vl_tokenizer` (our BPE plus Qwen3-VL's
  14 special and 12 added tokens in Qwen's order, ``QWEN3VL_CHAT_TEMPLATE``: no default system
  prompt; tools and reasoning_content unsupported), embeddings padded to a multiple of 64.
* weights random (seeded, initializer_range 0.02); generation config only eos (``<|im_end|>``,
  ``<|endoftext|>``) / pad / bos, not Qwen3-VL's sampling defaults (top_k 20, top_p 0.8,
  temperature 0.7).
* processors: Qwen3-VL's preprocessing values (mean/std 0.5; images min/max pixels 65,536 /
  16,777,216; the video processor's class defaults for its size) and, as for Qwen2.5-VL,
  ``do_sample_frames=False`` and ``cap_pixels_per_frame=False``.

The directory is written atomically (temporary sibling directory + ``os.replace``), so concurrent
builders (e.g. pytest-xdist workers, DDP ranks) never observe a half-written checkpoint. A
``museg_tiny.json`` marker, written last, records the build arguments and marks completeness.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from museg_lit.models.tokenizer import (
    QWEN3VL_CHAT_TEMPLATE,
    QWEN3VL_SPECIAL_TOKENS,
    QWEN25VL_CHAT_TEMPLATE,
    build_qwen3_vl_tokenizer,
    build_tokenizer,
)

__all__ = [
    "FAMILIES",
    "MARKER_FILE",
    "QWEN3_VL_TINY_DEFAULTS",
    "TINY_DEFAULTS",
    "build_tiny_checkpoint",
    "is_complete_checkpoint",
    "tiny_config",
    "tiny_qwen3_vl_config",
]

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
DEFAULT_FAMILY = "qwen2_5_vl"

MARKER_FILE = "museg_tiny.json"

# Geometry of Qwen2.5-VL's vision front end; fixed because the processor and the platform's
# video decoder (multiples of 28 = patch 14 * merge 2) depend on it.
PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
SPATIAL_MERGE_SIZE = 2
# Qwen2.5-VL's preprocessor_config.json values.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 16384 * 28 * 28

TINY_DEFAULTS: dict[str, Any] = {
    # language model
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "mrope_section": (8, 12, 12),  # sums to head_dim / 2 = 256 / 4 / 2 = 32
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    # vision tower
    "vision_depth": 2,
    "vision_hidden_size": 128,
    "vision_intermediate_size": 256,
    "vision_num_heads": 2,
    "vision_window_size": 112,
    "vision_fullatt_block_indexes": (1,),
    "tokens_per_second": 2,
    # tokenizer / embeddings
    "tokenizer_vocab_size": 2048,
    "vocab_multiple": 64,
}


# Qwen3-VL: the same vision front-end geometry as Qwen2.5-VL except patch 16 (multiples of 32).
QWEN3_VL_PATCH_SIZE = 16
# Qwen3-VL's preprocessor_config.json values (images); mean/std 0.5 for images and video.
QWEN3_VL_MIN_PIXELS = 65536
QWEN3_VL_MAX_PIXELS = 16777216
QWEN3_VL_MEAN_STD = [0.5, 0.5, 0.5]

QWEN3_VL_TINY_DEFAULTS: dict[str, Any] = {
    # language model
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "mrope_section": (6, 5, 5),  # released (24, 20, 20) of head_dim/2 = 64, scaled to 16
    "rope_theta": 5_000_000.0,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.02,
    "tie_word_embeddings": True,
    # vision tower
    "vision_depth": 3,
    "vision_hidden_size": 32,
    "vision_intermediate_size": 64,
    "vision_num_heads": 2,
    "vision_num_position_embeddings": 256,
    "vision_deepstack_visual_indexes": (0, 1),
    # tokenizer / embeddings
    "tokenizer_vocab_size": 2048,
    "vocab_multiple": 64,
}

_DEFAULTS = {"qwen2_5_vl": TINY_DEFAULTS, "qwen3_vl": QWEN3_VL_TINY_DEFAULTS}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny-model family {family!r}; choose one of {list(FAMILIES)}")


def _sizes(overrides: dict[str, Any], family: str = DEFAULT_FAMILY) -> dict[str, Any]:
    _check_family(family)
    defaults = _DEFAULTS[family]
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(f"unknown tiny-model size(s) {sorted(unknown)}; known: {sorted(defaults)}")
    sizes = {**defaults, **overrides}
    head_dim = sizes.get("head_dim") or sizes["hidden_size"] // sizes["num_attention_heads"]
    if sum(sizes["mrope_section"]) * 2 != head_dim:
        raise ValueError(f"mrope_section {sizes['mrope_section']} must sum to head_dim/2 = {head_dim // 2}")
    # JSON round-trip so that the marker comparison sees lists, not tuples.
    return json.loads(json.dumps(sizes))


def tiny_config(tokenizer, **size_overrides: Any) -> Qwen2_5_VLConfig:
    """The ``Qwen2_5_VLConfig`` of the tiny model whose special-token ids match ``tokenizer``."""
    s = _sizes(size_overrides)
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in (
            "<|endoftext|>",
            "<|im_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
            "<|vision_start|>",
            "<|vision_end|>",
        )
    }
    vocab_size = -(-len(tokenizer) // s["vocab_multiple"]) * s["vocab_multiple"]
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": s["hidden_size"],
        "intermediate_size": s["intermediate_size"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_attention_heads": s["num_attention_heads"],
        "num_key_value_heads": s["num_key_value_heads"],
        "hidden_act": "silu",
        "max_position_embeddings": s["max_position_embeddings"],
        "rms_norm_eps": s["rms_norm_eps"],
        "use_sliding_window": False,
        "max_window_layers": s["num_hidden_layers"],
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": s["rope_theta"],
            "mrope_section": list(s["mrope_section"]),
        },
        # Qwen uses <|endoftext|> as bos id in its configs although the tokenizer adds no bos.
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": s["vision_depth"],
        "hidden_size": s["vision_hidden_size"],
        "intermediate_size": s["vision_intermediate_size"],
        "num_heads": s["vision_num_heads"],
        "hidden_act": "silu",
        "in_channels": 3,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "spatial_merge_size": SPATIAL_MERGE_SIZE,
        "tokens_per_second": s["tokens_per_second"],
        "window_size": s["vision_window_size"],
        "fullatt_block_indexes": list(s["vision_fullatt_block_indexes"]),
        "out_hidden_size": s["hidden_size"],
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=s["tie_word_embeddings"],
        **_vision_token_ids(ids),
    )


def _vision_token_ids(ids: dict[str, int]) -> dict[str, int]:
    """The vision special-token ids a Qwen-VL config names (the same four in both families)."""
    return {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}


def tiny_qwen3_vl_config(tokenizer, **size_overrides: Any) -> Qwen3VLConfig:
    """The ``Qwen3VLConfig`` of the tiny Qwen3-VL whose special-token ids match ``tokenizer``."""
    s = _sizes(size_overrides, "qwen3_vl")
    if len(s["vision_deepstack_visual_indexes"]) > s["num_hidden_layers"]:
        raise ValueError("DeepStack feeds one text layer per index: need len(indexes) <= num_hidden_layers")
    if any(not 0 <= i < s["vision_depth"] for i in s["vision_deepstack_visual_indexes"]):
        raise ValueError(f"vision_deepstack_visual_indexes must lie in [0, vision_depth={s['vision_depth']})")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN3VL_SPECIAL_TOKENS}
    vocab_size = -(-len(tokenizer) // s["vocab_multiple"]) * s["vocab_multiple"]
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": s["hidden_size"],
        "intermediate_size": s["intermediate_size"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_attention_heads": s["num_attention_heads"],
        "num_key_value_heads": s["num_key_value_heads"],
        "head_dim": s["head_dim"],
        "hidden_act": "silu",
        "max_position_embeddings": s["max_position_embeddings"],
        "rms_norm_eps": s["rms_norm_eps"],
        "initializer_range": s["initializer_range"],
        "attention_bias": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": s["rope_theta"],
            "mrope_section": list(s["mrope_section"]),
            "mrope_interleaved": True,
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": s["tie_word_embeddings"],
    }
    vision_config = {
        "depth": s["vision_depth"],
        "hidden_size": s["vision_hidden_size"],
        "intermediate_size": s["vision_intermediate_size"],
        "num_heads": s["vision_num_heads"],
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "patch_size": QWEN3_VL_PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "spatial_merge_size": SPATIAL_MERGE_SIZE,
        "out_hidden_size": s["hidden_size"],
        "num_position_embeddings": s["vision_num_position_embeddings"],
        "deepstack_visual_indexes": list(s["vision_deepstack_visual_indexes"]),
        "initializer_range": s["initializer_range"],
    }
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=s["tie_word_embeddings"],
        **_vision_token_ids(ids),
    )


def _qwen3_vl_processor(tokenizer) -> Qwen3VLProcessor:
    geometry = {
        "patch_size": QWEN3_VL_PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": SPATIAL_MERGE_SIZE,
        "image_mean": QWEN3_VL_MEAN_STD,
        "image_std": QWEN3_VL_MEAN_STD,
    }
    image_processor = Qwen2VLImageProcessor(
        **geometry,
        size={"shortest_edge": QWEN3_VL_MIN_PIXELS, "longest_edge": QWEN3_VL_MAX_PIXELS},
        min_pixels=QWEN3_VL_MIN_PIXELS,
        max_pixels=QWEN3_VL_MAX_PIXELS,
    )
    # The video size keeps Qwen3VLVideoProcessor's class defaults; as for Qwen2.5-VL our decoder
    # samples and resizes frames, so do_sample_frames=False and no per-frame pixel cap.
    video_processor = Qwen3VLVideoProcessor(**geometry, do_sample_frames=False, cap_pixels_per_frame=False)
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3VL_CHAT_TEMPLATE,
    )


def _processor(tokenizer) -> Qwen2_5_VLProcessor:
    common = {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": SPATIAL_MERGE_SIZE,
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD),
    }
    image_processor = Qwen2VLImageProcessor(**common)
    # do_sample_frames=False: frames arrive already sampled at the requested fps by our decoder.
    # cap_pixels_per_frame=False: keep transformers' uncapped behaviour explicitly (our decoder
    # applies qwen-vl-utils' total-pixel budget itself) and silence its deprecation warning.
    video_processor = Qwen2VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=False)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN25VL_CHAT_TEMPLATE,
    )


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a finished tiny checkpoint (its marker is written last)."""
    p = Path(path)
    return (
        (p / MARKER_FILE).is_file() and (p / "config.json").is_file() and (p / "model.safetensors").is_file()
    )


def _marker(seed: int, sizes: dict[str, Any], family: str = DEFAULT_FAMILY) -> dict[str, Any]:
    return {"family": family, "seed": seed, "sizes": sizes}


def _write(tmp: Path, seed: int, sizes: dict[str, Any]) -> int:
    """Write the whole checkpoint into ``tmp``; return the parameter count."""
    tokenizer = build_tokenizer(vocab_size=sizes["tokenizer_vocab_size"])
    return _save(tmp, Qwen2_5_VLForConditionalGeneration, tiny_config(tokenizer, **sizes), _processor(tokenizer),
                 seed, sizes, DEFAULT_FAMILY)


def _write_qwen3_vl(tmp: Path, seed: int, sizes: dict[str, Any]) -> int:
    """Write the whole tiny Qwen3-VL checkpoint into ``tmp``; return the parameter count."""
    tokenizer = build_qwen3_vl_tokenizer(vocab_size=sizes["tokenizer_vocab_size"])
    return _save(tmp, Qwen3VLForConditionalGeneration, tiny_qwen3_vl_config(tokenizer, **sizes),
                 _qwen3_vl_processor(tokenizer), seed, sizes, "qwen3_vl")


def _save(tmp: Path, model_cls, config, processor, seed: int, sizes: dict[str, Any], family: str) -> int:
    """Seeded random weights of ``model_cls(config)``, its generation config, the processor and the
    marker (written last) into ``tmp``; return the parameter count."""
    # fork_rng: a seeded build must not disturb (or depend on) the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
        pad_token_id=config.text_config.pad_token_id,
    )
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    marker = {**_marker(seed, sizes, family), "n_parameters": n_params, "transformers": transformers.__version__}
    (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return n_params


# Looked up at call time (not bound here), so tests can monkeypatch ``_write``.
_WRITERS = {
    "qwen2_5_vl": lambda tmp, seed, sizes: _write(tmp, seed, sizes),
    "qwen3_vl": lambda tmp, seed, sizes: _write_qwen3_vl(tmp, seed, sizes),
}


def _check_existing(out: Path, seed: int, sizes: dict[str, Any], family: str = DEFAULT_FAMILY) -> None:
    found = json.loads((out / MARKER_FILE).read_text())
    # Markers written before families existed carry no "family": those are Qwen2.5-VL.
    found = {"family": DEFAULT_FAMILY, **found}
    if {k: found.get(k) for k in ("family", "seed", "sizes")} != _marker(seed, sizes, family):
        raise ValueError(
            f"{out} holds a tiny checkpoint built with other arguments (family={found.get('family')}, "
            f"seed={found.get('seed')}); "
            "pass overwrite=True or choose another directory"
        )


def build_tiny_checkpoint(
    out_dir: str | os.PathLike,
    *,
    family: str = DEFAULT_FAMILY,
    seed: int = 0,
    overwrite: bool = False,
    **size_overrides: Any,
) -> Path:
    """Build (or reuse) the tiny Qwen2.5-VL (or Qwen3-VL) checkpoint in ``out_dir``; return its path.

    Args:
        out_dir: target directory; created with its parents.
        family: ``"qwen2_5_vl"`` (default) or ``"qwen3_vl"`` (see the module docstring).
        seed: seed of the weight initialisation (the tokenizer is seed-independent).
        overwrite: rebuild even if ``out_dir`` already holds a complete checkpoint.
        **size_overrides: keys of :data:`TINY_DEFAULTS` (Qwen2.5-VL) or
            :data:`QWEN3_VL_TINY_DEFAULTS` (Qwen3-VL).

    Returns:
        ``Path(out_dir)``. When the directory already holds a complete checkpoint built with the
        same arguments it is returned untouched (fast path, a few milliseconds).

    Raises:
        ValueError: unknown ``family``; or the existing checkpoint was built with other arguments
            (and not ``overwrite``).
        FileExistsError: ``out_dir`` is a non-empty directory that is not a tiny checkpoint.
    """
    out = Path(out_dir).expanduser().absolute()
    sizes = _sizes(size_overrides, family)
    if not overwrite and is_complete_checkpoint(out):
        _check_existing(out, seed, sizes, family)
        return out
    if not overwrite and out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists, is not empty and is not a tiny checkpoint; refusing to replace it"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    # The temporary directory lives next to `out` so that os.replace is a same-filesystem rename.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the checkpoint may live in a shared cache
    try:
        _WRITERS[family](tmp, seed, sizes)
        if overwrite and out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            # Renaming onto a missing or empty directory is atomic on POSIX.
            os.replace(tmp, out)
        except OSError:
            # A concurrent builder won the race; its result is as good as ours.
            if not is_complete_checkpoint(out):
                raise
            _check_existing(out, seed, sizes, family)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
