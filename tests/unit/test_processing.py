"""encode_prompts: chat-templated prompts + decoded clips -> Qwen2.5-VL batch, no resampling."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from museg_lit.models import VIDEO_PLACEHOLDER, encode_prompts


def prompt(question: str) -> str:
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{VIDEO_PLACEHOLDER}{question}<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.fixture(scope="session")
def tiny_dir(tiny_checkpoint):
    # tests/conftest.py builds the checkpoint once per session (tmp_path_factory).
    return tiny_checkpoint


@pytest.fixture(scope="module")
def processor(tiny_dir):
    return Qwen2_5_VLProcessor.from_pretrained(tiny_dir, local_files_only=True)


def video(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)


def reference_patches(frames: torch.Tensor) -> torch.Tensor:
    """Qwen2-VL's normalise + patchify written out by hand (patch 14, temporal 2, merge 2)."""
    t, c, h, w = frames.shape
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    x = (frames.float() / 255 - mean) / std  # [T, 3, H, W]
    gt, gh, gw = t // 2, h // 14, w // 14
    x = x.view(gt, 2, c, gh // 2, 2, 14, gw // 2, 2, 14)
    # -> [gt, gh/2, gw/2, merge_h, merge_w, C, temporal, patch_h, patch_w]: merged 2x2 groups are
    # contiguous, so the vision merger can concatenate 4 consecutive rows.
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * 2 * 14 * 14)


@pytest.fixture(scope="module")
def batch_and_inputs(processor):
    # Two prompts of different length, two clips of different size / frame count / fps.
    texts = [prompt("When does the red circle appear?"), prompt("Find it.")]
    videos = [video(4, 56, 84, seed=0), video(6, 112, 56, seed=1)]
    fps = [2.0, 1.5]
    return encode_prompts(processor, texts, videos, fps), texts, videos, fps


def test_keys(batch_and_inputs):
    batch, *_ = batch_and_inputs
    for key in (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values_videos",
        "video_grid_thw",
        "second_per_grid_ts",
    ):
        assert key in batch
    assert batch["input_ids"].dtype == torch.long


def test_grid_and_second_per_grid_ts(batch_and_inputs):
    batch, _, videos, fps = batch_and_inputs
    # [T/2, H/14, W/14]: (4, 56, 84) -> [2, 4, 6]; (6, 112, 56) -> [3, 8, 4]
    assert batch["video_grid_thw"].tolist() == [[2, 4, 6], [3, 8, 4]]
    # temporal_patch_size / sample_fps: 2 / 2.0 = 1.0 s, 2 / 1.5 = 1.333 s per temporal patch
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([1.0, 2 / 1.5])


def test_video_pad_count_per_prompt(batch_and_inputs, processor):
    batch, *_ = batch_and_inputs
    n_pad = (batch["input_ids"] == processor.video_token_id).sum(dim=1)
    # prod(grid) / merge^2: 2*4*6/4 = 12; 3*8*4/4 = 24
    assert n_pad.tolist() == [12, 24]
    # mm_token_type_ids marks exactly those positions as video (2); get_rope_index needs it.
    assert torch.equal(batch["mm_token_type_ids"] == 2, batch["input_ids"] == processor.video_token_id)


def test_pixels_not_resampled_nor_resized(batch_and_inputs):
    batch, _, videos, _ = batch_and_inputs
    expected = torch.cat([reference_patches(v) for v in videos])  # [2*4*6 + 3*8*4, 1176]
    assert batch["pixel_values_videos"].shape == (144, 1176)
    torch.testing.assert_close(batch["pixel_values_videos"], expected, atol=1e-5, rtol=1e-5)


def test_left_padding(batch_and_inputs, processor):
    batch, *_ = batch_and_inputs
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask[:, -1].all()  # every prompt ends at the right edge, ready for generation
    n_pad = (mask == 0).sum(dim=1)
    assert n_pad.min() == 0 and n_pad.max() > 0
    short = int(n_pad.argmax())
    assert (mask[short, : n_pad[short]] == 0).all() and (mask[short, n_pad[short] :] == 1).all()
    assert (ids[short, : n_pad[short]] == processor.tokenizer.pad_token_id).all()
    assert processor.tokenizer.decode(ids[short, n_pad[short] :]).startswith("<|im_start|>system")


def test_temporal_rope_follows_sample_fps(batch_and_inputs, tiny_dir):
    """second_per_grid_ts reaches the 3D RoPE: temporal ids step by tokens_per_second * 2 / fps."""
    batch, *_ = batch_and_inputs
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_dir, local_files_only=True)
    position_ids, _ = model.model.get_rope_index(
        batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        video_grid_thw=batch["video_grid_thw"],
        second_per_grid_ts=batch["second_per_grid_ts"],
        attention_mask=batch["attention_mask"],
    )
    tps = model.config.vision_config.tokens_per_second  # 2
    for row, (grid, spg) in enumerate(zip(batch["video_grid_thw"], batch["second_per_grid_ts"], strict=True)):
        temporal = position_ids[0, row][batch["mm_token_type_ids"][row] == 2]
        t0 = temporal[0]
        per_frame = int(grid[1] * grid[2] // 4)
        steps = [int(temporal[i * per_frame] - t0) for i in range(int(grid[0]))]
        # fps 2: [0, 2]; fps 1.5: [0, 2.67 -> 2, 5.33 -> 5] (Qwen truncates to integer positions)
        assert steps == [int(i * tps * float(spg)) for i in range(int(grid[0]))]


def test_plain_fps_argument_is_not_enough(processor):
    """Canary for the transformers 5 behaviour that encode_prompts works around: without
    `video_metadata`, `fps=` does not reach second_per_grid_ts, which falls back to 2 / 24."""
    out = processor(
        text=[prompt("q")], videos=[video(4, 56, 56)], fps=2.0, do_sample_frames=False, return_tensors="pt"
    )
    assert out["second_per_grid_ts"].tolist() == pytest.approx([2 / 24])


@pytest.mark.parametrize(
    ("text", "frames", "fps", "match"),
    [
        (prompt("q"), video(3, 56, 56), 2.0, "multiple of 2"),
        (prompt("q"), video(4, 56, 60), 2.0, "multiples of 28"),
        (prompt("q"), video(4, 56, 56).float(), 2.0, "uint8"),
        (prompt("q"), video(4, 56, 56).permute(0, 2, 3, 1), 2.0, "3 channels"),
        (prompt("q"), video(4, 56, 56), 0.0, "sample_fps"),
        ("no placeholder", video(4, 56, 56), 2.0, "exactly one"),
    ],
)
def test_rejects_inputs_that_would_be_silently_altered(processor, text, frames, fps, match):
    with pytest.raises(ValueError, match=match):
        encode_prompts(processor, [text], [frames], [fps])


def test_length_mismatch(processor):
    with pytest.raises(ValueError, match="texts"):
        encode_prompts(processor, [prompt("a"), prompt("b")], [video(4, 56, 56)], [2.0])
