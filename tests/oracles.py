"""Reference values computed straight from the library the project builds on."""

from __future__ import annotations

import pandas as pd
import quantstats as qs


def quantstats_metrics(r: pd.Series, periods: int) -> dict[str, float]:
    """quantstats' own value of each metric metabt reports, on simple per-bar returns."""
    return {
        "sharpe": qs.stats.sharpe(r, periods=periods),
        "sortino": qs.stats.sortino(r, periods=periods),
        "cagr": qs.stats.cagr(r, periods=periods),
        "max_drawdown": qs.stats.max_drawdown(r),
        "volatility": qs.stats.volatility(r, periods=periods),
        "calmar": qs.stats.calmar(r, periods=periods),
        "total_return": qs.stats.comp(r),
        "win_rate": qs.stats.win_rate(r),
    }
