"""Qwen3-VL time text and positions (:mod:`museg_lit.models.families.qwen3_vl`) against the outputs of
transformers 4.57.1's processor and ``get_rope_index`` recorded in ``tests/fixtures/qwen3_vl_reference``,
and the bugs other frameworks shipped, each by name."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch

from museg_lit.models.families.qwen3_vl import (
    PAD_POSITION,
    VISION_START,
    group_times,
    rope_index,
    time_marker,
    video_prompt,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "qwen3_vl_reference"
PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"


@cache
def fixture(name: str) -> dict:
    return json.loads((FIX / name).read_text())


@cache
def special_ids() -> dict[str, int]:
    cfg = json.loads((FIX / "tiny_qwen3_vl" / "tokenizer_config.json").read_text())
    return {v["content"]: int(k) for k, v in cfg["added_tokens_decoder"].items()}


CASES = sorted(fixture("processor.json")["cases"])


def _expanded(case: dict) -> str:
    meta = case["video_metadata_passed"]
    (t, h, w), = case["video_grid_thw"]
    times = group_times(meta["frames_indices"], meta["fps"])
    assert len(times) == t
    return case["template_text"].replace(PLACEHOLDER, video_prompt(times, (h, w)))


@pytest.mark.parametrize("name", CASES)
def test_prompt_text_equals_the_4_57_processor(name):
    case = fixture("processor.json")["cases"][name]
    assert _expanded(case) == case["expanded_text"]


def _positions(input_ids, grid, mask=None):
    ids = special_ids()
    return rope_index(torch.tensor(input_ids), grid, vision_start_id=ids[VISION_START],
                      video_pad_id=ids["<|video_pad|>"],
                      attention_mask=None if mask is None else torch.tensor(mask))


@pytest.mark.parametrize("name", CASES)
def test_positions_equal_4_57_get_rope_index(name):
    case, expected = fixture("processor.json")["cases"][name], fixture("positions.json")[name]
    got = _positions([case["input_ids"]], case["video_grid_thw"], [case["attention_mask"]])
    assert got.position_ids.tolist() == expected["position_ids"]
    assert got.rope_deltas.tolist() == expected["rope_deltas"]


def test_positions_of_a_left_padded_batch_equal_4_57():
    """Pads hold 1 and each row's delta counts the padded length, as 4.57.1 (5.x: 0 and unpadded)."""
    batch = fixture("positions.json")["batch_left_padded"]
    got = _positions(batch["input_ids"], batch["video_grid_thw"], batch["attention_mask"])
    assert got.position_ids.tolist() == batch["position_ids"]
    assert got.rope_deltas.tolist() == batch["rope_deltas"] == [[0], [-10]]
    pads = torch.tensor(batch["attention_mask"]) == 0  # [B, L]
    assert pads.any() and (got.position_ids[:, pads] == PAD_POSITION).all()


def test_group_count_mismatch_is_an_error():
    case = fixture("processor.json")["cases"][CASES[0]]
    (t, h, w), = case["video_grid_thw"]
    with pytest.raises(ValueError, match="temporal groups"):
        _positions([case["input_ids"]], [[t + 1, h, w]])


def test_marker_precedes_vision_start_lmms_engine_132():
    """lmms-engine#132 wrote the marker after ``<|vision_start|>``: here it comes right before it."""
    text = video_prompt([0.3, 1.4], (2, 4))
    for group in text.split("<|vision_end|>")[:-1]:
        assert group.startswith("<") and group.index("seconds>") < group.index(VISION_START)


def test_times_come_from_source_frame_indices_llamafactory_10335_and_fps_ms_swift_6523():
    """29.97 fps source, 6 frames sampled at indices 0, 18, ..., 89 (qwen-vl-utils 0.0.14): the
    markers use index / source fps. ``k / sample_fps`` (LlamaFactory#10335, indices lost) and a
    source fps stuck at 2.0 (ms-swift#6523) both write other times than 4.57.1 did."""
    case = fixture("processor.json")["cases"]["p2997_nframes6"]
    meta = case["video_metadata_passed"]
    ours = [time_marker(t) for t in group_times(meta["frames_indices"], meta["fps"])]
    assert ours == ["<0.3 seconds>", "<1.5 seconds>", "<2.7 seconds>"]
    assert all(m in case["expanded_text"] for m in ours)
    sample_fps = 2.0  # 6 frames over the 3.0 s clip
    by_position = [time_marker(t) for t in group_times(range(len(meta["frames_indices"])), sample_fps)]
    stuck_fps = [time_marker(t) for t in group_times(meta["frames_indices"], 2.0)]
    assert by_position != ours and stuck_fps != ours


@pytest.mark.parametrize("fps", [None, 0, -1.0, float("nan")])
def test_missing_fps_is_an_error_not_transformers_24(fps):
    """transformers 4.57.1 (and 5.x) fall back to fps 24 with a warning: the recorded prompt then says
    the 4 s clip lasts 0.3 s. Here a missing fps stops the encoding."""
    fallback = fixture("processor.json")["documented_cases"]["no_metadata_no_sampling"]
    assert "<0.3 seconds>" in fallback["expanded_text"] and "<3.7 seconds>" not in fallback["expanded_text"]
    with pytest.raises(ValueError, match="fps"):
        group_times([0, 14, 28, 42], fps)


def test_odd_frame_count_repeats_the_last_frame():
    # frames at 0, 1, 2 s (fps 1): groups (0, 1) and (2, 2) -> 0.5 s and 2.0 s
    assert group_times([0, 1, 2], 1.0) == [0.5, 2.0]
    assert video_prompt(group_times([0, 1, 2], 1.0), (2, 2)).count(VISION_START) == 2


@cache
def reference_processor():
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(FIX / "tiny_qwen3_vl")  # saved by 4.57.1, loaded by today's


def _uint8_frames(name: str) -> torch.Tensor:
    from safetensors.torch import load_file

    frames = load_file(FIX / "frames.safetensors")[name]  # [T, 3, H, W] float, as qwen-vl-utils returns
    return frames.round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("name", CASES)
def test_encode_prompts_writes_the_4_57_prompt_and_matches_the_processor(name):
    """``encode_prompts(..., timestamps=index / fps)`` gives 4.57.1's token ids and grid, and exactly
    what today's processor returns for the same frames with explicit metadata (pixels included)."""
    from museg_lit.models.processing import encode_prompts, is_qwen3_vl

    case = fixture("processor.json")["cases"][name]
    meta = case["video_metadata_passed"]
    processor, frames = reference_processor(), _uint8_frames(name)
    assert is_qwen3_vl(processor)
    seconds = [i / meta["fps"] for i in meta["frames_indices"]]
    sample_fps = len(frames) / (meta["total_num_frames"] / meta["fps"])
    ours = encode_prompts(processor, [case["template_text"]], [frames], [sample_fps], timestamps=[seconds])
    assert ours["input_ids"].tolist() == [case["input_ids"]]
    assert ours["video_grid_thw"].tolist() == case["video_grid_thw"]
    theirs = processor(text=[case["template_text"]], videos=[frames], video_metadata=[meta], do_sample_frames=False,
                       do_resize=False, return_tensors="pt", cap_pixels_per_frame=False)
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


def test_encode_prompts_default_times_and_mismatches():
    """Without timestamps a clip's frames are k / sample_fps apart; a timestamp count that is not the
    frame count, or groups that are not the video processor's, are errors."""
    from museg_lit.models.processing import encode_prompts

    case = fixture("processor.json")["cases"]["p25_fps2"]
    frames = _uint8_frames("p25_fps2")  # 8 frames
    batch = encode_prompts(reference_processor(), [case["template_text"]], [frames], [2.0])
    text = reference_processor().tokenizer.decode(batch["input_ids"][0])
    # frames at 0, 0.5, ..., 3.5 s: groups at 0.25, 1.25, 2.25, 3.25 s, written with Python's rounding
    assert "<0.2 seconds><|vision_start|>" in text and "<1.2 seconds><|vision_start|>" in text and "<3.2 seconds><|vision_start|>" in text
    with pytest.raises(ValueError, match="timestamps"):
        encode_prompts(reference_processor(), [case["template_text"]], [frames], [2.0], timestamps=[[0.0] * 7])
