"""Sinusoid few-shot regression (Finn et al. 2017, 5.1): MAML vs ERM vs scratch, several seeds.

Every method uses the paper's model (MLP 1-40-40-1) and is evaluated the same way: 10 SGD
steps (lr 0.01) on K=10 points of each of 200 held-out tasks, query MSE on 10 more.

    python benchmarks/bench_sinusoid.py [--steps 3000] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metabt.experiments.sinusoid import run_sinusoid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="outer steps (paper: 70,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"sinusoid K=10, {args.steps} meta-steps, meta-batch 25, seeds {args.seeds}")
    print(f"{'method':<8} {'0 steps':>9} {'1 step':>9} {'10 steps':>9}   (query MSE, mean ± sd)")
    for algorithm in ("maml", "erm", "scratch"):
        tic = time.perf_counter()
        runs = [run_sinusoid(algorithm, steps=args.steps, seed=s) for s in args.seeds]
        cells = []
        for key in ("query_mse_0step", "query_mse_1step", "query_mse"):
            values = [r[key] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f}±{sd:.3f}")
        print(
            f"{algorithm:<8} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9}   "
            f"({time.perf_counter() - tic:.0f}s)"
        )


if __name__ == "__main__":
    main()
