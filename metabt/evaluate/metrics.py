"""Performance numbers of metabt runs: quantstats metrics, the probabilistic Sharpe, per-asset
results and the equal-weight basket.

Numbers only: drawing and writing files live in :mod:`metabt.evaluate.report`; inference on
Sharpe ratios in :mod:`metabt.evaluate.significance`; information coefficients in
:mod:`metabt.evaluate.ic`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from metabt._stats import annual_turnover
from metabt._util import quiet_third_party
from metabt.errors import ConfigError, DataError
from metabt.evaluate.ic import pair_ic

__all__ = [
    "ASSET_COLUMNS",
    "COST_COLUMNS",
    "PERIODS_PER_YEAR",
    "asset_results",
    "basket_returns",
    "check_periods",
    "check_returns",
    "compute_metrics",
    "metrics_table",
    "probabilistic_sharpe",
]

PERIODS_PER_YEAR = 252  # daily bars

#: The cost columns of a backtest (``metabt.evaluate.costs.CostReport.columns`` without
#: ``net_sharpe``, which is ``sharpe``); :func:`metrics_table` puts them after every other
#: column.
COST_COLUMNS: tuple[str, ...] = (
    "gross_sharpe",
    "cost_drag",
    "break_even_bps",
    "holding_bars",
    "long_share",
    "alpha",
    "alpha_t",
    "beta",
    "beta_t",
)


def check_returns(returns: object, name: str) -> pd.Series:
    """``returns`` as a float64 Series, or DataError naming the problem and the fix."""
    if not isinstance(returns, pd.Series):
        raise DataError(
            f"{name} must be a pandas Series of simple per-bar returns, got "
            f"{type(returns).__name__}; pass e.g. analysis['returns']"
        )
    try:
        values = returns.astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must hold numbers (simple per-bar returns): {exc}") from exc
    if not isinstance(values.index, pd.DatetimeIndex):
        raise DataError(
            f"{name} must have a DatetimeIndex (the dates of the bars), got "
            f"{type(values.index).__name__}; set one, e.g. series.index = pd.to_datetime(dates)"
        )
    if values.index.tz is not None:  # quantstats wants tz-naive dates: keep the wall time
        values = values.tz_localize(None)
    if not np.isfinite(values.to_numpy()).any():
        raise DataError(
            f"{name} has no finite value ({len(values)} bars); the backtest recorded no "
            "returns: check the start/end dates"
        )
    return values


def check_periods(periods_per_year: object) -> int:
    """``periods_per_year`` as an int, or ConfigError naming the problem and the fix."""
    if (
        isinstance(periods_per_year, bool)
        or not isinstance(periods_per_year, numbers.Integral)
        or periods_per_year < 1
    ):
        raise ConfigError(
            f"periods_per_year must be a positive integer (bars per year, e.g. 252 for "
            f"daily bars), got {periods_per_year!r}"
        )
    return int(periods_per_year)


def compute_metrics(
    returns: pd.Series, *, periods_per_year: int = 252, turnover: float | None = None
) -> dict[str, float]:
    """Performance metrics of a return series, every one computed by ``quantstats.stats``.

    ``periods`` is passed explicitly to every annualised metric (quantstats defaults to
    252 otherwise). In quantstats 0.0.86 ``cagr`` counts years as
    ``returns.count() / periods_per_year`` (bars, not calendar days), and ``calmar`` is
    that CAGR over |max drawdown|. Degenerate series give quantstats' own values without
    warnings: e.g. all-zero returns give sharpe NaN and win_rate 0.0, a constant positive
    series gives sharpe inf.

    Args:
        returns (pd.Series): simple, non-cumulative, per-bar returns (fraction, 0.01 = 1%),
            float, DatetimeIndex of the bar dates (a tz-aware index is made tz-naive,
            keeping wall times). NaN bars are skipped by quantstats.
        periods_per_year (int): bars per year used to annualise. Default 252.
        turnover (float | None): the strategy's turnover, computed by the caller (e.g.
            traded value / mean equity per year, fraction); copied into the result as
            ``turnover`` when given. Default None.

    Returns:
        dict[str, float]: ``sharpe``, ``sortino`` (annualised ratios, rf = 0), ``cagr``
        (annual fraction), ``max_drawdown`` (fraction, <= 0), ``volatility`` (annualised
        fraction), ``calmar`` (ratio), ``total_return`` (compounded fraction),
        ``win_rate`` (fraction of non-zero bars that are positive), and ``turnover`` if
        given.

    Raises:
        DataError: ``returns`` is not a Series of numbers with a DatetimeIndex, or has no
            finite value.
        ConfigError: ``periods_per_year`` is not a positive integer; ``turnover`` is not a
            finite number.

    References:
        quantstats.stats (https://github.com/ranaroussi/quantstats).
    """
    from quantstats import stats as qs_stats  # heavy: imported only where used

    r = check_returns(returns, "returns")
    periods = check_periods(periods_per_year)
    if turnover is not None and (
        isinstance(turnover, bool)
        or not (isinstance(turnover, numbers.Real) and math.isfinite(turnover))
    ):
        raise ConfigError(f"turnover must be a finite number (fraction), got {turnover!r}")
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # all-zero returns: quantstats warns, then returns win_rate 0.0
        warnings.filterwarnings("ignore", message="No non-zero returns", category=UserWarning)
        metrics = {
            "sharpe": qs_stats.sharpe(r, periods=periods),
            "sortino": qs_stats.sortino(r, periods=periods),
            "cagr": qs_stats.cagr(r, periods=periods),
            "max_drawdown": qs_stats.max_drawdown(r),
            "volatility": qs_stats.volatility(r, periods=periods),
            "calmar": qs_stats.calmar(r, periods=periods),
            "total_return": qs_stats.comp(r),
            "win_rate": qs_stats.win_rate(r),
        }
    out = {key: float(value) for key, value in metrics.items()}
    if turnover is not None:
        out["turnover"] = float(turnover)
    return out


def probabilistic_sharpe(returns: pd.Series, *, periods_per_year: int = 252) -> float:
    """Probability that the true Sharpe ratio is above 0, given skew, kurtosis and length.

    Computed by ``quantstats.stats.probabilistic_sharpe_ratio``.

    Args:
        returns: simple per-bar returns (tz-naive DatetimeIndex).
        periods_per_year: bars per year. Default 252.

    Returns:
        A probability in [0, 1]; NaN for a constant series.

    References:
        Bailey and López de Prado 2012, "The Sharpe Ratio Efficient Frontier".
    """
    r = check_returns(returns, "returns")
    periods = check_periods(periods_per_year)
    with quiet_third_party():
        from quantstats import stats as qs_stats

        return float(qs_stats.probabilistic_sharpe_ratio(r, periods=periods))


def metrics_table(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per strategy, one column per metric.

    Args:
        rows (Mapping[str, Mapping[str, float]]): strategy name -> metrics (e.g. from
            :func:`compute_metrics`). Columns follow the first row's key order, except the
            cost columns (:data:`COST_COLUMNS`), which come last in their own order; a
            metric a strategy lacks is NaN.

    Returns:
        pd.DataFrame: (n_strategies, n_metrics) float64, index named ``strategy`` in the
        order of ``rows``.
    """
    columns: list[str] = []
    for metrics in rows.values():
        columns.extend(k for k in metrics if k not in columns)
    costs = [c for c in COST_COLUMNS if c in columns]
    columns = [c for c in columns if c not in costs] + costs
    table = pd.DataFrame(
        [[float(m.get(c, math.nan)) for c in columns] for m in rows.values()],
        index=pd.Index(list(rows), name="strategy", dtype=object),
        columns=columns,
        dtype="float64",
    )
    return table


def basket_returns(
    frames: Mapping[str, pd.DataFrame | pd.Series], index: pd.DatetimeIndex
) -> pd.Series:
    """Per-bar returns of the equal-weight basket of every asset, on ``index``.

    Each asset's close-to-close simple return ``C_t / C_{t-1} - 1`` over its own bars (its
    bar before ``index[0]`` gives the first return), 0 on a date of ``index`` where it has
    no bar (or no previous one); the basket's return is their mean over all assets (an
    equal-weight book rebalanced every bar): what the alpha and beta of
    :func:`metabt.evaluate.costs.cost_report` are measured against.

    Args:
        frames: asset -> OHLCV frame (its ``close`` column) or a Series of closes, tz-naive
            DatetimeIndex.
        index: the dates to return (a run's bars).

    Returns:
        pd.Series (float64) on ``index``, name ``basket``.

    Raises:
        DataError: no assets.
    """
    if not frames:
        raise DataError("basket_returns: no assets; pass at least one frame of closes")
    columns = []
    for name, frame in frames.items():
        close = frame["close"] if isinstance(frame, pd.DataFrame) else frame
        close = close.astype("float64")
        if isinstance(close.index, pd.DatetimeIndex) and close.index.tz is not None:
            close = close.tz_localize(None)
        change = close.pct_change(fill_method=None)
        columns.append(change.reindex(index).fillna(0.0).rename(str(name)))
    basket = pd.concat(columns, axis=1).mean(axis=1)
    return basket.astype("float64").rename("basket")


ASSET_COLUMNS = [
    "bars",
    "exposure",
    "hit_rate",
    "contribution",
    "turnover_two_way",
    "ic",
    "rank_ic",
    "adaptations",
    "query_loss",
]


def asset_results(
    positions: pd.DataFrame,
    prices: Mapping[str, pd.DataFrame],
    equity: pd.Series,
    *,
    cash: float,
    traded: Mapping[str, float] | None = None,
    signal_pairs: Mapping[str, pd.DataFrame] | None = None,
    adaptation_log: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-asset and portfolio results of one backtest.

    Orders fill at the open, so in bar t an asset earns, before costs,
    ``pnl_t = q_{t-1} (O_t - C_{t-1}) + q_t (C_t - O_t)`` with q the shares held at each
    close: the old position through the overnight gap, the new one from the open. Summed
    over assets this is the portfolio's P&L before commission and slippage.

    Args:
        positions: (dates, assets) signed position value at each close, currency units
            (backtrader's ``PositionsValue`` analyzer), test period only.
        prices: asset -> DataFrame with ``open`` and ``close`` over the test period (its
            own calendar).
        equity: portfolio value at each close, currency units (same dates as the returns).
        cash: starting cash, currency units (no position before the test period).
        traded: asset -> filled notional over the test period, currency units.
        signal_pairs: asset -> ``signal`` and ``forward`` columns
            (``metabt.analyzers.signal_frames``), for the model's IC; None for strategies
            without a model.
        adaptation_log: ``MetaStrategy.adaptation_log()`` (query losses per adaptation).

    Returns:
        DataFrame indexed by asset, then ``portfolio``, with columns:
        ``bars`` (test bars), ``exposure`` (mean |position| / equity; for the portfolio,
        mean gross leverage), ``hit_rate`` (share of bars with a position, entering or
        held, whose P&L was positive; bars with zero P&L are left out; pooled over assets
        for the portfolio), ``contribution`` (sum of pnl_t as a fraction of starting cash),
        ``turnover_two_way`` (filled notional, buys plus sells, per year over average
        equity), ``ic`` / ``rank_ic``
        (Pearson / Spearman correlation of the signal with the forward log return; the
        portfolio row is their mean), ``adaptations`` and ``query_loss`` (count-weighted
        mean realised query MSE); NaN where they do not apply.
    """
    rows: dict[str, dict[str, float]] = {}
    hits = scored_total = 0
    mean_equity = float(equity.mean()) if len(equity) else math.nan
    traded = traded or {}
    for name, bars in prices.items():
        open_ = bars["open"].astype(float)
        close = bars["close"].astype(float)
        row: dict[str, float] = {"bars": float(len(close))}
        if name in positions:
            value = positions[name].reindex(close.index).fillna(0.0)
            shares = value / close
            before = shares.shift(1, fill_value=0.0)
            pnl = before * (open_ - close.shift(1)).fillna(0.0) + shares * (close - open_)
            scored = ((shares != 0) | (before != 0)) & (pnl != 0)
            hit = int((pnl[scored] > 0).sum())
            hits += hit
            scored_total += int(scored.sum())
            row["exposure"] = float((value.abs() / equity.reindex(close.index)).mean())
            row["hit_rate"] = hit / int(scored.sum()) if scored.any() else math.nan
            row["contribution"] = float(pnl.sum()) / cash
        row["turnover_two_way"] = annual_turnover(
            traded.get(name, math.nan), mean_equity, len(equity), PERIODS_PER_YEAR
        )
        pair = (signal_pairs or {}).get(name)
        ic = pair_ic(pair) if pair is not None else None
        if ic is not None:
            row["ic"], row["rank_ic"] = ic
        if adaptation_log is not None:
            mine = adaptation_log[adaptation_log["data"] == name]
            row["adaptations"] = float(len(mine))
            row["query_loss"] = _pooled_query_loss(mine)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=ASSET_COLUMNS)
    gross = positions.abs().sum(axis=1) / equity.reindex(positions.index)
    table.loc["portfolio"] = {
        "bars": float(len(equity)),
        "exposure": float(gross.mean()) if len(gross) else math.nan,
        "hit_rate": hits / scored_total if scored_total else math.nan,
        "contribution": float(table["contribution"].sum(min_count=1)),
        "turnover_two_way": annual_turnover(
            sum(traded.values()), mean_equity, len(equity), PERIODS_PER_YEAR
        )
        if traded
        else math.nan,
        "ic": float(table["ic"].mean()),
        "rank_ic": float(table["rank_ic"].mean()),
        "adaptations": float(table["adaptations"].sum(min_count=1)),
        "query_loss": _pooled_query_loss(adaptation_log),
    }
    table.index.name = "asset"
    return table


def _pooled_query_loss(log: pd.DataFrame | None) -> float:
    if log is None or not len(log):
        return math.nan
    counts = log["query_count"].to_numpy(dtype=float)
    if not counts.sum():
        return math.nan
    losses = np.nan_to_num(log["query_loss"].to_numpy(dtype=float))
    return float((losses * counts).sum() / counts.sum())
