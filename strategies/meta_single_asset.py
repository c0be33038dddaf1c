"""Recipe: MetaStrategy on one asset, from a checkpoint meta-trained right here.

What it shows, in the order you would write it in your own code:

1. meta-train a small MLP with MAML on rolling support/query tasks of the sample assets,
   strictly before the test period, and save the checkpoint (``MetaLearner.save``);
2. a plain ``bt.Cerebro`` with one feed (a warm-up before the test period for the features
   and the first support window), ``MetaStrategy`` loading that checkpoint, ``SignalSizer``,
   costs on (commission and slippage), and the ``QuantStatsAnalyzer`` and
   ``PortfolioAnalyzer`` measuring the test period only;
3. a short result: adaptations, fills, Sharpe, CAGR, drawdown (``--report`` also writes a
   quantstats tearsheet).

Run it from the repository root (about 15 s on one core with the defaults)::

    python strategies/meta_single_asset.py [--asset IBM] [--steps 100] [--start 2008-01-01]
        [--end 2009-12-31] [--checkpoint theta.pt] [--report reports/meta_ibm.html]

The defaults keep it quick; ``--steps 600 --end 2013-03-01`` is closer to ``make demo``. Copy
the parts you need: nothing here is private to metabt.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from metabt import MetaLearner, MetaStrategy, PortfolioAnalyzer, QuantStatsAnalyzer, SignalSizer
from metabt.data import feed, load_ohlcv, sample_files
from metabt.features import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn.models import MLP

SUPPORT = 60  # realised (x, y) pairs per adaptation, bars; training tasks use the same


def warmup_frame(frame: pd.DataFrame, start: str, end: str, bars: int) -> pd.DataFrame:
    """``frame`` from ``bars`` bars before ``start`` through ``end`` (the warm-up feeds
    the features and the first support window; no order is placed before ``start``)."""
    first = max(int(frame.index.searchsorted(pd.Timestamp(start))) - bars, 0)
    return frame.iloc[first:].loc[:end]


def train(frames: dict[str, pd.DataFrame], end: str, steps: int, seed: int) -> MetaLearner:
    """Meta-train MAML on every asset's tasks whose labels are realised before ``end``."""
    spec = FeatureSpec(horizon=5)  # causal features, 5-bar forward-return label
    tasks = TaskSampler.from_frames(frames, spec, support=SUPPORT, query=20, end=end)
    learner = MetaLearner(
        MLP(spec.n_features, seed=seed),
        algorithm="maml",
        inner_lr=0.02,
        inner_steps=5,
        feature_spec=spec,
        seed=seed,
    )
    learner.fit(tasks, steps=steps, progress=False)
    return learner


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, save, backtest one asset; print and return the result.

    Returns:
        dict: ``asset``, ``checkpoint`` (path), ``adaptations`` (rows of the adaptation
        log), ``fills`` (filled orders in the test period), ``traded`` (filled notional),
        ``metrics`` (quantstats metrics of the test period: ``sharpe``, ``cagr``, ...).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asset", default="IBM", help="sample asset to trade (default IBM)")
    parser.add_argument("--steps", type=int, default=100, help="meta-training steps")
    parser.add_argument("--start", default="2008-01-01", help="first trading date")
    parser.add_argument("--end", default="2009-12-31", help="last date of the backtest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapt-every", type=int, default=5, help="bars between adaptations")
    parser.add_argument("--commission", type=float, default=5.0, help="basis points per fill")
    parser.add_argument("--checkpoint", help="where to save θ (default: a temporary file)")
    parser.add_argument("--report", help="write a quantstats tearsheet (HTML) here")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    args = parser.parse_args(argv)
    # the models are tiny: one thread is fastest, and far faster on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(limits=args.threads):
            return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe proper, with the options of :func:`main`."""

    frames = {path.stem: load_ohlcv(path) for path in sample_files()}
    if args.asset not in frames:
        raise SystemExit(f"--asset must be one of {', '.join(frames)}, got {args.asset!r}")

    # 1. meta-train strictly before the test period, save the checkpoint
    learner = train(frames, args.start, args.steps, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint or Path(tmp) / "theta.pt")
        learner.save(checkpoint)

        # 2. a plain Cerebro: one feed, MetaStrategy from the checkpoint, sizer, costs
        spec = learner.feature_spec
        warmup = spec.lookback + SUPPORT + 2 * spec.horizon + 10
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(
            feed(warmup_frame(frames[args.asset], args.start, args.end, warmup), name=args.asset)
        )
        cerebro.addstrategy(
            MetaStrategy,
            learner=str(checkpoint),
            adapt_every=args.adapt_every,
            support=SUPPORT,
            trade_start=args.start,
        )
        cerebro.addsizer(SignalSizer, target_vol=0.10, max_leverage=1.0, deadband=0.05)
        cerebro.addanalyzer(QuantStatsAnalyzer, _name="qs", start=args.start)
        cerebro.addanalyzer(PortfolioAnalyzer, _name="book", start=args.start)
        cerebro.addanalyzer(bt.analyzers.Transactions, _name="fills")
        cerebro.broker.setcommission(commission=args.commission / 1e4)
        cerebro.broker.set_slippage_perc(0.0002, slip_open=True, slip_match=True, slip_out=True)
        strat = cerebro.run()[0]

    # 3. the result
    qs = strat.analyzers.qs.get_analysis()
    metrics = qs["metrics"]
    fills = sum(len(day) for day in strat.analyzers.fills.get_analysis().values())
    log = strat.adaptation_log()
    returns = qs["returns"]
    print(
        f"MetaStrategy on {args.asset}, {returns.index[0].date()} to {returns.index[-1].date()} "
        f"({len(returns)} bars), θ meta-trained {args.steps} steps before {args.start}"
    )
    print(
        f"{len(log)} adaptations (support MSE {log['loss_before'].mean():.3f} -> "
        f"{log['loss_after'].mean():.3f}), {fills} fills; sharpe {metrics['sharpe']:.2f}, "
        f"cagr {metrics['cagr']:.2%}, max drawdown {metrics['max_drawdown']:.2%}"
    )
    if args.report:
        print(f"tearsheet: {strat.analyzers.qs.tearsheet(args.report)}")
    return {
        "asset": args.asset,
        "checkpoint": None if args.checkpoint is None else checkpoint,
        "adaptations": len(log),
        "fills": fills,
        "traded": strat.analyzers.book.get_analysis()["traded"],
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
    }


if __name__ == "__main__":
    main()
