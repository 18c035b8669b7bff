"""SFT warm start: the taught answer, the collated batch and the answer-only loss."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from museg_lit.data.annotations import GroundingSample
from museg_lit.data.datamodule import PromptCollator
from museg_lit.data.video import load_video
from museg_lit.models.batch import visual_inputs
from museg_lit.models.factory import ModelSpec, load_processor
from museg_lit.models.positions import sequence_positions
from museg_lit.rewards.museg import format_reward, global_matching_reward, local_matching_reward
from museg_lit.sft import SFTConfig, target_text
from museg_lit.sft.loss import IGNORE_INDEX, answer_logprobs, masked_nll, sft_labels


def test_target_scores_full_format_and_matching_on_every_museg_training_sample(museg_data_dir):
    """Every ground truth of MUSEG's stage-1 file gives a target that the stage-1 format reward pays
    1.0 (each answer number is cited in the think) and that matches itself exactly, except for the
    zero-length segments it leaves out (two rows)."""
    lines = (museg_data_dir / "stage_1.jsonl").read_text().splitlines()
    solutions = [json.loads(line)["solution"] for line in lines]
    targets = [target_text(s) for s in solutions]
    assert set(format_reward(targets, solutions)) == {1.0}
    proper = [i for i, s in enumerate(solutions) if all(round(e, 2) > round(b, 2) for b, e in s)]
    assert len(solutions) - len(proper) == 2
    picked_t, picked_s = [targets[i] for i in proper], [solutions[i] for i in proper]
    assert min(global_matching_reward(picked_t, picked_s)) == pytest.approx(1.0, abs=0.01)
    assert min(local_matching_reward(picked_t, picked_s)) == pytest.approx(1.0, abs=0.01)


def test_target_text_rounds_to_two_decimals_and_cites_the_same_numbers():
    text = target_text([[0.004, 12.5]])
    assert text == ("<think>The queried content is visible from 0.0 to 12.5 seconds.</think>"
                    "<answer>0.00-12.50</answer>")
    assert format_reward([text], [[[0.004, 12.5]]]) == [1.0]


@pytest.mark.parametrize("bad", ["no placeholder", "{segments}"])
def test_think_template_without_spans_is_refused_naming_the_key(bad):
    with pytest.raises(ValueError, match="algo.think_template"):
        SFTConfig(think_template=bad)


def test_empty_solution_has_nothing_to_teach():
    with pytest.raises(ValueError, match="no segment"):
        target_text([])
    with pytest.raises(ValueError, match="no segment"):
        target_text([[3.0, 3.001]])


@pytest.fixture(scope="module")
def batch(tiny_checkpoint, synthetic_data):
    """A collated SFT batch of two samples with different prompt and answer lengths."""
    processor = load_processor(ModelSpec(name="tiny", path=str(tiny_checkpoint)))
    rows = [json.loads(line) for line in (synthetic_data / "train.jsonl").read_text().splitlines()]
    rows = [next(r for r in rows if r["task"] == "tvg"), next(r for r in rows if r["task"] == "tal")]
    items = []
    for i, r in enumerate(rows):
        sample = GroundingSample(idx=str(r["idx"]), video=r["video"], problem=r["problem"],
                                 solution=r["solution"], task=r["task"], duration=r["duration"], source=f"x:{i}")
        clip = load_video(str(synthetic_data / r["video"]), fps=2.0, min_frames=4, max_frames=8 + 4 * i,
                          min_pixels=3136, max_pixels=3136)
        items.append({"sample": sample, "clip": clip, "skipped": [], "drawn": 1, "decode_s": 0.0, "index": i})
    collate = PromptCollator(processor, "frame_selection_thinking", answers=SFTConfig().target)
    return processor, collate(items)


def test_batch_carries_each_answer_closed_by_the_end_of_turn_token(batch):
    processor, b = batch
    tok = processor.tokenizer
    assert b.answer_ids.shape == b.answer_mask.shape and b.answer_ids.shape[0] == 2
    lengths = b.answer_mask.sum(1).tolist()
    assert lengths[0] != lengths[1]  # right padding is exercised
    for row, (sample, n) in enumerate(zip(b.samples, lengths, strict=True)):
        ids = b.answer_ids[row, :n].tolist()
        assert tok.decode(ids) == target_text(sample.solution) + "<|im_end|>"
        assert b.answer_mask[row, n:].sum() == 0


def test_labels_mask_every_prompt_token_and_only_those(batch):
    """The SFT targets: -100 on the whole prompt (system text, every video placeholder, the question,
    the assistant header) and on padding; the answer's ids everywhere else."""
    processor, b = batch
    prompt_ids = b.inputs["input_ids"]
    labels = sft_labels(prompt_ids, b.answer_ids, b.answer_mask)
    p = prompt_ids.shape[1]
    assert (labels[:, :p] == IGNORE_INDEX).all()
    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert (prompt_ids == video_id).sum() > 0 and not (labels == video_id).any()
    answer = labels[:, p:]
    assert torch.equal(answer != IGNORE_INDEX, b.answer_mask.bool())
    assert torch.equal(answer[b.answer_mask.bool()], b.answer_ids[b.answer_mask.bool()])


def test_loss_equals_hugging_face_cross_entropy_with_prompt_labels_ignored(batch, tiny_checkpoint):
    """Our answer-only loss is the library's own ``labels`` loss over [prompt | answer] with the prompt
    masked (same 3D positions): no prompt or video token is ever a target."""
    _, b = batch
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint, attn_implementation="sdpa").eval()
    inputs, ids, mask = b.inputs, b.answer_ids, b.answer_mask
    ours = masked_nll(answer_logprobs(model, inputs, ids, mask), mask)
    full_ids = torch.cat([inputs["input_ids"], ids], dim=1)
    full_mask = torch.cat([inputs["attention_mask"], mask], dim=1)
    out = model(input_ids=full_ids, attention_mask=full_mask, labels=sft_labels(inputs["input_ids"], ids, mask),
                position_ids=sequence_positions(model, inputs, ids.shape[1]), **visual_inputs(inputs))
    torch.testing.assert_close(ours, out.loss, rtol=1e-5, atol=1e-5)
    assert ours.item() > 1.0  # an untrained model: a real loss, not a degenerate zero
