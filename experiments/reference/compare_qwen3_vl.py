"""Compare today's transformers (5.x, the main environment) with the recorded 4.57.1 oracle for Qwen3-VL.

Reads ``tests/fixtures/qwen3_vl_reference/`` (written by ``record_qwen3_vl.py`` with
transformers 4.57.1 + qwen-vl-utils 0.0.14), loads the saved tiny checkpoint and its processor with
the *installed* transformers, feeds the same float frames (``frames.safetensors``) and metadata,
and reports where the results differ:

* processor: chat-template text, expanded prompt text, ``input_ids``, ``video_grid_thw``,
  ``pixel_values_videos`` (sha256 / max abs diff), the extra keys 5.x returns, and the documented
  no-metadata cases (fps=24 fallback);
* positions: ``Qwen3VLModel.get_rope_index`` on the *recorded* 4.57.1 ``input_ids`` (5.x also needs
  ``mm_token_type_ids``: 2 where the id is ``<|video_pad|>``), single prompts and the left-padded
  batch, all positions and only the positions of real (unpadded) tokens, and rope deltas;
* model: loading report (missing / unexpected keys, tied lm_head, rope parameters), greedy
  ``generate`` of 16 tokens, teacher-forced log-probs of the recorded 4.57.1 tokens (max abs diff)
  and last-prompt logits (max abs diff over the first 10 and the sha256 of all), eager and sdpa.

Run in the main environment from the repository root (about 10 s on 2 cores)::

    python experiments/reference/compare_qwen3_vl.py [--json out.json]

It prints a markdown table (the one in ``qwen3_vl_findings.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

FIX = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "qwen3_vl_reference"


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def load(name: str) -> dict[str, Any]:
    return json.loads((FIX / name).read_text())


def first_diff(a: list, b: list) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def mm_types(input_ids: torch.Tensor, video_token_id: int, image_token_id: int) -> torch.Tensor:
    out = torch.zeros_like(input_ids, dtype=torch.int32)
    out[input_ids == image_token_id] = 1
    out[input_ids == video_token_id] = 2
    return out


def compare_processor(processor, frames, proc_ref, sampling_ref) -> tuple[dict, dict]:
    res, encs = {}, {}
    for name, ref in proc_ref["cases"].items():
        clip = sampling_ref["prompt_clips"][name]
        template = processor.apply_chat_template(ref["messages"], tokenize=False, add_generation_prompt=True)
        enc = processor(
            text=[template],
            videos=[frames[name]],
            video_metadata=[dict(ref["video_metadata_passed"])],
            do_sample_frames=False,
            do_resize=False,
            return_tensors="pt",
        )
        ids = enc["input_ids"][0].tolist()
        pv = enc["pixel_values_videos"]
        res[name] = {
            "template_text_equal": template == ref["template_text"],
            "expanded_text_equal": processor.tokenizer.decode(ids, skip_special_tokens=False)
            == ref["expanded_text"],
            "input_ids_equal": ids == ref["input_ids"],
            "input_ids_first_diff": first_diff(ids, ref["input_ids"]),
            "video_grid_thw_equal": enc["video_grid_thw"].tolist() == ref["video_grid_thw"],
            "pixel_values_sha_equal": sha(pv) == ref["pixel_values_videos"]["sha256"],
            "pixel_values_shape": list(pv.shape),
            "extra_keys": sorted(set(enc.keys()) - set(ref["keys"])),
            "frames_sha_equal": sha(frames[name]) == clip["frames"]["sha256"],
        }
        encs[name] = enc
    # documented no-metadata cases
    name = "p25_fps2"
    template = proc_ref["cases"][name]["template_text"]
    for case, kwargs in {
        "no_metadata_no_sampling": {"do_sample_frames": False, "do_resize": False},
        "no_metadata_default_sampling": {"do_resize": False},
        "metadata_default_resize": {
            "do_sample_frames": False,
            "video_metadata": [dict(proc_ref["cases"][name]["video_metadata_passed"])],
        },
    }.items():
        ref = proc_ref["documented_cases"][case]
        try:
            enc = processor(text=[template], videos=[frames[name]], return_tensors="pt", **kwargs)
            ids = enc["input_ids"][0].tolist()
            res[case] = {
                "input_ids_equal": ids == ref["input_ids"],
                "expanded_text_equal": processor.tokenizer.decode(ids) == ref["expanded_text"],
                "video_grid_thw": enc["video_grid_thw"].tolist(),
                "video_grid_thw_ref": ref["video_grid_thw"],
            }
        except Exception as e:
            res[case] = {"error": f"{type(e).__name__}: {e}"}
    res["video_smart_resize"] = compare_resize(processor.video_processor, proc_ref)
    return res, encs


def compare_resize(vproc, proc_ref) -> list[dict]:
    """smart_resize of the installed Qwen3VLVideoProcessor vs 4.57.1's, uncapped and capped per frame.

    ``capped`` is what ``cap_pixels_per_frame=True`` (5.x only) feeds smart_resize: max_pixels =
    max(min(max_video_tokens * factor**2, longest_edge // T), int(shortest_edge * 1.05)) * T.
    """
    from transformers.models.qwen3_vl import video_processing_qwen3_vl as vpq

    factor = vproc.patch_size * vproc.merge_size
    lo, hi = vproc.size["shortest_edge"], vproc.size["longest_edge"]
    out = []
    for case in proc_ref["documented_cases"]["video_smart_resize"]["cases"]:
        t, h, w = case["t"], case["h"], case["w"]
        row = {"thw": [t, h, w], "ref": case.get("resized", case.get("error"))}
        for label, max_pixels in (
            ("uncapped", hi),
            ("capped", max(min(vproc.max_video_tokens * factor * factor, hi // t), int(lo * 1.05)) * t),
        ):
            try:
                row[label] = list(
                    vpq.smart_resize(
                        num_frames=t,
                        height=h,
                        width=w,
                        temporal_factor=vproc.temporal_patch_size,
                        factor=factor,
                        min_pixels=lo,
                        max_pixels=max_pixels,
                    )
                )
            except Exception as e:
                row[label] = f"{type(e).__name__}: {e}"
        row["uncapped_equal"] = row["uncapped"] == row["ref"]
        out.append(row)
    return out


def compare_positions(model, pos_ref, proc_ref) -> dict:
    cfg = model.config
    res = {}
    items = [(n, proc_ref["cases"][n]) for n in proc_ref["cases"]] + [
        ("batch_left_padded", pos_ref["batch_left_padded"])
    ]
    for name, case in items:
        ids = torch.tensor([case["input_ids"]] if name != "batch_left_padded" else case["input_ids"])
        mask = torch.tensor(
            [case["attention_mask"]] if name != "batch_left_padded" else case["attention_mask"]
        )
        grid = torch.tensor(case["video_grid_thw"])
        pos, deltas = model.model.get_rope_index(
            ids,
            mm_types(ids, cfg.video_token_id, cfg.image_token_id),
            image_grid_thw=None,
            video_grid_thw=grid,
            attention_mask=mask,
        )
        ref_pos = torch.tensor(pos_ref[name]["position_ids"])
        real = mask.bool().unsqueeze(0).expand_as(ref_pos)
        res[name] = {
            "all_equal": torch.equal(pos, ref_pos),
            "real_tokens_equal": torch.equal(pos[real], ref_pos[real]),
            "pad_value_5x": sorted(set(pos[~real].tolist())),
            "pad_value_457": sorted(set(ref_pos[~real].tolist())),
            "rope_deltas_5x": deltas.tolist(),
            "rope_deltas_457": pos_ref[name]["rope_deltas"],
        }
    return res


def run_model(model, enc: dict, ref_rows: list[dict]) -> list[dict]:
    """Greedy generate, teacher-forced log-probs of the 4.57.1 tokens, last-prompt logits."""
    L = enc["input_ids"].shape[1]
    keys = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "mm_token_type_ids")
    inputs = {k: enc[k] for k in keys if k in enc}
    with torch.no_grad():
        model.model.rope_deltas = None
        seq = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        new = seq[:, L:]
        ref_new = torch.tensor([r["generated_ids"] for r in ref_rows])
        full = torch.cat([enc["input_ids"], ref_new], dim=1)
        extra = {
            "attention_mask": torch.cat([enc["attention_mask"], torch.ones_like(ref_new)], dim=1),
            "pixel_values_videos": enc["pixel_values_videos"],
            "video_grid_thw": enc["video_grid_thw"],
        }
        if "mm_token_type_ids" in enc:
            extra["mm_token_type_ids"] = torch.cat(
                [enc["mm_token_type_ids"], torch.zeros_like(ref_new, dtype=enc["mm_token_type_ids"].dtype)],
                dim=1,
            )
        model.model.rope_deltas = None
        logits = model(input_ids=full, **extra).logits.float()
        logp = torch.log_softmax(logits[:, L - 1 : -1], -1).gather(-1, ref_new.unsqueeze(-1)).squeeze(-1)
        model.model.rope_deltas = None
        last = model(**inputs).logits[:, -1].float()
    out = []
    for b, ref in enumerate(ref_rows):
        ref_lp = torch.tensor(ref["teacher_forced_logprobs"])
        out.append(
            {
                "generated_equal": new[b].tolist() == ref["generated_ids"],
                "generated_first_diff": first_diff(new[b].tolist(), ref["generated_ids"]),
                "logprob_max_abs_diff": float((logp[b] - ref_lp).abs().max()),
                "last_logits_first10_max_abs_diff": float(
                    (last[b, :10] - torch.tensor(ref["last_prompt_logits"]["first10"])).abs().max()
                ),
                "last_logits_argmax_equal": int(last[b].argmax()) == ref["last_prompt_logits"]["argmax"],
                "last_logits_sha_equal": sha(last[b]) == ref["last_prompt_logits"]["sha256"],
            }
        )
    return out


def no_mask_forward(model, enc: dict, ref: dict) -> dict:
    """attention_mask=None, use_cache=False: 4.57.1 derives a packed-sequence mask from the t row."""
    inputs = {k: enc[k] for k in ("input_ids", "pixel_values_videos", "video_grid_thw", "mm_token_type_ids")}
    with torch.no_grad():
        model.model.rope_deltas = None
        masked = model(**inputs, attention_mask=enc["attention_mask"], use_cache=False).logits.float()
        model.model.rope_deltas = None
        logits = model(**inputs, use_cache=False).logits.float()
    return {
        "max_abs_diff_vs_masked_forward": float((logits - masked).abs().max()),
        "max_abs_diff_vs_masked_forward_457": ref["max_abs_diff_vs_masked_forward"],
        "last10_max_abs_diff_vs_457": float(
            (logits[0, -1, :10] - torch.tensor(ref["last_logits_first10"])).abs().max()
        ),
        "logits_sha_equal_457": sha(logits[0]) == ref["logits_sha256"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the full comparison here")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    manifest = load("manifest.json")
    sampling_ref, proc_ref = load("frame_sampling.json"), load("processor.json")
    pos_ref, model_ref = load("positions.json"), load("model_outputs.json")
    frames = load_file(str(FIX / "frames.safetensors"))
    ckpt = FIX / "tiny_qwen3_vl"

    processor = AutoProcessor.from_pretrained(ckpt)
    report: dict[str, Any] = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "oracle": manifest["versions"],
        "processor_classes": {
            "processor": type(processor).__name__,
            "tokenizer": type(processor.tokenizer).__name__,
            "image_processor": type(processor.image_processor).__name__,
            "video_processor": type(processor.video_processor).__name__,
        },
    }
    report["processor"], encs = compare_processor(processor, frames, proc_ref, sampling_ref)

    # left-padded batch through the 5.x processor
    names = proc_ref["batch_left_padded"]["prompts"]
    batch_enc = processor(
        text=[proc_ref["cases"][n]["template_text"] for n in names],
        videos=[frames[n] for n in names],
        video_metadata=[dict(proc_ref["cases"][n]["video_metadata_passed"]) for n in names],
        do_sample_frames=False,
        do_resize=False,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    report["processor"]["batch_left_padded"] = {
        "input_ids_equal": batch_enc["input_ids"].tolist() == proc_ref["batch_left_padded"]["input_ids"],
        "attention_mask_equal": batch_enc["attention_mask"].tolist()
        == proc_ref["batch_left_padded"]["attention_mask"],
    }

    report["model"] = {}
    for attn in ("eager", "sdpa"):
        model, info = Qwen3VLForConditionalGeneration.from_pretrained(
            ckpt, dtype=torch.float32, attn_implementation=attn, output_loading_info=True
        )
        model.eval()
        if attn == "eager":
            tc = model.config.text_config
            report["loading"] = {
                k: sorted(v) if isinstance(v, (list, set)) else str(v) for k, v in info.items()
            }
            report["loading"]["lm_head_tied"] = (
                model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
            )
            report["loading"]["rope_parameters"] = getattr(tc, "rope_parameters", None)
            report["positions"] = compare_positions(model, pos_ref, proc_ref)
            # 4.57.1 computes 3D positions from input_ids alone; 5.x needs mm_token_type_ids
            enc = encs["p25_fps2"]
            try:
                with torch.no_grad():
                    model(
                        **{
                            k: enc[k]
                            for k in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")
                        }
                    )
                report["forward_without_mm_token_type_ids"] = "runs"
            except Exception as e:
                report["forward_without_mm_token_type_ids"] = f"{type(e).__name__}: {str(e)[:160]}"
            model.model.rope_deltas = None
        res = {}
        for name, enc in encs.items():
            res[name] = run_model(model, enc, model_ref[attn][name]["rows"])
        res["batch_left_padded"] = run_model(model, batch_enc, model_ref[attn]["batch_left_padded"]["rows"])
        res["no_attention_mask_no_cache"] = no_mask_forward(
            model, encs["p25_fps2"], model_ref[attn]["no_attention_mask_no_cache"]
        )
        report["model"][attn] = res

    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print_table(report)


def print_table(r: dict) -> None:
    p, pos, m = r["processor"], r["positions"], r["model"]
    cases = [k for k in p if k.startswith("p")]
    rows = [("transformers", r["oracle"]["transformers"], r["transformers"])]
    for k in (
        "template_text_equal",
        "expanded_text_equal",
        "input_ids_equal",
        "video_grid_thw_equal",
        "pixel_values_sha_equal",
    ):
        rows.append((f"processor {k}", "-", ", ".join(f"{c}: {p[c][k]}" for c in cases)))
    rows.append(("processor extra keys", "-", str(p[cases[0]]["extra_keys"])))
    for k in ("no_metadata_no_sampling", "no_metadata_default_sampling", "metadata_default_resize"):
        rows.append((f"processor {k}", "-", json.dumps(p[k])))
    rows.append(("processor batch_left_padded", "-", json.dumps(p["batch_left_padded"])))
    for row in p["video_smart_resize"]:
        rows.append(
            (
                f"video smart_resize t,h,w={row['thw']}",
                str(row["ref"]),
                f"uncapped={row['uncapped']} capped={row['capped']}",
            )
        )
    rows.append(("forward without mm_token_type_ids", "runs", r["forward_without_mm_token_type_ids"]))
    for name, v in pos.items():
        rows.append(
            (
                f"positions {name}",
                f"pad={v['pad_value_457']} deltas={v['rope_deltas_457']}",
                f"all_equal={v['all_equal']} real_equal={v['real_tokens_equal']} pad={v['pad_value_5x']} "
                f"deltas={v['rope_deltas_5x']}",
            )
        )
    rows.append(("loading", "-", json.dumps(r["loading"], default=str)))
    for attn, res in m.items():
        for name, rws in res.items():
            if name == "no_attention_mask_no_cache":
                rows.append(
                    (
                        f"model {attn} {name}",
                        f"{rws['max_abs_diff_vs_masked_forward_457']:.2f}",
                        json.dumps(rws),
                    )
                )
                continue
            rows.append(
                (
                    f"model {attn} {name}",
                    "-",
                    "; ".join(
                        f"gen_equal={x['generated_equal']} lp_maxdiff={x['logprob_max_abs_diff']:.2e} "
                        f"last10_maxdiff={x['last_logits_first10_max_abs_diff']:.2e} "
                        f"argmax_eq={x['last_logits_argmax_equal']} sha_eq={x['last_logits_sha_equal']}"
                        for x in rws
                    ),
                )
            )
    print("| item | 4.57.1 | " + r["transformers"] + " |")
    print("| --- | --- | --- |")
    for a, b, c in rows:
        print(f"| {a} | {b} | {c} |")


if __name__ == "__main__":
    sys.exit(main())
