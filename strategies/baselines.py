"""Recipe: the baselines every MetaStrategy result is shown beside, in one plain Cerebro each.

What it shows: ``BuyAndHold`` (equal weight, bought once), ``SmaCross`` (fast/slow moving
averages, long or flat) and ``RollingRidge`` (closed-form ridge refitted every few bars on the
last realised bars: the classical adaptive model, no training needed) on the same feeds,
period, sizer and costs, measured over the same test period by the ``QuantStatsAnalyzer``.
Put your own strategy in the same loop to see it beside them; ``metabt compare`` does this
for the whole roster, with significance tests.

Run it from the repository root (about 15 s on one core with the defaults)::

    python strategies/baselines.py [--assets AAPL MSFT] [--start 2008-01-01] [--end 2009-12-31]
        [--fast 50] [--slow 200]

Copy the parts you need: nothing here is private to metabt.
"""

from __future__ import annotations

import argparse
from typing import Any

import backtrader as bt
import pandas as pd
from threadpoolctl import threadpool_limits

from metabt import PortfolioAnalyzer, QuantStatsAnalyzer, SignalSizer
from metabt.data import feed, load_ohlcv, sample_files
from metabt.strategies.baselines import BuyAndHold, RollingRidge, SmaCross


def warmup_frame(frame: pd.DataFrame, start: str, end: str, bars: int) -> pd.DataFrame:
    """``frame`` from ``bars`` bars before ``start`` through ``end`` (the warm-up feeds the
    moving averages and features; no order is placed before ``start``)."""
    first = max(int(frame.index.searchsorted(pd.Timestamp(start))) - bars, 0)
    return frame.iloc[first:].loc[:end]


def backtest(
    frames: dict[str, pd.DataFrame],
    strategy: type[bt.Strategy],
    args: argparse.Namespace,
    **kw: Any,
) -> dict[str, Any]:
    """One strategy on every frame, with the same sizer and costs; its test-period results."""
    cerebro = bt.Cerebro(stdstats=False)
    for name, frame in frames.items():
        cerebro.adddata(feed(warmup_frame(frame, args.start, args.end, args.slow + 50), name=name))
    cerebro.addstrategy(strategy, trade_start=args.start, **kw)
    cerebro.addsizer(SignalSizer, target_vol=0.10, max_leverage=1.0, deadband=0.05)
    cerebro.addanalyzer(QuantStatsAnalyzer, _name="qs", start=args.start)
    cerebro.addanalyzer(PortfolioAnalyzer, _name="book", start=args.start)
    cerebro.broker.setcommission(commission=args.commission / 1e4)
    cerebro.broker.set_slippage_perc(0.0002, slip_open=True, slip_match=True, slip_out=True)
    strat = cerebro.run()[0]
    qs = strat.analyzers.qs.get_analysis()
    return {
        **{k: float(qs["metrics"][k]) for k in ("sharpe", "cagr", "max_drawdown", "volatility")},
        "total_return": float((1 + qs["returns"]).prod() - 1),
        "traded": strat.analyzers.book.get_analysis()["traded"] / cerebro.broker.startingcash,
        "bars": len(qs["returns"]),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Backtest the baselines; print and return one row of results per strategy.

    Returns:
        pd.DataFrame: index ``strategy`` (BuyAndHold, SmaCross, RollingRidge); columns
        sharpe, cagr, max_drawdown, volatility, total_return, traded (filled notional over
        starting cash), bars (test-period bars).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", nargs="+", help="sample assets (default: all four)")
    parser.add_argument("--start", default="2008-01-01", help="first trading date")
    parser.add_argument("--end", default="2009-12-31", help="last date of the backtest")
    parser.add_argument("--fast", type=int, default=50, help="SmaCross fast period, bars")
    parser.add_argument("--slow", type=int, default=200, help="SmaCross slow period, bars")
    parser.add_argument("--commission", type=float, default=5.0, help="basis points per fill")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (RollingRidge)")
    args = parser.parse_args(argv)
    with threadpool_limits(limits=args.threads):  # tiny matrices: one thread is fastest
        return run(args)


def run(args: argparse.Namespace) -> pd.DataFrame:
    """The recipe proper, with the options of :func:`main`."""
    frames = {path.stem: load_ohlcv(path) for path in sample_files()}
    unknown = set(args.assets or ()) - set(frames)
    if unknown:
        raise SystemExit(f"--assets must be among {', '.join(frames)}, got {sorted(unknown)}")
    frames = {name: frames[name] for name in args.assets or frames}

    rows = {
        "BuyAndHold": backtest(frames, BuyAndHold, args),
        "SmaCross": backtest(frames, SmaCross, args, fast=args.fast, slow=args.slow),
        "RollingRidge": backtest(frames, RollingRidge, args, alpha=100.0, support=60),
    }
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("strategy")
    print(
        f"baselines on {', '.join(frames)}, {args.start} to {args.end}; "
        f"commission {args.commission:g} bps, slippage 2 bps"
    )
    print(table.round(3).to_string())
    return table


if __name__ == "__main__":
    main()
