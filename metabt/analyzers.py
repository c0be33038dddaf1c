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

__all__ = ["QuantStatsAnalyzer"]


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
