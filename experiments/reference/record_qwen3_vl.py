"""Record Qwen3-VL reference fixtures from the oracle: transformers 4.57.1 + qwen-vl-utils 0.0.14.

What it records (under ``tests/fixtures/qwen3_vl_reference/``, see the README written there):

* ``videos/*.mp4`` -- four small deterministic pattern videos (PyAV, libx264; the frame index is
  written into each frame by ``tests/videos.py``'s ``pattern_frame``) at 25, 30000/1001, 10 and 15
  fps, the last one short with an odd frame count.
* ``frame_sampling.json`` -- for each video and a list of ``fetch_video`` settings (default fps 2,
  fps 1, nframes, min/max/total_pixels, max_frames, resized_height/width, video_start/end), run
  with ``image_patch_size=16`` (Qwen3-VL) and 14 (Qwen2.5-VL, for contrast): frame count, the
  sampled source frame indices (``video_metadata["frames_indices"]`` as returned by 0.0.14),
  resized H x W, ``sample_fps``, the returned metadata, and a summary of the float frames. Also
  what the torchcodec backend reports for each video, and what the torchvision backend does.
* ``tiny_qwen3_vl/`` -- a tiny random ``Qwen3VLForConditionalGeneration`` (seed 0, safetensors)
  with a small locally trained byte-level BPE tokenizer carrying Qwen3-VL's special tokens, the
  ``Qwen3VLProcessor`` files (``Qwen2VLImageProcessor`` + ``Qwen3VLVideoProcessor``) and a
  Qwen3-VL-Instruct-style chat template written here.
* ``frames.safetensors`` -- the exact float frames (as returned by ``fetch_video``) of the clips
  used for the processor / model cases, so other environments can feed identical inputs.
* ``processor.json`` -- chat-template text, expanded prompt text, ``input_ids``, ``video_grid_thw``,
  a ``pixel_values_videos`` summary and the metadata passed, per prompt case; plus documented
  cases: no metadata (the fps=24 fallback and its warning), default ``do_sample_frames=True``
  without metadata, and ``do_resize`` left at its default.
* ``positions.json`` -- ``Qwen3VLModel.get_rope_index`` (position_ids [3, B, L], rope deltas) for
  each prompt and for a batch of two left-padded prompts.
* ``model_outputs.json`` -- fp32 CPU, eval, eager and sdpa attention: greedy ``generate`` of 16
  new tokens per prompt (and for the left-padded batch), teacher-forced log-probs of the generated
  tokens, and the logits at the last prompt position (stats + first 10 values).
* ``manifest.json`` -- versions, the video backend, the command, and the sha256 of every file.

It must run in an environment with exactly ``transformers==4.57.1`` and ``qwen-vl-utils==0.0.14``
(plus ``torch``, ``torchvision``, ``av``, ``numpy``, ``decord``; ``torchcodec`` optional) -- it
refuses to run otherwise. The oracle environment used for the committed fixtures is
``/work/oracle-venv`` (torch 2.14.1, torchvision 0.29.1, transformers 4.57.1, qwen-vl-utils 0.0.14,
decord 0.6.0, torchcodec 0.17.0, av 18.1.1). From the repository root::

    /work/oracle-venv/bin/python experiments/reference/record_qwen3_vl.py

(``--out DIR`` writes elsewhere. Existing videos in the output folder are reused, because libx264
builds differ; ``--reencode-videos`` writes them anew.)

qwen-vl-utils 0.0.14 picks its video backend in the order torchcodec > decord > torchvision (env
``FORCE_QWENVL_VIDEO_READER`` overrides; read at import). This script forces ``decord`` (the
backend the project's decoder reproduces) and records it; torchvision 0.29 has no
``torchvision.io.read_video`` any more, so the torchvision backend (also 0.0.14's fallback after
any decord/torchcodec error) cannot work with it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REQUIRED = {"transformers": "4.57.1", "qwen-vl-utils": "0.0.14"}
BACKEND = "decord"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "qwen3_vl_reference"
COMMAND = "/work/oracle-venv/bin/python experiments/reference/record_qwen3_vl.py"
SEED = 0


def check_versions() -> dict[str, str]:
    found = {}
    for name in REQUIRED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    bad = {k: v for k, v in found.items() if v != REQUIRED[k]}
    if bad:
        sys.exit(
            f"record_qwen3_vl.py needs {REQUIRED} (the oracle, e.g. /work/oracle-venv/bin/python); "
            f"found {found}. Refusing to record."
        )
    return found


def _load_file_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

# name -> make_video arguments. 96x72 and 64x48 keep the 64-pixel index pattern readable.
VIDEOS: dict[str, dict[str, Any]] = {
    "v25_96x72_100f": {"fps": 25, "n_frames": 100, "size": (96, 72)},
    "v2997_64x48_90f": {"fps": "30000/1001", "n_frames": 90, "size": (64, 48)},
    "v10_96x72_50f": {"fps": 10, "n_frames": 50, "size": (96, 72)},
    "v15_64x48_23f": {"fps": 15, "n_frames": 23, "size": (64, 48)},
}

# fetch_video settings (the keys of the video element besides "video").
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "fps1": {"fps": 1},
    "fps4_max_frames6": {"fps": 4, "max_frames": 6},
    "max_frames4": {"max_frames": 4},
    "nframes6": {"nframes": 6},
    "nframes5": {"nframes": 5},  # round_by_factor(5, 2) = round(2.5) * 2 = 4 (banker's rounding)
    "small_pixels": {"min_pixels": 32 * 32, "max_pixels": 64 * 64},
    "min_pixels_only": {"min_pixels": 64 * 64},
    "total_pixels": {"min_pixels": 32 * 32, "total_pixels": 8 * 64 * 64},
    "max_pixels_over_limit": {"max_pixels": 10**9},
    "resized": {"resized_height": 50, "resized_width": 70},
    "start_end": {"video_start": 0.5, "video_end": 1.9},
}

QUESTION = "When does the red square appear? Answer with start and end seconds."

# Prompt cases for the processor / positions / model: (video, fetch_video settings, system prompt).
PROMPTS: dict[str, dict[str, Any]] = {
    "p25_fps2": {
        "video": "v25_96x72_100f",
        "ele": {"fps": 2, "min_pixels": 32 * 32, "max_pixels": 64 * 64},
        "system": None,
    },
    "p2997_nframes6": {
        "video": "v2997_64x48_90f",
        "ele": {"nframes": 6, "min_pixels": 64 * 64, "max_pixels": 64 * 64},
        "system": None,
    },
    "p15_default_fps_system": {
        "video": "v15_64x48_23f",
        "ele": {"min_pixels": 32 * 32, "max_pixels": 64 * 96},
        "system": "You are a helpful assistant.",
    },
}
BATCH = ("p25_fps2", "p2997_nframes6")  # left-padded batch of two

# (T, H, W) inputs of Qwen3VLVideoProcessor's smart_resize (what do_resize=True would do to
# frames that qwen-vl-utils already resized), with the processor's defaults: factor 32, temporal 2,
# min_pixels = size.shortest_edge = 131072, max_pixels = size.longest_edge = 786432 (T*H*W).
RESIZE_CASES = (
    (8, 32, 64),
    (4, 64, 64),
    (8, 320, 448),
    (4, 320, 448),
    (2, 320, 448),
    (16, 720, 1280),
    (768, 320, 448),
    (3, 100, 75),
    (2, 24, 40),
    (1, 64, 64),
)

# Qwen3-VL's added tokens (14 special, then 12 added but not special) and our Qwen3-VL-Instruct
# style chat template: one copy, in museg_lit.models.tokenizer (shared with museg_lit.models.tiny's
# family="qwen3_vl" builder). Loaded from the file, so the package need not import here.
_TOKMOD = _load_file_module("museg_tokenizer", REPO / "src" / "museg_lit" / "models" / "tokenizer.py")
QWEN3VL_SPECIAL = _TOKMOD.QWEN3VL_SPECIAL_TOKENS
QWEN3VL_ADDED_NOT_SPECIAL = _TOKMOD.QWEN3VL_ADDED_TOKENS
QWEN3VL_CHAT_TEMPLATE = _TOKMOD.QWEN3VL_CHAT_TEMPLATE

TINY = {
    "text": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        # released: [24, 20, 20] of head_dim/2 = 64; here head_dim/2 = 16 -> [6, 5, 5]
        "mrope_section": [6, 5, 5],
        "rope_theta": 5_000_000.0,
        "max_position_embeddings": 4096,
        # larger than Qwen's 0.02 so that the random model's greedy choices are not near-ties
        "initializer_range": 0.2,
    },
    "vision": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "num_position_embeddings": 256,  # 16 x 16 learned grid (released: 2304 = 48 x 48)
        "deepstack_visual_indexes": [0],
        "initializer_range": 0.2,
    },
    "vocab_multiple": 64,
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_summary(t) -> dict[str, Any]:
    """Shape, dtype, float64 stats, first values and sha256 of the contiguous bytes."""
    import torch

    t = t.detach().cpu().contiguous()
    f = t.to(torch.float64)
    flat = f.flatten()
    return {
        "shape": list(t.shape),
        "dtype": str(t.dtype).removeprefix("torch."),
        "sum": float(flat.sum()),
        "mean": float(flat.mean()),
        "std": float(flat.std()) if flat.numel() > 1 else 0.0,
        "min": float(flat.min()),
        "max": float(flat.max()),
        "first": [float(x) for x in flat[:8]],
        "sha256": sha256_bytes(t.numpy().tobytes()),
    }


def jsonable(x: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(jsonable(obj), indent=1, sort_keys=False) + "\n")


class CaptureWarnings(logging.Handler):
    """Collects the messages of the transformers / qwen-vl-utils loggers while active."""

    def __init__(self, *names: str):
        super().__init__(level=logging.WARNING)
        self.names, self.messages = names, []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        for n in self.names:
            logging.getLogger(n).addHandler(self)
        return self

    def __exit__(self, *exc):
        for n in self.names:
            logging.getLogger(n).removeHandler(self)


# --------------------------------------------------------------------------------------------
# a. frame sampling
# --------------------------------------------------------------------------------------------


def make_videos(out: Path, keep: bool) -> dict[str, Any]:
    videos_mod = _load_file_module("museg_test_videos", REPO / "tests" / "videos.py")
    vdir = out / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, spec in VIDEOS.items():
        path = vdir / f"{name}.mp4"
        if not (keep and path.is_file()):
            videos_mod.make_video(path, fps=spec["fps"], n_frames=spec["n_frames"], size=spec["size"])
        info[name] = {
            "file": f"videos/{name}.mp4",
            "source_fps": str(spec["fps"]),
            "n_frames_encoded": spec["n_frames"],
            "width": spec["size"][0],
            "height": spec["size"][1],
            "codec": "libx264 yuv420p, crf 18, no B-frames (tests/videos.py make_video)",
            "content": "tests/videos.py pattern_frame(i): frame index in four 16x16 blocks at the top left",
        }
    return info


def record_frame_sampling(out: Path, videos: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch
    from qwen_vl_utils import vision_process as vp

    cases = []
    kept_frames = {}
    for vname in VIDEOS:
        path = str(out / videos[vname]["file"])
        for patch in (16, 14):
            for sname, settings in SETTINGS.items():
                ele = {"video": path, **settings}
                case = {"video": vname, "setting": sname, "ele": settings, "image_patch_size": patch}
                with CaptureWarnings("qwen_vl_utils", "qwen_vl_utils.vision_process") as cap:
                    try:
                        (frames, meta), sample_fps = vp.fetch_video(
                            ele,
                            image_patch_size=patch,
                            return_video_sample_fps=True,
                            return_video_metadata=True,
                        )
                    except Exception as e:  # recorded: some settings are invalid for some videos
                        case["error"] = f"{type(e).__name__}: {e}"
                        cases.append(case)
                        continue
                n, c, h, w = frames.shape
                case.update(
                    {
                        "n_frames": n,
                        "frames_indices": [int(i) for i in meta["frames_indices"]],
                        "height": h,
                        "width": w,
                        "sample_fps": float(sample_fps),
                        "metadata": {
                            "fps": float(meta["fps"]),
                            "total_num_frames": int(meta["total_num_frames"]),
                            "video_backend": meta.get("video_backend"),
                        },
                        "frames": tensor_summary(frames),
                        "warnings": cap.messages,
                    }
                )
                cases.append(case)

    # Prompt clips: the frames the processor cases use (0.0.14's defaults besides the given keys).
    prompt_clips = {}
    for pname, p in PROMPTS.items():
        ele = {"video": str(out / videos[p["video"]]["file"]), **p["ele"]}
        (frames, meta), sample_fps = vp.fetch_video(
            ele, image_patch_size=16, return_video_sample_fps=True, return_video_metadata=True
        )
        kept_frames[pname] = frames.contiguous()
        prompt_clips[pname] = {
            "video": p["video"],
            "ele": p["ele"],
            "frames_key": pname,
            "frames": tensor_summary(frames),
            "sample_fps": float(sample_fps),
            "video_metadata": {
                "fps": float(meta["fps"]),
                "frames_indices": [int(i) for i in meta["frames_indices"]],
                "total_num_frames": int(meta["total_num_frames"]),
                "video_backend": meta.get("video_backend"),
            },
        }

    # Backend contrast: what torchcodec (0.0.14's default when installed) reports, with the same
    # sampling arithmetic; and what the torchvision backend does with this torchvision.
    contrast: dict[str, Any] = {}
    if vp.is_torchcodec_available():
        for vname in VIDEOS:
            ele = {"video": str(out / videos[vname]["file"])}
            try:
                frames, meta, sample_fps = vp.VIDEO_READER_BACKENDS["torchcodec"](ele)
                contrast[vname] = {
                    "torchcodec": {
                        "fps": float(meta["fps"]),
                        "total_num_frames": int(meta["total_num_frames"]),
                        "frames_indices": [int(i) for i in meta["frames_indices"]],
                        "sample_fps": float(sample_fps),
                        "frames_uint8_sha256": sha256_bytes(frames.contiguous().numpy().tobytes()),
                    }
                }
                frames_d, meta_d, _ = vp.VIDEO_READER_BACKENDS["decord"](ele)
                contrast[vname]["decord"] = {
                    "fps": float(meta_d["fps"]),
                    "total_num_frames": int(meta_d["total_num_frames"]),
                    "frames_indices": [int(i) for i in meta_d["frames_indices"]],
                    "frames_uint8_sha256": sha256_bytes(frames_d.contiguous().numpy().tobytes()),
                }
                contrast[vname]["same_uint8_frames"] = bool(torch.equal(frames, frames_d))
            except Exception as e:
                contrast[vname] = {"error": f"{type(e).__name__}: {e}"}
    else:
        contrast["torchcodec"] = "not installed"
    try:
        vp.VIDEO_READER_BACKENDS["torchvision"]({"video": str(out / videos["v25_96x72_100f"]["file"])})
        contrast["torchvision_backend"] = "works"
    except Exception as e:
        contrast["torchvision_backend"] = f"fails: {type(e).__name__}: {e}"

    doc = {
        "about": (
            "qwen_vl_utils.fetch_video(ele, image_patch_size=P, return_video_sample_fps=True, "
            "return_video_metadata=True) per video x setting x P. frames_indices are the metadata's "
            "(0.0.14 returns them; decord backend: torch.linspace(start, end, nframes).round()). height/"
            "width after smart_resize; frames summarises the float32 [T, 3, H, W] tensor (bicubic, "
            "antialias, not rounded or clamped)."
        ),
        "constants_0_0_14": {
            "FPS": vp.FPS,
            "FRAME_FACTOR": vp.FRAME_FACTOR,
            "FPS_MIN_FRAMES": vp.FPS_MIN_FRAMES,
            "FPS_MAX_FRAMES": vp.FPS_MAX_FRAMES,
            "VIDEO_MIN_TOKEN_NUM": vp.VIDEO_MIN_TOKEN_NUM,
            "VIDEO_MAX_TOKEN_NUM": vp.VIDEO_MAX_TOKEN_NUM,
            "MODEL_SEQ_LEN": vp.MODEL_SEQ_LEN,
            "SPATIAL_MERGE_SIZE": vp.SPATIAL_MERGE_SIZE,
        },
        "videos": videos,
        "cases": cases,
        "prompt_clips": prompt_clips,
        "backend_contrast": contrast,
    }
    return doc, kept_frames


# --------------------------------------------------------------------------------------------
# b. tokenizer, tiny checkpoint, processor
# --------------------------------------------------------------------------------------------


def build_tokenizer():
    """Project BPE (museg_lit.models.tokenizer.train_bpe on its default corpus) + Qwen3-VL tokens."""
    from tokenizers import AddedToken as TkAddedToken
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import Qwen2TokenizerFast

    tokmod = _TOKMOD
    n_added = len(QWEN3VL_SPECIAL) + len(QWEN3VL_ADDED_NOT_SPECIAL)
    vocab, merges = tokmod.train_bpe(tokmod.default_corpus(), 2048 - n_added)
    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False, dropout=None)
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(tokmod.QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_tokens(
        [TkAddedToken(t, special=True, normalized=False) for t in QWEN3VL_SPECIAL]
        + [TkAddedToken(t, special=False, normalized=False) for t in QWEN3VL_ADDED_NOT_SPECIAL]
    )
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=tok,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=262144,
        clean_up_tokenization_spaces=False,
        errors="replace",
        split_special_tokens=False,
    )
    first = len(vocab)
    got = tokenizer.convert_tokens_to_ids(list(QWEN3VL_SPECIAL + QWEN3VL_ADDED_NOT_SPECIAL))
    if got != list(range(first, first + n_added)):
        raise RuntimeError(f"added tokens got ids {got}, expected {first}..")
    return tokenizer


def build_checkpoint(ckpt: Path):
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessorFast,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN3VL_SPECIAL}
    m = TINY["vocab_multiple"]
    vocab_size = -(-len(tokenizer) // m) * m
    t, v = TINY["text"], TINY["vision"]
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": t["hidden_size"],
        "intermediate_size": t["intermediate_size"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_attention_heads": t["num_attention_heads"],
        "num_key_value_heads": t["num_key_value_heads"],
        "head_dim": t["head_dim"],
        "hidden_act": "silu",
        "max_position_embeddings": t["max_position_embeddings"],
        "rms_norm_eps": 1e-6,
        "rope_theta": t["rope_theta"],
        "rope_scaling": {
            "rope_type": "default",
            "mrope_section": t["mrope_section"],
            "mrope_interleaved": True,
        },
        "attention_bias": False,
        "initializer_range": t["initializer_range"],
        "tie_word_embeddings": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    vision_config = {
        "depth": v["depth"],
        "hidden_size": v["hidden_size"],
        "intermediate_size": v["intermediate_size"],
        "num_heads": v["num_heads"],
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "patch_size": 16,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "out_hidden_size": t["hidden_size"],
        "num_position_embeddings": v["num_position_embeddings"],
        "deepstack_visual_indexes": v["deepstack_visual_indexes"],
        "initializer_range": v["initializer_range"],
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(ckpt, safe_serialization=True)

    # Qwen3-VL's released preprocessing values: mean/std 0.5, patch 16, merge 2, temporal 2.
    image_processor = Qwen2VLImageProcessorFast(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 65536, "longest_edge": 16777216},
        min_pixels=65536,
        max_pixels=16777216,
    )
    video_processor = Qwen3VLVideoProcessor()  # class defaults = the released video_preprocessor_config
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3VL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(ckpt)
    n_params = sum(p.numel() for p in model.parameters())
    return n_params


def _messages(system: str | None, video_path: str) -> list[dict[str, Any]]:
    msgs = []
    if system is not None:
        msgs.append({"role": "system", "content": system})
    msgs.append(
        {
            "role": "user",
            "content": [{"type": "video", "video": video_path}, {"type": "text", "text": QUESTION}],
        }
    )
    return msgs


def record_processor(ckpt: Path, clips: dict[str, Any], frames: dict[str, Any]):
    from transformers import AutoProcessor, Qwen3VLProcessor

    processor = AutoProcessor.from_pretrained(ckpt)
    assert isinstance(processor, Qwen3VLProcessor), type(processor)
    tok = processor.tokenizer
    out_cases, inputs = {}, {}
    for pname, p in PROMPTS.items():
        clip = clips[pname]
        msgs = _messages(p["system"], f"videos/{p['video']}.mp4")
        template_text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        meta = dict(clip["video_metadata"])
        with CaptureWarnings("transformers") as cap:
            enc = processor(
                text=[template_text],
                videos=[frames[pname]],
                video_metadata=[meta],
                do_sample_frames=False,
                do_resize=False,
                return_tensors="pt",
            )
        ids = enc["input_ids"][0].tolist()
        out_cases[pname] = {
            "messages": msgs,
            "processor_call": (
                "processor(text=[template_text], videos=[frames], video_metadata=[video_metadata], "
                "do_sample_frames=False, do_resize=False, return_tensors='pt')"
            ),
            "video_metadata_passed": meta,
            "template_text": template_text,
            "expanded_text": tok.decode(ids, skip_special_tokens=False),
            "input_ids": ids,
            "attention_mask": enc["attention_mask"][0].tolist(),
            "video_grid_thw": enc["video_grid_thw"].tolist(),
            "pixel_values_videos": tensor_summary(enc["pixel_values_videos"]),
            "keys": sorted(enc.keys()),
            "warnings": cap.messages,
        }
        inputs[pname] = enc

    # Documented cases on the first clip.
    pname = "p25_fps2"
    template_text = out_cases[pname]["template_text"]
    extra = {}
    variants = {
        "no_metadata_no_sampling": (
            "processor(text, videos=[frames], do_sample_frames=False, do_resize=False): no metadata -> "
            "fps=None -> warning and fps=24, frames_indices=range(T)",
            {"do_sample_frames": False, "do_resize": False},
        ),
        "no_metadata_default_sampling": (
            "processor(text, videos=[frames], do_resize=False): do_sample_frames defaults to True; with no "
            "metadata sample_frames sets fps=24 and samples int(T/24*2) clamped to >= min_frames=4 frames",
            {"do_resize": False},
        ),
        "metadata_default_resize": (
            "processor(text, videos=[frames], video_metadata=[meta], do_sample_frames=False): do_resize "
            "left at True -> Qwen3VLVideoProcessor.smart_resize re-resizes (size.shortest_edge=131072 "
            "applies to T*H*W)",
            {"do_sample_frames": False, "video_metadata": [dict(clips[pname]["video_metadata"])]},
        ),
    }
    for vname, (about, kwargs) in variants.items():
        with CaptureWarnings("transformers") as cap:
            try:
                enc = processor(text=[template_text], videos=[frames[pname]], return_tensors="pt", **kwargs)
            except Exception as e:
                extra[vname] = {"about": about, "error": f"{type(e).__name__}: {e}", "warnings": cap.messages}
                continue
        ids = enc["input_ids"][0].tolist()
        extra[vname] = {
            "about": about,
            "prompt": pname,
            "expanded_text": tok.decode(ids, skip_special_tokens=False),
            "input_ids": ids,
            "video_grid_thw": enc["video_grid_thw"].tolist(),
            "pixel_values_videos": tensor_summary(enc["pixel_values_videos"]),
            "warnings": cap.messages,
        }
    from transformers.models.qwen3_vl import video_processing_qwen3_vl as vpq

    vproc = processor.video_processor
    resize = []
    for t, h, w in RESIZE_CASES:
        case = {"t": t, "h": h, "w": w}
        try:
            case["resized"] = list(
                vpq.smart_resize(
                    num_frames=t,
                    height=h,
                    width=w,
                    temporal_factor=vproc.temporal_patch_size,
                    factor=vproc.patch_size * vproc.merge_size,
                    min_pixels=vproc.size["shortest_edge"],
                    max_pixels=vproc.size["longest_edge"],
                )
            )
        except Exception as e:
            case["error"] = f"{type(e).__name__}: {e}"
        resize.append(case)
    extra["video_smart_resize"] = {
        "about": (
            "transformers.models.qwen3_vl.video_processing_qwen3_vl.smart_resize(num_frames=t, height=h, "
            "width=w, temporal_factor=2, factor=32, min_pixels=131072, max_pixels=786432): the resize "
            "do_resize=True applies (bounds on t*h*w, not per frame)"
        ),
        "cases": resize,
    }
    return processor, out_cases, extra, inputs


# --------------------------------------------------------------------------------------------
# c. positions, d. model outputs
# --------------------------------------------------------------------------------------------


def left_pad_batch(processor, names, frames, clips, cases):
    texts = [cases[n]["template_text"] for n in names]
    processor.tokenizer.padding_side = "left"
    enc = processor(
        text=texts,
        videos=[frames[n] for n in names],
        video_metadata=[dict(clips[n]["video_metadata"]) for n in names],
        do_sample_frames=False,
        do_resize=False,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    return enc


def record_positions(model, inputs: dict[str, Any], batch_enc) -> dict[str, Any]:
    out = {}
    for name, enc in inputs.items():
        pos, deltas = model.model.get_rope_index(
            enc["input_ids"],
            image_grid_thw=None,
            video_grid_thw=enc["video_grid_thw"],
            attention_mask=enc["attention_mask"],
        )
        out[name] = {"position_ids": pos.tolist(), "rope_deltas": deltas.tolist()}
    pos, deltas = model.model.get_rope_index(
        batch_enc["input_ids"],
        image_grid_thw=None,
        video_grid_thw=batch_enc["video_grid_thw"],
        attention_mask=batch_enc["attention_mask"],
    )
    out["batch_left_padded"] = {
        "prompts": list(BATCH),
        "input_ids": batch_enc["input_ids"].tolist(),
        "attention_mask": batch_enc["attention_mask"].tolist(),
        "video_grid_thw": batch_enc["video_grid_thw"].tolist(),
        "position_ids": pos.tolist(),
        "rope_deltas": deltas.tolist(),
    }
    return out


def _model_inputs(enc):
    return {k: enc[k] for k in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")}


def run_model(model, enc, max_new_tokens: int = 16) -> dict[str, Any]:
    import torch

    L = enc["input_ids"].shape[1]
    with torch.no_grad():
        gen = model.generate(
            **_model_inputs(enc),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
        seq = gen.sequences
        new = seq[:, L:]
        # per-step top-2 margin of the greedy choice (how robust the argmax is)
        margins = []
        for s in gen.scores:
            top2 = s.float().topk(2, dim=-1).values
            margins.append((top2[:, 0] - top2[:, 1]).tolist())
        # teacher-forced forward over prompt + generated tokens, same vision inputs
        full_mask = torch.cat([enc["attention_mask"], torch.ones_like(new)], dim=1)
        out = model(
            input_ids=seq,
            attention_mask=full_mask,
            pixel_values_videos=enc["pixel_values_videos"],
            video_grid_thw=enc["video_grid_thw"],
        )
        logits = out.logits.float()
        logp = torch.log_softmax(logits[:, L - 1 : -1], dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        # prompt-only forward for the last prompt position's logits
        model.model.rope_deltas = None
        last = model(**_model_inputs(enc)).logits[:, -1].float()
    rows = []
    for b in range(seq.shape[0]):
        lv = last[b]
        rows.append(
            {
                "generated_ids": new[b].tolist(),
                "greedy_top2_margins": [m[b] for m in margins],
                "teacher_forced_logprobs": logp[b].tolist(),
                "last_prompt_logits": {
                    "first10": lv[:10].tolist(),
                    "argmax": int(lv.argmax()),
                    "max": float(lv.max()),
                    "min": float(lv.min()),
                    "mean": float(lv.mean()),
                    "std": float(lv.std()),
                    "sha256": sha256_bytes(lv.contiguous().numpy().tobytes()),
                },
                "teacher_forced_last_prompt_logits_first10": logits[b, L - 1, :10].tolist(),
            }
        )
    return {"prompt_length": L, "rows": rows}


def no_mask_forward(model, enc) -> dict[str, Any]:
    """A forward with attention_mask=None and use_cache=False (a training-style call).

    4.57.1 then builds the causal mask from ``position_ids[0]`` (the temporal row of the 3D
    positions) and ``find_packed_sequence_indices`` reads every jump != 1 in it (inside and after
    each video group) as the start of a new packed sequence, so tokens stop attending across
    them: the logits differ from the masked forward's.
    """
    import torch

    keys = ("input_ids", "pixel_values_videos", "video_grid_thw")
    with torch.no_grad():
        model.model.rope_deltas = None
        with_mask = model(**_model_inputs(enc), use_cache=False).logits.float()
        model.model.rope_deltas = None
        no_mask = model(**{k: enc[k] for k in keys}, use_cache=False).logits.float()
        model.model.rope_deltas = None
        no_mask_cache = model(**{k: enc[k] for k in keys}, use_cache=True).logits.float()
    return {
        "prompt": "p25_fps2",
        "call": "model(input_ids, pixel_values_videos, video_grid_thw, use_cache=False) (no attention_mask)",
        "max_abs_diff_vs_masked_forward": float((no_mask - with_mask).abs().max()),
        "max_abs_diff_use_cache_true_vs_masked": float((no_mask_cache - with_mask).abs().max()),
        "last_logits_first10": no_mask[0, -1, :10].tolist(),
        "logits_sha256": sha256_bytes(no_mask[0].contiguous().numpy().tobytes()),
    }


def record_model(ckpt: Path, inputs: dict[str, Any], batch_enc, processor) -> tuple[dict, dict]:
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    results: dict[str, Any] = {}
    positions = None
    for attn in ("eager", "sdpa"):
        model = Qwen3VLForConditionalGeneration.from_pretrained(
            ckpt, dtype=torch.float32, attn_implementation=attn
        ).eval()
        if positions is None:
            positions = record_positions(model, inputs, batch_enc)
        res = {}
        for name, enc in inputs.items():
            model.model.rope_deltas = None
            res[name] = run_model(model, enc)
            res[name]["generated_text"] = processor.tokenizer.decode(res[name]["rows"][0]["generated_ids"])
        model.model.rope_deltas = None
        res["batch_left_padded"] = run_model(model, batch_enc)
        res["batch_left_padded"]["prompts"] = list(BATCH)
        res["no_attention_mask_no_cache"] = no_mask_forward(model, inputs["p25_fps2"])
        results[attn] = res
    # how far sdpa is from eager
    diffs = {}
    for name in results["eager"]:
        if "rows" not in results["eager"][name]:
            continue
        e, s = results["eager"][name]["rows"], results["sdpa"][name]["rows"]
        diffs[name] = {
            "same_generated_ids": all(
                a["generated_ids"] == b["generated_ids"] for a, b in zip(e, s, strict=True)
            ),
            "max_abs_logprob_diff": max(
                abs(x - y)
                for a, b in zip(e, s, strict=True)
                for x, y in zip(a["teacher_forced_logprobs"], b["teacher_forced_logprobs"], strict=True)
            ),
        }
    results["sdpa_vs_eager"] = diffs
    return results, positions


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--reencode-videos", action="store_true", help="re-encode the videos even if present")
    args = parser.parse_args()

    versions = check_versions()
    forced = os.environ.get("FORCE_QWENVL_VIDEO_READER")
    if forced not in (None, BACKEND):
        sys.exit(f"FORCE_QWENVL_VIDEO_READER={forced}; this script records with {BACKEND}")
    os.environ["FORCE_QWENVL_VIDEO_READER"] = BACKEND  # read by qwen_vl_utils at import

    import numpy as np
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    from qwen_vl_utils import vision_process as vp

    if vp.get_video_reader_backend() != BACKEND:
        sys.exit(f"qwen-vl-utils chose {vp.get_video_reader_backend()}, not {BACKEND}")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    videos = make_videos(out, keep=not args.reencode_videos)

    sampling, frames = record_frame_sampling(out, videos)
    write_json(out / "frame_sampling.json", sampling)
    save_file({k: v.float().contiguous() for k, v in frames.items()}, str(out / "frames.safetensors"))

    ckpt = out / "tiny_qwen3_vl"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    n_params = build_checkpoint(ckpt)

    processor, cases, extra, inputs = record_processor(ckpt, sampling["prompt_clips"], frames)
    batch_enc = left_pad_batch(processor, BATCH, frames, sampling["prompt_clips"], cases)
    write_json(
        out / "processor.json",
        {
            "about": (
                "Qwen3VLProcessor (4.57.1) loaded from tiny_qwen3_vl/. Frames: frames.safetensors[prompt] "
                "(fetch_video output of prompt_clips in frame_sampling.json). template_text is "
                "apply_chat_template(messages, tokenize=False, add_generation_prompt=True); expanded_text is "
                "tokenizer.decode(input_ids)."
            ),
            "cases": cases,
            "documented_cases": extra,
            "batch_left_padded": {
                "prompts": list(BATCH),
                "input_ids": batch_enc["input_ids"].tolist(),
                "attention_mask": batch_enc["attention_mask"].tolist(),
                "video_grid_thw": batch_enc["video_grid_thw"].tolist(),
                "pixel_values_videos": tensor_summary(batch_enc["pixel_values_videos"]),
            },
        },
    )

    model_outputs, positions = record_model(ckpt, inputs, batch_enc, processor)
    write_json(
        out / "positions.json",
        {
            "about": (
                "Qwen3VLModel.get_rope_index(input_ids, image_grid_thw=None, video_grid_thw, attention_mask) "
                "-> position_ids [3, B, L] (t, h, w), rope_deltas [B, 1], for processor.json's cases and "
                "a left-padded batch."
            ),
            **positions,
        },
    )
    write_json(
        out / "model_outputs.json",
        {
            "about": (
                "tiny_qwen3_vl in fp32 on CPU, eval, torch.use_deterministic_algorithms(True), 1 thread. "
                "generate(max_new_tokens=16, do_sample=False); teacher_forced_logprobs: log_softmax of a "
                "forward over prompt + generated ids at the positions predicting each generated token; "
                "last_prompt_logits: a prompt-only forward's logits at the last position."
            ),
            **model_outputs,
        },
    )

    # README.md is hand-written documentation, not a recorded output
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.json", "README.md"))
    manifest = {
        "command": COMMAND,
        "versions": {
            **versions,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "av": version("av"),
            "decord": version("decord"),
            "torchcodec": version("torchcodec") if importlib.util.find_spec("torchcodec") else None,
            "tokenizers": version("tokenizers"),
            "safetensors": version("safetensors"),
            "python": sys.version.split()[0],
        },
        "video_backend": BACKEND,
        "video_backend_note": (
            "FORCE_QWENVL_VIDEO_READER=decord; 0.0.14's default order is torchcodec > decord > torchvision"
        ),
        "seed": SEED,
        "tiny_model": {**TINY, "n_parameters": n_params},
        "deterministic": "torch.use_deterministic_algorithms(True); torch.set_num_threads(1); fp32 CPU",
        "files": {str(p.relative_to(out)): sha256_bytes(p.read_bytes()) for p in files},
    }
    write_json(out / "manifest.json", manifest)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB, {n_params} parameters)")


if __name__ == "__main__":
    main()
