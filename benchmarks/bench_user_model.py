"""A user's own ``nn.Module`` against metabt's built-in model: single-asset backtest time.

Both run in this process on the same ~2,500 daily bars of the sample data (AAPL), with
MAML, ``adapt_every=5``, ``support=60``, ``inner_steps=5``, as ``bench_backtest.py`` sets a
MetaStrategy up. The built-in MLP (2x32, ReLU) is meta-trained for a few steps and its θ
copied into a user MLP of the same size (``tests.nets:ReluMLP``, an ``nn.Sequential`` of
``nn.Linear`` and ``nn.ReLU``), so both backtests make the same predictions and trades; the
same for the built-in GRU (hidden 32, window 10) against a user GRU (``tests.nets:CellGRU``,
``nn.GRUCell`` over the window). Each pair is timed ``--repeats`` times, interleaved; the
ratio user / built-in of the best times is printed, with the median and range of the
paired ratios, and the per-call cost of ``adapt`` and ``predict_row`` of each model.

    PYTHONPATH=. python benchmarks/bench_user_model.py [--repeats R] [--models mlp,gru]
        [--threads T]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import backtrader as bt
import numpy as np
import torch
from torch import nn

from metabt import MetaLearner, MetaStrategy, SignalSizer
from metabt.config.defaults import DEMO
from metabt.data import feed, load_ohlcv, sample_data_dir
from metabt.features import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn.models import GRU, MLP, user_model

BARS = 2500


def _copy_mlp(src: MLP, dst: nn.Module) -> None:
    """θ of the built-in MLP into a ``ReluMLP`` (layers 0, 2, ..., head last)."""
    linears = [m for m in dst.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for mine, theirs in zip(linears, [*src.layers, src.head]):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)


def _copy_gru(src: GRU, dst: nn.Module) -> None:
    """θ of the built-in GRU into a ``CellGRU`` (same gate order r, z, n as nn.GRUCell)."""
    cell, head = dst.cell, dst.head  # type: ignore[union-attr]
    with torch.no_grad():
        cell.weight_ih.copy_(src.x2h.weight)
        cell.bias_ih.copy_(src.x2h.bias)
        cell.weight_hh.copy_(src.h2h.weight)
        cell.bias_hh.copy_(src.h2h.bias)
        head.weight.copy_(src.head.weight)
        head.bias.copy_(src.head.bias)


def _pair(kind: str, spec: FeatureSpec, tasks: TaskSampler) -> tuple[MetaLearner, MetaLearner]:
    """(built-in learner, user learner) of one kind, the same θ."""
    if kind == "mlp":
        builtin: nn.Module = MLP(spec.n_features)
        mine = user_model("tests.nets:ReluMLP", n_features=spec.n_features, hidden=[32, 32])
    else:
        builtin = GRU(spec.n_features, hidden=32, window=10)
        mine = user_model("tests.nets:CellGRU", n_features=spec.n_features, hidden=32, window=10)
    reference = MetaLearner(builtin, inner_steps=5, feature_spec=spec)
    reference.fit(tasks, 5, progress=False)  # training is not timed; any θ costs the same
    if kind == "mlp":
        _copy_mlp(builtin, mine)  # type: ignore[arg-type]
    else:
        _copy_gru(builtin, mine)  # type: ignore[arg-type]
    return reference, MetaLearner(mine, inner_steps=5, feature_spec=spec)


def _per_call(learner: MetaLearner, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(adapt, predict_row) seconds per call on one support set, best of 3 x 50 calls."""
    model = learner.adapt(x, y)
    adapt = min(_timed(lambda: learner.adapt(x, y), 50) for _ in range(3))
    row = x[-1]
    predict = min(_timed(lambda: model.predict_row(row), 200) for _ in range(3))
    return adapt, predict


def _timed(run: Callable[[], object], number: int) -> float:
    tic = time.perf_counter()
    for _ in range(number):
        run()
    return (time.perf_counter() - tic) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="mlp,gru", help="comma list of mlp, gru")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    frame = load_ohlcv(sample_data_dir() / "AAPL.csv").iloc[-BARS:]
    spec = FeatureSpec()
    cut = frame.index[400]

    def backtest(learner: MetaLearner) -> Callable[[], object]:
        def run() -> object:
            cerebro = bt.Cerebro(stdstats=False)
            cerebro.adddata(feed(frame, name="AAPL"))
            cerebro.addstrategy(
                MetaStrategy, learner=learner, adapt_every=5, support=60, inner_steps=5
            )
            cerebro.addsizer(SignalSizer, **dict(DEMO.sizer))
            strat = cerebro.run()[0]
            assert len(strat.adaptations) > 400
            return strat

        return run

    load = os.getloadavg()
    print(
        f"{len(frame)} bars of AAPL; MAML, adapt_every=5, support=60, inner_steps=5; best of "
        f"{args.repeats} interleaved runs, {torch.get_num_threads()} torch threads; load "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    rng = np.random.default_rng(0)
    for kind in args.models.split(","):
        window = 10 if kind == "gru" else 1
        tasks = TaskSampler.from_frames(
            {"AAPL": frame}, spec, support=60, query=20, end=cut, window=window
        )
        reference, mine = _pair(kind, spec, tasks)
        pairs = []
        for _ in range(args.repeats):
            tic = time.perf_counter()
            backtest(reference)()
            mid = time.perf_counter()
            backtest(mine)()
            pairs.append((mid - tic, time.perf_counter() - mid))
        best_ref, best_mine = min(p[0] for p in pairs), min(p[1] for p in pairs)
        paired = sorted(m / r for r, m in pairs)
        x = rng.normal(size=(60, spec.n_features * window)).astype(np.float32)
        y = rng.normal(scale=0.01, size=60).astype(np.float32)
        (a_ref, p_ref), (a_mine, p_mine) = _per_call(reference, x, y), _per_call(mine, x, y)
        backend = mine.adapt(x, y).backend
        print(
            f"{kind}: built-in {best_ref:6.3f} s, user {best_mine:6.3f} s (backend "
            f"{backend!r}); ratio user / built-in {best_mine / best_ref:.2f}x (best of each), "
            f"paired median {paired[len(paired) // 2]:.2f}x, range {paired[0]:.2f}x to "
            f"{paired[-1]:.2f}x"
        )
        print(
            f"  per call: adapt {a_ref * 1e6:7.1f} us built-in, {a_mine * 1e6:7.1f} us user; "
            f"predict_row {p_ref * 1e6:5.1f} us built-in, {p_mine * 1e6:5.1f} us user"
        )
    load = os.getloadavg()
    print(f"load after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
