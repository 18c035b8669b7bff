"""3D positions by the rule the checkpoints were trained with (transformers 4.50 / vLLM), hand-computed.

Token ids in the hand examples: 9 = video placeholder, everything else is text. Tokens per second 2,
spatial merge 2, so a grid (t, h, w) gives t * h/2 * w/2 video tokens.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2_5_VLProcessor

from museg_lit.models import ModelSpec, encode_prompts, load_policy
from museg_lit.models.generation import Sampling, SpecialTokens, generate
from museg_lit.models.positions import (
    RopeSpec,
    completion_positions,
    mrope_positions,
    prompt_positions,
    sequence_positions,
)
from museg_lit.models.processing import VIDEO_PLACEHOLDER
from museg_lit.rl.logprobs import completion_logprobs
from museg_lit.rl.rollout import completion_mask

SPEC = RopeSpec(video_token_id=9, spatial_merge_size=2, tokens_per_second=2.0)
V = 9


def ids(*parts) -> torch.Tensor:
    """ids(3, (V, 8), 2) -> three text tokens, eight video tokens, two text tokens (one row)."""
    row = []
    for p in parts:
        row += [V] * p[1] if isinstance(p, tuple) else [5] * p
    return torch.tensor([row])


def test_short_clip_hand_computed():
    # 3 text | video grid (2, 4, 4) at 1 s per grid: 2 x 2 x 2 = 8 tokens | 2 text
    out = mrope_positions(ids(3, (V, 8), 2), None, SPEC, video_grid_thw=torch.tensor([[2, 4, 4]]),
                          second_per_grid_ts=torch.tensor([1.0]))
    t, h, w = out.position_ids[:, 0].tolist()
    # text 0 1 2; video starts at 3: t = 3 + int(i * 1.0 * 2) = 3, 5; h, w = 3 + 0..1; text after = max 5 + 1
    assert t == [0, 1, 2, 3, 3, 3, 3, 5, 5, 5, 5, 6, 7]
    assert h == [0, 1, 2, 3, 3, 4, 4, 3, 3, 4, 4, 6, 7]
    assert w == [0, 1, 2, 3, 4, 3, 4, 3, 4, 3, 4, 6, 7]
    assert out.next_position.tolist() == [8]


def test_long_clip_text_starts_after_the_last_temporal_position():
    # 2 text | grid (8, 4, 4): t = 2 + 0, 2, ..., 14 (beyond h/w positions 2..3) | 3 text
    out = mrope_positions(ids(2, (V, 32), 3), None, SPEC, video_grid_thw=torch.tensor([[8, 4, 4]]),
                          second_per_grid_ts=torch.tensor([1.0]))
    t, h, w = out.position_ids[:, 0].tolist()
    assert t[2:34:4] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert max(h[2:34]) == max(w[2:34]) == 3
    # the question text sits at 17, 18, 19 (transformers 5.2x: 2 + max(h, w)/2 = 4, 5, 6)
    assert t[34:] == h[34:] == w[34:] == [17, 18, 19]
    assert out.next_position.tolist() == [20]


def test_non_integer_seconds_per_grid_fps_1_7():
    # 2 / 1.7 = 1.17647 s per grid (float32): t = int(i * 1.17647 * 2) = 0, 2, 4, 7, 9, 11
    spg = torch.tensor([2 / 1.7], dtype=torch.float32)
    out = mrope_positions(ids((V, 6), 1), None, SPEC, video_grid_thw=torch.tensor([[6, 2, 2]]), second_per_grid_ts=spg)
    t = out.position_ids[0, 0].tolist()
    assert t == [0, 2, 4, 7, 9, 11, 12]  # video first: offset 0; text after at 11 + 1
    assert out.next_position.tolist() == [13]


def test_left_padding_and_two_prompts_of_different_lengths():
    # row 0: 3 pads, 1 text, video (2, 2, 2) = 2 tokens, 2 text; row 1: 3 text, video (4, 2, 2) = 4 tokens, 1 text
    pad = 0
    input_ids = torch.tensor([[pad, pad, pad, 5, V, V, 5, 5],
                              [5, 5, 5, V, V, V, V, 5]])
    mask = (input_ids != pad).long()
    out = mrope_positions(input_ids, mask, SPEC, video_grid_thw=torch.tensor([[2, 2, 2], [4, 2, 2]]),
                          second_per_grid_ts=torch.tensor([1.0, 0.5]))
    # row 0: pads -> 1; text 0; video at 1: t = 1, 3 (h = w = 1); text 4, 5
    assert out.position_ids[:, 0].tolist() == [[1, 1, 1, 0, 1, 3, 4, 5],
                                               [1, 1, 1, 0, 1, 1, 4, 5],
                                               [1, 1, 1, 0, 1, 1, 4, 5]]
    # row 1: text 0 1 2; video at 3 with 0.5 s per grid: t = 3 + int(i * 0.5 * 2) = 3, 4, 5, 6; text 7
    assert out.position_ids[:, 1].tolist() == [[0, 1, 2, 3, 4, 5, 6, 7],
                                               [0, 1, 2, 3, 3, 3, 3, 7],
                                               [0, 1, 2, 3, 3, 3, 3, 7]]
    assert out.next_position.tolist() == [6, 8]
    assert completion_positions(out.next_position, 3).tolist() == [[[6, 7, 8], [8, 9, 10]]] * 3


def test_a_run_that_does_not_match_its_grid_is_an_error():
    with pytest.raises(ValueError, match="vision run of 3 tokens"):
        mrope_positions(ids(1, (V, 3), 1), None, SPEC, video_grid_thw=torch.tensor([[2, 2, 2]]),
                        second_per_grid_ts=[1.0])
    with pytest.raises(ValueError, match="more vision runs"):
        mrope_positions(ids(1, (V, 2), 1), None, SPEC, video_grid_thw=None)


# ---- the real model: what the language model sees in generate and in the log-prob pass ----


@pytest.fixture(scope="module")
def model_and_processor(tiny_checkpoint):
    spec = ModelSpec(name="tiny", path=str(tiny_checkpoint), tiny=True)
    return load_policy(spec), Qwen2_5_VLProcessor.from_pretrained(tiny_checkpoint, local_files_only=True)


def _prompts(processor, questions, frame_counts, fps):
    texts = [f"<|im_start|>user\n{VIDEO_PLACEHOLDER}{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
    g = torch.Generator().manual_seed(0)
    videos = [torch.randint(0, 256, (n, 3, 56, 56), dtype=torch.uint8, generator=g) for n in frame_counts]
    return dict(encode_prompts(processor, texts, videos, fps))


def test_rope_spec_reads_the_checkpoint_config(model_and_processor):
    model, processor = model_and_processor
    spec = RopeSpec.from_config(model.config)
    assert spec.video_token_id == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert (spec.spatial_merge_size, spec.tokens_per_second) == (2, 2.0)


def test_generate_and_logprob_pass_place_the_completion_alike(model_and_processor):
    model, processor = model_and_processor
    # two prompts of different lengths (left padding), clips of 16 and 6 frames at 2 and 1.7 fps:
    # the 16-frame clip's t positions (0..14) run far beyond its h/w positions (0..1)
    inputs = _prompts(processor, ["When does the red circle appear?", "Find it."], [16, 6], [2.0, 1.7])
    seen: list[torch.Tensor] = []
    rotary = model.model.language_model.rotary_emb
    handle = rotary.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().clone()))
    try:
        tokens = SpecialTokens.of(model, processor.tokenizer)
        sampling = Sampling(max_new_tokens=6, temperature=1.0)
        completion = generate(model, inputs, sampling, tokens, budgets=torch.tensor([6, 6]))  # [2, C]
        in_generate = torch.cat(seen, dim=2)  # [3, 2, P + C - 1]: prefill, then one fed token per step
        seen.clear()
        mask, _ = completion_mask(completion, tokens.eos_token_ids)
        completion_logprobs(model, inputs, completion, mask)
        (in_logprobs,) = seen  # [3, 2, P + C]
    finally:
        handle.remove()
    p, c = inputs["input_ids"].shape[1], completion.shape[1]
    assert in_generate.shape[2] == p + c - 1
    real = inputs["attention_mask"].bool()
    assert torch.equal(in_generate[:, :, :p][:, real], in_logprobs[:, :, :p][:, real])  # the prompt
    assert torch.equal(in_generate[:, :, p:], in_logprobs[:, :, p:p + c - 1])  # the completion tokens fed back
    expected = prompt_positions(model, inputs)
    assert torch.equal(in_logprobs, sequence_positions(model, inputs, c))
    assert torch.equal(in_logprobs[0, :, p], expected.next_position)  # first completion token: prompt max + 1
    assert int(expected.next_position[0]) == int(expected.position_ids[0, 0].max()) + 1
