"""Per-bar costs inside a backtest: one ``MetaLearner.adapt`` call per algorithm, and features.

Support 60 bars, default features, 5 inner steps; the MAML MLP is the reference (ratio 1);
the per-algorithm table runs the NumPy loops (``METABT_JIT=0``), and the MLP's inner loop
and row prediction are also timed compiled (numba, loaded before timing; its load time is
printed). Features: the incremental ``OnlineFeatures.update`` the backtest uses, against
recomputing the window with ``FeatureSpec.transform_window``.

    python benchmarks/bench_adapt.py
"""

from __future__ import annotations

import os
import time
import timeit

import numpy as np
import torch

from metabt.features import FeatureSpec, OnlineFeatures
from metabt.learn.algorithms import OUTER_STEPS, PairedFamily
from metabt.learn.kernels.compiled import JIT_ENV, warm_up
from metabt.learn.kernels.fused import MLPKernel
from metabt.learn.learner import ALGORITHMS, MetaLearner
from metabt.learn.models import GRU, MLP

SUPPORT, STEPS, REPEATS = 60, 5, 200


def latency(learner: MetaLearner, x: torch.Tensor, y: torch.Tensor) -> float:
    for _ in range(10):
        learner.adapt(x, y, steps=STEPS)
    tic = time.perf_counter()
    for _ in range(REPEATS):
        learner.adapt(x, y, steps=STEPS)
    return (time.perf_counter() - tic) / REPEATS


def feature_costs(spec: FeatureSpec) -> None:
    """Print the per-bar feature cost: incremental update vs recomputing the window."""
    rng = np.random.default_rng(0)
    n = spec.lookback
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    high, low, volume = close * 1.01, close * 0.99, rng.lognormal(14, 0.5, n)
    online = OnlineFeatures(spec)
    for i in range(n):
        online.update(high[i], low[i], close[i], volume[i])
    bar = (high[-1], low[-1], close[-1], volume[-1])

    def best(fn: object) -> float:
        return min(timeit.repeat(fn, number=2000, repeat=5)) / 2000  # type: ignore[arg-type]

    window = best(lambda: spec.transform_window(close, high, low, close, volume))
    update = best(lambda: online.update(*bar))
    print(
        f"features per bar: transform_window {window * 1e6:.1f} us, OnlineFeatures.update "
        f"{update * 1e6:.1f} us ({window / update:.1f}x cheaper)"
    )


def inner_loop_paths(f: int, x: torch.Tensor, y: torch.Tensor) -> None:
    """The MLP inner loop three ways, same θ and support: autograd, per-step NumPy, fused."""
    model = MLP(f)
    learner = MetaLearner(model, algorithm="maml")
    kernel = MLPKernel(model)
    xn, yn = x.numpy(), y.numpy()
    theta = {k: v.detach().numpy() for k, v in model.named_parameters()}

    def stepwise() -> None:  # mse_grad_numpy + one dict update per step (the PR-2 path)
        fast = dict(theta)
        for _ in range(STEPS):
            _, grads = kernel.mse_grad_numpy(fast, xn, yn)
            fast = {k: fast[k] - learner.inner_lr * grads[k] for k in fast}

    def best(fn: object) -> float:
        return min(timeit.repeat(fn, number=200, repeat=5)) / 200  # type: ignore[arg-type]

    autograd = best(lambda: learner.adapt(x, y, STEPS, reference=True))
    step = best(stepwise)
    fused = best(lambda: learner.adapt(xn, yn, steps=STEPS))
    adapted = learner.adapt(xn, yn, steps=STEPS)
    row_numpy = best(lambda: adapted.predict_row(xn[0]))
    os.environ[JIT_ENV] = "1"
    load = warm_up()
    compiled = best(lambda: learner.adapt(xn, yn, steps=STEPS))
    adapted = learner.adapt(xn, yn, steps=STEPS)
    row_compiled = best(lambda: adapted.predict_row(xn[0]))
    os.environ[JIT_ENV] = "0"
    print(
        f"MLP inner loop ({STEPS} steps): torch.autograd {autograd * 1e3:.3f} ms, NumPy per "
        f"step {step * 1e3:.3f} ms, fused NumPy kernel (adapt) {fused * 1e3:.3f} ms: "
        f"{autograd / fused:.1f}x and {step / fused:.2f}x"
    )
    print(
        f"MLP inner loop compiled (numba, loaded once in {load:.2f} s): {compiled * 1e3:.3f} ms, "
        f"{fused / compiled:.2f}x the fused NumPy kernel; one row's prediction "
        f"{row_compiled * 1e6:.1f} us against {row_numpy * 1e6:.1f} us "
        f"({row_numpy / row_compiled:.2f}x)"
    )
    gru = MetaLearner(GRU(f, 32, 10), algorithm="maml")
    xg = torch.randn(SUPPORT, gru.model.n_features, generator=torch.Generator().manual_seed(1))
    autograd = best(lambda: gru.adapt(xg, y, STEPS, reference=True))
    bptt = best(lambda: gru.adapt(xg.numpy(), yn, steps=STEPS))
    print(
        f"GRU inner loop ({STEPS} steps, window 10): torch.autograd {autograd * 1e3:.2f} ms, "
        f"NumPy backprop through time (adapt) {bptt * 1e3:.2f} ms: {autograd / bptt:.1f}x"
    )


def blas_threads(f: int, y: torch.Tensor) -> None:
    """The GRU's NumPy inner loop with the machine's default BLAS threads and with one.

    metabt runs with one thread by default (``--threads``, ``METABT_THREADS``): for these
    tiny matrices, BLAS threads only add synchronisation, worst on a busy machine.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    gru = MetaLearner(GRU(f, 32, 10), algorithm="maml")
    xg = torch.randn(SUPPORT, gru.model.n_features, generator=torch.Generator().manual_seed(2))
    xn, yn = xg.numpy(), y.numpy()

    def best() -> float:
        return min(timeit.repeat(lambda: gru.adapt(xn, yn, steps=STEPS), number=50, repeat=5)) / 50

    default_threads = max((p["num_threads"] for p in threadpool_info()), default=1)
    with threadpool_limits(limits=None):
        many = best()
    with threadpool_limits(limits=1):
        one = best()
    print(
        f"GRU NumPy inner loop: {many * 1e3:.2f} ms with the default {default_threads} BLAS "
        f"threads, {one * 1e3:.2f} ms with 1 thread ({many / one:.1f}x); load average "
        f"{os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    os.environ[JIT_ENV] = "0"  # the NumPy loops; the compiled one is timed apart
    spec = FeatureSpec()
    blas_threads(spec.n_features, torch.randn(SUPPORT, generator=torch.Generator().manual_seed(3)))
    torch.set_num_threads(1)
    spec = FeatureSpec()
    f = spec.n_features
    g = torch.Generator().manual_seed(0)
    y = torch.randn(SUPPORT, generator=g)
    rows = []
    for model_type in ("mlp", "gru"):
        for algorithm in ALGORITHMS:
            if isinstance(OUTER_STEPS[algorithm], PairedFamily):  # CNP, ProtoNet, CAVIA
                continue  # (their latency is in bench_learners.py)
            model = MLP(f) if model_type == "mlp" else GRU(f, 32, 10)
            x = torch.randn(SUPPORT, model.n_features, generator=g)
            rows.append(
                (model_type, algorithm, latency(MetaLearner(model, algorithm=algorithm), x, y))
            )
    feature_costs(spec)
    inner_loop_paths(f, x=torch.randn(SUPPORT, f, generator=g), y=y)
    ref = rows[0][2]
    print(f"adaptation latency, support {SUPPORT}, {STEPS} inner steps, {f} features, 1 thread")
    print(f"{'model':<5} {'algorithm':<9} {'ms':>7} {'vs mlp/maml':>12}")
    for model_type, algorithm, seconds in rows:
        print(f"{model_type:<5} {algorithm:<9} {seconds * 1e3:>7.2f} {seconds / ref:>11.2f}x")


if __name__ == "__main__":
    main()
