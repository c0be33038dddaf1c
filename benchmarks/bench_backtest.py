"""MetaStrategy backtest time against a plain backtrader SMA-crossover backtest on the same bars.

Both run in this process on the same ~2,500 daily bars of the sample data (AAPL): the
reference is the SMA crossover of backtrader's quickstart (``bt.indicators.CrossOver``,
buy/close); MetaStrategy uses MAML, an MLP, adapt_every=5, support=60, inner_steps=5, at
the run's default smoothing (``DEMO.smooth``, 20 bars) and, for the before/after, without it
(``--smooth 1``).
Each is timed ``--repeats`` times, interleaved; the ratio of the best times is printed,
with the median and range of the ratios of the interleaved pairs. The inner loop runs
compiled (numba, :mod:`metabt.learn.kernels.compiled`); its one-off load per process is
timed apart, before the runs (``--no-jit``: the NumPy loop, the before/after).

    python benchmarks/bench_backtest.py [--repeats R] [--algorithm maml] [--no-jit]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import backtrader as bt
import pandas as pd
import torch

from metabt import MetaLearner, MetaStrategy, SignalSizer
from metabt.config.defaults import DEMO
from metabt.data import feed, load_ohlcv, sample_data_dir
from metabt.features import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn.kernels.compiled import JIT_ENV, warm_up
from metabt.learn.models import MLP

BARS = 2500


class SmaCrossReference(bt.Strategy):
    """backtrader's classic SMA crossover (quickstart guide)."""

    params = (("fast", 10), ("slow", 30))

    def __init__(self) -> None:
        self.crossover = bt.indicators.CrossOver(
            bt.indicators.SMA(period=self.p.fast), bt.indicators.SMA(period=self.p.slow)
        )

    def next(self) -> None:
        if not self.position and self.crossover > 0:
            self.buy()
        elif self.position and self.crossover < 0:
            self.close()


def best_time(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - tic)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--algorithm", default="maml")
    parser.add_argument("--smooth", type=int, default=DEMO.smooth, help="MetaStrategy's smooth")
    parser.add_argument("--no-jit", action="store_true", help="the NumPy inner loop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.no_jit:
        os.environ[JIT_ENV] = "0"
    load = warm_up()  # once per process: numba's import and its cached machine code

    frame = load_ohlcv(sample_data_dir() / "AAPL.csv").iloc[-BARS:]
    spec = FeatureSpec()
    cut = frame.index[400]
    tasks = TaskSampler.from_frames({"AAPL": frame}, spec, support=60, query=20, end=cut)
    learner = MetaLearner(
        MLP(spec.n_features), algorithm=args.algorithm, inner_steps=5, feature_spec=spec
    )
    learner.fit(tasks, 10, progress=False)  # training is not timed; any θ costs the same

    def run_meta() -> object:
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(frame, name="AAPL"))
        cerebro.addstrategy(
            MetaStrategy,
            learner=learner,
            adapt_every=5,
            support=60,
            inner_steps=5,
            smooth=args.smooth,
        )
        cerebro.addsizer(SignalSizer, **dict(DEMO.sizer))
        strat = cerebro.run()[0]
        assert len(strat.adaptations) > 400
        return strat

    def run_sma() -> object:
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(frame, name="AAPL"))
        cerebro.addstrategy(SmaCrossReference)
        return cerebro.run()[0]

    # interleaved, best of each: machine noise hits both alike
    pairs = [(best_time(run_sma, 1), best_time(run_meta, 1)) for _ in range(args.repeats)]
    sma = min(p[0] for p in pairs)
    meta = min(p[1] for p in pairs)
    paired = sorted(m / s for s, m in pairs)
    first, last = pd.Timestamp(frame.index[0]).date(), pd.Timestamp(frame.index[-1]).date()
    print(f"{len(frame)} bars of AAPL, {first} to {last}; best of {args.repeats} runs, 1 thread")
    inner = "NumPy (--no-jit)" if args.no_jit else f"compiled, loaded once in {load:.2f} s"
    print(f"inner loop: {inner}; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"backtrader SMA crossover : {sma:7.3f} s")
    print(
        f"MetaStrategy ({args.algorithm}, MLP, adapt_every=5, support=60, inner_steps=5, "
        f"smooth={args.smooth}): {meta:7.3f} s"
    )
    print(f"ratio MetaStrategy / SMA crossover: {meta / sma:.2f}x (best of each)")
    print(
        f"ratio of interleaved pairs: median {paired[len(paired) // 2]:.2f}x, "
        f"range {paired[0]:.2f}x to {paired[-1]:.2f}x"
    )


if __name__ == "__main__":
    main()
