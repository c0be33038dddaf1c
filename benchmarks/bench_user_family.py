"""A user learner family (examples/imaml.py, iMAML by CG) against MAML, in one process.

1. Outer step: ``MetaLearner.meta_step`` on the same task batch (B=16, S=60, Q=20, F=12,
   MLP 2x32, 5 inner steps; iMAML with 5 CG steps), interleaved; ratio iMAML / MAML
   (median of per-round ratios, best-of times).
2. Adaptation latency per support window (S=60, F=12, 5 steps; adapt + one prediction, as
   ``MetaStrategy`` does per adaptation): iMAML's autograd proximal loop against MAML's
   fused NumPy kernel; ratio iMAML / MAML.
3. Sinusoid (Finn et al. 2017, 5.1; ``metabt.experiments.sinusoid.run_sinusoid``): query
   MSE after 10 test steps, MAML and iMAML, ``--steps`` outer steps, ``--seeds``, the same
   ``--inner-lr`` and ``--inner-steps`` for both (MLP 40-40, meta-batch 25).

    python benchmarks/bench_user_family.py [--rounds 7] [--steps 500] [--seeds 0 1]
        [--inner-lr 0.01] [--inner-steps 1] [--sections timing sinusoid]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from metabt.experiments.sinusoid import run_sinusoid
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP

IMAML = "examples.imaml:ImamlFamily"


def _learner(algorithm: str) -> MetaLearner:
    return MetaLearner(MLP(12, (32, 32), seed=0), algorithm=algorithm, inner_steps=5)


def _best_and_median(times: dict[str, list[float]]) -> tuple[float, float, float]:
    ratios = [i / m for i, m in zip(times[IMAML], times["maml"], strict=True)]
    return min(times["maml"]), min(times[IMAML]), statistics.median(ratios)


def outer_step(rounds: int) -> str:
    rng = np.random.default_rng(0)
    batch = [rng.normal(size=s).astype(np.float32) for s in ((16, 60, 12), (16, 60))]
    batch += [rng.normal(size=s).astype(np.float32) for s in ((16, 20, 12), (16, 20))]
    learners = {a: _learner(a) for a in ("maml", IMAML)}
    for learner in learners.values():  # warm-up
        learner.meta_step(*batch)
    times: dict[str, list[float]] = {a: [] for a in learners}
    for _ in range(rounds):
        for name, learner in learners.items():
            tic = time.perf_counter()
            learner.meta_step(*batch)
            times[name].append(time.perf_counter() - tic)
    maml, imaml, ratio = _best_and_median(times)
    return f"| outer step, B=16 | {maml * 1e3:.1f} ms | {imaml * 1e3:.1f} ms | {ratio:.1f}x |"


def latency(rounds: int, windows: int = 50) -> str:
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(windows, 60, 12)).astype(np.float32)
    ys = rng.normal(size=(windows, 60)).astype(np.float32)
    row = torch.from_numpy(xs[0, :1])
    learners = {a: _learner(a) for a in ("maml", IMAML)}
    times: dict[str, list[float]] = {a: [] for a in learners}
    for _ in range(rounds):
        for name, learner in learners.items():
            tic = time.perf_counter()
            for x, y in zip(xs, ys, strict=True):
                learner.adapt(x, y)(row)
            times[name].append((time.perf_counter() - tic) / windows)
    maml, imaml, ratio = _best_and_median(times)
    return (
        f"| adapt + predict, 1 window | {maml * 1e3:.2f} ms | {imaml * 1e3:.2f} ms | {ratio:.1f}x |"
    )


def sinusoid(steps: int, seeds: list[int], inner_lr: float, inner_steps: int) -> list[str]:
    rows = []
    for algorithm in ("maml", IMAML):
        tic = time.perf_counter()
        runs = [
            run_sinusoid(algorithm, steps=steps, seed=s, inner_lr=inner_lr, inner_steps=inner_steps)
            for s in seeds
        ]
        took = time.perf_counter() - tic
        mse = [r["query_mse"] for r in runs]
        mse0 = [r["query_mse_0step"] for r in runs]
        rows.append(
            f"| {algorithm} | {statistics.mean(mse0):.3f} | {statistics.mean(mse):.3f} "
            f"(seeds {', '.join(f'{m:.3f}' for m in mse)}) | {took:.0f} s |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument(
        "--sections", nargs="+", choices=("timing", "sinusoid"), default=["timing", "sinusoid"]
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load before: {os.getloadavg()[0]:.2f}")
    if "timing" in args.sections:
        print("| what | MAML | iMAML (CG) | ratio (median of rounds) |\n|---|---|---|---|")
        print(outer_step(args.rounds))
        print(latency(args.rounds))
    if "sinusoid" in args.sections:
        print(
            f"\nsinusoid, {args.steps} outer steps, {args.inner_steps} inner steps at "
            f"{args.inner_lr}, query MSE after 10 test steps:"
        )
        print("| algorithm | before adaptation | after 10 steps | time |\n|---|---|---|---|")
        print("\n".join(sinusoid(args.steps, args.seeds, args.inner_lr, args.inner_steps)))
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
