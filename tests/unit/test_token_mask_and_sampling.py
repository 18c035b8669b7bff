"""Token-aware KL mask on real tokenizer output, DAPO group filters, and the replay batch sampler."""

import pytest
import torch

from museg_lit.rl.sampling import informative_groups, mask_truncated, rows_of_groups
from museg_lit.rl.token_mask import (
    per_token_beta,
    timestamp_mask_from_pieces,
    timestamp_token_mask,
    token_pieces,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint, local_files_only=True)


TEXT = "<think>It starts at 3.5 s.</think><answer>12.50-17.80 20.00-25.40</answer>"


def _selected(tokenizer, text, scope):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    mask = timestamp_token_mask(torch.tensor([ids]), torch.ones(1, len(ids)), tokenizer, scope)[0]
    pieces = token_pieces(tokenizer, ids)
    return "".join(p for p, m in zip(pieces, mask.tolist(), strict=True) if m), ids


def test_answer_scope_marks_only_answer_digits(tokenizer):
    selected, ids = _selected(tokenizer, TEXT, "answer")
    # digits and dots of "12.50-17.80 20.00-25.40" in order; "3.5" in the thinking is not selected
    assert selected == "12.5017.8020.0025.40"
    # digits are one token each (Qwen2 pre-tokenizer): 16 digits + 4 dots = 20 tokens marked
    assert sum(ch.isdigit() or ch == "." for ch in selected) == 20


def test_all_digits_scope_includes_reasoning(tokenizer):
    selected, _ = _selected(tokenizer, TEXT, "all_digits")
    # every digit token, reasoning included ("3", "5"); lone "." tokens hold no digit and stay out
    assert selected == "35" + "1250" + "1780" + "2000" + "2540"


def test_mask_respects_completion_mask(tokenizer):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    cm = torch.zeros(1, len(ids))
    cm[0, :5] = 1  # only the first 5 tokens are real: no answer inside them
    assert not timestamp_token_mask(torch.tensor([ids]), cm, tokenizer, "answer").any()


def test_mask_from_pieces_by_hand():
    pieces = ["<", "answer", ">", "1", ".", "5", "-", "2", "</", "answer", ">"]
    assert timestamp_mask_from_pieces(pieces) == [False] * 3 + [True, True, True, False, True] + [False] * 3
    with pytest.raises(ValueError, match="token_kl_scope"):
        timestamp_mask_from_pieces(pieces, "nope")


def test_per_token_beta():
    m = torch.tensor([[True, False]])
    assert per_token_beta(m, 0.04, 0.0).tolist() == [[0.0, pytest.approx(0.04)]]


def test_dapo_filters():
    keep = informative_groups(torch.tensor([0.0, 0.5, 1e-9]))
    assert keep.tolist() == [False, True, False]
    assert rows_of_groups(keep, 2).tolist() == [False, False, True, True, False, False]
    cm = torch.ones(2, 3, dtype=torch.long)
    assert mask_truncated(cm, torch.tensor([True, False])).tolist() == [[0, 0, 0], [1, 1, 1]]
