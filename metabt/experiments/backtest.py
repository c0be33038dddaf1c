"""One honest backtest run: same data, warm-up, costs and sizer for every strategy."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd

from metabt._checks import through_day
from metabt._stats import annual_turnover
from metabt.analyzers import (
    AdaptationAnalyzer,
    PortfolioAnalyzer,
    QuantStatsAnalyzer,
    SignalAnalyzer,
)
from metabt.costs import Costs, check_volume
from metabt.data.bars import BarFrequency
from metabt.data.feeds import feed
from metabt.errors import ConfigError, DataError
from metabt.evaluate.costs import cost_report
from metabt.evaluate.ic import mean_ic
from metabt.evaluate.metrics import asset_results, basket_returns
from metabt.evaluate.report import write_diagnostics
from metabt.evaluate.sanitize import clean
from metabt.evaluate.tearsheet import write_tearsheet
from metabt.sizers import SignalSizer
from metabt.strategies.meta import MetaStrategy, SignalTrader

__all__ = [
    "BacktestResult",
    "COST_SHARE_WARNING",
    "Costs",
    "build_cerebro",
    "collect_result",
    "cost_warning",
    "run_backtest",
    "warmup_start",
]


@dataclass
class BacktestResult:
    """What one strategy did over the test period.

    Attributes:
        name: the strategy's label in tables.
        returns: simple per-bar portfolio returns from the start date (tz-naive index).
        benchmark: buy-and-hold returns of the first data on the same dates.
        metrics: quantstats metrics of ``returns`` (see ``metabt.evaluate.report.compute_metrics``),
            plus ``hit_rate`` (the portfolio row of ``assets``: share of bars with a
            position whose P&L was positive), ``turnover_two_way`` (filled notional, buys
            plus sells, per year as a multiple of average equity), ``turnover_one_way``
            (half of it), for model strategies ``ic``/``rank_ic``, and last the cost
            columns (:func:`metabt.evaluate.costs.cost_report`, every one from the run's
            per-bar ledger): ``gross_sharpe`` (Sharpe before commission, half-spread,
            impact, slippage and borrow; ``sharpe`` is the net one), ``cost_drag``
            (gross minus net Sharpe), ``break_even_bps`` (cost per fill, bps of traded
            value, at which the mean net return is 0), ``holding_bars`` (average holding
            period, bars),
            ``long_share`` (share of gross exposure held long), ``alpha`` (annualised),
            ``alpha_t``, ``beta``, ``beta_t`` (OLS on the equal-weight basket of the run's
            assets, :func:`metabt.evaluate.metrics.basket_returns`; HAC t-statistics).
        strategy: the backtrader strategy instance after the run (adaptation log, signals).
        analyzer: the QuantStatsAnalyzer, for ``tearsheet``.
        rejected_orders: orders the broker rejected.
        assets: per-asset and portfolio results, see :func:`asset_results`.
        signals: for model strategies, each data's signal beside its forward return
            from the start date (``metabt.analyzers.signal_frames``); None otherwise.
        adaptations: for model strategies, ``MetaStrategy.adaptation_log()``; None
            otherwise.
        frequency: the bar frequency that annualised the metrics and turnover
            (:mod:`metabt.data.bars`).
        cost_sensitivity: net Sharpe had every fill cost 0, 2, ..., 20 bps (index
            ``cost_bps``), the positions held as they were
            (:func:`metabt.evaluate.costs.cost_sensitivity`).
        cost_per_fill_bps: the run's own flat cost per fill, commission plus half-spread
            plus slippage, bps (:attr:`Costs.per_fill_bps`): where it sits on that curve.
        costs_paid: what the test period's fills and shorts cost, currency, from the
            run's ledger: ``commission``, ``spread``, ``impact``, ``slippage``, ``borrow``.
        pnl: the test period's profit after every cost (final equity minus cash),
            currency; ``pnl + sum(costs_paid)`` is the P&L before costs.
        traded: the test period's filled notional, buys plus sells, currency.
        smoothing: in a roster run, how the strategy's ``smooth`` was chosen on the
            validation years (:class:`metabt.experiments.smoothing.SmoothingChoice`), else
            None.
    """

    name: str
    returns: pd.Series
    benchmark: pd.Series
    metrics: dict[str, float]
    strategy: Any
    analyzer: QuantStatsAnalyzer
    rejected_orders: list[dict[str, Any]] = field(default_factory=list)
    assets: pd.DataFrame = field(default_factory=pd.DataFrame)
    signals: dict[str, pd.DataFrame] | None = None
    adaptations: pd.DataFrame | None = None
    frequency: BarFrequency = field(default_factory=lambda: BarFrequency("daily", 252.0))
    cost_sensitivity: pd.Series = field(
        default_factory=lambda: pd.Series(dtype="float64", name="net_sharpe")
    )
    cost_per_fill_bps: float = math.nan
    smoothing: Any = None
    costs_paid: dict[str, float] = field(default_factory=dict)
    pnl: float = math.nan
    traded: float = 0.0

    @property
    def gross_pnl(self) -> float:
        """The test period's P&L before costs (:attr:`pnl` plus :attr:`costs_paid`), currency."""
        return self.pnl + math.fsum(self.costs_paid.values())

    @property
    def cost_share(self) -> float:
        """Costs paid as a share of the P&L before costs' size (``sum(costs_paid) /
        |gross_pnl|``): above 1, costs took more than the strategy made before them; NaN
        when nothing was paid or made."""
        paid = math.fsum(self.costs_paid.values())
        gross = abs(self.gross_pnl)
        return paid / gross if paid > 0 and gross > 0 else math.nan

    def tearsheet(
        self, path: str | Path, title: str | None = None, benchmark: pd.Series | None = None
    ) -> Path:
        """Write the quantstats HTML tearsheet to ``path``: against ``benchmark`` (simple
        per-bar returns on the same dates, named), or the analyzer's (the first data held)."""
        if benchmark is None:
            return self.analyzer.tearsheet(path, title=title or self.name)
        return write_tearsheet(
            self.returns,
            benchmark.reindex(self.returns.index, fill_value=0.0),
            path,
            title=title or self.name,
            periods_per_year=self.frequency.periods,
            exposure=self.analyzer.get_analysis().get("exposure"),
        )

    def diagnostics(
        self,
        path: str | Path,
        title: str | None = None,
        benchmark: pd.Series | None = None,
        links: Sequence[tuple[str, str]] = (),
    ) -> Path:
        """Write the adaptation diagnostics page (``metabt.evaluate.report.write_diagnostics``;
        ``links``: (text, relative path) of the run's other pages, linked on it).

        Raises:
            ConfigError: the strategy is not a MetaStrategy (no adaptation to diagnose).
        """
        if self.signals is None or self.adaptations is None:
            raise ConfigError(f"{self.name} does not adapt a model: no diagnostics to write")
        return write_diagnostics(
            self.returns,
            self.benchmark if benchmark is None else benchmark,
            self.adaptations,
            self.signals,
            path,
            title=title or f"{self.name}: adaptation diagnostics",
            links=links,
        )


#: :func:`cost_warning` warns when the costs paid exceed this share of the P&L before costs.
COST_SHARE_WARNING = 0.5


def cost_warning(result: BacktestResult) -> str | None:
    """A warning when costs ate more than half of what a strategy made before them.

    From the run's cost ledger: the costs paid (commission, half-spread, impact, slippage
    and borrow) against the P&L before costs, with the turnover that paid them. A
    strategy that lost before costs is warned about when its costs are more than half the
    size of that loss.

    Args:
        result: one backtest.

    Returns:
        The line, or None when costs are at most :data:`COST_SHARE_WARNING` of the P&L
        before costs (or nothing was paid).
    """
    share = result.cost_share
    if not (math.isfinite(share) and share > COST_SHARE_WARNING):
        return None
    paid = result.costs_paid
    total = math.fsum(paid.values())
    parts = ", ".join(f"{k} {v:,.0f}" for k, v in paid.items() if v > 0)
    gross = result.gross_pnl
    turnover = result.metrics.get("turnover_two_way", math.nan)
    frequency = result.frequency
    return (
        f"warning: {clean(result.name)}: costs of {total:,.0f} ({parts}) are {share:.0%} of its "
        f"P&L before costs ({gross:+,.0f}): {turnover:,.1f}x two-way turnover a year on "
        f"{frequency.name} bars at {result.cost_per_fill_bps:g} bps a fill before impact; trade "
        "less (a larger --smooth, --deadband or --rebalance-band) or check that the costs fit "
        "the asset (--asset-class)"
    )


def warmup_start(
    frames: Mapping[str, pd.DataFrame], start: pd.Timestamp, bars: int
) -> pd.Timestamp:
    """The earliest date from which every frame has ``bars`` bars before ``start``.

    Args:
        frames: validated OHLCV frames.
        start: first date of the test period.
        bars: warm-up bars needed (features, labels, support, indicators).

    Raises:
        DataError: a frame has no bars on/after ``start``.
    """
    first = start
    for name, frame in frames.items():
        if not (frame.index >= start).any():
            raise DataError(
                f"{name}: no bars on or after the start date {start.date()} (data ends "
                f"{frame.index[-1].date()}); pick an earlier `start`"
            )
        before = frame.index[frame.index < start]
        if len(before):
            first = min(first, before[max(0, len(before) - bars)])
    return first


def run_backtest(
    strategy: type[bt.Strategy],
    frames: Mapping[str, pd.DataFrame],
    *,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp | None = None,
    warmup_bars: int = 300,
    cash: float = 100_000.0,
    costs: Costs | None = None,
    strategy_kwargs: Mapping[str, Any] | None = None,
    sizer_kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> BacktestResult:
    """Run one strategy on the given frames with costs on, recording from ``start``.

    Each frame is fed from ``warmup_bars`` bars before ``start`` (so indicators, features
    and the first support set are ready) to ``end`` inclusive; the strategy trades from
    ``start`` on and the analyzer records returns from ``start`` on.

    Args:
        strategy: a backtrader strategy class (MetaStrategy or a baseline).
        frames: name -> validated OHLCV frame (``metabt.data.load_ohlcv``).
        start: first date of the test period.
        end: last date of the test period (inclusive); None for all data.
        warmup_bars: bars fed before ``start``. Default 300.
        cash: starting cash (currency units). Default 100,000.
        costs: the cost model; default ``Costs()`` (US equities: 5 bps commission, 2 bps
            slippage, 25 bps a year of borrow). A declared asset class
            (:meth:`Costs.for_asset_class`) also gives the sizer its units and calendar.
        strategy_kwargs: extra strategy params.
        sizer_kwargs: SignalSizer params (over the asset class's ``fractional``, ``lot``
            and ``calendar``).
        name: label in tables (default: the class name).

    Returns:
        A :class:`BacktestResult`.

    Raises:
        ConfigError: bad cash or dates. DataError: no data in the test period; impact or
            a participation cap on data without volume.
    """
    if not (isinstance(cash, (int, float)) and math.isfinite(cash) and cash > 0):
        raise ConfigError(f"cash must be a positive number, got {cash!r}")
    start_ts = pd.Timestamp(start)
    end_ts = None if end is None else pd.Timestamp(end)
    if end_ts is not None and end_ts < start_ts:
        raise ConfigError(f"end {end_ts.date()} is before start {start_ts.date()}; swap them")
    end_ts = through_day(end_ts)  # an end date keeps that whole day's (intraday) bars
    costs = costs or Costs()
    check_volume(frames, costs)
    first = warmup_start(frames, start_ts, warmup_bars)
    feeds = [
        feed(frame.loc[first:end_ts] if end_ts is not None else frame.loc[first:], name=label)
        for label, frame in frames.items()
    ]
    cerebro = build_cerebro(
        strategy,
        feeds,
        start=start_ts,
        cash=cash,
        costs=costs,
        strategy_kwargs=strategy_kwargs,
        sizer_kwargs=sizer_kwargs,
    )
    strat = cerebro.run()[0]
    return collect_result(
        strat, frames, start=start_ts, end=end_ts, cash=cash, costs=costs, name=name
    )


def build_cerebro(
    strategy: type[bt.Strategy],
    feeds: Sequence[bt.feed.DataBase],
    *,
    start: pd.Timestamp,
    cash: float,
    costs: Costs,
    strategy_kwargs: Mapping[str, Any] | None = None,
    sizer_kwargs: Mapping[str, Any] | None = None,
) -> bt.Cerebro:
    """The Cerebro of one run: the feeds, cash, costs, sizer, strategy and analyzers.

    :func:`run_backtest` runs it on preloaded feeds; ``metabt.experiments.paper`` on live
    ones (``islive()``), so both decide on the same settings.

    Args:
        strategy: a backtrader strategy class.
        feeds: the data feeds, in order.
        start: first date of the test period (trading and recording start there).
        cash: starting cash (currency units, checked by the caller).
        costs: the cost model.
        strategy_kwargs: extra strategy params; sizer_kwargs: SignalSizer params over the
            asset class's.

    Returns:
        The Cerebro, not yet run.
    """
    sizer = {**costs.sizer_kwargs(), **dict(sizer_kwargs or {})}
    cerebro = bt.Cerebro(stdstats=False)
    for data in feeds:
        cerebro.adddata(data)
    cerebro.broker.setcash(float(cash))
    lot = float(sizer.get("lot", 1e-8)) if sizer.get("fractional") else 1.0
    costs.apply(cerebro.broker, cerebro.datas, lot=lot)
    cerebro.addsizer(SignalSizer, **sizer)
    cerebro.addstrategy(strategy, trade_start=start.date(), **dict(strategy_kwargs or {}))
    cerebro.addobserver(bt.observers.BuySell)  # orders on metabt.plot's chart
    cerebro.addanalyzer(QuantStatsAnalyzer, _name="quantstats", start=start.date())
    cerebro.addanalyzer(PortfolioAnalyzer, _name="portfolio", start=start.date())
    is_model = issubclass(strategy, MetaStrategy)
    if issubclass(strategy, SignalTrader):
        signal_cls = AdaptationAnalyzer if is_model else SignalAnalyzer
        cerebro.addanalyzer(signal_cls, _name="signal", start=start.date())
    return cerebro


def collect_result(
    strat: bt.Strategy,
    frames: Mapping[str, pd.DataFrame],
    *,
    start: pd.Timestamp,
    end: pd.Timestamp | None,
    cash: float,
    costs: Costs,
    name: str | None = None,
) -> BacktestResult:
    """The :class:`BacktestResult` of a finished run of :func:`build_cerebro`'s Cerebro.

    Args:
        strat: the strategy instance after ``cerebro.run()``.
        frames: name -> the validated bars the run was fed (prices, the basket).
        start: first date of the test period; end: its last bar time (None: all).
        cash: starting cash; costs: the run's cost model; name: label in tables.

    Returns:
        A :class:`BacktestResult`.
    """
    strategy = type(strat)
    start_ts, end_ts = start, end
    analyzer = strat.analyzers.quantstats
    analysis = analyzer.get_analysis()
    portfolio = strat.analyzers.portfolio.get_analysis()
    returns = analysis["returns"]
    metrics = dict(analysis["metrics"])
    # No order is placed before `start`, so equity entering the test period is `cash`.
    equity = float(cash) * (1.0 + returns).cumprod()
    frequency = analysis["frequency"]
    two_way = annual_turnover(
        portfolio["traded"], float(equity.mean()), len(returns), frequency.bars_per_year
    )
    # two-way: buys plus sells; one-way: half of it (the share of the book replaced)
    metrics["turnover_one_way"] = two_way / 2.0
    metrics["turnover_two_way"] = two_way
    pairs = log = None
    if issubclass(strategy, SignalTrader):
        signal = strat.analyzers.signal.get_analysis()
        pairs, log = signal["signals"], signal.get("adaptations")
    if pairs is not None:  # a forecast: how well it ranks the forward returns
        metrics.update(mean_ic(pairs))
    prices = {
        name: frame[["open", "close"]].loc[start_ts:end_ts]
        if end_ts is not None
        else frame[["open", "close"]].loc[start_ts:]
        for name, frame in frames.items()
    }
    assets = asset_results(
        portfolio["positions"],
        prices,
        equity,
        cash=float(cash),
        traded=portfolio["traded_by_data"],
        signal_pairs=pairs,
        adaptation_log=log,
    )
    hit_rate = float(assets.loc["portfolio", "hit_rate"])
    # shown beside quantstats' win_rate (the share of positive portfolio bars)
    ordered: dict[str, float] = {}
    for key, value in metrics.items():
        ordered[key] = value
        if key == "win_rate":
            ordered["hit_rate"] = hit_rate
    ordered.setdefault("hit_rate", hit_rate)
    ledger = portfolio["ledger"]
    trading = ["commission", "spread", "impact", "slippage"]
    report = cost_report(
        returns,
        equity=portfolio["equity"],
        trading_costs=ledger[trading].sum(axis=1),
        borrow_costs=ledger["borrow"],
        traded=ledger["traded"],
        exposure=portfolio["positions"],
        # the equal-weight basket of every feed, on the run's bars (alpha and beta)
        basket=basket_returns(frames, returns.index),
        periods=frequency.periods,
    )
    # "sharpe" is already the net Sharpe (quantstats'); the cost columns come last
    ordered.update({k: v for k, v in report.columns().items() if k != "net_sharpe"})
    return BacktestResult(
        name=name or strategy.__name__,
        returns=returns,
        benchmark=analysis["benchmark"],
        metrics=ordered,
        strategy=strat,
        analyzer=analyzer,
        rejected_orders=portfolio["rejected"],
        assets=assets,
        signals=pairs,
        adaptations=log,
        frequency=frequency,
        cost_sensitivity=report.sensitivity,
        cost_per_fill_bps=costs.per_fill_bps,
        costs_paid={k: float(ledger[k].sum()) for k in [*trading, "borrow"]},
        pnl=float(equity.iloc[-1]) - float(cash) if len(equity) else math.nan,
        traded=float(ledger["traded"].sum()),
    )
