"""The tiny Qwen3-VL checkpoint (``build_tiny_checkpoint(family="qwen3_vl")``) under transformers 5.x."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoProcessor,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

import museg_lit.models.tiny as tiny
from museg_lit.models import build_tiny_checkpoint
from museg_lit.models.families.qwen3_vl import group_times, rope_index, video_prompt
from museg_lit.models.tokenizer import QWEN3VL_ADDED_TOKENS, QWEN3VL_CHAT_TEMPLATE, QWEN3VL_SPECIAL_TOKENS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "qwen3_vl_reference" / "tiny_qwen3_vl"
FPS = 25.0
INDICES = [0, 12, 25, 37, 50]  # odd count: the processor repeats the last frame
H, W = 64, 96  # multiples of 32 = patch 16 * merge 2
QUESTION = "When does the red square appear?"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_qwen3_vl") / "ckpt", family="qwen3_vl")


@pytest.fixture(scope="module")
def model(ckpt):
    return Qwen3VLForConditionalGeneration.from_pretrained(ckpt, local_files_only=True).eval()


@pytest.fixture(scope="module")
def processor(ckpt):
    return AutoProcessor.from_pretrained(ckpt, local_files_only=True)


def clip() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (len(INDICES), 3, H, W), dtype=torch.uint8, generator=g)  # [T, C, H, W]


def encode(processor, texts: list[str]):
    n = len(texts)
    processor.tokenizer.padding_side = "left"  # as for generation
    return processor(
        text=texts,
        videos=[clip()] * n,
        video_metadata=[{"fps": FPS, "frames_indices": INDICES, "total_num_frames": 60}] * n,
        do_resize=False,
        padding=True,
        return_tensors="pt",
    )


def prompt(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_config_and_marker(ckpt, model):
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_vl" and cfg["architectures"] == ["Qwen3VLForConditionalGeneration"]
    v, t = cfg["vision_config"], cfg["text_config"]
    assert (v["patch_size"], v["temporal_patch_size"], v["spatial_merge_size"]) == (16, 2, 2)
    assert v["deepstack_visual_indexes"] == [0, 1] and v["out_hidden_size"] == t["hidden_size"]
    assert t["rope_parameters"]["mrope_section"] == [6, 5, 5]  # released (24, 20, 20) * 16 / 64
    assert t["rope_parameters"]["mrope_interleaved"] is True
    assert sum(t["rope_parameters"]["mrope_section"]) * 2 == t["head_dim"]
    assert cfg["tie_word_embeddings"] is True
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    marker = json.loads((ckpt / tiny.MARKER_FILE).read_text())
    assert marker["family"] == "qwen3_vl" and marker["seed"] == 0
    n = sum(p.numel() for p in model.parameters())
    assert marker["n_parameters"] == n < 1_000_000
    assert (ckpt / "model.safetensors").stat().st_size < 4_000_000
    # reuse: same arguments return at once; another family or seed is refused
    assert build_tiny_checkpoint(ckpt, family="qwen3_vl") == ckpt
    with pytest.raises(ValueError, match="other arguments"):
        build_tiny_checkpoint(ckpt)
    with pytest.raises(ValueError, match="other arguments"):
        build_tiny_checkpoint(ckpt, family="qwen3_vl", seed=1)


def test_unknown_family_and_sizes(tmp_path):
    with pytest.raises(ValueError, match=r"qwen2_5_vl.*qwen3_vl"):
        build_tiny_checkpoint(tmp_path / "x", family="qwen4_vl")
    with pytest.raises(TypeError, match="unknown"):
        build_tiny_checkpoint(tmp_path / "y", family="qwen3_vl", vision_window_size=112)
    assert list(tmp_path.iterdir()) == []


def test_processor_and_tokenizer(processor, ckpt):
    assert isinstance(processor, Qwen3VLProcessor)
    assert isinstance(processor.video_processor, Qwen3VLVideoProcessor)
    vp = processor.video_processor
    assert (vp.patch_size, vp.temporal_patch_size, vp.merge_size, vp.do_sample_frames) == (16, 2, 2, False)
    assert processor.image_processor.patch_size == 16
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids(list(QWEN3VL_SPECIAL_TOKENS + QWEN3VL_ADDED_TOKENS))
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # Qwen's order, contiguous
    assert "<think>" not in tok.all_special_tokens and "<|video_pad|>" in tok.all_special_tokens
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert processor.chat_template == QWEN3VL_CHAT_TEMPLATE
    # the 4.57.1 fixture (experiments/reference/record_qwen3_vl.py) was written from the same string
    assert (FIXTURE / "chat_template.jinja").read_text() == QWEN3VL_CHAT_TEMPLATE


def test_expanded_prompt_matches_time_markers(processor):
    text = prompt(processor)
    assert not text.startswith("<|im_start|>system")  # Qwen3-VL: no default system prompt
    enc = encode(processor, [text])
    assert enc["video_grid_thw"].tolist() == [[3, H // 16, W // 16]]
    expected = text.replace(
        "<|vision_start|><|video_pad|><|vision_end|>", video_prompt(group_times(INDICES, FPS), (H // 16, W // 16))
    )
    assert processor.tokenizer.decode(enc["input_ids"][0]) == expected


def test_forward_and_generate(model, processor):
    text = prompt(processor)
    batch = encode(processor, [text, text + "The"])
    L = batch["input_ids"].shape[1]
    with torch.no_grad():
        out = model(**batch)
        assert out.logits.shape == (2, L, model.config.text_config.vocab_size)
        assert torch.isfinite(out.logits).all()
        gen = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 2 and L < gen.shape[1] <= L + 4
    assert torch.equal(gen[:, :L], batch["input_ids"])
    # 3D positions of the (unpadded) first prompt follow the 4.57.1 rule of families/qwen3_vl.py
    cfg = model.config
    ids = batch["input_ids"][:1, batch["attention_mask"][0].bool()]
    pos = rope_index(ids, batch["video_grid_thw"][:1], vision_start_id=cfg.vision_start_token_id,
                     video_pad_id=cfg.video_token_id)
    assert pos.position_ids.shape == (3, 1, ids.shape[1])


def test_the_factory_reads_the_family_from_config_json(tmp_path):
    """The checkpoint's model_type picks the processor (not the folder name); a Qwen3-VL policy is
    refused with one line until its model passes exist, instead of loading with Qwen2.5-VL's rules."""
    from transformers import Qwen3VLProcessor

    from museg_lit.errors import ConfigError
    from museg_lit.models.factory import ModelSpec, checkpoint_model_type, load_policy, load_processor
    from museg_lit.models.tiny import build_tiny_checkpoint

    path = build_tiny_checkpoint(tmp_path / "Qwen2.5-VL-looking-name", family="qwen3_vl")
    spec = ModelSpec(name="tiny-qwen3-vl", path=str(path))
    assert checkpoint_model_type(path) == "qwen3_vl"
    assert isinstance(load_processor(spec), Qwen3VLProcessor)
    with pytest.raises(ConfigError, match="model_type 'qwen3_vl'"):
        load_policy(spec)
