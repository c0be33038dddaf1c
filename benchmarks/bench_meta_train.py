"""Meta-training throughput (tasks/s): batched torch.func engine vs the per-task higher loop.

Same model (MLP, 2x32 hidden), 16 features, 32 tasks per batch, support 60, query 20,
5 inner steps; both engines are timed in this process and the ratio is printed.

    python benchmarks/bench_meta_train.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import torch

from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP

B, S, Q, F, INNER = 32, 60, 20, 16, 5


def tasks_per_second(algorithm: str, engine: str, batch: tuple, repeats: int) -> float:
    learner = MetaLearner(
        MLP(F, (32, 32), seed=0), algorithm=algorithm, engine=engine, inner_steps=INNER
    )
    learner.meta_step(*batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        learner.meta_step(*batch)
        best = min(best, time.perf_counter() - tic)
    return B / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps, best kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    batch = (
        torch.randn(B, S, F, generator=g),
        torch.randn(B, S, generator=g),
        torch.randn(B, Q, F, generator=g),
        torch.randn(B, Q, generator=g),
    )
    print(
        f"meta-training throughput, MLP 2x32, F={F}, B={B}, S={S}, Q={Q}, "
        f"{INNER} inner steps, {args.threads} threads"
    )
    print(f"{'algorithm':<10} {'higher tasks/s':>15} {'func tasks/s':>13} {'speed-up':>9}")
    for algorithm in ("maml", "fomaml", "metasgd", "anil"):
        slow = tasks_per_second(algorithm, "higher", batch, max(3, args.repeats // 2))
        fast = tasks_per_second(algorithm, "func", batch, args.repeats)
        print(f"{algorithm:<10} {slow:>15.0f} {fast:>13.0f} {fast / slow:>8.1f}x")


if __name__ == "__main__":
    main()
