"""The Qwen3-VL reference fixtures (transformers 4.57.1 + qwen-vl-utils 0.0.14) are present and consistent.

``tests/fixtures/qwen3_vl_reference/`` is recorded by ``experiments/reference/record_qwen3_vl.py``
in an oracle environment; this test needs neither: it reads the JSON, re-derives every number it
can from the recorded inputs with the rules 0.0.14 / 4.57.1 follow (written out below), and checks
the recorded outputs agree. The project's own Qwen3-VL code is to be tested against these fixtures.

The 3D position rule observed in 4.57.1 ``Qwen3VLModel.get_rope_index`` (``expected_positions``):

* ``video_grid_thw`` (t, h, w) is split into t groups (1, h, w), one per ``<|vision_start|>...``;
* a text token sits one past the previous token's largest position, on all three axes;
* the h/2 x w/2 tokens of a group starting at p get (t, h, w) = (p, p + row, p + col), row-major;
* the token after a group therefore sits at p + max(h/2, w/2), not p + h/2 * w/2;
* left padding: padded slots hold 1 (5.x: 0), and rope_delta = max position + 1 - *padded* length
  (5.x: minus the unpadded length).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from functools import cache
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "qwen3_vl_reference"
MARKER = re.compile(r"<(\d+\.\d) seconds>")
VS, VE, VP = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"


@cache
def load(name: str) -> dict:
    return json.loads((FIX / name).read_text())


@cache
def token_ids() -> dict[str, int]:
    cfg = json.loads((FIX / "tiny_qwen3_vl" / "tokenizer_config.json").read_text())
    return {v["content"]: int(k) for k, v in cfg["added_tokens_decoder"].items()}


def sampling_cases() -> list[dict]:
    return [c for c in load("frame_sampling.json")["cases"] if "error" not in c]


def marker_times(indices: list[int], fps: float, merge: int = 2) -> list[str]:
    """4.57.1 ``Qwen3VLProcessor._calculate_timestamps`` + ``f"{t:.1f}"``, in the same float order."""
    idx = list(indices)
    if len(idx) % merge:
        idx += [idx[-1]] * (merge - len(idx) % merge)
    ts = [i / fps for i in idx]
    return [f"{(ts[i] + ts[i + merge - 1]) / 2:.1f}" for i in range(0, len(ts), merge)]


def expected_positions(ids: list[int], mask: list[int], grid_thw: list[list[int]], pad_value: int = 1):
    """The rule in the module docstring, computed independently of transformers."""
    vs, vp = token_ids()[VS], token_ids()[VP]
    groups = [(h // 2, w // 2) for t, h, w in grid_thw for _ in range(t)]
    real = [i for i, m in zip(ids, mask, strict=True) if m]
    pos: list[tuple[int, int, int]] = []
    nxt, k, g = 0, 0, 0
    while k < len(real):
        if real[k] == vp and k > 0 and real[k - 1] == vs:
            gh, gw = groups[g]
            g += 1
            pos += [(nxt, nxt + r, nxt + c) for r in range(gh) for c in range(gw)]
            k += gh * gw
            nxt += max(gh, gw)
        else:
            pos.append((nxt, nxt, nxt))
            nxt, k = nxt + 1, k + 1
    assert g == len(groups), "every temporal group has a <|vision_start|><|video_pad|>... run"
    it = iter(pos)
    full = [next(it) if m else (pad_value,) * 3 for m in mask]
    delta = max(max(p) for p in pos) + 1 - len(ids)
    return [[p[a] for p in full] for a in range(3)], delta


def test_every_listed_file_is_present_and_unchanged():
    manifest = load("manifest.json")
    assert manifest["versions"]["transformers"] == "4.57.1"
    assert manifest["versions"]["qwen-vl-utils"] == "0.0.14"
    assert manifest["video_backend"] == "decord"
    for rel, digest in manifest["files"].items():
        data = (FIX / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, rel
    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    assert total < 5_000_000
    assert (FIX / "tiny_qwen3_vl" / "model.safetensors").stat().st_size < 3_000_000


def test_frame_sampling_follows_qwen_vl_utils_0_0_14():
    import torch

    consts = load("frame_sampling.json")["constants_0_0_14"]
    videos = load("frame_sampling.json")["videos"]
    cases = sampling_cases()
    assert len(cases) == 4 * 12 * 2  # videos x settings x image_patch_size (16, 14); none failed
    for c in cases:
        ele, meta, n = c["ele"], c["metadata"], c["n_frames"]
        fps, total = meta["fps"], meta["total_num_frames"]
        assert meta["video_backend"] == "decord"
        if "video_start" not in ele:
            assert total == videos[c["video"]]["n_frames_encoded"]
        # smart_nframes
        if "nframes" in ele:
            want = round(ele["nframes"] / 2) * 2
        else:
            lo = math.ceil(ele.get("min_frames", consts["FPS_MIN_FRAMES"]) / 2) * 2
            hi = math.floor(ele.get("max_frames", min(consts["FPS_MAX_FRAMES"], total)) / 2) * 2
            want = min(min(max(total / fps * ele.get("fps", consts["FPS"]), lo), hi), total)
            want = math.floor(want / 2) * 2
        assert n == want == len(c["frames_indices"]), c
        # the decord backend's indices and sample_fps
        first = c["frames_indices"][0] if "video_start" in ele else 0
        last = first + total - 1
        assert c["frames_indices"] == torch.linspace(first, last, n).round().long().tolist(), c
        assert c["sample_fps"] == pytest.approx(n / total * fps, rel=1e-12)
        # resize: multiples of patch * 2; the frames tensor is [T, 3, H, W] float32
        factor = c["image_patch_size"] * 2
        assert c["height"] % factor == 0 and c["width"] % factor == 0
        assert c["frames"]["shape"] == [n, 3, c["height"], c["width"]]
        assert c["frames"]["dtype"] == "float32"


def test_frame_sampling_resize_defaults_scale_up_small_videos():
    by = {(c["video"], c["setting"], c["image_patch_size"]): c for c in sampling_cases()}
    # VIDEO_MIN_TOKEN_NUM=128 tokens per frame by default: a 96x72 frame grows to 320x448 (patch 16)
    for patch, hw in ((16, (320, 448)), (14, (280, 392))):
        case = by["v25_96x72_100f", "default", patch]
        assert (case["height"], case["width"]) == hw
    # round_by_factor(5, 2) == 4: Python's round-half-even
    assert by["v25_96x72_100f", "nframes5", 16]["n_frames"] == 4
    # a too-large max_pixels is clamped, with 0.0.14's warning
    assert any("exceeds limit" in w for w in by["v25_96x72_100f", "max_pixels_over_limit", 16]["warnings"])


def test_processor_prompts_expand_one_group_per_two_frames():
    proc = load("processor.json")
    clips = load("frame_sampling.json")["prompt_clips"]
    ids = token_ids()
    for name, case in proc["cases"].items():
        clip = clips[name]
        meta = case["video_metadata_passed"]
        assert meta["frames_indices"] == clip["video_metadata"]["frames_indices"]
        n, _, H, W = clip["frames"]["shape"]
        [[t, h, w]] = case["video_grid_thw"]
        assert (t, h, w) == (n // 2, H // 16, W // 16)
        assert case["pixel_values_videos"]["shape"] == [t * h * w, 3 * 2 * 16 * 16]

        text = case["expanded_text"]
        times = marker_times(meta["frames_indices"], meta["fps"])
        assert MARKER.findall(text) == times
        groups = "".join(f"<{s} seconds>{VS}{VP * (h * w // 4)}{VE}" for s in times)
        assert case["template_text"].count(f"{VS}{VP}{VE}") == 1
        assert text == case["template_text"].replace(f"{VS}{VP}{VE}", groups)

        toks = case["input_ids"]
        assert len(toks) == len(case["attention_mask"]) and all(case["attention_mask"])
        assert toks.count(ids[VP]) == t * h * w // 4
        assert toks.count(ids[VS]) == toks.count(ids[VE]) == t
        assert case["warnings"] == []


def test_processor_input_ids_are_the_saved_tokenizer_s_encoding():
    import tokenizers  # a dependency of transformers

    tok = tokenizers.Tokenizer.from_file(str(FIX / "tiny_qwen3_vl" / "tokenizer.json"))
    for case in load("processor.json")["cases"].values():
        assert tok.encode(case["expanded_text"], add_special_tokens=False).ids == case["input_ids"]


def test_documented_processor_cases():
    doc = load("processor.json")["documented_cases"]
    # no metadata: fps falls back to 24 with frames_indices = range(T), and 4.57.1 warns
    c = doc["no_metadata_no_sampling"]
    [[t, _, _]] = c["video_grid_thw"]
    assert MARKER.findall(c["expanded_text"]) == marker_times(list(range(2 * t)), 24.0)
    assert any("Defaulting to `fps=24`" in w for w in c["warnings"])
    # do_sample_frames left True without metadata: 8 frames -> int(8/24*2)=0 -> min_frames 4
    c = doc["no_metadata_default_sampling"]
    assert c["video_grid_thw"][0][0] == 2
    assert MARKER.findall(c["expanded_text"]) == marker_times([0, 2, 5, 7], 24.0)
    # do_resize left True: the processor resizes the (already resized) frames again
    clip = load("frame_sampling.json")["prompt_clips"]["p25_fps2"]
    assert (
        doc["metadata_default_resize"]["video_grid_thw"]
        != load("processor.json")["cases"]["p25_fps2"]["video_grid_thw"]
    )
    assert clip["frames"]["shape"][2:] == [32, 64]
    rs = {
        (c["t"], c["h"], c["w"]): c.get("resized", c.get("error")) for c in doc["video_smart_resize"]["cases"]
    }
    assert rs[8, 32, 64] == [96, 192]
    assert doc["metadata_default_resize"]["video_grid_thw"][0][1:] == [96 // 16, 192 // 16]
    assert rs[2, 24, 40].startswith("ValueError")


def test_positions_follow_the_observed_rule():
    pos, proc = load("positions.json"), load("processor.json")
    for name, case in proc["cases"].items():
        want, delta = expected_positions(case["input_ids"], case["attention_mask"], case["video_grid_thw"])
        assert [axis[0] for axis in pos[name]["position_ids"]] == want, name  # [3, B=1, L]
        assert pos[name]["rope_deltas"] == [[delta]], name
    b = pos["batch_left_padded"]
    assert b["input_ids"] == proc["batch_left_padded"]["input_ids"]
    assert any(0 in row for row in b["attention_mask"]), "the batch is really padded"
    for row, name in enumerate(b["prompts"]):
        grids = b["video_grid_thw"][row : row + 1]  # one video per prompt
        assert grids == proc["cases"][name]["video_grid_thw"]
        want, delta = expected_positions(b["input_ids"][row], b["attention_mask"][row], grids)
        assert [axis[row] for axis in b["position_ids"]] == want, name
        assert b["rope_deltas"][row] == [delta], name
        # left padding only shifts the real tokens; their positions equal the unpadded prompt's
        real = [i for i, m in enumerate(b["attention_mask"][row]) if m]
        assert [[axis[row][i] for i in real] for axis in b["position_ids"]] == [
            axis[0] for axis in pos[name]["position_ids"]
        ]


def test_model_outputs_are_complete_and_consistent():
    out = load("model_outputs.json")
    proc = load("processor.json")
    for attn in ("eager", "sdpa"):
        for name in [*proc["cases"], "batch_left_padded"]:
            for r in out[attn][name]["rows"]:
                assert len(r["generated_ids"]) == 16
                assert len(r["teacher_forced_logprobs"]) == 16
                assert all(-30 < x <= 0 for x in r["teacher_forced_logprobs"])
                # greedy: the chosen token won each step by a margin far above float noise
                assert min(r["greedy_top2_margins"]) > 1e-4
                # the teacher-forced pass sees the same last prompt position as the prompt-only pass
                assert r["teacher_forced_last_prompt_logits_first10"] == pytest.approx(
                    r["last_prompt_logits"]["first10"], abs=1e-5
                )
        # left-padded batch rows generate what the single prompts generate
        for row, name in zip(
            out[attn]["batch_left_padded"]["rows"], out[attn]["batch_left_padded"]["prompts"], strict=True
        ):
            assert row["generated_ids"] == out[attn][name]["rows"][0]["generated_ids"]
        # 4.57.1 quirk: no attention_mask + no cache -> a "packed sequence" mask from the temporal row
        quirk = out[attn]["no_attention_mask_no_cache"]
        assert quirk["max_abs_diff_vs_masked_forward"] > 1.0
        assert quirk["max_abs_diff_use_cache_true_vs_masked"] == 0.0
    for name, d in out["sdpa_vs_eager"].items():
        assert d["same_generated_ids"], name
        assert d["max_abs_logprob_diff"] < 1e-4


def test_tiny_checkpoint_is_qwen3_vl_shaped():
    cfg = json.loads((FIX / "tiny_qwen3_vl" / "config.json").read_text())
    tc, vc = cfg["text_config"], cfg["vision_config"]
    assert cfg["model_type"] == "qwen3_vl" and cfg["transformers_version"] == "4.57.1"
    rope = tc["rope_scaling"]
    assert rope["mrope_interleaved"] is True
    assert sum(rope["mrope_section"]) * 2 == tc["head_dim"]
    assert [x * 64 / sum(rope["mrope_section"]) for x in rope["mrope_section"]] == [24, 20, 20]
    assert (vc["patch_size"], vc["temporal_patch_size"], vc["spatial_merge_size"]) == (16, 2, 2)
    assert vc["deepstack_visual_indexes"] == [0] and vc["out_hidden_size"] == tc["hidden_size"]
    ids = token_ids()
    assert (cfg["video_token_id"], cfg["vision_start_token_id"], cfg["vision_end_token_id"]) == (
        ids[VP],
        ids[VS],
        ids[VE],
    )
    names = sorted(ids, key=ids.get)
    assert names[0] == "<|endoftext|>" and names[-1] == "</think>" and len(names) == 26
    assert sorted(ids.values()) == list(range(ids["<|endoftext|>"], ids["<|endoftext|>"] + 26))
    assert "<|im_start|>assistant" in (FIX / "tiny_qwen3_vl" / "chat_template.jinja").read_text()
