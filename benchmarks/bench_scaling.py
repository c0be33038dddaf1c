"""Cost per bar against history length: MetaStrategy beside backtrader's own strategies.

One process, one asset of synthetic GBM daily bars (``metabt.data.synthetic.gbm_market``), at
1,000 to 16,000 bars (doubling). Three strategies, each run on the same bars:

* an empty ``bt.Strategy`` (backtrader's own per-bar cost: feed, clock, broker);
* backtrader's quickstart SMA crossover (``bt.indicators.CrossOver`` of two SMAs);
* ``MetaStrategy`` with a small MAML MLP (hidden (16, 16), inner_steps 3), adapt_every 5,
  support 60, SignalSizer.

Each (strategy, length) is timed ``--repeats`` times, interleaved over lengths so that
machine load hits all alike, and the best CPU time of the process (``time.process_time``,
which other processes' load affects less than wall time) is kept. Printed: µs per bar at
each length and the scaling exponent, the least-squares slope of log(time) on log(bars):
1.0 is linear (constant cost per bar); a fixed start-up cost pulls it below 1. Also the
``uptime`` load averages before and after.

    python benchmarks/bench_scaling.py [--repeats R] [--max-bars N]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import backtrader as bt
import numpy as np
import torch

from metabt import MetaLearner, MetaStrategy, SignalSizer
from metabt.data import feed
from metabt.data.synthetic import gbm_market
from metabt.features import FeatureSpec
from metabt.learn.models import MLP


class Empty(bt.Strategy):
    """No indicator, no order: backtrader's own cost per bar."""

    def next(self) -> None:
        pass


class SmaCross(bt.Strategy):
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


def cpu_seconds(run: Callable[[], object]) -> float:
    tic = time.process_time()
    run()
    return time.process_time() - tic


def exponent(bars: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(bars)."""
    return float(np.polyfit(np.log(bars), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-bars", type=int, default=16_000)
    parser.add_argument(
        "--out", default="benchmarks/results/scaling.md", help="Markdown file of the output"
    )
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str = "", **kwargs: object) -> None:
        print(text, **kwargs)  # type: ignore[call-overload]
        lines.append(text)

    torch.set_num_threads(1)
    load_before = os.getloadavg()

    spec = FeatureSpec()
    learner = MetaLearner(
        MLP(spec.n_features, (16, 16), seed=0), inner_steps=3, seed=0, feature_spec=spec
    )  # untrained: any θ costs the same per adaptation
    lengths = [n for n in (1_000, 2_000, 4_000, 8_000, 16_000) if n <= args.max_bars]
    frames = {n: gbm_market(n, seed=0) for n in lengths}

    def runner(strategy: type[bt.Strategy], n: int, **kwargs: object) -> Callable[[], object]:
        def run() -> object:
            cerebro = bt.Cerebro(stdstats=False)
            cerebro.adddata(feed(frames[n], name="GBM"))
            cerebro.addstrategy(strategy, **kwargs)
            if strategy is MetaStrategy:
                cerebro.addsizer(SignalSizer)
            return cerebro.run()[0]

        return run

    strategies: dict[str, tuple[type[bt.Strategy], dict[str, object]]] = {
        "empty bt.Strategy": (Empty, {}),
        "SMA crossover": (SmaCross, {}),
        "MetaStrategy": (MetaStrategy, {"learner": learner, "adapt_every": 5, "support": 60}),
    }
    best = {name: {n: float("inf") for n in lengths} for name in strategies}
    for _ in range(args.repeats):
        for n in lengths:  # interleaved: load changes hit every length alike
            for name, (cls, kwargs) in strategies.items():
                best[name][n] = min(best[name][n], cpu_seconds(runner(cls, n, **kwargs)))

    header = "".join(f"{n:>9,}" for n in lengths)
    say(f"µs per bar (best CPU time of {args.repeats}, 1 thread), bars:{header}  exponent")
    for name, times in best.items():
        per_bar = "".join(f"{times[n] / n * 1e6:9.1f}" for n in lengths)
        slope = exponent(lengths, [times[n] for n in lengths])
        say(f"{name:<38}{per_bar}  {slope:8.3f}")
    after = os.getloadavg()
    say(
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after "
        + ", ".join(f"{x:.2f}" for x in after)
    )

    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scaling.py"
    Path(args.out).write_text(
        "# History scaling: µs per bar from 1,000 to 16,000 bars\n\n```text\n"
        + "\n".join(lines).strip()
        + "\n```\n\nCommand: `"
        + command
        + "`\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
