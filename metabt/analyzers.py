"""QuantStatsAnalyzer: per-bar portfolio returns, buy-and-hold benchmark, quantstats metrics."""

from __future__ import annotations

import datetime as dt
import math
import numbers
import os
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd

from metabt._checks import as_date as _as_date
from metabt._checks import reject_unknown_params
from metabt.errors import ConfigError, DataError
from metabt.report import compute_metrics, write_tearsheet

__all__ = ["AdaptationAnalyzer", "QuantStatsAnalyzer"]


class QuantStatsAnalyzer(bt.Analyzer):
    """Portfolio returns per bar, the first data's buy-and-hold returns, quantstats metrics.

    Follows backtrader's ``PyFolio`` analyzer: a ``TimeReturn`` child with
    ``timeframe=bt.TimeFrame.Days`` records the broker value's change per day (one bar
    for daily data; intraday bars are compounded into their day), and quantstats is
    imported only when metrics or a tearsheet are computed.

    Returns are simple and per bar: ``value_t / value_{t-1} - 1``, where ``value`` is the
    broker's portfolio value at the close of a bar (after that bar's fills). The first
    recorded bar is measured against the value before it: the starting cash for the very
    first bar, or the value at the close of the last bar before ``start``. Bars before
    ``start`` (a warm-up period for indicators and features) are not recorded.

    The benchmark is the close-to-close simple return of ``data0`` on the same dates
    (buy-and-hold, no costs): ``close_t / close_{t-1} - 1``, with ``close_{t-1}`` the
    close of the previous bar even if that bar is before ``start``; 0.0 on a date with no
    previous close (the first bar of the data) or no new bar of ``data0``.

    Params:
        periods_per_year (int): bars per year, to annualise the metrics (bars).
            Default 252 (daily bars).
        start (date | str | None): first date to record (inclusive); bars before it are a
            warm-up period. Default None (record every bar).

    Raises:
        ConfigError: a bad parameter value or an unknown parameter name.

    ``get_analysis()`` (after ``cerebro.run()``) returns a dict:

    - ``returns`` (pd.Series, float64, name ``"returns"``): simple per-bar portfolio
      returns (fraction), tz-naive DatetimeIndex of the bar dates (named ``"date"``).
    - ``benchmark`` (pd.Series, float64): buy-and-hold returns of ``data0`` on the same
      dates, named after the data (``"benchmark"`` if it has no name).
    - ``metrics`` (dict[str, float]): :func:`metabt.report.compute_metrics` of ``returns``.
    """

    params: Any = (("periods_per_year", 252), ("start", None))

    def __init__(self, **unknown: Any) -> None:
        reject_unknown_params("QuantStatsAnalyzer", unknown, self.params)
        periods = self.p.periods_per_year
        if isinstance(periods, bool) or not isinstance(periods, numbers.Integral) or periods < 1:
            raise ConfigError(
                "QuantStatsAnalyzer: periods_per_year must be a positive integer (bars per "
                f"year, e.g. 252 for daily bars), got {periods!r}"
            )
        self._start_date = _as_date(self.p.start, "QuantStatsAnalyzer: start")
        self._timereturn = bt.analyzers.TimeReturn(timeframe=bt.TimeFrame.Days)
        self._closes: dict[dt.date, float] = {}  # last close of data0 on each date

    def next(self) -> None:
        """Record ``data0``'s close on the current date (also runs in prenext)."""
        day = self.strategy.datetime.datetime(0).date()
        data = self.datas[0]
        self._closes[day] = float(data.close[0]) if len(data) else math.nan

    def stop(self) -> None:
        """Build the return series, the benchmark and the metrics."""
        raw = self._timereturn.get_analysis()
        index = pd.DatetimeIndex([pd.Timestamp(key).normalize() for key in raw], name="date")
        returns = pd.Series(list(raw.values()), index=index, dtype="float64", name="returns")

        closes = pd.Series(
            list(self._closes.values()),
            index=pd.DatetimeIndex(pd.to_datetime(list(self._closes)), name="date"),
            dtype="float64",
        )
        name = getattr(self.datas[0], "_name", "") or "benchmark"
        benchmark = closes.ffill().pct_change(fill_method=None).fillna(0.0).rename(name)
        benchmark = benchmark.reindex(returns.index, fill_value=0.0)

        if self._start_date is not None:
            keep = returns.index >= pd.Timestamp(self._start_date)
            returns, benchmark = returns[keep], benchmark[keep]
        if returns.empty:
            if not len(index):
                raise DataError("QuantStatsAnalyzer recorded no bars: the data feeds are empty")
            raise DataError(
                f"QuantStatsAnalyzer recorded no bars: start {self._start_date} is after the "
                f"last bar ({index[-1].date()}); use an earlier start or feed more data"
            )
        self.rets["returns"] = returns
        self.rets["benchmark"] = benchmark
        self.rets["metrics"] = compute_metrics(returns, periods_per_year=self.p.periods_per_year)

    def tearsheet(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Write the quantstats HTML tearsheet of the run, with the benchmark.

        Args:
            path (str | os.PathLike): the HTML file (written atomically; parent
                directories are created).
            title (str | None): report title. Default None ("metabt tearsheet").

        Returns:
            pathlib.Path: ``path``.

        Raises:
            ConfigError: called before ``cerebro.run()`` finished.
        """
        if "returns" not in self.rets:
            raise ConfigError(
                "QuantStatsAnalyzer.tearsheet: no results yet; call it after cerebro.run()"
            )
        return write_tearsheet(
            self.rets["returns"],
            self.rets["benchmark"],
            path,
            title=title,
            periods_per_year=self.p.periods_per_year,
        )


class AdaptationAnalyzer(bt.Analyzer):
    """A MetaStrategy's adaptation diagnostics, as a backtrader analyzer.

    Attach it to a Cerebro that runs a :class:`metabt.MetaStrategy` (or a subclass, such
    as the model baselines): at the end of the run it collects the adaptation log and the
    signal of each data beside the forward return it tried to predict, and
    :meth:`write` draws them next to the equity curve (``metabt.report.write_diagnostics``).

    Params:
        start (date | str | None): first date of the signals kept (e.g. the end of a
            warm-up). Default None (all).
        ic_window (int): bars in the rolling information coefficient. Default 63.

    Raises:
        ConfigError: an unknown or bad parameter; at ``start()``, a strategy without an
            adaptation log (not a MetaStrategy).

    ``get_analysis()`` returns a dict:

    - ``adaptations`` (pd.DataFrame): ``MetaStrategy.adaptation_log()``: one row per
      adaptation with date, data, trigger, support, loss_before, loss_after (support MSE),
      steps, query_loss (realised MSE of that model's predictions), query_count.
    - ``signals`` (dict[str, pd.DataFrame]): per data, ``signal`` at the close of bar t
      and ``forward`` = log(C_{t+h} / C_t), where both are known.
    - ``rolling_ic`` (dict[str, pd.Series]): per data, the ``ic_window``-bar rolling
      Pearson correlation of the two (NaN until the window fills).
    """

    params: Any = (("start", None), ("ic_window", 63))

    def __init__(self, **unknown: Any) -> None:
        reject_unknown_params("AdaptationAnalyzer", unknown, self.params)
        self._first_date = _as_date(self.p.start, "AdaptationAnalyzer: start")
        window = self.p.ic_window
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ConfigError(
                f"AdaptationAnalyzer: ic_window must be an integer >= 2, got {window!r}"
            )

    def start(self) -> None:
        if not hasattr(self.strategy, "adaptation_log"):
            raise ConfigError(
                f"AdaptationAnalyzer needs a MetaStrategy, got {type(self.strategy).__name__}; "
                "attach it to a Cerebro that runs metabt.MetaStrategy"
            )

    def stop(self) -> None:
        from metabt.backtest import signal_frames

        strategy = self.strategy
        first = pd.Timestamp(self._first_date) if self._first_date else pd.Timestamp.min
        signals = signal_frames(strategy, strategy.horizon, first)
        self.rets["adaptations"] = strategy.adaptation_log()
        self.rets["signals"] = signals
        self.rets["rolling_ic"] = {
            name: pair["signal"].rolling(self.p.ic_window).corr(pair["forward"])
            for name, pair in signals.items()
        }

    def write(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Write the diagnostics page beside the equity curve (atomically).

        The equity curve comes from a :class:`QuantStatsAnalyzer` on the same strategy.

        Args:
            path: destination ``.html`` file (parent folders are created).
            title: page title. Default "<strategy>: adaptation diagnostics".

        Returns:
            Path: the written file.

        Raises:
            ConfigError: called before the run, or no QuantStatsAnalyzer is attached.
        """
        from metabt.report import write_diagnostics

        if "adaptations" not in self.rets:
            raise ConfigError("AdaptationAnalyzer.write: run cerebro first")
        quantstats = next(
            (a for a in self.strategy.analyzers if isinstance(a, QuantStatsAnalyzer)), None
        )
        if quantstats is None:
            raise ConfigError(
                "AdaptationAnalyzer.write needs the equity curve: "
                "cerebro.addanalyzer(QuantStatsAnalyzer) as well"
            )
        analysis = quantstats.get_analysis()
        return write_diagnostics(
            analysis["returns"],
            analysis["benchmark"],
            self.rets["adaptations"],
            self.rets["signals"],
            path,
            title=title or f"{type(self.strategy).__name__}: adaptation diagnostics",
            ic_window=self.p.ic_window,
        )
