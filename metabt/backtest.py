"""One honest backtest run: same data, warm-up, costs and sizer for every strategy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from metabt.analyzers import QuantStatsAnalyzer
from metabt.data import feed
from metabt.errors import ConfigError, DataError
from metabt.sizers import SignalSizer

__all__ = [
    "BacktestResult",
    "Costs",
    "asset_results",
    "run_backtest",
    "signal_frames",
    "signal_ic",
    "walkforward_folds",
    "warmup_start",
]

PERIODS_PER_YEAR = 252  # daily bars


@dataclass(frozen=True)
class Costs:
    """Trading costs applied to the backtrader broker; on by default (honesty rule 3).

    Args:
        commission_bps: commission per trade, basis points of traded value. Default 5.
        slippage_bps: adverse fill price move, basis points of the price. Default 2.

    Raises:
        ConfigError: a negative or non-finite cost.
    """

    commission_bps: float = 5.0
    slippage_bps: float = 2.0

    def __post_init__(self) -> None:
        for name in ("commission_bps", "slippage_bps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number >= 0 (basis points), got {value!r}")

    def apply(self, broker: bt.brokers.BackBroker) -> None:
        """Set commission (percentage of value) and slippage (percentage of price)."""
        broker.setcommission(commission=self.commission_bps / 1e4)
        broker.set_slippage_perc(self.slippage_bps / 1e4, slip_open=True, slip_match=True)

    def describe(self) -> str:
        return (
            f"commission {self.commission_bps:g} bps, slippage {self.slippage_bps:g} bps per trade"
        )


@dataclass
class BacktestResult:
    """What one strategy did over the test period.

    Attributes:
        name: the strategy's label in tables.
        returns: simple per-bar portfolio returns from the start date (tz-naive index).
        benchmark: buy-and-hold returns of the first data on the same dates.
        metrics: quantstats metrics of ``returns`` (see ``metabt.report.compute_metrics``),
            plus ``hit_rate`` (the portfolio row of ``assets``: share of bars with a
            position whose P&L was positive), ``turnover`` (filled notional per year
            as a multiple of average equity) and, for model strategies, ``ic``/``rank_ic``.
        strategy: the backtrader strategy instance after the run (adaptation log, signals).
        analyzer: the QuantStatsAnalyzer, for ``tearsheet``.
        rejected_orders: orders the broker rejected.
        assets: per-asset and portfolio results, see :func:`asset_results`.
        signals: for model strategies, each data's signal beside its forward return
            from the start date (:func:`signal_frames`); None otherwise.
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

    def tearsheet(self, path: str | Path, title: str | None = None) -> Path:
        """Write the quantstats HTML tearsheet (with the benchmark) to ``path``."""
        return self.analyzer.tearsheet(path, title=title or self.name)

    def diagnostics(self, path: str | Path, title: str | None = None) -> Path:
        """Write the adaptation diagnostics page (``metabt.report.write_diagnostics``).

        Raises:
            ConfigError: the strategy is not a MetaStrategy (no adaptation to diagnose).
        """
        from metabt.report import write_diagnostics

        if self.signals is None or not hasattr(self.strategy, "adaptation_log"):
            raise ConfigError(f"{self.name} does not adapt a model: no diagnostics to write")
        return write_diagnostics(
            self.returns,
            self.benchmark,
            self.strategy.adaptation_log(),
            self.signals,
            path,
            title=title or f"{self.name}: adaptation diagnostics",
        )


def walkforward_folds(
    start: str | pd.Timestamp, end: str | pd.Timestamp, *, years: int = 1
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Consecutive test periods of ``years`` calendar years covering [start, end].

    Fold k tests [start + k·years, start + (k+1)·years − 1 day] (the last fold stops at
    ``end``); its model must be trained strictly before the fold's first day.

    Args:
        start: first test date. end: last test date (inclusive).
        years: calendar years per fold. Default 1.

    Returns:
        [(test_start, test_end), ...], contiguous and non-overlapping.

    Raises:
        ConfigError: end before start, or years < 1.
    """
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    if last < first:
        raise ConfigError(f"end {last.date()} is before start {first.date()}; swap them")
    if isinstance(years, bool) or not isinstance(years, int) or years < 1:
        raise ConfigError(f"years per fold must be a positive integer, got {years!r}")
    folds = []
    fold_start = first
    while fold_start <= last:
        nxt = fold_start + pd.DateOffset(years=years)
        folds.append((fold_start, min(nxt - pd.Timedelta(days=1), last)))
        fold_start = nxt
    return folds


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
                f"{frame.index[-1].date()}); pick an earlier --start"
            )
        before = frame.index[frame.index < start]
        if len(before):
            first = min(first, before[max(0, len(before) - bars)])
    return first


def signal_frames(strategy: Any, horizon: int, start: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Each data's signal beside the forward return it tried to predict, from ``start`` on.

    Args:
        strategy: a run ``SignalStrategy`` (its ``signals`` lines and data).
        horizon: h, bars.
        start: first date kept.

    Returns:
        data name -> DataFrame (DatetimeIndex) with columns ``signal`` (at the close of bar
        t) and ``forward`` (realised log(C_{t+h} / C_t)); rows where either is unknown are
        dropped.
    """
    out = {}
    for line, data in zip(strategy.signals, strategy.datas):
        n = len(data)
        signal = np.asarray(line.signal.array[:n], dtype=float)
        close = np.asarray(data.close.array[:n], dtype=float)
        dates = pd.DatetimeIndex([bt.num2date(x) for x in data.datetime.array[:n]]).normalize()
        forward = np.full(n, np.nan)
        if n > horizon:
            forward[:-horizon] = np.log(close[horizon:] / close[:-horizon])
        ok = np.isfinite(signal) & np.isfinite(forward) & (dates >= start)
        out[data._name] = pd.DataFrame(
            {"signal": signal[ok], "forward": forward[ok]}, index=dates[ok]
        )
    return out


def signal_ic(strategy: Any, horizon: int, start: pd.Timestamp) -> dict[str, float]:
    """Information coefficient of a strategy's signals, from ``start`` on.

    For each data: the correlation between the signal at the close of bar t and the
    realised forward log return log(C_{t+h} / C_t), Pearson (``ic``) and Spearman
    (``rank_ic``), over bars with both known; then the mean across data.

    Args:
        strategy: a run ``SignalStrategy`` (its ``signals`` lines and data).
        horizon: h, bars (the label horizon of the model).
        start: first date counted.

    Returns:
        ``{"ic": float, "rank_ic": float}``; NaN with fewer than 20 usable bars.
    """
    return _mean_ic(signal_frames(strategy, horizon, start))


def _pair_ic(pair: pd.DataFrame) -> tuple[float, float] | None:
    """(Pearson, Spearman) correlation of ``signal`` and ``forward``; None if too few bars."""
    if len(pair) < 20 or pair["signal"].std() == 0:
        return None
    return (
        float(pair["signal"].corr(pair["forward"])),
        float(pair["signal"].corr(pair["forward"], method="spearman")),
    )


def _mean_ic(pairs: Mapping[str, pd.DataFrame]) -> dict[str, float]:
    """``signal_ic`` from :func:`signal_frames` output: the mean over data of each IC."""
    ics = [ic for ic in map(_pair_ic, pairs.values()) if ic is not None]
    return {
        "ic": float(np.mean([ic for ic, _ in ics])) if ics else math.nan,
        "rank_ic": float(np.mean([rank for _, rank in ics])) if ics else math.nan,
    }


ASSET_COLUMNS = [
    "bars",
    "exposure",
    "hit_rate",
    "contribution",
    "turnover",
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
        signal_pairs: asset -> ``signal`` and ``forward`` columns (:func:`signal_frames`),
            for the model's IC; None for strategies without a model.
        adaptation_log: ``MetaStrategy.adaptation_log()`` (query losses per adaptation).

    Returns:
        DataFrame indexed by asset, then ``portfolio``, with columns:
        ``bars`` (test bars), ``exposure`` (mean |position| / equity; for the portfolio,
        mean gross leverage), ``hit_rate`` (share of bars with a position, entering or
        held, whose P&L was positive; bars with zero P&L are left out; pooled over assets
        for the portfolio), ``contribution`` (sum of pnl_t as a fraction of starting cash),
        ``turnover`` (filled notional per year over average equity), ``ic`` / ``rank_ic``
        (Pearson / Spearman correlation of the signal with the forward log return; the
        portfolio row is their mean), ``adaptations`` and ``query_loss`` (count-weighted
        mean realised query MSE); NaN where they do not apply.
    """
    rows: dict[str, dict[str, float]] = {}
    hits = scored_total = 0
    years = max(len(equity), 1) / PERIODS_PER_YEAR
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
        row["turnover"] = traded.get(name, math.nan) / mean_equity / years
        pair = (signal_pairs or {}).get(name)
        ic = _pair_ic(pair) if pair is not None else None
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
        "turnover": sum(traded.values()) / mean_equity / years if traded else math.nan,
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
        costs: commission and slippage; default ``Costs()`` (5 bps + 2 bps).
        strategy_kwargs: extra strategy params.
        sizer_kwargs: SignalSizer params.
        name: label in tables (default: the class name).

    Returns:
        A :class:`BacktestResult`.

    Raises:
        ConfigError: bad cash or dates. DataError: no data in the test period.
    """
    if not (isinstance(cash, (int, float)) and math.isfinite(cash) and cash > 0):
        raise ConfigError(f"cash must be a positive number, got {cash!r}")
    start_ts = pd.Timestamp(start)
    end_ts = None if end is None else pd.Timestamp(end)
    if end_ts is not None and end_ts < start_ts:
        raise ConfigError(f"end {end_ts.date()} is before start {start_ts.date()}; swap them")
    costs = costs or Costs()
    first = warmup_start(frames, start_ts, warmup_bars)

    cerebro = bt.Cerebro(stdstats=False)
    for label, frame in frames.items():
        window = frame.loc[first:end_ts] if end_ts is not None else frame.loc[first:]
        cerebro.adddata(feed(window, name=label))
    cerebro.broker.setcash(float(cash))
    costs.apply(cerebro.broker)
    cerebro.addsizer(SignalSizer, **dict(sizer_kwargs or {}))
    cerebro.addstrategy(strategy, trade_start=start_ts.date(), **dict(strategy_kwargs or {}))
    cerebro.addanalyzer(QuantStatsAnalyzer, _name="quantstats", start=start_ts.date())
    cerebro.addanalyzer(bt.analyzers.PositionsValue, _name="positions")
    strat = cerebro.run()[0]
    analyzer = strat.analyzers.quantstats
    analysis = analyzer.get_analysis()
    returns = analysis["returns"]
    metrics = dict(analysis["metrics"])
    # No order is placed before `start`, so equity entering the test period is `cash`.
    equity = float(cash) * (1.0 + returns).cumprod()
    traded = float(getattr(strat, "traded_value", 0.0))
    metrics["turnover"] = traded / float(equity.mean()) * PERIODS_PER_YEAR / max(len(returns), 1)
    horizon = getattr(strat, "horizon", None)
    pairs = None
    if horizon is not None:  # a model's signal: how well it ranks the forward returns
        pairs = signal_frames(strat, horizon, start_ts)
        metrics.update(_mean_ic(pairs))
    names = [d._name for d in strat.datas]
    held = strat.analyzers.positions.get_analysis()
    positions = pd.DataFrame.from_dict(held, orient="index", columns=names)
    positions.index = pd.DatetimeIndex(pd.to_datetime(list(held))).normalize()
    positions = positions.loc[positions.index >= start_ts]
    prices = {
        name: frame[["open", "close"]].loc[start_ts:end_ts]
        if end_ts is not None
        else frame[["open", "close"]].loc[start_ts:]
        for name, frame in frames.items()
    }
    log = strat.adaptation_log() if hasattr(strat, "adaptation_log") else None
    assets = asset_results(
        positions,
        prices,
        equity,
        cash=float(cash),
        traded=dict(getattr(strat, "traded_by_data", {})),
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
    metrics = ordered
    return BacktestResult(
        name=name or strategy.__name__,
        returns=returns,
        benchmark=analysis["benchmark"],
        metrics=metrics,
        strategy=strat,
        analyzer=analyzer,
        rejected_orders=list(getattr(strat, "rejected_orders", [])),
        assets=assets,
        signals=pairs,
    )
