"""GPU check of ``trainer=fsdp`` (issue 6, item 7): step time and peak GPU memory of real GRPO steps.

Two sub-commands:

``build``  writes a Qwen2.5-VL checkpoint with **random weights** and the 3B architecture
           (Qwen2.5-VL-3B-Instruct's config: 36 decoder layers of hidden 2048, 32 vision blocks of
           hidden 1280, vocabulary 151,936, tied embeddings; 3.75 B parameters) with the locally
           built tokenizer/processor of the tiny model. Nothing is downloaded. Token ids differ from
           Qwen's; for memory and speed only the shapes matter.
``train``  runs ``python -m museg_lit.train``'s code path (compose + build_training + fit) with
           ``trainer=fsdp`` under ``torchrun`` and writes a JSON report on rank 0: step wall times
           (CUDA-synchronised), their mean after the first (warm-up) step, the per-stage times the
           module logs (``time/generate_s``, ``time/ref_logp_s``, ``time/policy_logp_s``,
           ``time/update_s``) and ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` of
           every rank.

See ``README.md`` next to this file for the exact commands (``run.sh`` runs them all).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import lightning as L
import torch

# Qwen2.5-VL-3B-Instruct's architecture in museg_lit.models.tiny's size keys. vocab_multiple pads the
# local tokenizer's ~2k tokens up to Qwen's 151,936-row embedding matrix.
QWEN25_VL_3B = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "mrope_section": (16, 24, 24),
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 128000,
    "tie_word_embeddings": True,
    "vision_depth": 32,
    "vision_hidden_size": 1280,
    "vision_intermediate_size": 3420,
    "vision_num_heads": 16,
    "vision_window_size": 112,
    "vision_fullatt_block_indexes": (7, 15, 23, 31),
    "vocab_multiple": 151936,
}


def build(out: Path) -> None:
    from museg_lit.models.tiny import build_tiny_checkpoint

    start = time.perf_counter()
    path = build_tiny_checkpoint(out, **QWEN25_VL_3B)
    marker = json.loads((path / "museg_tiny.json").read_text())
    print(f"{path}: {marker['n_parameters'] / 1e9:.2f} B parameters, {time.perf_counter() - start:.0f} s")


def train(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from museg_lit.builders import build_training
    from museg_lit.config import compose

    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()  # without a GPU: a smoke run of this script on trainer=fsdp_cpu
    model = ["model=tiny"] if args.size == "tiny" else ["model=qwen2_5_vl_3b", f"model.path={args.ckpt}"]
    overrides = [
        f"paths.root_dir={args.root}", f"trainer={'fsdp' if cuda else 'fsdp_cpu'}", f"trainer.devices={local}",
        f"trainer.num_nodes={world // local}",
        f"trainer.max_steps={args.steps}", "trainer.enable_progress_bar=false", "logger=none", "callbacks=none",
        "data=synthetic", "model.gradient_checkpointing=true", *model, *args.overrides,
    ]
    cfg = compose(overrides, output_dir=Path(args.root) / "outputs" / args.size)
    L.seed_everything(cfg.seed)
    run = build_training(cfg)
    timer = StepTimer()
    run.trainer.callbacks.append(timer)
    run.trainer.fit(run.module, datamodule=run.datamodule)

    peak = torch.tensor([torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()] if cuda else [0, 0],
                        device="cuda" if cuda else "cpu")
    peaks = [torch.zeros_like(peak) for _ in range(world)]
    dist.all_gather(peaks, peak)
    if dist.get_rank() == 0:
        steady = timer.step_s[1:] or timer.step_s
        report = {
            "size": args.size,
            "gpu": torch.cuda.get_device_name() if cuda else "none (CPU smoke run)",
            "world_size": world,
            "overrides": overrides,
            "parameters": sum(p.numel() for p in run.module.policy.parameters()),
            "step_s": timer.step_s,
            "step_s_mean_after_warmup": sum(steady) / len(steady),
            "stage_s_last_step": timer.stages,
            "peak_allocated_gib": [round(float(p[0]) / 2**30, 2) for p in peaks],
            "peak_reserved_gib": [round(float(p[1]) / 2**30, 2) for p in peaks],
            "torch": torch.__version__,
        }
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))


class StepTimer(L.Callback):
    """Wall time of each training step (generation + scoring + log-probs + backward + optimizer),
    CUDA-synchronised at both ends so queued kernels are counted in their step."""

    def __init__(self):
        self.step_s: list[float] = []
        self.stages: dict[str, float] = {}
        self._start = 0.0

    def on_train_start(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()  # model loading and sharding are not a step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.step_s.append(round(time.perf_counter() - self._start, 3))
        self.stages = {k: round(float(v), 3) for k, v in trainer.callback_metrics.items() if k.startswith("time/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the random-weight 3B-sized checkpoint")
    b.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="timed trainer=fsdp steps (run under torchrun)")
    t.add_argument("--size", choices=["tiny", "3b"], required=True)
    t.add_argument("--ckpt", type=Path, help="the directory written by `build` (size 3b)")
    t.add_argument("--steps", type=int, default=4)
    t.add_argument("--root", type=Path, default=Path("gpu_check_work"), help="data / cache / outputs")
    t.add_argument("--report", type=Path, required=True)
    t.add_argument("overrides", nargs="*", help="more Hydra overrides (e.g. rollout.max_new_tokens=512)")
    args = parser.parse_args()
    if args.command == "build":
        build(args.out)
    else:
        if args.size == "3b" and args.ckpt is None:
            parser.error("--size 3b needs --ckpt (run `build` first)")
        train(args)


if __name__ == "__main__":
    main()
