"""Tests of metabt.data.bars: bar spacing labels, trading-hours-aware bars per year, mixed feeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.tseries.holiday import USFederalHolidayCalendar
from pandas.tseries.offsets import CustomBusinessDay

from metabt.data.bars import (
    BarFrequency,
    check_bars_per_year,
    common_frequency,
    infer_frequency,
)
from metabt.errors import ConfigError, DataError

# Weekdays without US federal holidays: about 250 a year, like an exchange calendar.
SESSIONS = pd.date_range(
    "2019-01-01", "2020-12-31", freq=CustomBusinessDay(calendar=USFederalHolidayCalendar())
)


def _intraday(days: pd.DatetimeIndex, first: str, bars: int, step: str) -> pd.DatetimeIndex:
    """``bars`` bar times a day, ``step`` apart from ``first`` (e.g. "09:30"), on ``days``."""
    offsets = pd.timedelta_range(first + ":00", periods=bars, freq=step).to_numpy()
    return pd.DatetimeIndex((days.to_numpy()[:, None] + offsets[None, :]).ravel())


NYSE_HOURLY = _intraday(SESSIONS, "09:30", 7, "1h")  # 09:30 ... 15:30
FX_HOURLY = _intraday(pd.bdate_range("2019-01-01", "2020-12-31"), "00:00", 24, "1h")
CRYPTO_HOURLY = pd.date_range("2019-01-01", "2020-12-31 23:00", freq="h")

D, W, M, Q = ("Days", 1), ("Weeks", 1), ("Months", 1), ("Months", 3)
H = ("Minutes", 60)
CASES = [
    # (id, index, label, bars per year, basis, backtrader timeframe)
    ("nyse-hourly", NYSE_HOURLY, "hourly", 1764, "7 bars x 252 days", H),
    ("fx-hourly", FX_HOURLY, "hourly", 6240, "24/5", H),
    ("crypto-hourly", CRYPTO_HOURLY, "hourly", 8760, "24/7", H),
    ("fx-4-hour", FX_HOURLY[::4], "4-hour", 1560, "24/5", ("Minutes", 240)),
    ("crypto-daily", pd.date_range("2019-01-01", "2020-12-31"), "daily", 365, "calendar days", D),
    ("equity-daily", SESSIONS, "daily", 252, "trading days", D),
    ("business-daily", pd.bdate_range("2015-01-01", "2020-12-31"), "daily", 252, "trading days", D),
    ("weekly", pd.date_range("2015-01-01", "2020-12-31", freq="W-FRI"), "weekly", 52, "", W),
    ("monthly", pd.date_range("2010-01-01", "2020-12-31", freq="BME"), "monthly", 12, "", M),
    ("quarterly", pd.date_range("2000-01-01", "2020-12-31", freq="QE"), "quarterly", 4, "", Q),
    (
        "nyse-minute",
        _intraday(SESSIONS[:40], "09:30", 390, "1min"),
        "minute",
        98280,
        "390 bars x 252 days",
        ("Minutes", 1),
    ),
    (
        "nyse-5-minute",
        _intraday(SESSIONS[:60], "09:30", 78, "5min"),
        "5-minute",
        19656,
        "78 bars x 252 days",
        ("Minutes", 5),
    ),
]


@pytest.mark.parametrize(
    ("index", "label", "per_year", "basis", "timeframe"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_infer_frequency_counts_bars_per_year_trading_hours_aware(
    index, label, per_year, basis, timeframe
):
    freq = infer_frequency(index)
    assert freq == BarFrequency(label, per_year)
    assert freq.basis == basis
    assert freq.timeframe == timeframe
    assert freq.periods == per_year and isinstance(freq.periods, int)


def test_describe_and_periods():
    assert infer_frequency(FX_HOURLY).describe() == "hourly bars, 6,240 per year (24/5)"
    assert BarFrequency("monthly", 12.0).describe() == "monthly bars, 12 per year"
    assert BarFrequency("given", 0.5, "given").describe() == "0.5 bars per year (given)"
    assert BarFrequency("given", 0.4).periods == 1  # never 0: quantstats divides by it


def test_unconventional_count_is_kept_as_measured():
    # Extended-hours equity bars, 04:00-20:00: 16 a day on ~250 days, near no convention.
    freq = infer_frequency(_intraday(SESSIONS, "04:00", 16, "1h"))
    assert freq.name == "hourly" and freq.basis == "measured"
    assert 16 * 245 < freq.bars_per_year < 16 * 255
    assert freq.bars_per_year == round(freq.bars_per_year)


@pytest.mark.parametrize(
    ("index", "per_year", "basis"),
    [
        (NYSE_HOURLY[:35], 1764, "7 bars x 252 days"),
        (FX_HOURLY[:60], 6240, "24/5"),
        (pd.date_range("2020-01-04", periods=30, freq="h"), 8760, "24/7"),  # a Saturday
        (SESSIONS[:10], 252, "trading days"),
        (pd.date_range("2020-01-01", periods=10), 365, "calendar days"),
        (pd.date_range("2020-01-31", periods=5, freq="ME"), 12, ""),
    ],
    ids=["nyse-hourly", "fx-hourly", "crypto-hourly", "equity-daily", "crypto-daily", "monthly"],
)
def test_short_samples_assume_from_spacing_and_calendar(index, per_year, basis):
    freq = infer_frequency(index)
    assert freq.bars_per_year == per_year
    assert freq.basis == (f"{basis}; " if basis else "") + "assumed: too few bars"
    assert "assumed" in freq.describe()


def test_infer_frequency_refuses_what_it_cannot_read():
    with pytest.raises(DataError, match=r"^AAPL: 1 bar\(s\).*pass bars_per_year explicitly"):
        infer_frequency(pd.DatetimeIndex(["2020-01-02"]), name="AAPL")
    with pytest.raises(DataError, match="0 bar"):
        infer_frequency(pd.DatetimeIndex([]))
    with pytest.raises(DataError, match=r"strictly ascending.*bar 2"):
        infer_frequency(pd.DatetimeIndex(["2020-01-02", "2020-01-03", "2020-01-03"]))
    with pytest.raises(DataError, match="strictly ascending"):
        infer_frequency(SESSIONS[::-1])
    with pytest.raises(DataError, match="NaT"):
        infer_frequency(pd.DatetimeIndex(["2020-01-02", None, "2020-01-06"]))
    with pytest.raises(DataError, match="DatetimeIndex, got list"):
        infer_frequency(["2020-01-02", "2020-01-03"])  # type: ignore[arg-type]


def test_tz_aware_index_is_read_like_its_wall_clock():
    local = NYSE_HOURLY.tz_localize("America/New_York")
    assert infer_frequency(local) == infer_frequency(NYSE_HOURLY)


@pytest.mark.parametrize("bad", [0, -252, math.nan, math.inf, "252", None, True, [252]])
def test_check_bars_per_year_refuses_non_positive_or_non_numbers(bad):
    with pytest.raises(ConfigError, match=r"^bars_per_year must be a positive number.*got"):
        check_bars_per_year(bad)
    with pytest.raises(ConfigError, match=r"^--bars-per-year must"):
        check_bars_per_year(bad, "--bars-per-year")


def test_check_bars_per_year_accepts_numbers():
    assert check_bars_per_year(252) == 252.0
    assert check_bars_per_year(np.float32(6240.0)) == 6240.0
    assert isinstance(check_bars_per_year(np.int64(12)), float)


def test_common_frequency_refuses_mixed_frequencies_naming_feeds():
    daily = pd.bdate_range("2019-01-01", "2020-12-31")
    with pytest.raises(ConfigError) as info:
        common_frequency({"AAPL": daily, "IBM": daily, "BTC": CRYPTO_HOURLY})
    message = str(info.value)
    assert "daily (252 per year): AAPL, IBM" in message
    assert "hourly (8,760 per year): BTC" in message
    assert "resample" in message and "--bars-per-year" in message


def test_common_frequency_given_overrides_and_union_clock():
    mixed = {"AAPL": SESSIONS, "BTC": CRYPTO_HOURLY}
    assert common_frequency(mixed, bars_per_year=252) == BarFrequency("given", 252.0)
    with pytest.raises(ConfigError, match="bars_per_year must be a positive number"):
        common_frequency(mixed, bars_per_year=-1)
    with pytest.raises(ConfigError, match="no data feeds"):
        common_frequency({})
    # One feed: its own frequency. Daily equities beside daily crypto: the backtest steps on
    # the union of their dates, every calendar day.
    assert common_frequency({"AAPL": SESSIONS}) == BarFrequency("daily", 252)
    crypto = pd.date_range("2019-01-01", "2020-12-31")
    both = common_frequency({"AAPL": SESSIONS, "BTC": crypto})
    assert both == BarFrequency("daily", 365) and both.timeframe == ("Days", 1)
    with pytest.raises(DataError, match=r"^BTC: 1 bar"):
        common_frequency({"AAPL": SESSIONS, "BTC": crypto[:1]})


@settings(max_examples=40, deadline=None)
@given(
    step_minutes=st.sampled_from([1, 5, 15, 30, 60, 120, 240]),
    hours=st.sampled_from([24, 12]),
    weekends=st.booleans(),
    drop=st.floats(0.0, 0.05),
    seed=st.integers(0, 2**16),
)
def test_property_snaps_to_the_market_calendar(step_minutes, hours, weekends, drop, seed):
    """Random intraday calendars with up to 5% of bars missing snap to their convention."""
    days = (
        pd.date_range("2020-01-01", "2020-03-31")
        if weekends
        else pd.bdate_range("2020-01-01", "2020-03-31")
    )
    per_day = hours * 60 // step_minutes
    index = _intraday(days, "00:00", per_day, f"{step_minutes}min")
    keep = np.random.default_rng(seed).random(len(index)) >= drop
    keep[[0, -1]] = True
    freq = infer_frequency(index[keep])
    assert freq.timeframe == ("Minutes", step_minutes)
    if hours == 24:
        assert freq.bars_per_year == per_day * (365 if weekends else 260)
    else:  # half-day sessions match no convention within 10%: the count is kept
        days_per_year = 365 if weekends else 260
        assert freq.basis == "measured"
        assert abs(freq.bars_per_year / (per_day * days_per_year) - 1) < 0.1


@pytest.mark.parametrize(
    "unit, compression, name, per_year",
    [
        ("Days", 1, "daily", 252),
        ("Weeks", 1, "weekly", 52),
        ("Weeks", 2, "2-week", 26),
        ("Months", 1, "monthly", 12),
        ("Months", 3, "quarterly", 4),
        ("Years", 1, "yearly", 1),
    ],
)
def test_a_calendar_timeframe_gives_the_label_and_count_of_its_bars(
    unit, compression, name, per_year
):
    from metabt.data.bars import timeframe_frequency

    found = timeframe_frequency(unit, compression)
    assert found is not None
    assert (found.name, found.bars_per_year, found.timeframe) == (
        name,
        per_year,
        (unit, compression),
    )


def test_intraday_timeframes_need_the_markets_hours():
    from metabt.data.bars import timeframe_frequency

    assert timeframe_frequency("Minutes", 60) is None
    assert timeframe_frequency("Seconds", 1) is None


def test_data_of_other_bars_than_training_are_refused():
    from metabt.data.bars import BarFrequency, check_same_bars

    hourly = BarFrequency("hourly", 6240.0, "24/5")
    check_same_bars("hourly", hourly)
    check_same_bars(None, hourly)  # an old checkpoint records none
    check_same_bars("daily", BarFrequency("given", 300.0, "given"))  # nothing to compare
    with pytest.raises(ConfigError, match="trained on daily bars but the data are hourly bars"):
        check_same_bars("daily", hourly)
