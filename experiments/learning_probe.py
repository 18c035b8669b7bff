"""Does a trained model use the video? The probe behind the learning proof's diagnosis.

For a Hugging Face model folder (an export of ``make learn-demo``) and a split of generated videos,
on the first ``--num`` tvg samples, teacher-forced (the SFT target of each ground truth):

* the mean NLL per answer token and the NLL of the *first start digit* (the token that needs the
  frames: which second the queried shape appears), with the real frames and with blanked frames
  (every pixel black, same frame count and timing); equal numbers mean the frames are ignored;
* the merged vision-tower features of the real clips: their std over all values, the std across
  visual tokens (how much varies from frame pair to frame pair), and their mean absolute change
  when the frames are blanked. A collapsed tower has a large std and little variation.

    python experiments/learning_probe.py logs/learning/sft/export
    python experiments/learning_probe.py logs/learning/sft/export --split data/synthetic_learning/train.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from museg_lit.data.annotations import GroundingSample
from museg_lit.data.datamodule import PromptCollator
from museg_lit.data.video import load_video
from museg_lit.models.factory import ModelSpec, load_processor
from museg_lit.sft import SFTConfig
from museg_lit.sft.loss import answer_logprobs

REPO = Path(__file__).resolve().parents[1]


def items_of(split: Path, num: int, frames: dict) -> list[dict]:
    rows = [json.loads(line) for line in split.read_text().splitlines()]
    rows = [r for r in rows if r["task"] == "tvg"][:num]
    out = []
    for i, r in enumerate(rows):
        sample = GroundingSample(idx=str(r["idx"]), video=r["video"], problem=r["problem"], solution=r["solution"],
                                 task=r["task"], duration=r["duration"], source=f"{split}:{i}")
        clip = load_video(str(split.parent / r["video"]), **frames)
        out.append({"sample": sample, "clip": clip, "skipped": [], "drawn": 1, "decode_s": 0.0, "index": i})
    return out


def blanked(items: list[dict]) -> list[dict]:
    return [{**it, "clip": dataclasses.replace(it["clip"], frames=torch.zeros_like(it["clip"].frames))} for it in items]


def nll(model, collate, tokenizer, items) -> tuple[float, float]:
    """(mean NLL per answer token, mean NLL of the first digit of each answer)."""
    batch = collate(items)
    ids, mask = batch.answer_ids, batch.answer_mask  # [B, C]
    with torch.no_grad():
        logp = answer_logprobs(model, batch.inputs, ids, mask)  # [B, C]
    first = []
    for row in range(ids.shape[0]):
        pos = next(k for k, t in enumerate(ids[row].tolist()) if tokenizer.decode([t]).isdigit())
        first.append(-logp[row, pos].item())
    m = mask.float()
    return float(-(logp * m).sum() / m.sum()), sum(first) / len(first)


def features(model, collate, items) -> torch.Tensor:
    inputs = collate(items).inputs
    with torch.no_grad():
        out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    chunks = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.cat(list(chunks))  # [visual tokens, hidden]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a Hugging Face model folder (e.g. logs/learning/sft/export)")
    ap.add_argument("--split", default=str(REPO / "data" / "synthetic_learning_heldout" / "heldout.jsonl"))
    ap.add_argument("--num", type=int, default=16, help="tvg samples probed")
    args = ap.parse_args()
    frames = {"fps": 2.0, "min_frames": 4, "max_frames": 64, "min_pixels": 784, "max_pixels": 784}  # synthetic_learning
    processor = load_processor(ModelSpec(name="probe", path=args.model))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, attn_implementation="sdpa").eval()
    collate = PromptCollator(processor, "frame_selection_thinking", answers=SFTConfig().target)
    items = items_of(Path(args.split), args.num, frames)
    real, blank = nll(model, collate, processor.tokenizer, items), nll(model, collate, processor.tokenizer, blanked(items))
    f_real, f_blank = features(model, collate, items), features(model, collate, blanked(items))
    print(f"model {args.model}, {len(items)} tvg samples of {args.split}")
    print("| frames | NLL per answer token | NLL of the first start digit |\n| --- | ---: | ---: |")
    print(f"| real | {real[0]:.4f} | {real[1]:.3f} |\n| blanked | {blank[0]:.4f} | {blank[1]:.3f} |")
    print(f"vision features: std {f_real.std():.3f}, std across visual tokens {f_real.std(0).mean():.3f}, "
          f"mean |real - blanked| {(f_real - f_blank).abs().mean():.3f}")


if __name__ == "__main__":
    main()
