"""Backtrader analyzers that own every measurement of a run.

``QuantStatsAnalyzer``: per-bar returns, the benchmark and quantstats metrics;
``PortfolioAnalyzer``: positions, fills (turnover) and rejected orders;
``SignalAnalyzer``: each signal against the forward return it predicts (IC);
``AdaptationAnalyzer``: that, plus a MetaStrategy's adaptations. They follow backtrader's
PyFolio analyzer: child analyzers (``TimeReturn``, ``PositionsValue``) and the documented
hooks, never a strategy's private attributes.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import os
from pathlib import Path
from typing import Any, ClassVar

import backtrader as bt
import numpy as np
import pandas as pd

from metabt._checks import as_date as _as_date
from metabt._checks import reject_unknown_params
from metabt._stats import forward_log_return
from metabt.costs import DeskCommission
from metabt.data.bars import BarFrequency, infer_frequency
from metabt.errors import ConfigError, DataError
from metabt.evaluate.metrics import compute_metrics
from metabt.evaluate.report import write_diagnostics
from metabt.evaluate.tearsheet import write_tearsheet
from metabt.strategies.meta import MetaStrategy, SignalTrader

__all__ = [
    "AdaptationAnalyzer",
    "PortfolioAnalyzer",
    "QuantStatsAnalyzer",
    "SignalAnalyzer",
    "signal_frames",
]


def bar_index(stamps: list[Any]) -> pd.DatetimeIndex:
    """Bar timestamps as a tz-naive DatetimeIndex named "date".

    Bars whose times are all midnight (daily, weekly, monthly data) keep their dates;
    intraday bars keep their times, so an hourly run has one row per hour, not per day.

    Args:
        stamps: ``datetime``/``date`` objects or anything ``pd.to_datetime`` reads.
    """
    index = pd.DatetimeIndex(pd.to_datetime(stamps), name="date")
    if index.tz is not None:
        index = index.tz_localize(None)
    if len(index) and (index == index.normalize()).all():
        return index
    # backtrader stamps a daily bar at its session end (23:59:59.999999): one bar a day
    ends = index.time == dt.time(23, 59, 59, 999999)
    if len(index) and ends.all():
        return index.normalize()
    return index


def signal_frames(
    strategy: SignalTrader, horizon: int, start: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """Each data's signal beside the forward return it tried to predict, from ``start`` on.

    Args:
        strategy: a run :class:`~metabt.strategies.meta.SignalTrader` (its ``signals`` lines and
            data).
        horizon: h, bars.
        start: first date kept.

    Returns:
        data name -> DataFrame (DatetimeIndex) with columns ``signal`` (at the close of bar
        t), ``forward`` (realised log(C_{t+h} / C_t), :func:`metabt._stats.
        forward_log_return`) and ``tradable`` (log(O_{t+1+h} / O_{t+1}): the return a
        position opened at the next bar's open, where orders fill, earns over the horizon;
        NaN where not yet realised); rows where ``signal`` or ``forward`` is unknown are
        dropped. Forward returns are known only after the run: they score the signal,
        they never feed a decision.
    """
    out = {}
    for line, data in zip(strategy.signals, strategy.datas):
        n = len(data)
        signal = np.asarray(line.signal.array[:n], dtype=float)
        close = np.asarray(data.close.array[:n], dtype=float)
        opens = np.asarray(data.open.array[:n], dtype=float)
        dates = bar_index([bt.num2date(x) for x in data.datetime.array[:n]])
        forward = forward_log_return(close, horizon)
        tradable = np.full(n, np.nan)
        tradable[:-1] = forward_log_return(opens[1:], horizon)
        ok = np.isfinite(signal) & np.isfinite(forward) & (dates >= start)
        out[data._name] = pd.DataFrame(
            {"signal": signal[ok], "forward": forward[ok], "tradable": tradable[ok]},
            index=dates[ok],
        )
    return out


class QuantStatsAnalyzer(bt.Analyzer):
    """Portfolio returns per bar, the first data's buy-and-hold returns, quantstats metrics.

    The broker's portfolio value is recorded at the close of every bar (the strategy's
    ``next`` and ``prenext`` bars, after that bar's fills), so intraday bars are bars, not
    days; quantstats is imported only when metrics or a tearsheet are computed. Metrics
    are annualised with the bar frequency (:mod:`metabt.data.bars`): the strategy's
    ``bar_frequency`` (a :class:`~metabt.strategies.meta.SignalTrader` sets it at start, from the
    sizer's ``bars_per_year`` or the feeds' dates), else inferred from ``data0``'s dates.

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
        periods_per_year (int | None): bars per year, to annualise the metrics (bars).
            Default None: the bar frequency of the run (252 for daily stock bars, 52
            weekly, about 6,240 for hourly 24/5 FX, ...).
        start (date | str | None): first date to record (inclusive); bars before it are a
            warm-up period. Default None (record every bar).

    Raises:
        ConfigError: a bad parameter value or an unknown parameter name.

    ``get_analysis()`` (after ``cerebro.run()``) returns a dict:

    - ``returns`` (pd.Series, float64, name ``"returns"``): simple per-bar portfolio
      returns (fraction), tz-naive DatetimeIndex of the bar dates (named ``"date"``).
    - ``benchmark`` (pd.Series, float64): buy-and-hold returns of ``data0`` on the same
      dates, named after the data (``"benchmark"`` if it has no name).
    - ``frequency`` (:class:`metabt.data.bars.BarFrequency`): the bars per year used.
    - ``metrics`` (dict[str, float]): :func:`metabt.evaluate.report.compute_metrics` of ``returns``.
    - ``exposure`` (pd.Series, float64, name ``"exposure"``): gross exposure at each bar's
      close, on the dates of ``returns``: the sum over data of |position value| (the
      broker's value of each position, as backtrader's ``PositionsValue``) over the
      portfolio value; 0.0 where the strategy held nothing. The tearsheet's "Time in
      Market" is the share of bars where it is not 0.
    """

    params: Any = (("periods_per_year", None), ("start", None))

    def __init__(self, **unknown: Any) -> None:
        reject_unknown_params("QuantStatsAnalyzer", unknown, self.params)
        periods = self.p.periods_per_year
        if periods is not None and (
            isinstance(periods, bool) or not isinstance(periods, numbers.Integral) or periods < 1
        ):
            raise ConfigError(
                "QuantStatsAnalyzer: periods_per_year must be a positive integer (bars per "
                f"year, e.g. 252 for daily bars) or None (the bar frequency), got {periods!r}"
            )
        self._start_date = _as_date(self.p.start, "QuantStatsAnalyzer: start")
        self._values: dict[dt.datetime, float] = {}  # portfolio value at each bar's close
        self._closes: dict[dt.datetime, float] = {}  # close of data0 at each bar
        self._gross: dict[dt.datetime, float] = {}  # sum of |position value| at each bar
        self._cash = math.nan
        self.frequency: BarFrequency | None = None  # set at stop

    def start(self) -> None:
        self._cash = float(self.strategy.broker.getvalue())

    def next(self) -> None:
        """Record the portfolio value, the gross position value and ``data0``'s close at
        this bar (also in prenext)."""
        when = self.strategy.datetime.datetime(0)
        data = self.datas[0]
        broker = self.strategy.broker
        self._values[when] = float(broker.getvalue())
        self._closes[when] = float(data.close[0]) if len(data) else math.nan
        gross = 0.0
        for d in self.strategy.datas:
            if broker.getposition(d).size:  # a held position: its data has a bar
                gross += abs(float(broker.get_value([d])))
        self._gross[when] = gross

    def _frequency(self, index: pd.DatetimeIndex) -> BarFrequency:
        if self.p.periods_per_year is not None:
            return BarFrequency("given", float(self.p.periods_per_year))
        frequency = getattr(self.strategy, "bar_frequency", None)
        if isinstance(frequency, BarFrequency):
            return frequency
        return infer_frequency(index)

    def stop(self) -> None:
        """Build the return series, the benchmark and the metrics."""
        index = bar_index(list(self._values))
        values = pd.Series(list(self._values.values()), index=index, dtype="float64")
        returns = values.pct_change(fill_method=None).rename("returns")
        if len(returns):
            returns.iloc[0] = values.iloc[0] / self._cash - 1.0
        closes = pd.Series(list(self._closes.values()), index=index, dtype="float64")
        name = getattr(self.datas[0], "_name", "") or "benchmark"
        benchmark = closes.ffill().pct_change(fill_method=None).fillna(0.0).rename(name)
        benchmark = benchmark.reindex(returns.index, fill_value=0.0)
        gross = pd.Series(list(self._gross.values()), index=index, dtype="float64")
        exposure = (gross / values).rename("exposure")

        if self._start_date is not None:
            keep = returns.index >= pd.Timestamp(self._start_date)
            returns, benchmark, exposure = returns[keep], benchmark[keep], exposure[keep]
        if returns.empty:
            if not len(index):
                raise DataError("QuantStatsAnalyzer recorded no bars: the data feeds are empty")
            raise DataError(
                f"QuantStatsAnalyzer recorded no bars: start {self._start_date} is after the "
                f"last bar ({index[-1].date()}); use an earlier start or feed more data"
            )
        self.frequency = self._frequency(index)
        self.rets["returns"] = returns
        self.rets["benchmark"] = benchmark
        self.rets["frequency"] = self.frequency
        self.rets["metrics"] = compute_metrics(returns, periods_per_year=self.frequency.periods)
        self.rets["exposure"] = exposure

    def tearsheet(
        self,
        path: str | os.PathLike[str],
        title: str | None = None,
        benchmark: pd.Series | None = None,
    ) -> Path:
        """Write the quantstats HTML tearsheet of the run, with the benchmark.

        The page's "Time in Market" is the share of the run's bars that ended with a
        position (``exposure``), and its mean gross exposure is shown under it; intraday
        and lower-than-daily bars are handled as
        :func:`metabt.evaluate.tearsheet.write_tearsheet` says.

        Args:
            path (str | os.PathLike): the HTML file (written atomically; parent
                directories are created).
            title (str | None): report title. Default None ("metabt tearsheet").
            benchmark (pd.Series | None): simple per-bar benchmark returns, named (e.g. the
                BuyAndHold row's equal-weight basket), put on the run's bars (0.0 where it
                has none). Default None: the first data held (``benchmark``).

        Returns:
            pathlib.Path: ``path``.

        Raises:
            ConfigError: called before ``cerebro.run()`` finished.
        """
        if "returns" not in self.rets:
            raise ConfigError(
                "QuantStatsAnalyzer.tearsheet: no results yet; call it after cerebro.run()"
            )
        returns = self.rets["returns"]
        if benchmark is None:
            benchmark = self.rets["benchmark"]
        elif isinstance(benchmark, pd.Series):
            benchmark = benchmark.reindex(returns.index, fill_value=0.0)
        return write_tearsheet(
            returns,
            benchmark,
            path,
            title=title,
            periods_per_year=self.rets["frequency"].periods,
            exposure=self.rets.get("exposure"),  # results pickled before it existed lack it
        )


#: The columns of :class:`PortfolioAnalyzer`'s per-bar cost ledger, in order.
_LEDGER = ("traded", "commission", "spread", "impact", "slippage", "borrow")


class PortfolioAnalyzer(bt.Analyzer):
    """Positions, fills and rejected orders of a run: what turnover and attribution need.

    Composes backtrader's ``PositionsValue`` analyzer (signed position value of each data
    at each close) and listens to ``notify_order`` for fills and rejections, so it works
    with any strategy.

    Params:
        start (date | str | None): first date of the positions kept. Default None (all).

    ``get_analysis()`` (after ``cerebro.run()``) returns a dict:

    - ``positions`` (pd.DataFrame): (dates, data names) signed position value at each
      close, currency units, from ``start`` on (tz-naive dates).
    - ``traded`` (float): total filled notional, sum of |shares x fill price| over every
      fill, currency units.
    - ``traded_by_data`` (dict[str, float]): the same per data name.
    - ``rejected`` (list[dict]): orders the broker rejected (margin, cash): date, data,
      size, status.
    - ``ledger`` (pd.DataFrame): per bar (from ``start`` on; bars without fills hold 0):
      ``traded`` (two-way filled notional), ``commission`` (the broker's commission of the
      fills, without the borrow it books with a closing fill), ``spread`` and ``impact``
      (the half-spread and square-root impact a :class:`metabt.costs.DeskCommission`
      charges with it; 0 under any other commission scheme), ``slippage`` (|fill price −
      the bar's open| × shares: what the fills paid over the open they filled at) and
      ``borrow`` (short-borrow interest the broker accrued in the bar, read from its
      per-data credit and, when a short closes, from the credit its closing fill books),
      all currency.
    - ``equity`` (pd.Series): the broker's portfolio value at each close, from ``start`` on.

    Every execution counts, a partial one too (an order a broker filler such as
    :class:`metabt.costs.ParticipationFiller` fills over several bars), read from the
    order's new execution bits as backtrader's ``Transactions`` analyzer does.

    Raises:
        ConfigError: an unknown or bad parameter.
    """

    params: Any = (("start", None),)

    def __init__(self, **unknown: Any) -> None:
        reject_unknown_params("PortfolioAnalyzer", unknown, self.params)
        self._first_date = _as_date(self.p.start, "PortfolioAnalyzer: start")
        self._positions = bt.analyzers.PositionsValue()
        self._traded = 0.0
        self._traded_by_data: dict[str, float] = {}
        self._rejected: list[dict[str, Any]] = []
        # traded, commission, spread, impact, slippage, borrow
        self._ledger: dict[dt.datetime, list[float]] = {}
        self._equity: dict[dt.datetime, float] = {}
        self._credit_seen: dict[int, float] = {}  # the broker's accrued credit per data

    def _row(self) -> list[float]:
        when = self.strategy.datetime.datetime(0)
        row = self._ledger.get(when)
        if row is None:
            row = self._ledger[when] = [0.0] * len(_LEDGER)
        return row

    def notify_order(self, order: bt.Order) -> None:
        """Count each new execution's notional and costs, or record a rejection."""
        if order.status in (order.Partial, order.Completed):
            comminfo = self.strategy.broker.getcommissioninfo(order.data)
            for bit in order.executed.iterpending():
                self._fill(order.data, comminfo, float(bit.size), float(bit.price), bit.comm)
        elif order.status in (order.Margin, order.Rejected):
            self._rejected.append(
                {
                    "date": self.strategy.datas[0].datetime.date(0),
                    "data": order.data._name,
                    "size": order.created.size,
                    "status": order.getstatusname(),
                }
            )

    def _fill(
        self, data: bt.DataBase, comminfo: bt.CommInfoBase, size: float, price: float, comm: float
    ) -> None:
        """One execution into the ledger: notional, commission (split), slippage, borrow."""
        notional = abs(size * price)
        self._traded += notional
        name = data._name
        self._traded_by_data[name] = self._traded_by_data.get(name, 0.0) + notional
        if isinstance(comminfo, DeskCommission):
            commission, spread, impact = comminfo.breakdown(size, price)
        else:
            commission, spread, impact = float(comminfo.getcommission(size, price)), 0.0, 0.0
        row = self._row()
        row[0] += notional
        row[1] += commission
        row[2] += spread
        row[3] += impact
        row[4] += abs(price - float(data.open[0])) * abs(size)
        # a closing fill books the borrow the broker accrued on the position with its
        # commission (backtrader's int2pnl): the part accrued since the last bar is new
        booked = float(comm) - (commission + spread + impact)
        if booked > 1e-12 * max(1.0, notional):
            row[5] += booked - self._credit_seen.get(id(data), 0.0)
            self._credit_seen[id(data)] = 0.0

    def next(self) -> None:
        """Record the equity and the borrow the broker accrued in this bar."""
        broker = self.strategy.broker
        credit = getattr(broker, "d_credit", {})
        borrow = 0.0
        for d in self.strategy.datas:
            now, last = float(credit.get(d, 0.0)), self._credit_seen.get(id(d), 0.0)
            borrow += now - last if now >= last else now  # booked at a close: restarts
            self._credit_seen[id(d)] = now
        if borrow:
            self._row()[5] += borrow
        self._equity[self.strategy.datetime.datetime(0)] = float(broker.getvalue())

    def stop(self) -> None:
        """Build the positions frame."""
        names = [d._name for d in self.strategy.datas]
        held = self._positions.get_analysis()
        positions = pd.DataFrame.from_dict(held, orient="index", columns=names)
        positions.index = bar_index(list(held))
        if self._first_date is not None:
            positions = positions.loc[positions.index >= pd.Timestamp(self._first_date)]
        self.rets["positions"] = positions
        equity = pd.Series(list(self._equity.values()), bar_index(list(self._equity)), dtype=float)
        ledger = pd.DataFrame.from_dict(self._ledger, orient="index", columns=list(_LEDGER))
        ledger.index = bar_index(list(self._ledger))
        ledger = ledger.groupby(level=0).sum().reindex(equity.index, fill_value=0.0)
        if self._first_date is not None:
            first = pd.Timestamp(self._first_date)
            equity, ledger = equity.loc[equity.index >= first], ledger.loc[ledger.index >= first]
        self.rets["equity"] = equity
        self.rets["ledger"] = ledger
        self.rets["traded"] = self._traded
        self.rets["traded_by_data"] = dict(self._traded_by_data)
        self.rets["rejected"] = list(self._rejected)


class SignalAnalyzer(bt.Analyzer):
    """Each data's signal beside the forward return it predicts, and the rolling IC.

    For any :class:`~metabt.strategies.meta.SignalTrader` whose ``horizon`` is set (a model's
    forecast horizon, bars): at the end of the run, the signal at the close of bar t and
    the realised forward log return over the horizon, and their rolling information
    coefficient. Strategies without a forecast (``horizon`` None: buy-and-hold, SMA
    crossover) get ``signals`` None.

    Params:
        start (date | str | None): first date of the signals kept (e.g. the end of a
            warm-up). Default None (all).
        ic_window (int): bars in the rolling information coefficient. Default 63.

    Raises:
        ConfigError: an unknown or bad parameter; at ``start()``, a strategy that is not a
            SignalTrader.

    ``get_analysis()`` returns a dict:

    - ``signals`` (dict[str, pd.DataFrame] | None): per data, ``signal`` at the close of
      bar t and ``forward`` = log(C_{t+h} / C_t), where both are known
      (:func:`signal_frames`).
    - ``rolling_ic`` (dict[str, pd.Series]): per data, the ``ic_window``-bar rolling
      Pearson correlation of the two (NaN until the window fills).
    """

    params: Any = (("start", None), ("ic_window", 63))
    requires: ClassVar[type[SignalTrader]] = SignalTrader

    def __init__(self, **unknown: Any) -> None:
        owner = type(self).__name__
        reject_unknown_params(owner, unknown, self.params)
        self._first_date = _as_date(self.p.start, f"{owner}: start")
        window = self.p.ic_window
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ConfigError(f"{owner}: ic_window must be an integer >= 2, got {window!r}")

    def start(self) -> None:
        if not isinstance(self.strategy, self.requires):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.requires.__name__}, got "
                f"{type(self.strategy).__name__}; attach it to a Cerebro that runs "
                f"metabt.{self.requires.__name__} (or a subclass)"
            )

    def stop(self) -> None:
        strategy = self.strategy
        horizon = strategy.horizon
        if horizon is None:
            self.rets["signals"], self.rets["rolling_ic"] = None, {}
            return
        first = pd.Timestamp(self._first_date) if self._first_date else pd.Timestamp.min
        signals = signal_frames(strategy, horizon, first)
        self.rets["signals"] = signals
        self.rets["rolling_ic"] = {
            name: pair["signal"].rolling(self.p.ic_window).corr(pair["forward"])
            for name, pair in signals.items()
        }


class AdaptationAnalyzer(SignalAnalyzer):
    """A MetaStrategy's adaptation diagnostics, as a backtrader analyzer.

    Attach it to a Cerebro that runs a :class:`metabt.MetaStrategy` (or a subclass, such
    as the model baselines): at the end of the run it collects the adaptation log and, as
    :class:`SignalAnalyzer`, the signal of each data beside the forward return it tried to
    predict; :meth:`write` draws them next to the equity curve
    (``metabt.evaluate.report.write_diagnostics``).

    Params:
        start, ic_window: see :class:`SignalAnalyzer`.

    Raises:
        ConfigError: an unknown or bad parameter; at ``start()``, a strategy that is not a
            MetaStrategy.

    ``get_analysis()`` returns, besides :class:`SignalAnalyzer`'s ``signals`` and
    ``rolling_ic``:

    - ``adaptations`` (pd.DataFrame): ``MetaStrategy.adaptation_log()`` from ``start`` on
      (adaptations during the warm-up are left out): one row per adaptation with date,
      data, trigger, support, loss_before, loss_after (support MSE), steps, query_loss
      (realised MSE of that model's predictions), query_count.
    """

    requires: ClassVar[type[SignalTrader]] = MetaStrategy

    def stop(self) -> None:
        super().stop()
        log = self.strategy.adaptation_log()
        if self._first_date is not None:  # warm-up adaptations are not results
            log = log[log["date"] >= pd.Timestamp(self._first_date)].reset_index(drop=True)
        self.rets["adaptations"] = log

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
