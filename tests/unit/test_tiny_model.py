"""The embedded tiny Qwen2.5-VL checkpoint and the model factory."""

from __future__ import annotations

import importlib.util
import json
import os
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)

import museg_lit.models.tiny as tiny
from museg_lit.models import (
    ModelSpec,
    build_tiny_checkpoint,
    encode_prompts,
    load_policy,
    load_processor,
    load_reference,
)
from tests.optional import OPTIONAL

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>When does the red circle appear?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="session")
def tiny_dir(tiny_checkpoint):
    # tests/conftest.py builds the checkpoint once per session (tmp_path_factory).
    return tiny_checkpoint


@pytest.fixture(scope="module")
def model(tiny_dir):
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_dir, local_files_only=True)


@pytest.fixture(scope="module")
def processor(tiny_dir):
    return Qwen2_5_VLProcessor.from_pretrained(tiny_dir, local_files_only=True)


def small_video(t: int = 4, h: int = 56, w: int = 56, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)


def test_offline_environment():
    # The suite must run without network: `make test` sets this, and so should any caller.
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_checkpoint_files(tiny_dir):
    names = set(os.listdir(tiny_dir))
    for f in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        tiny.MARKER_FILE,
    ):
        assert f in names
    # No temporary directories are left next to it.
    assert [p.name for p in tiny_dir.parent.iterdir() if p.name.startswith(".")] == []


def test_config_consistent_with_tokenizer(model, tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    cfg = model.config
    ids = tok.convert_tokens_to_ids
    assert cfg.video_token_id == ids("<|video_pad|>")
    assert cfg.image_token_id == ids("<|image_pad|>")
    assert cfg.vision_start_token_id == ids("<|vision_start|>")
    assert cfg.vision_end_token_id == ids("<|vision_end|>")
    text = cfg.text_config
    assert text.vocab_size % 64 == 0 and len(tok) <= text.vocab_size < len(tok) + 64
    head_dim = text.hidden_size // text.num_attention_heads  # 256 / 4 = 64
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2 == 32
    assert cfg.vision_config.out_hidden_size == text.hidden_size
    assert (cfg.vision_config.patch_size, cfg.vision_config.temporal_patch_size) == (14, 2)
    assert cfg.vision_config.spatial_merge_size == 2
    gen = model.generation_config
    assert gen.eos_token_id == [ids("<|im_end|>"), ids("<|endoftext|>")]
    assert gen.pad_token_id == ids("<|endoftext|>")


def test_parameter_count(model, tiny_dir):
    n = sum(p.numel() for p in model.parameters())
    # 3,483,520 with the defaults: vision 875,136 + language model (tied embeddings) 2,608,384.
    assert 2_000_000 < n < 5_000_000
    assert json.loads((tiny_dir / tiny.MARKER_FILE).read_text())["n_parameters"] == n


def test_build_is_deterministic(tiny_dir, tmp_path):
    again = build_tiny_checkpoint(tmp_path / "again", seed=0)
    a, b = load_file(tiny_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tiny_dir / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()
    other = load_file(build_tiny_checkpoint(tmp_path / "seed1", seed=1) / "model.safetensors")
    assert not torch.equal(
        a["lm_head.weight" if "lm_head.weight" in a else next(iter(a))],
        other["lm_head.weight" if "lm_head.weight" in other else next(iter(other))],
    )


def test_build_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_checkpoint(tmp_path / "rng")
    assert torch.equal(torch.rand(3), expected)


def test_fast_path_and_argument_checks(tiny_dir, tmp_path):
    mtime = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert build_tiny_checkpoint(tiny_dir) == tiny_dir
    assert time.perf_counter() - t0 < 0.5
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="other arguments"):
        build_tiny_checkpoint(tiny_dir, seed=7)
    with pytest.raises(TypeError, match="unknown"):
        build_tiny_checkpoint(tmp_path / "x", hidden=3)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_checkpoint(foreign)
    # overwrite=True replaces a finished checkpoint built with other arguments.
    rebuilt = build_tiny_checkpoint(tmp_path / "ow", seed=1)
    build_tiny_checkpoint(rebuilt, seed=2, overwrite=True)
    assert json.loads((rebuilt / tiny.MARKER_FILE).read_text())["seed"] == 2


def test_size_overrides(tmp_path):
    path = build_tiny_checkpoint(
        tmp_path / "wide", hidden_size=64, num_attention_heads=2, mrope_section=(4, 6, 6)
    )
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["text_config"]["hidden_size"] == 64
    assert cfg["vision_config"]["out_hidden_size"] == 64


def test_concurrent_builder_wins_race(tmp_path, monkeypatch):
    """Another process finishes `out` while we are still writing: we keep its result."""
    out = tmp_path / "race"
    real_write = tiny._write

    def write_and_lose_race(tmp, seed, sizes):
        n = real_write(tmp, seed, sizes)
        monkeypatch.setattr(tiny, "_write", real_write)
        build_tiny_checkpoint(out, seed=seed)  # the "other process"
        return n

    monkeypatch.setattr(tiny, "_write", write_and_lose_race)
    assert build_tiny_checkpoint(out) == out
    assert tiny.is_complete_checkpoint(out)
    assert [p.name for p in tmp_path.iterdir()] == ["race"]  # our temporary directory is gone


def test_forward_backward_and_generate(model, processor):
    batch = encode_prompts(
        processor, [PROMPT, PROMPT + "The"], [small_video(), small_video(seed=1)], [2.0, 2.0]
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    out = model(**batch, labels=labels)
    assert out.logits.shape == (*batch["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0  # the video reached the loss
    model.zero_grad(set_to_none=True)
    model.eval()

    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 2 and batch["input_ids"].shape[1] < gen.shape[1] <= batch["input_ids"].shape[1] + 4
    assert torch.equal(gen[:, : batch["input_ids"].shape[1]], batch["input_ids"])


# ----------------------------------------------------------------------------------------------
# factory
# ----------------------------------------------------------------------------------------------


def test_load_policy_reference_processor(tiny_dir):
    spec = ModelSpec(
        name="tiny", path=str(tiny_dir), tiny=True, freeze_vision=True, gradient_checkpointing=True
    )
    policy = load_policy(spec)
    assert isinstance(policy, Qwen2_5_VLForConditionalGeneration)
    assert any(getattr(m, "gradient_checkpointing", False) for m in policy.modules())
    assert not any(p.requires_grad for p in policy.model.visual.parameters())
    assert all(p.requires_grad for p in policy.model.language_model.parameters())

    ref = load_reference(spec)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    for (name, p), (_, q) in zip(policy.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(p, q), name

    proc = load_processor(spec)
    assert isinstance(proc, Qwen2_5_VLProcessor)
    assert proc.video_processor.do_sample_frames is False

    # A checkpointed training step with a frozen vision tower still reaches the language model.
    policy.train()
    batch = encode_prompts(proc, [PROMPT], [small_video()], [2.0])
    policy(**batch, labels=batch["input_ids"]).loss.backward()
    assert policy.model.language_model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    assert policy.model.visual.patch_embed.proj.weight.grad is None


def test_load_policy_dtype(tiny_dir):
    policy = load_policy(ModelSpec(name="tiny", path=str(tiny_dir), tiny=True, dtype="bfloat16"))
    assert next(policy.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        load_policy(ModelSpec(name="tiny", path=str(tiny_dir), tiny=True, dtype="float8"))


def test_tiny_without_path_uses_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSEG_LIT_CACHE", str(tmp_path))
    proc = load_processor(ModelSpec(name="tiny", path=None, tiny=True))
    assert isinstance(proc, Qwen2_5_VLProcessor)
    [built] = list(tmp_path.iterdir())
    assert built.name.startswith("tiny-qwen2_5_vl-seed0-")


@pytest.mark.parametrize("path", [None, "/nonexistent/Qwen2.5-VL-7B-Instruct"])
def test_missing_real_checkpoint_says_how_to_download(path):
    spec = ModelSpec(name="Qwen/Qwen2.5-VL-7B-Instruct", path=path)
    with pytest.raises(FileNotFoundError) as err:
        load_policy(spec)
    msg = str(err.value)
    assert "\n" not in msg
    assert "hf download Qwen/Qwen2.5-VL-7B-Instruct --local-dir DIR" in msg
    assert "model.path=DIR" in msg


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None,
                    reason=f"{OPTIONAL} checks the error shown when flash-attn is absent, and flash-attn is installed")
def test_flash_attention_without_flash_attn(tiny_dir):
    spec = ModelSpec(name="tiny", path=str(tiny_dir), tiny=True, attn_implementation="flash_attention_2")
    with pytest.raises(ImportError, match=r"pip install \.\[gpu\]"):
        load_policy(spec)


def test_processor_chat_template_survives_save_and_load(processor):
    messages = [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": "When does the red circle appear?"}],
        }
    ]
    assert processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == PROMPT
