"""Benchmark: time ``grounding_metrics`` on synthetic outputs (10k samples by default).

Usage: ``python experiments/bench_metrics.py [--n 10000] [--repeats 5]``. Prints the best wall time
per task and the split between parsing (regex, per sample) and the vectorised metric maths.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from museg_lit.evaluation.metrics import grounding_metrics, parse_prediction


def make_data(n: int, seed: int = 0) -> tuple[list[str], list[list[list[float]]]]:
    rng = np.random.default_rng(seed)
    outputs, gts = [], []
    for i in range(n):
        k = int(rng.integers(1, 6))  # 1-5 ground-truth segments
        starts = np.sort(rng.uniform(0, 200, size=k))
        gts.append([[round(float(s), 2), round(float(s + rng.uniform(1, 15)), 2)] for s in starts])
        preds = np.clip(starts + rng.normal(0, 3, size=k), 0, None)
        answer = " ".join(f"{a:.2f}-{a + rng.uniform(1, 15):.2f}" for a in preds)
        think = "The action appears around " + ", ".join(f"{a:.2f}s" for a in preds) + "."
        outputs.append(f"<think>{think}</think><answer>{answer}</answer>" if i % 20 else "I am not sure.")
    return outputs, gts


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    outputs, gts = make_data(args.n)
    t_parse = best_of(lambda: [parse_prediction(o) for o in outputs], args.repeats)
    print(f"n = {args.n} samples; parsing alone: {t_parse * 1e3:.1f} ms")
    for task in ("tvg", "tal"):
        t = best_of(lambda task=task: grounding_metrics(outputs, gts, task), args.repeats)
        stats = grounding_metrics(outputs, gts, task)
        headline = {"tvg": "m_iou", "tal": "mean_f1_multi"}[task]
        print(f"{task}: grounding_metrics {t * 1e3:.1f} ms (best of {args.repeats}); "
              f"{headline} = {stats[headline]:.4f}")


if __name__ == "__main__":
    main()
