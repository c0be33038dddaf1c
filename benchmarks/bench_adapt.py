"""Adaptation latency inside a backtest: one ``MetaLearner.adapt`` call per algorithm.

Support 60 bars, default features, 5 inner steps; the MAML MLP is the reference (ratio 1).

    python benchmarks/bench_adapt.py
"""

from __future__ import annotations

import time

import torch

from metabt.features import FeatureSpec
from metabt.meta import ALGORITHMS, MetaLearner
from metabt.models import GRU, MLP

SUPPORT, STEPS, REPEATS = 60, 5, 200


def latency(learner: MetaLearner, x: torch.Tensor, y: torch.Tensor) -> float:
    for _ in range(10):
        learner.adapt(x, y, steps=STEPS)
    tic = time.perf_counter()
    for _ in range(REPEATS):
        learner.adapt(x, y, steps=STEPS)
    return (time.perf_counter() - tic) / REPEATS


def main() -> None:
    torch.set_num_threads(1)
    spec = FeatureSpec()
    f = spec.n_features
    g = torch.Generator().manual_seed(0)
    y = torch.randn(SUPPORT, generator=g)
    rows = []
    for model_type in ("mlp", "gru"):
        for algorithm in ALGORITHMS:
            model = MLP(f) if model_type == "mlp" else GRU(f, 32, 10)
            x = torch.randn(SUPPORT, model.n_features, generator=g)
            rows.append(
                (model_type, algorithm, latency(MetaLearner(model, algorithm=algorithm), x, y))
            )
    ref = rows[0][2]
    print(f"adaptation latency, support {SUPPORT}, {STEPS} inner steps, {f} features, 1 thread")
    print(f"{'model':<5} {'algorithm':<9} {'ms':>7} {'vs mlp/maml':>12}")
    for model_type, algorithm, seconds in rows:
        print(f"{model_type:<5} {algorithm:<9} {seconds * 1e3:>7.2f} {seconds / ref:>11.2f}x")


if __name__ == "__main__":
    main()
