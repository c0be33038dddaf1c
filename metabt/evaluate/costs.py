"""What costs do to a strategy: gross and net Sharpe, break-even cost, cost sensitivity,
holding period, long share, and alpha and beta against the basket with HAC t-statistics.

A desk asks these of every strategy before its Sharpe: is the edge larger than the cost of
trading it, how long are positions held, and does it earn only through a long tilt? All of
them are computed from what the backtest recorded, per bar:

- ``net``: the strategy's simple returns after every cost (the equity curve's returns);
- ``trading_costs`` and ``borrow_costs``: currency paid in each bar (commission,
  half-spread, impact and slippage of the fills; short-borrow fees);
- ``traded``: filled notional in each bar, buys plus sells (two-way), currency;
- ``equity``: the portfolio value at each close;
- ``exposure``: signed position value per asset at each close, currency.

Gross returns add each bar's costs back, divided by the previous close's equity:
``gross_t = net_t + (trading_t + borrow_t) / equity_{t-1}``; the equity path itself stays the
net one (costs paid earlier are not compounded back), so gross is exact bar by bar and a
close approximation over a whole run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metabt.errors import DataError

__all__ = [
    "COST_GRID_BPS",
    "CostReport",
    "alpha_beta",
    "break_even_bps",
    "cost_report",
    "cost_sensitivity",
    "holding_period",
    "long_share",
    "sharpe",
]

#: Costs per fill (commission plus slippage, basis points of traded value) at which the
#: sensitivity curve is evaluated.
COST_GRID_BPS: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0)


def sharpe(returns: pd.Series | np.ndarray, periods: float) -> float:
    """Annualised Sharpe ratio of per-bar simple returns (mean / std, ddof=1, × √periods).

    Returns NaN for fewer than two bars or a zero standard deviation, as quantstats does.
    """
    values = np.asarray(returns, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan
    sd = float(values.std(ddof=1))
    return math.nan if sd == 0.0 else float(values.mean() / sd * math.sqrt(periods))


def _aligned(net: pd.Series, *others: pd.Series) -> list[pd.Series]:
    out = [s.reindex(net.index).fillna(0.0).astype(np.float64) for s in others]
    return [net.astype(np.float64), *out]


def _previous_equity(net: pd.Series, equity: pd.Series) -> pd.Series:
    """Equity at the previous close of each bar (the first bar: its own start value)."""
    equity = equity.reindex(net.index).astype(np.float64)
    start = equity.iloc[0] / (1.0 + net.iloc[0]) if len(equity) else math.nan
    return equity.shift(1).fillna(start)


def break_even_bps(gross: pd.Series, turnover: pd.Series) -> float:
    """The cost per fill, in basis points of traded value, at which the mean net return is 0.

    ``mean(gross_t − c · 1e-4 · turnover_t) = 0`` gives ``c = 1e4 · mean(gross) / mean(turnover)``.
    Negative when the strategy loses before costs; NaN when it never trades.

    Args:
        gross: per-bar returns before trading costs (borrow may stay in).
        turnover: per-bar two-way traded notional as a fraction of the previous equity.
    """
    mean_turnover = float(np.mean(turnover))
    if not mean_turnover > 0:
        return math.nan
    return float(1e4 * np.mean(gross) / mean_turnover)


def cost_sensitivity(
    gross: pd.Series,
    turnover: pd.Series,
    periods: float,
    borrow: pd.Series | None = None,
    grid_bps: Sequence[float] = COST_GRID_BPS,
) -> pd.Series:
    """Net Sharpe if every fill cost ``c`` basis points, for each ``c`` of ``grid_bps``.

    ``net_c,t = gross_t − c · 1e-4 · turnover_t − borrow_t`` with the positions held fixed
    (the strategy would trade the same at another cost; a cost-aware strategy would not,
    so the curve is the cost of *this* position path).

    Args:
        gross: per-bar returns before all costs.
        turnover: per-bar two-way traded notional / previous equity.
        periods: bars per year.
        borrow: per-bar borrow cost as a return (kept at every ``c``); None for none.
        grid_bps: costs per fill to evaluate, basis points.

    Returns:
        pd.Series of Sharpe ratios indexed by cost in bps (name ``net_sharpe``).
    """
    carry = 0.0 if borrow is None else borrow.to_numpy(dtype=np.float64)
    g, t = gross.to_numpy(dtype=np.float64), turnover.to_numpy(dtype=np.float64)
    values = [sharpe(g - c * 1e-4 * t - carry, periods) for c in grid_bps]
    return pd.Series(values, index=pd.Index(list(grid_bps), name="cost_bps"), name="net_sharpe")


def holding_period(exposure: pd.DataFrame, equity_prev: pd.Series, turnover: pd.Series) -> float:
    """Average holding period in bars: 2 × mean gross exposure / mean two-way turnover.

    A book that holds exposure E and trades T (two-way, both as fractions of equity) per bar
    replaces its positions every 2E/T bars (a round trip is two fills). NaN without trades.
    """
    gross_exposure = exposure.abs().sum(axis=1).reindex(equity_prev.index).fillna(0.0)
    mean_turnover = float(np.mean(turnover))
    if not mean_turnover > 0:
        return math.nan
    return float(2.0 * np.mean(gross_exposure / equity_prev) / mean_turnover)


def long_share(exposure: pd.DataFrame) -> float:
    """Share of gross exposure held long: Σ positive position values / Σ |position values|
    over every (bar, asset); NaN when nothing is ever held. 1.0 is a long-only book; a book
    that earns only through a long tilt shows it here and in the beta."""
    values = exposure.to_numpy(dtype=np.float64)
    long, short = float(values[values > 0].sum()), float(-values[values < 0].sum())
    return math.nan if long + short == 0 else long / (long + short)  # exactly 1.0 if long only


def alpha_beta(
    returns: pd.Series, basket: pd.Series, periods: float, lags: int | None = None
) -> dict[str, float]:
    """OLS of the strategy's returns on the basket's, with Newey–West (HAC) t-statistics.

    ``r_t = α + β b_t + ε_t``, estimated with statsmodels (``cov_type="HAC"``; Newey & West
    1987). ``lags`` defaults to ``floor(4 (T/100)^(2/9))`` (Newey & West 1994).

    Args:
        returns: per-bar simple returns of the strategy.
        basket: per-bar simple returns of the equal-weight basket, same dates.
        periods: bars per year (alpha is annualised as α × periods).
        lags: HAC lags.

    Returns:
        ``alpha`` (annualised), ``alpha_t``, ``beta``, ``beta_t``; NaN with fewer than 10 bars.
    """
    import statsmodels.api as sm

    frame = pd.concat([returns.rename("r"), basket.rename("b")], axis=1).dropna()
    nan = {"alpha": math.nan, "alpha_t": math.nan, "beta": math.nan, "beta_t": math.nan}
    if len(frame) < 10 or float(frame["b"].std()) == 0.0:
        return nan
    n = len(frame)
    maxlags = int(4 * (n / 100) ** (2 / 9)) if lags is None else int(lags)
    fit = sm.OLS(frame["r"].to_numpy(), sm.add_constant(frame["b"].to_numpy())).fit(
        cov_type="HAC", cov_kwds={"maxlags": maxlags}
    )
    return {
        "alpha": float(fit.params[0] * periods),
        "alpha_t": float(fit.tvalues[0]),
        "beta": float(fit.params[1]),
        "beta_t": float(fit.tvalues[1]),
    }


@dataclass(frozen=True)
class CostReport:
    """The cost columns of one strategy (see the module docstring for the definitions).

    Attributes:
        gross_sharpe, net_sharpe: annualised Sharpe before and after all costs.
        cost_drag: gross_sharpe − net_sharpe.
        break_even_bps: cost per fill (bps of traded value) at which the mean net return is 0.
        holding_bars: average holding period in bars.
        long_share: share of gross exposure held long.
        alpha, alpha_t, beta, beta_t: against the equal-weight basket, HAC t-statistics.
        sensitivity: net Sharpe at each cost per fill of :data:`COST_GRID_BPS`.
    """

    gross_sharpe: float
    net_sharpe: float
    cost_drag: float
    break_even_bps: float
    holding_bars: float
    long_share: float
    alpha: float
    alpha_t: float
    beta: float
    beta_t: float
    sensitivity: pd.Series

    def columns(self) -> dict[str, float]:
        """The scalar columns, for compare.csv and the report tables."""
        return {
            "gross_sharpe": self.gross_sharpe,
            "net_sharpe": self.net_sharpe,
            "cost_drag": self.cost_drag,
            "break_even_bps": self.break_even_bps,
            "holding_bars": self.holding_bars,
            "long_share": self.long_share,
            "alpha": self.alpha,
            "alpha_t": self.alpha_t,
            "beta": self.beta,
            "beta_t": self.beta_t,
        }


def cost_report(
    net: pd.Series,
    *,
    equity: pd.Series,
    trading_costs: pd.Series,
    borrow_costs: pd.Series,
    traded: pd.Series,
    exposure: pd.DataFrame,
    basket: pd.Series,
    periods: float,
    lags: int | None = None,
) -> CostReport:
    """Every cost figure of one strategy from what its backtest recorded.

    Args:
        net: per-bar simple returns after all costs (DatetimeIndex).
        equity: portfolio value at each close, currency (same index).
        trading_costs: commission, half-spread, impact and slippage paid per bar, currency
            (missing bars: 0).
        borrow_costs: short-borrow fees paid per bar, currency (missing bars: 0).
        traded: two-way filled notional per bar, currency (missing bars: 0).
        exposure: signed position value per asset at each close, currency.
        basket: per-bar returns of the equal-weight basket (alpha and beta).
        periods: bars per year.
        lags: HAC lags for alpha and beta (default: Newey–West 1994's rule).

    Returns:
        A :class:`CostReport`.

    Raises:
        DataError: ``net`` is empty.
    """
    if len(net) == 0:
        raise DataError("cost_report: no returns (the test period has no bars)")
    net, trading, borrow, notional = _aligned(net, trading_costs, borrow_costs, traded)
    prev = _previous_equity(net, equity)
    trading_r, borrow_r, turnover = trading / prev, borrow / prev, notional / prev
    gross = net + trading_r + borrow_r
    gross_sharpe, net_sharpe = sharpe(gross, periods), sharpe(net, periods)
    return CostReport(
        gross_sharpe=gross_sharpe,
        net_sharpe=net_sharpe,
        cost_drag=gross_sharpe - net_sharpe,
        break_even_bps=break_even_bps(gross - borrow_r, turnover),
        holding_bars=holding_period(exposure, prev, turnover),
        long_share=long_share(exposure),
        **alpha_beta(net, basket, periods, lags),
        sensitivity=cost_sensitivity(gross, turnover, periods, borrow=borrow_r),
    )
