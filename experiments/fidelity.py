"""Fidelity numbers of the README "Fidelity" section, measured side by side in one run.

1. 3D positions of a long clip: where the question text after the video sits, and where the first
   generated token sits in generation and in the log-prob pass, under transformers' own rule
   (installed version) and under ours (museg_lit.models.positions = transformers 4.50 / vLLM).
2. Tokens per prompt and the completion budget of real-shaped stage-1 prompts (MUSEG's first
   tvg question of stage_1.jsonl, frame_selection_thinking template, stage-1 frame settings), for
   several clip lengths: budget = min(4096, 4096 - prompt tokens).
3. Prompts per optimizer step of `+experiment=stage1` on 1 and on 7 devices.

Vision token counts are exact (the processor's arithmetic); text tokens come from the tiny
model's tokenizer (same chat template and special tokens as Qwen's; its BPE merges differ, so
Qwen's count of the ~110 question tokens can differ by a few). No video is decoded: frames are
zeros of the size and count `load_video` would return (`smart_nframes`, `smart_resize`).

    python experiments/fidelity.py            # prints the tables, writes experiments/results/fidelity.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers

from museg_lit.builders import accumulation_for
from museg_lit.data.video import smart_nframes, smart_resize, video_max_pixels
from museg_lit.models import ModelSpec, encode_prompts, load_policy, load_processor
from museg_lit.models.positions import prompt_positions
from museg_lit.prompts import render_question, video_messages

REPO = Path(__file__).resolve().parents[1]
STAGE1 = {"fps": 2.0, "min_frames": 4, "max_frames": 448, "min_pixels": 16 * 28 * 28, "max_pixels": 768 * 28 * 28,
          "total_pixels": 3584 * 28 * 28}
DEFAULTS = {**STAGE1, "max_frames": 768}  # qwen-vl-utils' frame cap


def clip(seconds: float, frames: dict, size=(360, 640), video_fps: float = 30.0) -> tuple[torch.Tensor, float]:
    """Zero frames shaped as load_video would return them for a ``seconds``-long ``size`` video."""
    n = smart_nframes(round(seconds * video_fps), video_fps, fps=frames["fps"], min_frames=frames["min_frames"],
                      max_frames=frames["max_frames"])
    cap = video_max_pixels(n, frames["min_pixels"], frames["max_pixels"], frames["total_pixels"])
    h, w = smart_resize(*size, min_pixels=frames["min_pixels"], max_pixels=cap)
    return torch.zeros(n, 3, h, w, dtype=torch.uint8), n / seconds


def prompt_batch(processor, question: str, frames: torch.Tensor, fps: float) -> dict:
    text = processor.apply_chat_template(video_messages(render_question(question, "frame_selection_thinking")),
                                         tokenize=False, add_generation_prompt=True)
    return dict(encode_prompts(processor, [text], [frames], [fps]))


def positions_table(model, processor, question: str) -> list[str]:
    frames, fps = clip(300.0, DEFAULTS)
    batch = prompt_batch(processor, question, frames, fps)
    ids = batch["input_ids"][0]
    video = (ids == model.config.video_token_id).nonzero().squeeze(1)
    after = slice(int(video[-1]) + 2, len(ids))  # question text after <|vision_end|>
    ours = prompt_positions(model, batch)
    lib, deltas = model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                             video_grid_thw=batch["video_grid_thw"],
                                             second_per_grid_ts=batch["second_per_grid_ts"],
                                             attention_mask=batch["attention_mask"])
    # the library's log-prob pass: the completion continues the text run (last prompt position + 1);
    # its generate places it at (overall max + 1) through rope_deltas
    lib_logprob_first = int(lib[0, 0, -1]) + 1
    lib_generate_first = int(len(ids) + deltas[0, 0])
    grid = batch["video_grid_thw"][0].tolist()
    rows = [
        f"300 s clip, 2 fps, max_frames 768, total_pixels 3584*28*28: {frames.shape[0]} frames {frames.shape[2]}x"
        f"{frames.shape[3]}, grid {grid}, {len(video)} video tokens, {len(ids)} prompt tokens",
        "",
        "| rule | question text after the video | first generated token: generate | first generated token: log-prob pass |",
        "| --- | --- | --- | --- |",
        f"| transformers {transformers.__version__} (library) | {int(lib[0, 0, after.start])}-{int(lib[0, 0, -1])} | "
        f"{lib_generate_first} | {lib_logprob_first} |",
        f"| museg_lit (transformers 4.50 / vLLM) | {int(ours.position_ids[0, 0, after.start])}-"
        f"{int(ours.position_ids[0, 0, -1])} | {int(ours.next_position[0])} | {int(ours.next_position[0])} |",
    ]
    return rows


def budget_table(processor, question: str) -> list[str]:
    rows = ["| clip (640x360, 30 fps) | frames | frame size | video tokens | prompt tokens | completion budget |",
            "| --- | --- | --- | --- | --- | --- |"]
    for seconds in (30.0, 120.0, 300.0, 600.0):
        frames, fps = clip(seconds, STAGE1)
        batch = prompt_batch(processor, question, frames, fps)
        n_video = int(batch["video_grid_thw"][0].prod()) // 4
        n = int(batch["attention_mask"].sum())
        rows.append(f"| {seconds:.0f} s | {frames.shape[0]} | {frames.shape[3]}x{frames.shape[2]} | {n_video} | {n} | "
                    f"{min(4096, 4096 - n)} |")
    return rows


def main() -> int:
    shared = REPO.parent / "shared" / "data" / "museg" / "stage_1.jsonl"
    rows = [json.loads(line) for line in shared.read_text().splitlines()] if shared.exists() else []
    question = next((r["problem"] for r in rows if r["task"] == "tvg"), "person opens the door.")
    spec = ModelSpec(name="tiny", tiny=True)
    model, processor = load_policy(spec), load_processor(spec)
    lines = ["# Fidelity measurements (`python experiments/fidelity.py`)", "",
             "## 3D positions of a 300 s clip", "", *positions_table(model, processor, question), "",
             "## Stage-1 prompt length and completion budget (prompt + completion <= 4096)", "",
             f"Question: {question!r} (MUSEG stage_1.jsonl, first tvg sample), template frame_selection_thinking.", "",
             *budget_table(processor, question), "",
             "## Prompts per optimizer step (`+experiment=stage1`, data.global_batch_size=14)", "",
             "| devices | per-device batch | derived accumulation | prompts per step |", "| --- | --- | --- | --- |"]
    for devices in (1, 7):
        k = accumulation_for(14, 1, devices)
        lines.append(f"| {devices} | 1 | {k} | {devices * k} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = REPO / "experiments" / "results" / "fidelity.md"
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
