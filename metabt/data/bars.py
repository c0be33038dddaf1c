"""Bar frequency as a first-class fact: what one bar is, and how many bars make a year.

Annualised statistics (Sharpe, volatility, turnover) and volatility targets need the
number of bars per year, and that depends on trading hours as much as on bar spacing:
hourly bars of an equity (about 7 a day on 252 days) are not hourly FX bars (24 a day, 5
days a week) nor hourly crypto bars (24/7). :func:`infer_frequency` reads both from a
DatetimeIndex: the bar *spacing* (its median, the label and the backtrader timeframe) and
the bars *observed per year* (snapped to a conventional value when close to one).

A declared market calendar (:data:`CALENDARS`: ``"exchange"``, ``"24/5"``, ``"24/7"``,
``"futures"``; an asset class declares one, :mod:`metabt.config.assets`) replaces that
guess: the bars per year are then the calendar's (its trading days, times its bars a day
for intraday bars), whatever the sample shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metabt.errors import ConfigError, DataError

__all__ = [
    "BarFrequency",
    "CALENDARS",
    "Calendar",
    "check_bars_per_year",
    "check_calendar",
    "check_same_bars",
    "common_frequency",
    "infer_frequency",
    "timeframe_frequency",
]

MIN_BARS = 20
"""Bars needed to count bars per year; fewer fall back to the spacing's conventional value."""
MIN_SPAN_DAYS = 28.0
"""Calendar days the bars must span to count bars per year (else the same fallback)."""
SNAP = 0.10
"""A measured count within this relative distance of a conventional value snaps to it."""

_DAY = 86_400.0  # seconds
_YEAR = 365.25 * _DAY
_SESSION = 6.5 * 3_600.0  # a regular equity session (NYSE 09:30-16:00), seconds
_FIX = "pass bars_per_year explicitly (--bars-per-year on the command line), e.g. 252 for daily"


@dataclass(frozen=True)
class Calendar:
    """When a market trades: trading days a year and hours a trading day.

    Attributes:
        name: the key in :data:`CALENDARS`, e.g. ``"24/5"``.
        days: trading days a year (days), e.g. 252 for NYSE, 260 for FX (52 x 5).
        hours: trading hours a day (hours), e.g. 6.5 for NYSE's regular session.
    """

    name: str
    days: float
    hours: float

    def bars_a_day(self, seconds: float) -> list[float]:
        """Bars a trading day of bars ``seconds`` apart: ``hours / spacing``, and rounded up
        when the session does not divide evenly (NYSE's 6.5 hours are 7 hourly bars,
        09:30 to 15:30)."""
        per_day = self.hours * 3_600.0 / seconds
        return sorted({per_day, float(math.ceil(per_day - 1e-9))})


#: The market calendars an asset class may declare (:mod:`metabt.config.assets`).
#:
#: - ``exchange``: US equities, NYSE/Nasdaq regular session 09:30-16:00 ET (6.5 hours) on
#:   about 252 trading days (365 less weekends and 9-10 exchange holidays).
#: - ``24/5``: spot FX, traded around the clock from Sunday evening to Friday evening: 24
#:   hours on 260 weekdays (52 x 5; the few quiet holidays are not subtracted).
#: - ``24/7``: crypto, which never closes: 24 hours on 365 days.
#: - ``futures``: CME Globex, 23 hours a day (17:00-16:00 CT, a one-hour break) on about
#:   252 days (the exchange's holiday calendar).
CALENDARS: Mapping[str, Calendar] = {
    "exchange": Calendar("exchange", 252.0, 6.5),
    "24/5": Calendar("24/5", 260.0, 24.0),
    "24/7": Calendar("24/7", 365.0, 24.0),
    "futures": Calendar("futures", 252.0, 23.0),
}


def check_calendar(name: Any, what: str = "calendar") -> Calendar | None:
    """The :class:`Calendar` named ``name`` (None: none declared, the dates decide).

    Raises:
        ConfigError: not None and not a key of :data:`CALENDARS` (the message lists them).
    """
    if name is None:
        return None
    found = CALENDARS.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(
            f"{what} must be one of {', '.join(CALENDARS)} (or None to detect it from the "
            f"dates), got {name!r}"
        )
    return found


@dataclass(frozen=True)
class BarFrequency:
    """How often bars come, and how many make a year.

    Attributes:
        name: readable label of the median bar spacing: ``"minute"``, ``"5-minute"``,
            ``"hourly"``, ``"4-hour"``, ``"daily"``, ``"weekly"``, ``"monthly"``,
            ``"quarterly"``, ``"yearly"``, ... (``"given"`` for an explicit value).
        bars_per_year: bars in a year of this market (> 0), e.g. 252 for daily equities,
            6240 for hourly FX (24 x 5 x 52), 8760 for hourly crypto (24 x 365).
        basis: where ``bars_per_year`` comes from, e.g. ``"24/5"``, ``"trading days"``,
            ``"measured"`` or ``"given"`` (not compared).
        timeframe: backtrader ``TimeFrame`` name and compression of the spacing, e.g.
            ``("Minutes", 60)`` for hourly bars, ``("Days", 1)`` for daily ones; None for
            a given frequency (not compared).
    """

    name: str
    bars_per_year: float
    basis: str = field(default="", compare=False)
    timeframe: tuple[str, int] | None = field(default=None, compare=False)

    @property
    def periods(self) -> int:
        """``bars_per_year`` rounded to an int >= 1: what quantstats' ``periods`` take."""
        return max(1, round(self.bars_per_year))

    def describe(self) -> str:
        """One line, e.g. ``"hourly bars, 6,240 per year (24/5)"``."""
        x = self.bars_per_year
        count = f"{x:,.0f}" if x >= 10 else f"{x:g}"
        if self.name == "given":
            return f"{count} bars per year (given)"
        note = f" ({self.basis})" if self.basis else ""
        return f"{self.name} bars, {count} per year{note}"


def check_bars_per_year(value: Any, what: str = "bars_per_year") -> float:
    """``value`` as a positive finite float.

    Raises:
        ConfigError: not a number (bools included), not finite, or <= 0; the message names
            ``what``.
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ConfigError(
            f"{what} must be a positive number of bars per year (252 for daily equity bars, "
            f"6240 for hourly FX, 8760 for hourly crypto), got {value!r}"
        )
    return float(value)


def _count(n: float) -> str:
    return f"{n:g}" if n == round(n) else f"{n:.2g}"


def _spacing(seconds: float) -> tuple[str, tuple[str, int]]:
    """Label and backtrader (timeframe, compression) of a bar spacing in seconds."""
    if seconds < 1:
        us = max(1, round(seconds * 1e6))
        return f"{us}-microsecond", ("MicroSeconds", us)
    if seconds < 60:
        s = round(seconds)
        return ("second" if s == 1 else f"{s}-second"), ("Seconds", s)
    if seconds < 20 * 3_600:
        if seconds % 3_600 == 0:
            h = round(seconds / 3_600)
            return ("hourly" if h == 1 else f"{h}-hour"), ("Minutes", 60 * h)
        m = round(seconds / 60)
        return ("minute" if m == 1 else f"{m}-minute"), ("Minutes", m)
    days = seconds / _DAY
    if days < 1.5:
        return "daily", ("Days", 1)
    if days < 5:
        return f"{round(days)}-day", ("Days", round(days))
    if days <= 10:
        return "weekly", ("Weeks", 1)
    if days < 25:
        return f"{round(days / 7)}-week", ("Weeks", round(days / 7))
    months = round(days / 30.44)
    if months == 1:
        return "monthly", ("Months", 1)
    if months == 3:
        return "quarterly", ("Months", 3)
    if months < 11:
        return f"{months}-month", ("Months", months)
    years = max(1, round(days / 365.25))
    return ("yearly" if years == 1 else f"{years}-year"), ("Years", years)


def _conventions(
    seconds: float, timeframe: tuple[str, int], calendar: Calendar | None = None
) -> list[tuple[float, str]]:
    """Conventional (bars_per_year, basis) candidates for a bar spacing (only the declared
    ``calendar``'s, when one is)."""
    unit, k = timeframe
    if calendar is not None and unit not in ("Weeks", "Months", "Years"):
        if unit == "Days":
            return [(calendar.days / k, f"{calendar.name}, declared: {calendar.days:g} days")]
        return [
            (
                bars * calendar.days,
                f"{calendar.name}, declared: {_count(bars)} bars x {calendar.days:g} days",
            )
            for bars in calendar.bars_a_day(seconds)
        ]
    if unit == "Days":
        return [(252 / k, "trading days"), (365 / k, "calendar days")]
    if unit in ("Weeks", "Months", "Years"):
        return [({"Weeks": 52, "Months": 12, "Years": 1}[unit] / k, "")]
    per_day = _DAY / seconds
    out = [(per_day * 365, "24/7"), (per_day * 260, "24/5")]
    for bars in sorted({_SESSION / seconds, float(math.ceil(_SESSION / seconds - 1e-9))}):
        out.append((bars * 252, f"{_count(bars)} bars x 252 days"))
    return out


def infer_frequency(
    index: pd.DatetimeIndex, *, name: str | None = None, calendar: str | None = None
) -> BarFrequency:
    """Infer the bar frequency of a series of bar times, trading-hours aware.

    The label and backtrader timeframe come from the median spacing of consecutive bars.
    Bars per year are counted: ``(number of bars - 1) / span in years`` (365.25 days), then
    snapped to the nearest conventional value for the spacing when within 10%
    (:data:`SNAP`): sub-daily bars to 24/7 (``bars a day x 365``), 24/5 (``x 260``) or
    exchange hours (a 6.5-hour session x 252 days; for hourly bars 1638 or 7 bars x 252 =
    1764); daily bars to 252 (trading days) or 365 (calendar days); weekly to 52, monthly
    to 12, quarterly to 4, yearly to 1. A count far from all of them is kept, rounded
    (basis ``"measured"``).

    With fewer than :data:`MIN_BARS` bars or a span under :data:`MIN_SPAN_DAYS` days the
    count is unreliable; the value is then assumed from the spacing and the calendar the
    bars show: 7 days a week if any bar falls on a Saturday; for sub-daily bars 24/5 if a
    day's bars cover more than 12 hours, else exchange hours (the median bars per day x
    252). The basis then says "assumed".

    A declared ``calendar`` (:data:`CALENDARS`) is not guessed: daily bars count its
    trading days (``days / compression``), intraday bars its bars a day times its days
    (:meth:`Calendar.bars_a_day`; of the two values for a session that does not divide
    evenly, the one nearer the count), weekly and longer bars as above. When the sample is
    long enough and its count is more than 10% away, the basis says so (``"24/5,
    declared: 24 bars x 260 days; measured 5,010"``): gaps in the file, or a calendar
    that is not the data's.

    Args:
        index: bar times (tz-naive or aware), ascending and unique, at least 2.
        name: the feed's name for error messages.
        calendar: a key of :data:`CALENDARS`, or None (default) to infer it.

    Returns:
        BarFrequency: the label, bars per year, basis and backtrader timeframe.

    Raises:
        DataError: not a DatetimeIndex, fewer than 2 bars, a missing (NaT) time, or times
            not strictly ascending (the message says how to fix, e.g. pass
            ``bars_per_year`` explicitly).
        ConfigError: an unknown ``calendar``.
    """
    declared = check_calendar(calendar)
    who = f"{name}: " if name else ""
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(
            f"{who}bar times must be a pandas DatetimeIndex, got {type(index).__name__}; "
            "load the bars with metabt.data.load_ohlcv"
        )
    if len(index) < 2:
        raise DataError(
            f"{who}{len(index)} bar(s) cannot show a bar frequency; give at least 2 bars or {_FIX}"
        )
    if index.hasnans:
        raise DataError(f"{who}a bar has no time (NaT); load the bars with metabt.data.load_ohlcv")
    ns = index.as_unit("ns").asi8
    gaps = np.diff(ns)
    if (gaps <= 0).any():
        pos = int(np.flatnonzero(gaps <= 0)[0]) + 1
        raise DataError(
            f"{who}bar times must be strictly ascending, but bar {pos} ({index[pos]}) is not "
            f"after bar {pos - 1}; sort by time and drop duplicates (metabt.data.load_ohlcv "
            "checks both)"
        )
    seconds = float(np.median(gaps)) / 1e9
    if seconds >= 1:  # times from backtrader's float day numbers carry microsecond noise
        seconds = float(round(seconds))
    label, timeframe = _spacing(seconds)
    candidates = _conventions(seconds, timeframe, declared)
    span = (ns[-1] - ns[0]) / 1e9
    enough = len(index) >= MIN_BARS and span >= MIN_SPAN_DAYS * _DAY
    if declared is not None and timeframe[0] not in ("Weeks", "Months", "Years"):
        if not enough:
            return BarFrequency(label, float(candidates[0][0]), candidates[0][1], timeframe)
        measured = (len(index) - 1) / (span / _YEAR)
        value, basis = min(candidates, key=lambda c: abs(math.log(measured / c[0])))
        if abs(measured / value - 1) > SNAP:
            basis += f"; measured {measured:,.0f}"
        return BarFrequency(label, float(value), basis, timeframe)
    if enough:
        measured = (len(index) - 1) / (span / _YEAR)
        value, basis = min(candidates, key=lambda c: abs(math.log(measured / c[0])))
        if abs(measured / value - 1) <= SNAP:
            return BarFrequency(label, float(value), basis, timeframe)
        kept = float(round(measured)) if measured >= 10 else round(measured, 2)
        return BarFrequency(label, kept, "measured", timeframe)
    value, basis = _assumed(index, seconds, timeframe, candidates)
    note = f"{basis}; assumed: too few bars" if basis else "assumed: too few bars"
    return BarFrequency(label, value, note, timeframe)


def _assumed(
    index: pd.DatetimeIndex,
    seconds: float,
    timeframe: tuple[str, int],
    candidates: list[tuple[float, str]],
) -> tuple[float, str]:
    """Conventional bars per year for a short sample, from the calendar its bars show."""
    weekends = bool((index.day_of_week == 5).any())  # Saturday bars: a 7-day market
    unit = timeframe[0]
    if unit == "Days":
        return candidates[1] if weekends else candidates[0]
    if unit in ("Weeks", "Months", "Years"):
        return candidates[0]
    if weekends:
        return candidates[0]
    times = pd.Series(index.as_unit("ns").asi8).groupby(index.normalize().asi8)
    covered = float((times.max() - times.min()).max()) / 1e9 + seconds  # longest day
    if covered > 12 * 3_600:
        return candidates[1]
    per_day = float(times.size().median())
    return per_day * 252, f"{_count(per_day)} bars x 252 days"


def common_frequency(
    indexes: Mapping[str, pd.DatetimeIndex],
    bars_per_year: float | None = None,
    calendar: str | None = None,
) -> BarFrequency:
    """The one bar frequency of several feeds, or an explicit one.

    Each feed's frequency is inferred (:func:`infer_frequency`); their labels must agree.
    The bars per year are those of the union of all bar times, which is the clock a
    multi-asset backtest steps on (daily equities beside daily crypto: 365).

    Args:
        indexes: feed name -> its bar times.
        bars_per_year: if given, overrides the inferred bars per year (no check that the
            feeds agree); the result is named by the feeds' spacing where they have one
            (``"hourly"``, ...) and ``"given"`` otherwise, its basis ``"given"``.
        calendar: the declared market calendar (a key of :data:`CALENDARS`) each feed's
            frequency is read with (:func:`infer_frequency`); None (default) infers it.
            Ignored when ``bars_per_year`` is given.

    Returns:
        BarFrequency: the common frequency.

    Raises:
        ConfigError: ``bars_per_year`` is not a positive number; an unknown ``calendar``;
            no feeds; feeds with different labels (e.g. daily and hourly), naming each feed
            and its frequency.
        DataError: as :func:`infer_frequency` (naming the feed).
    """
    if bars_per_year is not None:
        given = check_bars_per_year(bars_per_year)
        # the label still says what the bars are (hourly, daily, ...) where the feeds agree
        try:
            labels = [infer_frequency(ix, name=key) for key, ix in indexes.items()]
        except DataError:
            labels = []
        if labels and len({f.name for f in labels}) == 1:
            return BarFrequency(labels[0].name, given, "given", labels[0].timeframe)
        return BarFrequency("given", given, "given")
    if not indexes:
        raise ConfigError(f"no data feeds to infer the bar frequency from; add data or {_FIX}")
    found = {key: infer_frequency(ix, name=key, calendar=calendar) for key, ix in indexes.items()}
    by_label: dict[str, list[str]] = {}
    for key, freq in found.items():
        by_label.setdefault(freq.name, []).append(key)
    if len(by_label) > 1:
        shown = "; ".join(
            f"{label} ({found[keys[0]].bars_per_year:,.0f} per year): {', '.join(keys)}"
            for label, keys in by_label.items()
        )
        raise ConfigError(
            f"the data feeds have different bar frequencies: {shown}; resample them to one "
            "frequency (e.g. frame.resample('1D').agg({'open': 'first', 'high': 'max', "
            "'low': 'min', 'close': 'last', 'volume': 'sum'}).dropna()), or if mixing is "
            "intended pass bars_per_year (--bars-per-year) for the backtest's clock"
        )
    first = next(iter(found.values()))
    if len(found) == 1:
        return first
    union = np.unique(np.concatenate([ix.as_unit("ns").asi8 for ix in indexes.values()]))
    clock = infer_frequency(pd.DatetimeIndex(union.view("datetime64[ns]")), calendar=calendar)
    return BarFrequency(first.name, clock.bars_per_year, clock.basis, first.timeframe)


#: Days in one unit of backtrader's calendar timeframes (daily and longer).
_TIMEFRAME_DAYS = {"Days": 1.0, "Weeks": 7.0, "Months": 30.44, "Years": 365.25}
#: Seconds in one unit of backtrader's intraday timeframes.
_INTRADAY_SECONDS = {"Minutes": 60.0, "Seconds": 1.0}


def timeframe_frequency(
    unit: str, compression: int = 1, calendar: str | None = None
) -> BarFrequency | None:
    """The frequency of bars of a backtrader calendar timeframe, for feeds with no bar times.

    A feed resampled inside Cerebro (``cerebro.resampledata``) or a live feed holds no bars
    when a strategy starts, but its ``_timeframe`` and ``_compression`` say what its bars
    are. The label is :func:`infer_frequency`'s for that spacing; daily bars count as
    trading days (252 a year, as equities), weekly 52, monthly 12, yearly 1, each divided
    by the compression. Intraday bars depend on the market's hours: None, unless a
    ``calendar`` is declared, whose days (and hours, for intraday bars) then count.

    Args:
        unit: backtrader ``TimeFrame`` name, e.g. ``"Days"``, ``"Weeks"`` (plural, as
            ``bt.TimeFrame.getname(tf, 2)`` gives it).
        compression: bars of ``unit`` per bar (>= 1).
        calendar: a key of :data:`CALENDARS`, or None (default).

    Returns:
        BarFrequency | None: basis ``"backtrader timeframe"``; None for intraday (or
        unknown) units.
    """
    declared = check_calendar(calendar)
    if compression < 1:
        return None
    days = _TIMEFRAME_DAYS.get(unit)
    if days is None:
        seconds = _INTRADAY_SECONDS.get(unit)
        if seconds is None or declared is None:
            return None
        spacing = seconds * compression
    else:
        spacing = days * compression * _DAY
    label, _ = _spacing(spacing)
    candidates = _conventions(spacing, (unit, compression), declared)
    # daily and longer: the first (trading days); intraday: the last, as a session that
    # does not divide evenly ends with a short bar (NYSE: 7 hourly bars)
    bars_per_year = candidates[0 if days is not None else -1][0]
    return BarFrequency(label, bars_per_year, "backtrader timeframe", (unit, compression))


def check_same_bars(trained: str | None, now: BarFrequency) -> None:
    """Refuse data of another bar frequency than a model was trained on.

    A model's horizon, support window and features count bars, so a model trained on daily
    bars means something else on hourly ones.

    Args:
        trained: the frequency label the checkpoint records (``train_config
            ["bar_frequency"]``), or None (an old checkpoint: not checked).
        now: the data's frequency; an unnamed ``"given"`` one is not checked.

    Raises:
        ConfigError: the labels differ, naming both and the fix.
    """
    if trained is None or now.name == "given" or trained == now.name:
        return
    raise ConfigError(
        f"the model was trained on {trained} bars but the data are {now.name} bars "
        f"({now.describe()}); its horizon, support window and features count bars, so "
        f"retrain it on {now.name} data (or resample the data to {trained} bars)"
    )
