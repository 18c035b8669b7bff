"""The README's 2-job sweep three ways, side by side in one run: one job after another (Hydra's basic
launcher), parallel local processes (``hydra/launcher=submitit_local``) with each job capped at its
``cpus_per_task`` torch threads (the default, 1), and the same parallel jobs with every core each
(``cpus_per_task`` = this machine's core count: what every job did before the cap).

    python experiments/bench_local_sweep.py          # or: make bench-local-sweep
    python experiments/bench_local_sweep.py --steps 2 --tokens 16   # quick look

Each variant runs in a fresh ``MUSEG_ROOT`` whose generated videos a 1-step run makes before the clock starts.
Results go to ``experiments/results/bench_local_sweep.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "bench_local_sweep.md"


def sweep_command(launcher: str | None, steps: int, tokens: int, cpus: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "museg_lit.train", "-m"]
    if launcher:
        cmd.append(f"hydra/launcher={launcher}")
    cmd += ["+experiment=stage1", "model=tiny", "data=synthetic", f"trainer.max_steps={steps}",
            f"rollout.max_new_tokens={tokens}", "reward.phases.main.weights.segment_matching=0.5,1.0"]
    if cpus is not None:
        cmd.append(f"hydra.launcher.cpus_per_task={cpus}")
    return cmd


def timed(cmd: list[str], root: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(MUSEG_ROOT=str(root), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    variants = [
        ("one after another (basic launcher)", None, None),
        ("parallel, cpus_per_task=1 threads each (default)", "submitit_local", None),
        (f"parallel, {cores} threads each (every core)", "submitit_local", cores),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, launcher, cpus) in enumerate(variants):
            root = Path(tmp) / f"v{i}"
            root.mkdir()
            # a 1-step run first makes the generated videos (conf/data/synthetic.yaml) outside the clock
            timed([sys.executable, "-m", "museg_lit.train", "+experiment=stage1", "model=tiny", "data=synthetic",
                   "trainer.max_steps=1", "rollout.max_new_tokens=4", "run_name=warmup"], root)
            seconds = timed(sweep_command(launcher, args.steps, args.tokens, cpus), root)
            rows.append((label, seconds))
            print(f"{label}: {seconds:.1f} s", flush=True)
    base = rows[0][1]
    lines = [
        "# The README's 2-job sweep: one after another vs parallel local processes",
        "",
        f"`python experiments/bench_local_sweep.py --steps {args.steps} --tokens {args.tokens}`; "
        f"{platform.processor() or platform.machine()}, {cores} cores, torch threads as listed; "
        "one run of each, measured side by side in one run.",
        "",
        "| variant | wall s | vs one after another |",
        "| --- | ---: | ---: |",
        *[f"| {label} | {s:.1f} | {base / s:.2f}x |" for label, s in rows],
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
