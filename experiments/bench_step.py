"""GRPO step benchmark: shared prefix (each prompt encoded once) vs repeated prompts (G copies).

    python experiments/bench_step.py                 # or: make bench-step (the issue's shape, CPU)
    python experiments/bench_step.py --repeats 1     # a quick look
    python experiments/bench_step.py --scale 3b --device cuda --dtype bfloat16   # a 3B-shaped model on a GPU

What one step is, for both paths, with the platform's own functions (the ones
:class:`museg_lit.module.GRPOModule` calls): ``generate_rollout`` (G completions of C tokens per
prompt), the reference model's log-probs (no grad), the policy's log-probs with the GRPO loss
(k3 KL, beta 0.04) and its backward, and an AdamW step. The two paths differ only in
``share_prefix``: one prefill per prompt and packed ``[P | C_1 .. C_G]`` log-prob passes, or G
prompt copies everywhere (what TRL 0.15 / MUSEG, verl and EasyR1 do). Both run side by side in
one process, alternated A/B/A/B (machine load drifts hit both alike); the table shows medians.

The model is a randomly initialised Qwen2.5-VL (the tiny model's tokenizer, a ~2k vocabulary) of
the ``--scale`` shape; the prompt is MUSEG's chat prompt around a ``--seconds`` clip of 640x360
frames sampled at 2 fps under ``total_pixels = 2048*28*28`` and ``min_pixels = 16*28*28`` (MUSEG's
settings: a 30 s clip gives 1,980 visual tokens). EOS is never sampled, so every completion has
exactly C tokens and both paths do the same work. Peak memory is measured in a fresh child process
per path (one step each; a freed heap is not returned to the OS, so an in-process RSS after the
other path would mean nothing): the largest RSS increase above each phase's start (CPU, sampled
every 5 ms) or the ``torch.cuda.max_memory_allocated`` increase (GPU), and the child's peak RSS.
Equality: per-token log-probs of the same rollout through both layouts (max absolute difference).
Results go to ``experiments/results/bench_step.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
PATCH = 28 * 28

# --scale: (language model sizes, vision tower sizes) as tiny-model overrides
SCALES = {
    # the CPU shape: hidden 512, 4 layers; vision hidden 256, depth 4
    "issue": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, mrope_section=(8, 12, 12), vision_depth=4, vision_hidden_size=256,
                  vision_intermediate_size=1024, vision_num_heads=4, vision_fullatt_block_indexes=(3,)),
    "medium": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=8, num_attention_heads=8,
                   num_key_value_heads=2, mrope_section=(16, 24, 24), vision_depth=8, vision_hidden_size=512,
                   vision_intermediate_size=1536, vision_num_heads=8, vision_fullatt_block_indexes=(3, 7)),
    # Qwen2.5-VL-3B's shapes (config.json of Qwen/Qwen2.5-VL-3B-Instruct), tiny vocabulary
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, mrope_section=(16, 24, 24), vision_depth=32, vision_hidden_size=1280,
               vision_intermediate_size=3420, vision_num_heads=16, vision_fullatt_block_indexes=(7, 15, 23, 31)),
}  # fmt: skip
PHASES = ("generate_s", "ref_logp_s", "policy_fwd_bwd_s", "step_s")


class PeakMemory:
    """Largest memory increase above the start of a ``with`` block: RSS (CPU) or CUDA allocations."""

    def __init__(self, device: torch.device, absolute: bool = False):
        self.device, self.peak, self.absolute = device, 0, absolute  # absolute: the peak RSS itself

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            yield
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - start
            return
        start, stop, peak = 0 if self.absolute else self._rss(), threading.Event(), [0]

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], self._rss() - start)
                time.sleep(0.005)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.peak = max(peak[0], self._rss() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(args):
    """Policy, reference, processor, prompt inputs, special tokens for the chosen shape."""
    from museg_lit.data.video import smart_resize, video_max_pixels
    from museg_lit.models import (
        ModelSpec,
        build_tiny_checkpoint,
        encode_prompts,
        load_policy,
        load_processor,
        load_reference,
    )
    from museg_lit.models.generation import SpecialTokens
    from museg_lit.models.processing import VIDEO_PLACEHOLDER
    from museg_lit.prompts import TVG_PHRASINGS, render_question

    ckpt = build_tiny_checkpoint(Path(args.cache) / f"bench-{args.scale}", **SCALES[args.scale])
    spec = ModelSpec(name=f"random-{args.scale}", path=str(ckpt), dtype=args.dtype,
                     attn_implementation=args.attn, gradient_checkpointing=args.gradient_checkpointing)
    policy = load_policy(spec).to(args.device).train()
    reference = load_reference(spec).to(args.device)
    processor = load_processor(spec)
    nframes = int(args.seconds * 2)
    cap = video_max_pixels(nframes, 16 * PATCH, 768 * PATCH, 2048 * PATCH)
    height, width = smart_resize(360, 640, min_pixels=16 * PATCH, max_pixels=cap)
    frames = torch.randint(0, 256, (nframes, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    query = TVG_PHRASINGS[0].format("a person opens the door and walks in")
    question = render_question(query, "frame_selection_thinking") if args.prompt == "museg" else "Find it."
    text = f"<|im_start|>user\n{VIDEO_PLACEHOLDER}{question}<|im_end|>\n<|im_start|>assistant\n"
    inputs = {k: v.to(args.device) if torch.is_tensor(v) else v
              for k, v in encode_prompts(processor, [text] * args.prompts, [frames] * args.prompts, [2.0] * args.prompts).items()}
    found = SpecialTokens.of(policy, processor.tokenizer)
    # EOS is never sampled (suppressed like the vision tokens): every completion has exactly C tokens
    tokens = SpecialTokens(found.eos_token_ids, found.pad_token_id, found.vision_token_ids + found.eos_token_ids)
    return policy, reference, processor, inputs, tokens, (height, width, nframes)


def one_step(policy, reference, optimizer, processor, inputs, tokens, args, share: bool, device) -> tuple[dict, dict, object]:
    from museg_lit.models.generation import Sampling
    from museg_lit.rl.logprobs import rollout_logprobs
    from museg_lit.rl.losses import policy_loss
    from museg_lit.rl.rollout import generate_rollout

    times, peaks, mem = {}, {}, PeakMemory(device)
    sampling = Sampling(max_new_tokens=args.completion_tokens, temperature=1.0)
    _sync(device)
    start = time.perf_counter()
    with mem.measure():
        ro = generate_rollout(policy, processor.tokenizer, inputs, num_generations=args.generations, sampling=sampling,
                              tokens=tokens, share_prefix=share)
        _sync(device)
    times["generate_s"], peaks["generate_s"] = time.perf_counter() - start, mem.peak
    t = time.perf_counter()
    with mem.measure(), torch.no_grad():
        ref = rollout_logprobs(reference, ro, share_prefix=share)
        _sync(device)
    times["ref_logp_s"], peaks["ref_logp_s"] = time.perf_counter() - t, mem.peak
    advantages = torch.linspace(-1, 1, ro.completion_ids.shape[0], device=device)
    t = time.perf_counter()
    with mem.measure():
        logp = rollout_logprobs(policy, ro, share_prefix=share)
        loss = policy_loss(logp, advantages, ro.completion_mask, ref_logp=ref, beta=0.04).loss
        loss.backward()
        _sync(device)
    times["policy_fwd_bwd_s"], peaks["policy_fwd_bwd_s"] = time.perf_counter() - t, mem.peak
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    times["step_s"] = time.perf_counter() - start
    peaks["step_s"] = max(peaks.values())
    return times, peaks, ro


def equality(reference, ro) -> float:
    """Max |log-prob difference| of the same rollout through the packed and the repeated layouts."""
    from museg_lit.rl.logprobs import rollout_logprobs

    with torch.no_grad():
        a = rollout_logprobs(reference, ro, share_prefix=True).float()
        b = rollout_logprobs(reference, ro, share_prefix=False).float()
    return float((a - b)[ro.completion_mask.bool()].abs().max())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="issue")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length (frames at 2 fps)")
    parser.add_argument("--prompts", type=int, default=1, help="prompts per step (B)")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--completion-tokens", type=int, default=64, help="tokens per completion (C)")
    parser.add_argument("--repeats", type=int, default=3, help="measured steps per path (after one warm-up each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--prompt", choices=("museg", "short"), default="museg")
    parser.add_argument("--cache", default=os.environ.get("MUSEG_LIT_CACHE", str(Path.home() / ".cache" / "museg_lit")))
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_step")
    parser.add_argument("--memory-only", choices=("shared", "repeated"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    policy, reference, processor, inputs, tokens, (h, w, n) = build(args)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6)
    if args.memory_only:
        # the process's own peak RSS (ru_maxrss would carry the parent's over fork/exec)
        whole = PeakMemory(torch.device("cpu"), absolute=True)
        with whole.measure():
            _, peaks, _ = one_step(policy, reference, optimizer, processor, inputs, tokens, args,
                                   args.memory_only == "shared", device)
        peaks["process_max_rss"] = whole.peak
        print("MEMORY " + json.dumps(peaks), flush=True)
        return peaks
    prompt_tokens = int(inputs["attention_mask"].sum(1).max())
    visual_tokens = int((inputs["input_ids"][0] == policy.config.video_token_id).sum())
    params = sum(p.numel() for p in policy.parameters())
    print(f"model {args.scale}: {params / 1e6:.1f}M parameters; clip {n} frames {w}x{h}; prompt P={prompt_tokens} "
          f"({visual_tokens} visual); B={args.prompts} G={args.generations} C={args.completion_tokens}", flush=True)
    runs: dict[str, list[tuple[dict, dict]]] = {"shared": [], "repeated": []}
    diff = None
    for i in range(args.repeats + 1):  # the first round warms up (allocator, kernels) and is dropped
        for name in ("shared", "repeated") if i % 2 == 0 else ("repeated", "shared"):
            times, peaks, ro = one_step(policy, reference, optimizer, processor, inputs, tokens, args, name == "shared",
                                        device)
            label = "warm-up" if i == 0 else f"run {i}"
            print(f"  {label:8s} {name:9s} " + "  ".join(f"{k} {v:7.2f}" for k, v in times.items()), flush=True)
            if i > 0:
                runs[name].append((times, peaks))
            if name == "shared" and diff is None:
                diff = equality(reference, ro)
    med = {name: {k: statistics.median(t[k] for t, _ in rs) for k in PHASES} for name, rs in runs.items()}
    peak = {name: _child_memory(argv if argv is not None else sys.argv[1:], name) for name in ("shared", "repeated")}
    result = {
        "command": ("python experiments/bench_step.py " + shlex.join(argv if argv is not None else sys.argv[1:])).strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"threads {torch.get_num_threads()}, device {device}"
                   + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "shape": {"scale": args.scale, "parameters_M": round(params / 1e6, 1), "frames": n, "frame": f"{w}x{h}",
                  "prompt_tokens": prompt_tokens, "visual_tokens": visual_tokens, "B": args.prompts,
                  "G": args.generations, "C": args.completion_tokens, "dtype": args.dtype, "attn": args.attn,
                  "gradient_checkpointing": args.gradient_checkpointing},
        "repeats": args.repeats, "median_s": med, "peak_bytes": peak,
        "speedup": {k: med["repeated"][k] / med["shared"][k] for k in PHASES},
        "memory_ratio": {k: peak["repeated"][k] / max(peak["shared"][k], 1) for k in (*PHASES, "process_max_rss")},
        "logp_max_abs_diff": diff,
    }
    write(result, args.out)
    return result


def _child_memory(argv: list[str], path: str) -> dict:
    """One step of ``path`` in a fresh process: its peak memory per phase and overall."""
    print(f"  memory: one {path} step in a fresh process", flush=True)
    proc = subprocess.run([sys.executable, __file__, *argv, "--memory-only", path], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = [x for x in proc.stdout.splitlines() if x.startswith("MEMORY ")]
    if proc.returncode or not line:
        raise RuntimeError(f"memory child ({path}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[-1].removeprefix("MEMORY "))


def write(result: dict, out: Path) -> None:
    names = {"generate_s": "generation", "ref_logp_s": "reference log-probs", "policy_fwd_bwd_s": "policy fwd+bwd",
             "step_s": "whole step"}
    device = "GPU" if "cuda" in result["machine"] else "RSS"
    s = result["shape"]
    lines = [
        "# GRPO step: shared prefix vs repeated prompts", "",
        f"`{result['command']}`", "",
        f"Machine: {result['machine']}. Model: random Qwen2.5-VL, {s['scale']} shape, {s['parameters_M']}M parameters, "
        f"{s['dtype']}, {s['attn']}" + (", gradient checkpointing" if s["gradient_checkpointing"] else "") + ". "
        f"Prompt: {s['frames']} frames of {s['frame']} -> P = {s['prompt_tokens']} tokens ({s['visual_tokens']} visual); "
        f"B = {s['B']}, G = {s['G']}, C = {s['C']}. Medians of {result['repeats']} A/B-alternated steps per path.", "",
        f"| phase | repeated (s) | shared (s) | speed-up | peak {device} repeated (MB) | peak {device} shared (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in PHASES:
        r, sh = result["median_s"]["repeated"][k], result["median_s"]["shared"][k]
        pr, ps = result["peak_bytes"]["repeated"][k] / 2**20, result["peak_bytes"]["shared"][k] / 2**20
        lines.append(f"| {names[k]} | {r:.2f} | {sh:.2f} | {r / sh:.2f}x | {pr:.0f} | {ps:.0f} |")
    rss = result["peak_bytes"]
    lines += ["", f"Peak RSS of a whole process doing one step: repeated {rss['repeated']['process_max_rss'] / 2**20:.0f} MB, "
              f"shared {rss['shared']['process_max_rss'] / 2**20:.0f} MB "
              f"({result['memory_ratio']['process_max_rss']:.2f}x).",
              "", f"Same rollout through both log-prob layouts: max |log-prob difference| = {result['logp_max_abs_diff']:.2e}.",
              "", "Peak memory per phase: the largest increase above the phase's start, one step per path in a fresh "
              "process (the step's row: its largest phase)."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
