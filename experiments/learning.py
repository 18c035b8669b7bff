"""The learning proof: SFT warm start, then MUSEG-reward GRPO, then the held-out table (``make learn-demo``).

Runs, each through the real entry points (new processes, Hydra configs, the MLflow store in
``<root>/logs``):

1. ``python -m museg_lit.train +experiment=synthetic_sft`` -> ``logs/learning/sft/export``;
2. ``python -m museg_lit.train +experiment=synthetic_grpo`` (starts from that export) ->
   ``logs/learning/grpo/export``;
3. ``python -m museg_lit.eval data=synthetic_learning_heldout`` for the SFT export, the GRPO export,
   and the SFT export with blanked frames (``video_ablation=blank``), greedy, with the training
   frame settings;

then scores two trivial baselines on the same held-out split (the whole video; the mean train
segment), reads the held-out mIoU and the GRPO reward against steps from MLflow, and writes
``experiments/results/learning.md`` (table, goals, commands, wall times) and ``learning.png``.
Earlier runs of the demo (``logs/learning``, their evaluations) are removed first unless ``--keep``;
their MLflow runs stay in the store.

    python experiments/learning.py                      # the full demo (make learn-demo)
    python experiments/learning.py --sft-steps 20 --grpo-steps 4 --train 32 --heldout 8 --root /tmp/x
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELDOUT = "synthetic_learning_heldout"
# goals of issue 12 (held-out tvg m_iou)
SFT_MIN, SFT_OVER_BASELINE, GRPO_OVER_SFT, BLANK_UNDER_SFT = 0.35, 0.15, 0.05, 0.10


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` (output to ``log``), fail loudly with the log's tail; returns the wall time."""
    start = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    with log.open("w") as f:
        rc = subprocess.call(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    if rc:
        sys.exit(f"failed (exit {rc}): {' '.join(cmd)}\n" + "".join(log.read_text().splitlines(True)[-25:]))
    return time.perf_counter() - start


def baselines(root: Path, heldout_file: Path) -> dict[str, dict[str, float]]:
    """Held-out metrics of the whole video and of the mean train tvg segment (clipped to each video)."""
    from museg_lit.data.annotations import load_annotations
    from museg_lit.evaluation.metrics import grounding_metrics

    train = load_annotations(root / "data" / "synthetic_learning" / "train.jsonl")
    tvg = [s.solution[0] for s in train if s.task == "tvg"]
    mean_s, mean_e = sum(s for s, _ in tvg) / len(tvg), sum(e for _, e in tvg) / len(tvg)
    held = load_annotations(heldout_file)
    out = {}
    for name, answer in (("baseline: whole video", lambda d: (0.0, d)),
                         ("baseline: mean train segment", lambda d: (min(mean_s, d), min(mean_e, d)))):
        row = {}
        for task, key in (("tvg", "m_iou"), ("tal", "mean_f1_multi")):
            items = [s for s in held if s.task == task]
            outputs = ["<answer>{:.2f}-{:.2f}</answer>".format(*answer(s.duration)) for s in items]
            m = grounding_metrics(outputs, [s.solution for s in items], task)
            row[f"{task}/{key}"] = float(m[key])
            if task == "tvg":
                row["tvg/f1_single_0.5"] = float(m["f1_single_0.5"])
        out[name] = row
    return out


def eval_metrics(root: Path, name: str) -> dict[str, float]:
    summary = json.loads((root / "logs" / "eval" / HELDOUT / name / "metrics.json").read_text())
    m = summary["metrics"]
    return {k: float(m[k]) for k in ("tvg/m_iou", "tvg/f1_single_0.5", "tal/mean_f1_multi", "no_prediction")}


def histories(root: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{run: {metric: [(step, value)]}}`` of the SFT and GRPO runs, read back from the MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'logs' / 'mlflow.db'}")
    out = {}
    for stage, keys in (("sft", ("val/m_iou", "sft/loss")), ("grpo", ("val/m_iou", "train/reward"))):
        run_id = (root / "logs" / "learning" / stage / "mlflow_run_id").read_text().strip()
        out[stage] = {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}
    return out


def learning_figure(curves: dict, sft_steps: int):
    """The picture of :func:`histories`' ``curves``: held-out mIoU over SFT then GRPO steps (left;
    GRPO's steps shifted by ``sft_steps``, a dashed line where GRPO starts), GRPO's training reward
    per step and its running mean of 10 (right). A matplotlib ``Figure`` (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="tight")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    sft, grpo = curves["sft"]["val/m_iou"], curves["grpo"]["val/m_iou"]
    left.plot([s for s, _ in sft], [v for _, v in sft], "o-", label="SFT")
    left.plot([sft_steps + s for s, _ in grpo], [v for _, v in grpo], "o-", label="GRPO (from the SFT export)")
    left.axvline(sft_steps, color="grey", lw=0.8, ls="--")
    left.set(xlabel="optimizer step (SFT, then GRPO)", ylabel="held-out tvg mIoU", title="held-out grounding")
    left.legend()
    reward = curves["grpo"]["train/reward"]
    right.plot([s for s, _ in reward], [v for _, v in reward], lw=0.8, alpha=0.5, label="per step")
    window = 10
    smooth = [sum(v for _, v in reward[max(0, i - window + 1): i + 1]) / len(reward[max(0, i - window + 1): i + 1])
              for i in range(len(reward))]
    right.plot([s for s, _ in reward], smooth, lw=2, label=f"mean of {window}")
    right.set(xlabel="GRPO step", ylabel="reward (format + segment_matching, max 3)", title="GRPO training reward")
    right.legend()
    return fig


def plot(curves: dict, sft_steps: int, path: Path) -> None:
    learning_figure(curves, sft_steps).savefig(path, dpi=110)


def goals(rows: dict, curves: dict) -> list[tuple[str, bool, str]]:
    base = max(rows["baseline: whole video"]["tvg/m_iou"], rows["baseline: mean train segment"]["tvg/m_iou"])
    sft, grpo, blank = (rows[k]["tvg/m_iou"] for k in ("SFT export", "GRPO export", "SFT export, blanked frames"))
    reward = [v for _, v in curves["grpo"]["train/reward"]]
    k = max(1, len(reward) // 4)
    first, last = sum(reward[:k]) / k, sum(reward[-k:]) / k
    return [
        (f"SFT >= {SFT_MIN}", sft >= SFT_MIN, f"{sft:.3f}"),
        (f"SFT >= best baseline + {SFT_OVER_BASELINE}", sft >= base + SFT_OVER_BASELINE, f"{sft:.3f} vs {base:.3f}"),
        (f"GRPO >= SFT + {GRPO_OVER_SFT}", grpo >= sft + GRPO_OVER_SFT, f"{grpo:.3f} vs {sft:.3f}"),
        ("GRPO reward rises (last quarter of steps > first quarter)", last > first, f"{first:.3f} -> {last:.3f}"),
        (f"blanked frames <= SFT - {BLANK_UNDER_SFT}", blank <= sft - BLANK_UNDER_SFT, f"{blank:.3f} vs {sft:.3f}"),
    ]


def report(rows: dict, checks: list, walls: dict, command: str, args) -> str:
    lines = ["# Learning proof: SFT warm start + MUSEG-reward GRPO on generated videos (CPU)", "",
             f"Command: `{command}` (from a fresh clone: `make learn-demo`). Held-out split: "
             f"`data={HELDOUT}` ({args.heldout} generated videos, seed 1, never trained on), greedy decoding, "
             "the training frame settings; metrics by `python -m museg_lit.eval` (MUSEG's formulas).", "",
             "| model | tvg mIoU | tvg R1@0.5 | tal mean F1 | no prediction |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in rows.items():
        nop = f"{r['no_prediction']:.3f}" if "no_prediction" in r else "-"
        lines.append(f"| {name} | {r['tvg/m_iou']:.3f} | {r['tvg/f1_single_0.5']:.3f} | {r['tal/mean_f1_multi']:.3f} | {nop} |")
    lines += ["", "| goal (held-out tvg mIoU) | met | value |", "| --- | :---: | --- |"]
    lines += [f"| {g} | {'yes' if ok else '**no**'} | {v} |" for g, ok, v in checks]
    lines += ["", "Wall times (s) on this machine: " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items())
              + f"; total {sum(walls.values()):.0f} s ({sum(walls.values()) / 60:.1f} min, data generation included).", "",
              f"Settings: SFT {args.sft_steps} steps, GRPO {args.grpo_steps} steps, {args.train} training videos. "
              "Curves (held-out mIoU every evaluation, GRPO reward per step) from the MLflow store: "
              "![learning curves](learning.png)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(REPO), help="paths.root_dir of every run (data/, logs/, .cache/ under it)")
    ap.add_argument("--sft-steps", type=int, default=None, help="default: the experiment's trainer.max_steps")
    ap.add_argument("--grpo-steps", type=int, default=None, help="default: the experiment's trainer.max_steps")
    ap.add_argument("--train", type=int, default=None, help="training videos (default: the data config's)")
    ap.add_argument("--heldout", type=int, default=None, help="held-out videos (default: the data config's)")
    ap.add_argument("--eval-every", type=int, default=None, help="held-out evaluation every N steps during training")
    ap.add_argument("--out", default=str(REPO / "experiments" / "results" / "learning.md"))
    ap.add_argument("--keep", action="store_true", help="keep earlier demo runs (finished runs are then reused)")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    py = sys.executable
    common = [f"paths.root_dir={root}"]
    if args.train is not None:
        common.append(f"data.synthetic.num_samples={args.train}")
    heldout_n = [] if args.heldout is None else [f"callbacks.grounding_eval.synthetic.num_samples={args.heldout}"]
    every = [] if args.eval_every is None else [f"callbacks.grounding_eval.every_n_steps={args.eval_every}"]
    if not args.keep:
        for path in (root / "logs" / "learning", root / "logs" / "eval" / HELDOUT):
            shutil.rmtree(path, ignore_errors=True)
    logs = root / "logs" / "learning"
    logs.mkdir(parents=True, exist_ok=True)
    walls: dict[str, float] = {}
    steps = lambda n: [] if n is None else [f"trainer.max_steps={n}"]  # noqa: E731
    walls["SFT"] = run([py, "-m", "museg_lit.train", "+experiment=synthetic_sft", *common, *heldout_n, *every,
                        *steps(args.sft_steps)], logs / "sft.log")
    walls["GRPO"] = run([py, "-m", "museg_lit.train", "+experiment=synthetic_grpo", *common, *heldout_n, *every,
                         *steps(args.grpo_steps)], logs / "grpo.log")
    held = [f"data.synthetic.num_samples={args.heldout}"] if args.heldout is not None else []
    evals = {"SFT export": ("learning-sft", "sft", "none"), "GRPO export": ("learning-grpo", "grpo", "none"),
             "SFT export, blanked frames": ("learning-sft-blank", "sft", "blank")}
    for name, stage, ablation in evals.values():
        walls[f"eval {name}"] = run([
            py, "-m", "museg_lit.eval", f"data={HELDOUT}", *common[:1], *held, "model=tiny", "model.tiny=false",
            f"model.path={root / 'logs' / 'learning' / stage / 'export'}", f"model.name=tiny-{stage}", f"name={name}",
            f"video_ablation={ablation}", "max_new_tokens=96", "batch_size=16", "resume=false",
        ], logs / f"eval-{name}.log")
    heldout_file = root / "data" / HELDOUT / "heldout.jsonl"
    rows = baselines(root, heldout_file)
    rows.update({label: eval_metrics(root, name) for label, (name, _, _) in evals.items()})
    curves = histories(root)
    sft_steps = max((s for s, _ in curves["sft"]["sft/loss"]), default=0) + 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, sft_steps, out.with_suffix(".png"))
    command = " ".join(["python", "experiments/learning.py", *sys.argv[1:]])
    text = report(rows, goals(rows, curves), walls, command, argparse.Namespace(
        sft_steps=sft_steps, grpo_steps=max((s for s, _ in curves["grpo"]["train/reward"]), default=-1) + 1,
        train=args.train or "the configured", heldout=args.heldout or "the configured"))
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
