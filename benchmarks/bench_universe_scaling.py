"""Cost per asset-bar against the number of assets: MetaStrategy beside backtrader's own.

One process, N = 1, 4, 16, 64, 256 daily feeds of the same 1,300 bars (the first 1,300
trading days from 2012-01-03 of the real universe in ``../shared/universe``: 44 stocks
and 9 ETFs, assets lacking any of those days skipped; beyond the real assets, perturbed
copies of them: each copy's close-to-close log returns are multiplied by a seeded factor
in [0.7, 1.3] plus seeded Gaussian noise of a tenth of their std, open/high/low follow
the close by the same ratio and volume gets seeded log-normal noise, so no two feeds are
identical). The strategies, on the same feeds (``metabt.data.feed``), default costs
(``metabt.experiments.backtest.Costs``) and $100,000 of cash per asset:

* an empty ``bt.Strategy`` (backtrader's own per-bar cost: feeds, clock, broker);
* backtrader's quickstart SMA crossover per data (10/30 ``bt.ind.CrossOver``, buy/close
  of one share, the reference of ``bench_backtest.py`` over N feeds);
* ``MetaStrategy``: a MAML MLP 2x32 MetaLearner (inner_steps 5) trained for 10 outer
  steps on 2008-2011 (not timed), the default schedule (adapt_every 5, support 60) and
  smoothing (``DEMO.smooth``, 20 bars), sized by
  ``SignalSizer(**metabt.config.defaults.DEMO.sizer)`` as ``metabt backtest`` does; and
  ``MetaStrategy, unsmoothed`` (smooth 1, the default before it was chosen on validation).

Two more rows: ``orders only``, a strategy with no computation that places an order
of one to five shares on a seeded 70% of asset-bars (about MetaStrategy's order rate),
the cost of backtrader's order path alone; and ``MetaStrategy, deadband 0.3``, the same
strategy with a wider sizer deadband (0.3 instead of the demo's 0.05, scaled by the
gross cap as always), a setting that trades less: it is there to show what the order
count costs, not chosen on returns.

Each (strategy, N) is timed ``--repeats`` times (``--large-repeats`` at N >= 64, to keep
N = 256 affordable), interleaved, each run in a fresh interpreter (a run late in a
long-lived process was measured up to 35% slower than the same run early in it, which
made the last, largest N look dearer per asset-bar), and the best CPU time of the
process (``time.process_time``) of ``cerebro.run()`` is kept (loading the data, training
the learner and building the feeds are not timed).
Printed: µs per asset-bar (CPU seconds / (N x 1,300)), orders per asset-bar, the ratios
MetaStrategy / SMA and MetaStrategy / empty, and the load averages before and after;
the table is also written as Markdown to ``--out``.

    python benchmarks/bench_universe_scaling.py [--repeats R] [--large-repeats R]
        [--sizes 1,4,16,64,256] [--out benchmarks/results/universe_scaling.md]
    python benchmarks/bench_universe_scaling.py --profile 64 [--sort cumulative] [--top 60]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import torch

from metabt import MetaLearner, MetaStrategy, SignalSizer
from metabt.config.defaults import DEMO
from metabt.data import feed, load_ohlcv
from metabt.experiments.backtest import Costs
from metabt.features import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn.kernels.compiled import warm_up
from metabt.learn.models import MLP

BARS = 1300
FIRST_DAY = "2012-01-01"
UNIVERSE = Path(__file__).resolve().parents[2] / "shared" / "universe"
CASH_PER_ASSET = 100_000.0


class Empty(bt.Strategy):
    """No indicator, no order: backtrader's own cost per bar."""

    def next(self) -> None:
        pass


class OrdersOnly(bt.Strategy):
    """No computation: on each asset-bar, with probability ``rate`` (seeded), an order of
    one to five shares, bought or sold at random: the cost of backtrader's order path
    alone, at about MetaStrategy's order rate."""

    params = (("rate", 0.7), ("seed", 0))

    def __init__(self) -> None:
        self.rng = np.random.default_rng(self.p.seed)

    def next(self) -> None:
        draws = self.rng.random(len(self.datas)).tolist()
        sizes = self.rng.integers(1, 6, len(self.datas)).tolist()
        for d, u, size in zip(self.datas, draws, sizes):
            if u < self.p.rate:
                if u < self.p.rate / 2:
                    self.buy(data=d, size=size)
                else:
                    self.sell(data=d, size=size)


class SmaCrossReference(bt.Strategy):
    """backtrader's quickstart SMA crossover (10/30), on every data: buy/close one share."""

    params = (("fast", 10), ("slow", 30))

    def __init__(self) -> None:
        self.crossovers = [
            bt.indicators.CrossOver(
                bt.indicators.SMA(d, period=self.p.fast), bt.indicators.SMA(d, period=self.p.slow)
            )
            for d in self.datas
        ]

    def next(self) -> None:
        for d, cross in zip(self.datas, self.crossovers):
            position = self.getposition(d)
            if not position and cross[0] > 0:
                self.buy(data=d)
            elif position and cross[0] < 0:
                self.close(data=d)


def load_universe(root: Path) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The real assets: (the 1,300-bar windows from 2012 on, the bars before 2012).

    Every window has the same dates (the first ``BARS`` trading days of the universe's
    calendar from ``FIRST_DAY``); an asset lacking any of them is skipped.
    """
    frames = {p.name.split(".")[0]: load_ohlcv(p) for p in sorted(root.glob("*/*.csv.gz"))}
    if not frames:
        raise SystemExit(f"no universe at {root}: see ../shared/universe/README.md")
    days = sorted({t for f in frames.values() for t in f.index[f.index >= FIRST_DAY]})
    calendar = pd.DatetimeIndex(days[:BARS])
    windows, history = {}, {}
    for name, frame in frames.items():
        if calendar.isin(frame.index).all():
            windows[name] = frame.loc[calendar]
            history[name] = frame.loc[frame.index < FIRST_DAY]
    skipped = sorted(set(frames) - set(windows))
    print(
        f"universe: {len(frames)} assets, {len(windows)} with all {BARS} bars "
        f"{calendar[0].date()} to {calendar[-1].date()}"
        + (f" (skipped {', '.join(skipped)})" if skipped else "")
    )
    return windows, history


def perturbed(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A copy of ``frame`` with scaled, re-noised log returns (same dates and bar shapes)."""
    rng = np.random.default_rng(seed)
    close = frame["close"].to_numpy()
    returns = np.diff(np.log(close))
    factor = rng.uniform(0.7, 1.3)
    returns = factor * returns + rng.normal(0.0, 0.1 * returns.std(), len(returns))
    new_close = close[0] * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    ratio = new_close / close
    out = frame.copy()
    for col in ("open", "high", "low", "close"):
        out[col] = frame[col].to_numpy() * ratio
    out["volume"] = np.round(frame["volume"].to_numpy() * np.exp(rng.normal(0, 0.1, len(out))))
    return load_ohlcv(out)


def universe_frames(windows: dict[str, pd.DataFrame], n: int) -> dict[str, pd.DataFrame]:
    """N frames: the real assets first, then perturbed copies of them, cycling."""
    names = list(windows)
    out = {}
    for j in range(n):
        base = names[j % len(names)]
        if j < len(names):
            out[base] = windows[base]
        else:
            out[f"{base}~{j // len(names)}"] = perturbed(windows[base], seed=j)
    return out


def train_learner(history: dict[str, pd.DataFrame]) -> MetaLearner:
    """A MAML MLP 2x32 trained for a few outer steps (any θ costs the same per bar)."""
    spec = FeatureSpec()
    frames = {k: v.loc["2008":] for k, v in list(history.items())[:8]}
    tasks = TaskSampler.from_frames(frames, spec, support=60, query=20)
    learner = MetaLearner(
        MLP(spec.n_features, (32, 32), seed=0),
        algorithm="maml",
        inner_steps=5,
        feature_spec=spec,
        seed=0,
    )
    learner.fit(tasks, 10, progress=False)
    return learner


def make_run(
    strategy: type[bt.Strategy],
    frames: dict[str, pd.DataFrame],
    sizer: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Callable[[], tuple[float, bt.Strategy]]:
    """A function that builds a Cerebro on fresh feeds and returns (CPU s of run(), strategy).

    ``sizer``: the SignalSizer's params for MetaStrategy (default: the demo's).
    """
    sizer_kwargs = dict(DEMO.sizer) if sizer is None else sizer

    def run() -> tuple[float, bt.Strategy]:
        cerebro = bt.Cerebro(stdstats=False)
        for name, frame in frames.items():
            cerebro.adddata(feed(frame, name=name))
        cerebro.broker.setcash(CASH_PER_ASSET * len(frames))
        Costs().apply(cerebro.broker)
        cerebro.addstrategy(strategy, **kwargs)
        if issubclass(strategy, MetaStrategy):
            cerebro.addsizer(SignalSizer, **sizer_kwargs)
        tic = time.process_time()
        strat = cerebro.run()[0]
        return time.process_time() - tic, strat

    return run


#: The strategies timed: name -> (class, whether it needs the learner, sizer params).
STRATEGIES: dict[str, tuple[type[bt.Strategy], bool, dict[str, Any] | None]] = {
    "empty": (Empty, False, None),
    "sma": (SmaCrossReference, False, None),
    "orders": (OrdersOnly, False, None),
    "meta": (MetaStrategy, True, None),
    "meta_unsmoothed": (MetaStrategy, True, None),
    "meta_wide": (MetaStrategy, True, {**dict(DEMO.sizer), "deadband": 0.3}),
}
#: MetaStrategy's smoothing per entry: the run's default, and none (the before/after).
SMOOTH = {"meta": DEMO.smooth, "meta_unsmoothed": 1, "meta_wide": 1}


def child(name: str, n: int, universe: str) -> dict[str, float]:
    """One timed run of strategy ``name`` on N feeds, in this (fresh) interpreter, after an
    untimed warm-up run on 300 bars of (at most) 4 of them; MetaStrategy's compiled inner
    loop is loaded first (its one-off time is returned as ``load``, not in ``seconds``)."""
    cls, needs_learner, sizer = STRATEGIES[name]
    load = warm_up() if needs_learner else 0.0
    windows, history = load_universe(Path(universe))
    kwargs: dict[str, Any] = {}
    if needs_learner:
        kwargs = {
            "learner": train_learner(history),
            "adapt_every": 5,
            "support": 60,
            "smooth": SMOOTH[name],
        }
    frames = universe_frames(windows, n)
    warm = {k: f.iloc[:300] for k, f in list(frames.items())[:4]}
    make_run(cls, warm, sizer=sizer, **kwargs)()  # first calls (imports, caches): not timed
    seconds, strat = make_run(cls, frames, sizer=sizer, **kwargs)()
    return {"seconds": seconds, "orders": len(strat.broker.orders), "load": load}


def measure(name: str, n: int, universe: str) -> tuple[float, int, float]:
    """(CPU seconds of cerebro.run(), orders, seconds to load the compiled loop) of one
    run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", name, "--n", str(n), "--universe", universe],
        check=True,
        capture_output=True,
        text=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return float(out["seconds"]), int(out["orders"]), float(out["load"])


def load_text(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,16,64,256")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (strategy, N < 64)")
    parser.add_argument("--large-repeats", type=int, default=1, help="runs per (strategy, N >= 64)")
    parser.add_argument("--out", default="benchmarks/results/universe_scaling.md")
    parser.add_argument("--universe", default=str(UNIVERSE))
    parser.add_argument("--profile", type=int, default=0, help="cProfile MetaStrategy at this N")
    parser.add_argument("--sort", default="tottime", help="--profile: pstats sort key")
    parser.add_argument("--top", type=int, default=30, help="--profile: rows printed")
    parser.add_argument("--child", choices=list(STRATEGIES), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)  # the child's N
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        with contextlib.redirect_stdout(sys.stderr):  # stdout: the result line only
            result = child(args.child, args.n, args.universe)
        print(json.dumps(result))
        return
    load_before = os.getloadavg()
    windows, history = load_universe(Path(args.universe))

    if args.profile:
        learner = train_learner(history)
        meta_kwargs = {"learner": learner, "adapt_every": 5, "support": 60}
        run = make_run(MetaStrategy, universe_frames(windows, args.profile), **meta_kwargs)
        run()  # warm caches
        profiler = cProfile.Profile()
        profiler.enable()
        seconds, _ = run()
        profiler.disable()
        print(f"MetaStrategy, N={args.profile}: {seconds:.2f} s CPU under cProfile")
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    names = list(STRATEGIES)
    best = {name: {n: float("inf") for n in sizes} for name in names}
    orders = {name: {n: 0 for n in sizes} for name in names}
    repeats = {n: args.repeats if n < 64 else args.large_repeats for n in sizes}
    loads: list[float] = []  # one-off loads of the compiled inner loop (MetaStrategy runs)
    wall = time.perf_counter()
    for r in range(max(repeats.values())):
        for n in sizes:  # interleaved: load changes hit every size and strategy alike
            if r >= repeats[n]:
                continue
            for name in names:
                seconds, count, load = measure(name, n, args.universe)
                if STRATEGIES[name][1]:
                    loads.append(load)
                best[name][n] = min(best[name][n], seconds)
                orders[name][n] = count
            print(
                f"  repeat {r + 1}, N={n}: "
                + ", ".join(f"{k} {best[k][n]:.2f} s" for k in names)
                + f" ({load_text(os.getloadavg())})",
                flush=True,
            )
    wall = time.perf_counter() - wall
    load_after = os.getloadavg()

    def per(name: str, n: int) -> float:
        return best[name][n] / (n * BARS) * 1e6

    header = (
        "| N assets | runs | empty µs/asset-bar | SMA µs/asset-bar | MetaStrategy µs/asset-bar "
        "| Meta / SMA | Meta / empty | orders/asset-bar SMA | orders/asset-bar Meta "
        "| Meta, deadband 0.3: µs/asset-bar | its / SMA | its orders/asset-bar "
        "| orders only: µs/asset-bar | its / SMA | its orders/asset-bar "
        "| Meta unsmoothed: µs/asset-bar | its / SMA | its orders/asset-bar |"
    )
    rows = [header, "|" + "---|" * 18]
    for n in sizes:
        rows.append(
            f"| {n} | {repeats[n]} | {per('empty', n):.1f} | {per('sma', n):.1f} "
            f"| {per('meta', n):.1f} | {best['meta'][n] / best['sma'][n]:.2f}x "
            f"| {best['meta'][n] / best['empty'][n]:.2f}x "
            f"| {orders['sma'][n] / (n * BARS):.3f} | {orders['meta'][n] / (n * BARS):.3f} "
            f"| {per('meta_wide', n):.1f} | {best['meta_wide'][n] / best['sma'][n]:.2f}x "
            f"| {orders['meta_wide'][n] / (n * BARS):.3f} "
            f"| {per('orders', n):.1f} | {best['orders'][n] / best['sma'][n]:.2f}x "
            f"| {orders['orders'][n] / (n * BARS):.3f} "
            f"| {per('meta_unsmoothed', n):.1f} "
            f"| {best['meta_unsmoothed'][n] / best['sma'][n]:.2f}x "
            f"| {orders['meta_unsmoothed'][n] / (n * BARS):.3f} |"
        )
    command = "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 " + " ".join(
        [".venv/bin/python", *sys.argv]
    )
    n_real = min(len(windows), max(sizes))
    notes = [
        f"{BARS} daily bars per asset ({next(iter(windows.values())).index[0].date()} to "
        f"{next(iter(windows.values())).index[-1].date()}); the {len(windows)} real assets of "
        f"../shared/universe first ({n_real} used at most), perturbed copies beyond them.",
        "Best CPU time (time.process_time) of cerebro.run() over the runs shown, interleaved, "
        "each run in a fresh interpreter; "
        f"best of {args.repeats} below N = 64, of {args.large_repeats} at N >= 64. "
        "1 torch/BLAS thread, default costs, $100,000 cash per asset. MetaStrategy's inner "
        "loop runs compiled (numba); each of its interpreters loaded it before timing, in "
        f"{min(loads, default=0):.2f} to {max(loads, default=0):.2f} s (numba's import and "
        "the cached machine code), once per process and not in the times above.",
        "MetaStrategy: MAML MLP 2x32, inner_steps 5, adapt_every 5, support 60, "
        f"smooth {DEMO.smooth}, "
        f"SignalSizer({', '.join(f'{k}={v}' for k, v in DEMO.sizer.items())}); the "
        "deadband 0.3 columns: smooth 1 with deadband=0.3; unsmoothed: smooth 1. "
        "SMA: 10/30 CrossOver per data, buy/close one share. Orders only: no computation, "
        "an order of 1-5 shares on a seeded 70% of asset-bars (about MetaStrategy's rate): "
        "backtrader's order path alone.",
        f"Load average (1, 5, 15 min): before {load_text(load_before)}; after "
        f"{load_text(load_after)}; wall time {wall:.0f} s; torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs shared with other jobs.",
    ]
    table = "\n".join(rows)
    print()
    print(table)
    print()
    print("\n".join(notes))
    text = (
        "# Universe scaling: µs per asset-bar, MetaStrategy vs SMA crossover vs empty\n\n"
        + table
        + "\n\n"
        + "\n\n".join(notes)
        + f"\n\nCommand: `{command}`\n"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
