"""Recipe: a cross-sectional book over the four sample assets with CrossSectionalStrategy.

What it shows, in the order you would write it in your own code:

1. meta-train a small MLP with MAML on pooled tasks (``PooledTaskSampler``: every asset over
   a window of dates), strictly before the test period;
2. a plain ``bt.Cerebro`` with one feed per asset, ``CrossSectionalStrategy`` adapting one
   model on all assets' recent realised bars (``pooled_adaptation=True``, as it was trained)
   and holding a ranked, dollar-neutral book with a cap per name, ``SignalSizer`` (it turns
   weights into shares), costs on, and the ``QuantStatsAnalyzer`` and ``PortfolioAnalyzer``
   measuring the test period only;
3. a short result: the book's Sharpe, CAGR and drawdown, and what each asset traded.

Run it from the repository root (about 20 s on one core with the defaults)::

    python strategies/meta_universe.py [--steps 100] [--start 2008-01-01] [--end 2009-12-31]
        [--book dollar_neutral|long_only] [--cross-section rank|zscore]

Copy the parts you need: nothing here is private to metabt.
"""

from __future__ import annotations

import argparse
from typing import Any

import backtrader as bt
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from metabt import (
    CrossSectionalStrategy,
    MetaLearner,
    PooledTaskSampler,
    PortfolioAnalyzer,
    QuantStatsAnalyzer,
    SignalSizer,
)
from metabt.data import feed, load_ohlcv, sample_files
from metabt.features import FeatureSpec
from metabt.learn.models import MLP

SUPPORT = 60  # dates of realised bars per adaptation; training tasks use the same


def warmup_frame(frame: pd.DataFrame, start: str, end: str, bars: int) -> pd.DataFrame:
    """``frame`` from ``bars`` bars before ``start`` through ``end`` (the warm-up feeds
    the features and the first support window; no order is placed before ``start``)."""
    first = max(int(frame.index.searchsorted(pd.Timestamp(start))) - bars, 0)
    return frame.iloc[first:].loc[:end]


def train(frames: dict[str, pd.DataFrame], end: str, steps: int, seed: int) -> MetaLearner:
    """Meta-train MAML on pooled tasks realised before ``end``: a task's support is every
    asset's rows over ``SUPPORT`` dates, as pooled adaptation sees them in the backtest."""
    spec = FeatureSpec(horizon=5)
    tasks = PooledTaskSampler.from_frames(
        frames, spec, support=SUPPORT, query=20, support_rows=SUPPORT * len(frames), end=end
    )
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
    """Train, then backtest the cross-sectional book; print and return the result.

    Returns:
        dict: ``assets`` (names), ``traded_by_asset`` (filled notional per asset, test
        period), ``weights`` (target weights of every rebalance, date x asset),
        ``adaptations`` (rows of the adaptation log), ``metrics`` (quantstats metrics).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="meta-training steps")
    parser.add_argument("--start", default="2008-01-01", help="first trading date")
    parser.add_argument("--end", default="2009-12-31", help="last date of the backtest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--book", default="dollar_neutral", choices=["dollar_neutral", "long_only"])
    parser.add_argument("--cross-section", default="rank", choices=["rank", "zscore"])
    parser.add_argument("--rebalance-every", type=int, default=5, help="bars between rebalances")
    parser.add_argument("--commission", type=float, default=5.0, help="basis points per fill")
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

    # 1. meta-train strictly before the test period (a MetaLearner works as is; saving and
    #    loading a checkpoint is shown in meta_single_asset.py)
    learner = train(frames, args.start, args.steps, args.seed)

    # 2. a plain Cerebro: every asset, the cross-sectional book, sizer, costs
    spec = learner.feature_spec
    warmup = spec.lookback + SUPPORT + 2 * spec.horizon + 10
    cerebro = bt.Cerebro(stdstats=False)
    for name, frame in frames.items():
        cerebro.adddata(feed(warmup_frame(frame, args.start, args.end, warmup), name=name))
    cerebro.addstrategy(
        CrossSectionalStrategy,
        learner=learner,
        support=SUPPORT,
        adapt_every=5,
        pooled_adaptation=True,
        cross_section=args.cross_section,
        book=args.book,
        name_cap=0.35,
        rebalance_every=args.rebalance_every,
        trade_start=args.start,
    )
    cerebro.addsizer(SignalSizer)
    cerebro.addanalyzer(QuantStatsAnalyzer, _name="qs", start=args.start)
    cerebro.addanalyzer(PortfolioAnalyzer, _name="book", start=args.start)
    cerebro.broker.setcommission(commission=args.commission / 1e4)
    cerebro.broker.set_slippage_perc(0.0002, slip_open=True, slip_match=True, slip_out=True)
    strat = cerebro.run()[0]

    # 3. the result
    qs = strat.analyzers.qs.get_analysis()
    metrics, returns = qs["metrics"], qs["returns"]
    traded = strat.analyzers.book.get_analysis()["traded_by_data"]
    value = cerebro.broker.startingcash
    print(
        f"CrossSectionalStrategy ({args.cross_section}, {args.book}) on {', '.join(frames)}, "
        f"{returns.index[0].date()} to {returns.index[-1].date()} ({len(returns)} bars), "
        f"θ meta-trained {args.steps} steps before {args.start}"
    )
    print(
        f"sharpe {metrics['sharpe']:.2f}, cagr {metrics['cagr']:.2%}, "
        f"max drawdown {metrics['max_drawdown']:.2%}; traded (x starting cash): "
        + ", ".join(f"{name} {traded.get(name, 0.0) / value:.1f}" for name in frames)
    )
    return {
        "assets": list(frames),
        "traded_by_asset": {name: traded.get(name, 0.0) for name in frames},
        "weights": strat.weights_log(),
        "adaptations": len(strat.adaptation_log()),
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
    }


if __name__ == "__main__":
    main()
