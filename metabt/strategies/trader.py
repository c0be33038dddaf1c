"""SignalTrader: the base of every metabt strategy (one signal per data, one sizing path).

Each bar, a subclass gives each data a signal; :meth:`SignalTrader.rebalance` turns the
signals and each data's realised volatility into target weights through
:class:`metabt.sizers.SignalSizer`, caps the book's gross leverage and submits the
differences as orders that fill at the next bar's open.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, ClassVar

import backtrader as bt
import numpy as np
import pandas as pd

from metabt._checks import as_date, check_int, reject_unknown_params
from metabt._stats import RollingMoments
from metabt.data.bars import BarFrequency, common_frequency, timeframe_frequency
from metabt.errors import ConfigError
from metabt.sizers import SignalSizer

__all__ = ["Signal", "SignalTrader", "capped_targets"]


class Signal(bt.Indicator):
    """One data's signal, as a backtrader line (``signal``) that plots and can be read back.

    The owning strategy writes ``signal[0]`` in its ``next()``; bars without a signal
    (warm-up, not yet adapted) hold NaN.
    """

    lines = ("signal",)
    plotinfo: ClassVar[dict[str, Any]] = {"subplot": True, "plotname": "signal"}

    def next(self) -> None:
        """Nothing to compute: the strategy writes the value of the bar."""

    def once(self, start: int, end: int) -> None:
        """Nothing to compute in backtrader's vectorised (``runonce``) pass either.

        Defining it matters: an indicator that overrides only ``next`` gets backtrader's
        ``once_via_next``, which replays every bar of its data a second time in Python.
        """


class SignalTrader(bt.Strategy):
    """Base of metabt's strategies: one signal per data, positions set through SignalSizer.

    Each bar, :meth:`compute_signal` gives each data that has a new bar a signal (NaN = no
    view, go flat). :meth:`rebalance` is the one sizing path: the sizer's
    :meth:`~metabt.sizers.SignalSizer.target_weight` turns each signal and the data's
    realised volatility (:meth:`realised_vol`) into a target weight, the weights are scaled
    down to the portfolio's gross-leverage cap, the sizer's
    :meth:`~metabt.sizers.SignalSizer.shares_for_weight` turns each into shares (deadband
    included), and the differences are submitted as ``buy``/``sell`` orders, reductions
    first so that they free cash for the increases. Orders fill at the next bar's open
    (backtrader's default), so a decision at bar t never trades at t's close.

    Named apart from backtrader's own ``bt.SignalStrategy``, whose contract differs.
    Without a sizer in the Cerebro, a default ``SignalSizer()`` is used; another kind of
    sizer (``bt.sizers.FixedSize``, ``PercentSizer``, ...) is refused at start with a
    ``ConfigError``, never silently replaced. Fills, turnover and rejected orders are measured by
    :class:`metabt.analyzers.PortfolioAnalyzer`, not by the strategy.

    Params:
        trade_start (date | str | None): no orders before this date; bars before it are a
            warm-up period. Default None (trade from the first bar).
        gross_leverage (float): cap on the sum of |position value| over all data, as a
            multiple of portfolio value. Default 0.95: orders fill at the next bar's open,
            so a little cash absorbs overnight gaps and commission; an order the broker
            still rejects is retried at the next bar.
        smooth (int): bars of signals averaged into the traded signal: each data trades
            the mean of its last ``smooth`` finite signals, the standard way to combine
            overlapping h-bar forecasts (a 5-bar forecast made every bar is five
            overlapping bets). The ``signal`` line keeps the raw signal, so the IC scores
            the forecast itself. A NaN signal (no view) clears the history and goes flat.
            Default 1 (no smoothing; the command line's and ``RunConfig``'s default is 20,
            chosen on validation).
        adjust_rate (float | None): κ in (0, 1], the partial-adjustment rate: each bar a
            data's target weight moves κ of the way from its previous target to the
            sizer's weight (its aim), ``w_t = (1 − κ) · w_{t−1} + κ · aim_t``, starting flat
            (Gârleanu & Pedersen 2013; the P&L objective's
            ``metabt.learn.objectives.partial_adjustment``). Applied before the gross
            cap and the deadband; a NaN signal (no view) still goes flat at once and
            starts the path over. 1 is the aim itself. Default None: the rate the traded
            learner learned (``self.learner.adjust_rate``, recorded in its checkpoint;
            MetaStrategy), else 1.
        no_trade_bps (float): cost of one fill, basis points of traded value (commission
            plus slippage), for the no-trade region; 0 turns it off. Default 0.
        forecast_scale (float | None): the forecast in return units: expected return over
            the signal's horizon per unit of signal, calibrated on validation data. Needed
            when ``no_trade_bps`` > 0.

    The no-trade region (proportional costs, in the spirit of Davis & Norman 1990, applied
    to the forecast rather than solved for the optimal band): a position moves from weight
    w to its target w* only when the move's expected gain over the forecast horizon pays
    for the fill, ``(w* − w) · μ̂ > |w* − w| · c`` with ``μ̂ = forecast_scale · signal``
    and ``c = no_trade_bps / 1e4``; in words, only towards the forecast and only when the
    forecast return exceeds the cost of a fill. Otherwise the position is kept (the gross
    cap still trims a kept book that exceeds it; a NaN signal still goes flat). It is a
    one-step rule, not the optimal band of a dynamic program.

    A feed that ends before the others (a delisting, a shorter file) is closed one bar
    before its last, so the order fills at its last bar's open; it is listed in ``ended``.

    Attributes:
        targets_set (int): positions the strategy set out to open from flat (a non-zero
            target weight past the deadband), over the run.
        targets_rounded_away (int): of those, the ones whole units rounded to 0 (the
            position worth less than one unit of the asset: e.g. a coin priced above the
            position's value); a fractional sizer (``SignalSizer(fractional=True)``) has none.
        signals (list[Signal]): the ``signal`` line of each data, in ``self.datas`` order.
        ended (dict[str, date]): data name -> the date its position was closed because its
            feed ends before the others.
        horizon (int | None): bars over which the signal forecasts a return; None for a
            strategy without a forecast. When set, ``SignalAnalyzer`` scores the signal
            against the realised forward return over ``horizon`` bars (IC).
        bar_frequency (BarFrequency | None): the run's bar frequency, set at start: the
            sizer's ``bars_per_year`` if given (named "given"), else inferred from the
            feeds' bar times by :func:`metabt.data.bars.common_frequency` (with the
            sizer's declared ``calendar``, if any). Its
            ``bars_per_year`` annualises :meth:`realised_vol`; ``QuantStatsAnalyzer``
            annualises the metrics with it.

    Raises:
        ConfigError: at start, a sizer that is not a SignalSizer; feeds of different bar
            frequencies (e.g. daily beside hourly) without an explicit ``bars_per_year``;
            feeds that hold fewer than 2 bars at start (not preloaded, e.g. resampled in
            Cerebro) without one, unless their backtrader timeframe is daily or longer.
    """

    params: Any = (
        ("trade_start", None),
        ("gross_leverage", 0.95),
        ("smooth", 1),
        ("adjust_rate", None),
        ("no_trade_bps", 0.0),
        ("forecast_scale", None),
    )
    horizon: int | None = None

    def __init__(self, **unknown: Any) -> None:
        super().__init__()
        reject_unknown_params(type(self).__name__, unknown, self.params)
        if not (math.isfinite(self.p.gross_leverage) and self.p.gross_leverage > 0):
            raise ConfigError(f"gross_leverage must be > 0, got {self.p.gross_leverage!r}")
        self._trade_start = as_date(self.p.trade_start, "trade_start")
        self._smooth = check_int("smooth", self.p.smooth, 1)
        rate = self.p.adjust_rate
        if rate is not None and not (
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate <= 1
        ):
            raise ConfigError(
                f"adjust_rate must be in (0, 1] (the share of the way to the aim traded each "
                f"bar; 1 = all of it) or None, got {rate!r}"
            )
        self._adjust_rate = 1.0  # set at start: the param, else the learner's
        self._adjusted: list[float] = [0.0] * len(self.datas)  # each data's w_{t-1}
        cost = self.p.no_trade_bps
        if not (isinstance(cost, (int, float)) and math.isfinite(cost) and cost >= 0):
            raise ConfigError(f"no_trade_bps must be a number >= 0 (basis points), got {cost!r}")
        scale = self.p.forecast_scale
        if cost > 0 and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
            raise ConfigError(
                f"no_trade_bps={cost!r} needs forecast_scale, the expected return per unit "
                f"of signal (calibrated on validation), got {scale!r}"
            )
        self._no_trade = cost / 1e4 if cost > 0 else 0.0
        self._history: list[deque[float]] = [deque(maxlen=self._smooth) for _ in self.datas]
        self.signals = [Signal(d) for d in self.datas]
        self._signal_lines: list[Any] = [sig.lines[0] for sig in self.signals]
        # each data's line objects, looked up once (backtrader resolves data.close by
        # attribute lookup on every access)
        self._bars = [(d.high, d.low, d.close, d.volume) for d in self.datas]
        self._signal_sizer: SignalSizer | None = None
        # backtrader gives every strategy a FixedSize before cerebro adds the user's sizer
        self._backtrader_default_sizer = self.getsizer()
        self._seen = [0] * len(self.datas)  # bars of each data already processed
        self._last = [math.nan] * len(self.datas)  # latest signal of each data
        self._last_log_close = [math.nan] * len(self.datas)
        self._close = [math.nan] * len(self.datas)  # close of each data's latest bar
        self._vol: list[RollingMoments] = []  # log returns over the sizer's vol_lookback
        self._vol_lookback = 0  # the sizer's, set at start
        self._closing_bar: list[int] = []  # bar at which each early-ending feed is closed
        self._closed: set[int] = set()
        self.ended: dict[str, Any] = {}
        self.bar_frequency: BarFrequency | None = None  # set at start
        # non-zero targets from flat, and those whole units rounded to 0 (worth < 1 unit)
        self.targets_set = 0
        self.targets_rounded_away = 0
        self._sqrt_bars_per_year = math.nan

    # ---- hooks for subclasses
    def compute_signals(self, indices: list[int]) -> list[float]:
        """Signals of the data ``indices`` (each has a new bar at this step), in that order.

        Called once per backtrader step with every data that has a new bar, so that a
        subclass can compute them together (``MetaStrategy`` adapts and predicts all
        assets in one batched call). The default calls :meth:`compute_signal` for each.

        Args:
            indices: positions in ``self.datas``, ascending.

        Returns:
            One signal per index (NaN = no view, go flat).
        """
        return [self.compute_signal(i, self.datas[i]) for i in indices]

    def compute_signal(self, i: int, data: bt.DataBase) -> float:  # pragma: no cover - abstract
        """The signal of data ``i`` at the current bar (NaN for none)."""
        raise NotImplementedError

    # ---- backtrader hooks
    def start(self) -> None:
        sizer = self.getsizer()
        if sizer is self._backtrader_default_sizer:  # no sizer added: metabt's default
            sizer = SignalSizer()
            self.setsizer(sizer)
        elif not isinstance(sizer, SignalSizer):
            raise ConfigError(
                f"{type(self).__name__} sizes its portfolio with metabt.SignalSizer "
                f"(volatility targets, gross-leverage cap), not {type(sizer).__name__}; "
                "use cerebro.addsizer(metabt.SignalSizer, target_vol=..., max_leverage=...) "
                "or add no sizer"
            )
        self._signal_sizer = sizer
        rate = self.p.adjust_rate
        if rate is None:  # the traded learner's learned rate (MetaStrategy), else 1
            rate = getattr(getattr(self, "learner", None), "adjust_rate", 1.0)
        self._adjust_rate = float(rate)
        lookback = self._vol_lookback = int(sizer.p.vol_lookback)
        self._vol = [RollingMoments((lookback,)) for _ in self.datas]
        # bars of each preloaded feed; a feed that ends before the others is closed
        lengths = [d.buflen() for d in self.datas]
        last = [d.datetime.array[n - 1] if n else math.nan for d, n in zip(self.datas, lengths)]
        end = max(last, default=math.nan)
        self._closing_bar = [n - 1 if t < end else -1 for n, t in zip(lengths, last)]
        given, calendar = sizer.p.bars_per_year, sizer.p.calendar
        times = self._bar_times(lengths)
        if not times and given is None:
            self.bar_frequency = self._timeframe_frequency(calendar)
        else:
            self.bar_frequency = common_frequency(times, given, calendar)
        self._sqrt_bars_per_year = math.sqrt(self.bar_frequency.bars_per_year)

    def _bar_times(self, lengths: list[int]) -> dict[str, pd.DatetimeIndex]:
        """Each preloaded feed's bar times (backtrader day numbers -> DatetimeIndex).

        Returns:
            Feed name -> bar times, for the feeds that hold 2 bars or more; empty when none
            does (not preloaded: see :meth:`_timeframe_frequency`).
        """
        out: dict[str, pd.DatetimeIndex] = {}
        for j, (d, n) in enumerate(zip(self.datas, lengths)):
            if n < 2:  # a feed with one bar has no spacing: the others decide
                continue
            days = np.asarray(d.datetime.array[:n], dtype=np.float64)
            whole = np.floor(days)
            # backtrader's day number: proleptic Gregorian ordinal (1970-01-01 = 719163)
            micros = (whole.astype(np.int64) - 719_163) * 86_400_000_000
            micros += np.rint((days - whole) * 86_400e6).astype(np.int64)
            name = getattr(d, "_name", "") or f"data{j}"
            out[name if name not in out else f"{name}#{j}"] = pd.DatetimeIndex(
                (micros * 1000).view("datetime64[ns]")
            )
        return out

    def _timeframe_frequency(self, calendar: str | None = None) -> BarFrequency:
        """The frequency from the feeds' backtrader timeframe, when their bars are not loaded
        (:func:`metabt.data.bars.timeframe_frequency`: daily or longer, or any with the
        sizer's declared ``calendar``).

        Raises:
            ConfigError: the feeds' timeframes differ, or are intraday, naming the fix.
        """
        kinds = {(bt.TimeFrame.getname(d._timeframe, 2), int(d._compression)) for d in self.datas}
        found = timeframe_frequency(*next(iter(kinds)), calendar) if len(kinds) == 1 else None
        if found is not None:
            return found
        raise ConfigError(
            f"{type(self).__name__}: cannot infer the bar frequency, no data feed holds "
            f"2 bars at start (a live feed or Cerebro(preload=False)) and their timeframes "
            f"({', '.join(sorted(f'{u} x{c}' for u, c in kinds))}) do not say how many bars "
            "make a year; pass it with cerebro.addsizer(metabt.SignalSizer, "
            "bars_per_year=...), e.g. 6240 for hourly FX"
        )

    def realised_vol(self, i: int) -> float:
        """Annualised realised volatility of data ``i`` at the current bar, for sizing.

        The sample std (ddof=1) of the last ``vol_lookback`` (the sizer's param, bars)
        close-to-close log returns times ``sqrt(bars_per_year)`` of :attr:`bar_frequency`
        (the sizer's ``bars_per_year``, or the feeds' inferred frequency: 252 for daily
        equity bars, 52 weekly, 6240 hourly 24/5), from rolling moments updated once per
        bar (O(1), :class:`metabt._stats.RollingMoments`).

        Returns:
            float: annualised volatility (fraction, 0.2 = 20% a year); NaN with fewer than
            ``vol_lookback + 1`` bars.
        """
        if self._seen[i] <= self._vol_lookback:
            return math.nan
        return self._vol[i].std() * self._sqrt_bars_per_year

    def trading(self) -> bool:
        """True once the current bar is on or after ``trade_start``."""
        return self._trade_start is None or self.datas[0].datetime.date(0) >= self._trade_start

    def prenext(self) -> None:
        self._step()

    def next(self) -> None:
        self._step()

    def _step(self) -> None:
        """Signals for the data that have a new bar; then rebalance if trading.

        Runs in ``prenext`` too, so bars are not lost while backtrader waits for the other
        data (different start dates) or for indicators' minimum periods.
        """
        fresh = []  # data with a new bar (calendars may differ)
        lengths = [len(d) for d in self.datas]
        seen, closed, bars = self._seen, self._closed, self._bars
        last_log_close, closes = self._last_log_close, self._close
        for i, n in enumerate(lengths):
            if n > seen[i] and i not in closed:
                seen[i] = n
                close = closes[i] = bars[i][2][0]
                log_close = math.log(close)
                if n > 1:
                    self._vol[i].push(log_close - last_log_close[i])
                last_log_close[i] = log_close
                fresh.append(i)
        if fresh:
            last, lines = self._last, self._signal_lines
            for i, signal in zip(fresh, self.compute_signals(fresh)):
                lines[i][0] = signal  # the raw forecast: what the IC scores
                last[i] = self._traded_signal(i, signal)
        active = []
        closing = self._closing_bar
        for i, n in enumerate(lengths):
            if n == 0 or i in closed:
                continue
            if n == closing[i] and self.trading():
                d = self.datas[i]
                # this feed ends at its next bar, before the others: close now, filled at
                # its last bar's open (a position cannot fill after its data ends)
                self._closed.add(i)
                self.ended[d._name] = d.datetime.date(0)
                if self.getposition(d).size:
                    self.close(d)
                continue
            active.append(i)
        if active and self.trading():
            self.rebalance(active, [self._last[i] for i in active])

    def _traded_signal(self, i: int, signal: float) -> float:
        """The signal data ``i`` trades: the mean of its last ``smooth`` finite signals."""
        if self._smooth == 1:
            return signal
        history = self._history[i]
        if not math.isfinite(signal):  # no view: go flat, start over
            history.clear()
            return signal
        history.append(signal)
        return math.fsum(history) / len(history)

    def _keep(
        self, signals: list[float], weights: list[float], held_weights: list[float]
    ) -> list[bool]:
        """Which positions the no-trade region keeps (see the class docstring)."""
        if not self._no_trade:
            return [False] * len(signals)
        scale, cost = float(self.p.forecast_scale), self._no_trade
        keep = []
        for s, w, h in zip(signals, weights, held_weights):
            if not math.isfinite(s):  # no view: go flat
                keep.append(False)
                continue
            move = w - h
            keep.append(move * scale * s <= abs(move) * cost)
        return keep

    def _partially_adjusted(
        self, active: list[int], signals: list[float], aims: list[float]
    ) -> list[float]:
        """``w_t = (1 − κ) · w_{t−1} + κ · aim_t`` per data (``adjust_rate``); a NaN signal
        goes flat at once and restarts the path from flat."""
        kappa, keep, path = self._adjust_rate, 1.0 - self._adjust_rate, self._adjusted
        out = []
        for i, s, aim in zip(active, signals, aims):
            w = keep * path[i] + kappa * aim if math.isfinite(s) else 0.0
            path[i] = w
            out.append(w)
        return out

    def cancel_open(self, indices: list[int]) -> None:
        """Cancel the open orders of the data ``indices`` before new ones are sized.

        An order stays open after a partial fill (a broker filler such as
        :class:`metabt.costs.ParticipationFiller` capped it to part of a bar's volume);
        a rebalance sizes its orders from the positions held, so the rest of the old
        order is cancelled rather than filled beside the new one. Without a filler every
        market order fills whole at the next open and there is nothing to cancel (nor with
        a broker that does not list its open orders: backtrader's ``BackBroker`` does).
        """
        listed = getattr(self.broker, "get_orders_open", None)
        pending = listed() if listed is not None else ()
        if not pending:
            return
        wanted = {id(self.datas[i]) for i in indices}
        for order in pending:
            if id(order.data) in wanted:
                self.cancel(order)

    def rebalance(self, active: list[int], signals: list[float]) -> None:
        """Move each active data's position to the sizer's target, with the gross-leverage cap.

        Args:
            active: indices (in ``self.datas``) of the data that have bars.
            signals: their current signals (NaN = go flat).
        """
        sizer = self._signal_sizer
        assert sizer is not None
        self.cancel_open(active)
        cap = self.p.gross_leverage
        weight, vol = sizer.target_weight, self.realised_vol
        weights = [weight(s, vol(i)) for i, s in zip(active, signals)]
        if self._adjust_rate != 1.0:
            weights = self._partially_adjusted(active, signals, weights)
        gross = sum([abs(w) for w in weights])
        # the deadband is in the units of the sizer's own weights: when the cap scales the
        # weights down (a universe of many assets), it scales the band with them, or no
        # position of a wide universe would ever move out of it
        band = sizer.p.deadband
        if gross > cap:
            weights = [w * (cap / gross) for w in weights]
            band *= cap / gross
        value = self.broker.getvalue()
        datas, closes, position = self.datas, self._close, self.getposition
        prices, held = [], []
        for i in active:
            prices.append(closes[i])  # the close of the data's latest bar, as _step read it
            held.append(position(datas[i]).size)
        bands: float | list[float] = band
        if self._no_trade:
            held_weights = [c * p / value for c, p in zip(held, prices)]
            keep = self._keep(signals, weights, held_weights)
            bands = [math.inf if k else band for k in keep]
        targets = capped_targets(sizer, weights, prices, held, value, cap=cap, deadband=bands)
        orders = []
        for i, w, c, t, p in zip(active, weights, held, targets, prices):
            if w and c == 0 and abs(w) >= band:  # a position to open, past the deadband
                self.targets_set += 1
                if t == 0 and abs(w) * value < p:  # worth less than one whole unit
                    self.targets_rounded_away += 1
            if t != c:  # (is an increase, data, change): reductions first, they free cash
                orders.append((abs(t) >= abs(c), datas[i], t - c))
        if len(orders) > 1:
            orders.sort(key=lambda o: o[0])
        for _, d, delta in orders:
            if delta > 0:
                self.buy(d, size=delta)
            else:
                self.sell(d, size=-delta)


def capped_targets(
    sizer: SignalSizer,
    weights: list[float],
    prices: list[float],
    held: list[float],
    value: float,
    *,
    cap: float,
    deadband: float | list[float],
) -> list[float]:
    """Target positions (shares) of a book whose weights are already capped, with a deadband.

    Each position moves to ``sizer.shares_for_weight`` of its weight, except that a
    position within ``deadband`` of its weight is kept. Kept positions can push the book
    over ``cap`` (its gross value over ``value``): then each position kept *above* its
    exact target (``|kept| > |exact|``) moves to the exact target and the others stay
    kept. Every target is then at most its exact size, so the book is within the cap
    (the exact weights sum to at most ``cap``), and a position that did not push the
    book over it does not trade.

    Args:
        sizer: gives the shares of a weight (truncated toward zero).
        weights: (N,) target weights after the cap, fractions of ``value``, signed.
        prices: (N,) share prices (currency units); held: (N,) current positions (shares).
        value: portfolio value (currency units).
        cap: gross leverage cap (sum of |position value| over ``value``).
        deadband: weight change below which a position is kept (fraction of ``value``);
            one for all, or (N,) per position (``inf`` keeps it whatever the change).

    Returns:
        (N,) target positions, shares (whole, unless the sizer is ``fractional``).
    """
    shares = sizer.shares_for_weight
    bands = [deadband] * len(weights) if isinstance(deadband, (int, float)) else deadband
    targets = [
        shares(w, p, value, current=c, deadband=b)
        for w, p, c, b in zip(weights, prices, held, bands)
    ]
    book = sum([abs(t) * p for t, p in zip(targets, prices)])
    if book > cap * value:
        # positions held inside their deadband pushed the book over the cap: trim the
        # ones held above their exact target (not every position: small signal changes
        # of the others would trade)
        for j, (w, p, c, t) in enumerate(zip(weights, prices, held, targets)):
            exact = shares(w, p, value, current=c, deadband=0.0, rebalance_band=0.0)
            if abs(t) > abs(exact):
                targets[j] = exact
    return targets
