"""The locally trained Qwen2-style tokenizer and our Qwen2.5-VL chat template."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer, Qwen2TokenizerFast

from museg_lit.models.tokenizer import (
    QWEN25VL_CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    build_tokenizer,
    default_corpus,
    train_bpe,
)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_is_qwen2_fast_tokenizer(tok):
    assert isinstance(tok, Qwen2TokenizerFast)
    assert tok.is_fast
    assert len(tok) <= 2048


def test_digits_split_one_per_token(tok):
    assert tok.tokenize("12.50") == ["1", "2", ".", "5", "0"]
    # Inside an answer every digit is its own token; the space before a number is its own token
    # too (Qwen2's regex: `\s+` then `\p{N}`), exactly as with Qwen's real tokenizer.
    tokens = tok.tokenize("<answer>12.50-17.80 20.00-25.40</answer>")
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits == list("1250178020002540")
    assert "Ġ" in tokens


def test_special_tokens_are_single_ids_in_qwen_order(tok):
    ids = [tok.encode(t, add_special_tokens=False) for t in SPECIAL_TOKENS]
    assert all(len(i) == 1 for i in ids)
    flat = [i[0] for i in ids]
    # Appended after the BPE vocabulary in Qwen's order (151643..151656 in the real vocabulary).
    assert flat == list(range(len(tok) - len(SPECIAL_TOKENS), len(tok)))
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.bos_token is None and tok.unk_token is None
    # Specials inside text are matched as wholes, never split by BPE.
    text = "<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>"
    assert tok.convert_ids_to_tokens(tok.encode(text)[:3]) == [
        "<|vision_start|>",
        "<|video_pad|>",
        "<|vision_end|>",
    ]


def test_decode_roundtrip_including_unseen_characters(tok):
    text = "Der Würfel erscheint bei 3.5 s — 立方体 🟥\n<think>ok</think><answer>0.00-1.25</answer>"
    assert tok.decode(tok.encode(text)) == text


QWEN25VL_VIDEO_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>When does the red circle appear?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_chat_template_matches_qwen25vl_rendering(tok):
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": [
                {"type": "video", "video": "file:///v.mp4"},
                {"type": "text", "text": "When does the red circle appear?"},
            ],
        },
    ]
    assert (
        tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == QWEN25VL_VIDEO_PROMPT
    )
    # Without a system turn the default system prompt is inserted: same string.
    assert (
        tok.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=True)
        == QWEN25VL_VIDEO_PROMPT
    )


def test_chat_template_other_parts(tok):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Q"}]},
        {"role": "assistant", "content": "<think>t</think><answer>1.00-2.00</answer>"},
    ]
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|video_pad|><|vision_end|>Q<|im_end|>\n"
        "<|im_start|>assistant\n<think>t</think><answer>1.00-2.00</answer><|im_end|>\n"
    )
    assert tok.apply_chat_template(messages, tokenize=False) == expected
    with_ids = tok.apply_chat_template(messages[1:2], tokenize=False, add_vision_id=True)
    assert "Picture 1: <|vision_start|><|image_pad|>" in with_ids
    assert "Video 1: <|vision_start|><|video_pad|>" in with_ids


def test_deterministic_in_process():
    a, b = build_tokenizer(), build_tokenizer()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


def test_deterministic_across_processes():
    # Rust's HashMap iteration order is randomised per process; make sure BPE training does not
    # depend on it. (Wrapping the result into Qwen2TokenizerFast is deterministic Python.)
    code = (
        "import json; from museg_lit.models.tokenizer import default_corpus, train_bpe; "
        "v, m = train_bpe(default_corpus(), 2034); print(json.dumps([v, m], sort_keys=True))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    vocab, merges = train_bpe(default_corpus(), 2034)
    assert json.loads(out) == json.loads(json.dumps([vocab, merges], sort_keys=True))


def test_custom_corpus_and_vocab_bound():
    small = build_tokenizer(["the red circle appears at 1.5 seconds"] * 20, vocab_size=300)
    assert len(small) <= 300
    assert small.tokenize("12.50") == ["1", "2", ".", "5", "0"]
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(vocab_size=100)


def test_default_corpus_is_deterministic():
    assert list(default_corpus(50)) == list(default_corpus(50))


def test_save_and_reload_offline(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert isinstance(again, Qwen2TokenizerFast)
    assert again.get_vocab() == tok.get_vocab()
    assert again.chat_template == QWEN25VL_CHAT_TEMPLATE
    text = "<|im_start|>user\nThe blue star fades out at 17.80 seconds.<|im_end|>"
    assert again.encode(text) == tok.encode(text)
    assert again.eos_token == "<|im_end|>" and again.pad_token == "<|endoftext|>"
