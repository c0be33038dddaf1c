"""Tearsheets that are right at any bar frequency (issue 23, item 7).

An hourly run: the drawdown cells and the worst-drawdowns table are filled (quantstats left
them blank for a strategy under its start at every bar) with our own max drawdown; the rows
quantstats names for a day are computed on daily-compounded returns and say so; "Time in
Market" is the positions' share of bars. A daily page keeps quantstats' numbers; weekly and
monthly pages name those rows for the bar.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest
from synthetic import gbm_frame

from metabt._util import quiet_third_party
from metabt.data import load_ohlcv
from metabt.errors import DataError
from metabt.evaluate.tearsheet import write_tearsheet
from metabt.experiments.backtest import run_backtest
from metabt.strategies.baselines import SmaCross

#: quantstats' rows that name a day (its reports.metrics)
DAY_ROWS = ("Expected Daily", "Daily Value-at-Risk", "Best Day", "Worst Day", "Win Days")
DD_ROWS = (
    "Max Drawdown",
    "Max DD Date",
    "Max DD Period Start",
    "Max DD Period End",
    "Longest DD Days",
    "Avg. Drawdown",
    "Avg. Drawdown Days",
)


def _cells(fragment: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", fragment, re.S)
    return [
        [
            html.unescape(re.sub("<.*?>", "", c)).strip()
            for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r)
        ]
        for r in rows
    ]


def metrics_rows(page: str) -> dict[str, list[str]]:
    """The Key Performance Metrics table: label -> cells (benchmark first, strategy last)."""
    start = page.index("<h3>Key Performance Metrics</h3>")
    table = page[start : page.index("</table>", start)]
    return {row[0]: row[1:] for row in _cells(table) if len(row) > 1}


def drawdown_rows(page: str) -> list[list[str]]:
    """The "Worst 10 Drawdowns" table's rows (no header)."""
    start = page.index("<h3>Worst 10 Drawdowns</h3>")
    return _cells(page[start : page.index("</table>", start)])[1:]


def notes(page: str) -> str:
    found = re.search(r'<div id="metabt_notes".*?</div>', page, re.S)
    return "" if found is None else html.unescape(re.sub("<.*?>", " ", found.group(0)))


def percent(cell: str) -> float:
    assert cell.endswith("%"), cell
    return float(cell[:-1])


def own_max_drawdown(equity: pd.Series, cash: float) -> float:
    """Max drawdown of the equity path, the starting cash its first peak, in percent."""
    values = equity.to_numpy(dtype=float)
    peak = np.maximum.accumulate(np.maximum(values, cash))
    return float((values / peak - 1.0).min()) * 100.0


def hourly_market() -> pd.DataFrame:
    """Seven hourly bars a business day (10:00-16:00), falling with short rebounds: a fast
    SMA crossover buys each rebound late and loses, so its equity never gets back to the
    start, and it holds a position only part of the time."""
    days = pd.bdate_range("2021-01-04", periods=60)
    stamps = pd.DatetimeIndex(
        [d + pd.Timedelta(hours=h) for d in days for h in range(10, 17)], name="date"
    )
    n = len(stamps)
    step = np.where(np.arange(n) % 12 < 10, -0.004, 0.009)
    step = step + np.random.default_rng(0).normal(0.0, 0.0005, n)
    close = 100.0 * np.exp(np.cumsum(step))
    open_ = np.r_[100.0, close[:-1]]
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": 1e6,
        },
        index=stamps,
    )
    return load_ohlcv(frame, name="HOURLY")


def calendar_market(freq: str, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` bars at pandas frequency ``freq`` (weekly, monthly), a noisy upward drift."""
    stamps = pd.date_range("2000-01-31", periods=n, freq=freq, name="date")
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0.004, 0.04, n)))
    open_ = np.r_[100.0, close[:-1]]
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.01,
            "low": np.minimum(open_, close) * 0.99,
            "close": close,
            "volume": 1e6,
        },
        index=stamps,
    )
    return load_ohlcv(frame, name="SLOW")


@pytest.fixture(scope="module")
def hourly(tmp_path_factory):
    frame = hourly_market()
    result = run_backtest(
        SmaCross,
        {"HOURLY": frame},
        start=frame.index[60],
        warmup_bars=60,
        strategy_kwargs={"fast": 2, "slow": 6},
    )
    page = result.tearsheet(tmp_path_factory.mktemp("hourly") / "sheet.html")
    portfolio = result.strategy.analyzers.portfolio.get_analysis()
    return result, portfolio, page.read_text(encoding="utf-8")


def test_the_hourly_run_is_the_case_quantstats_leaves_blank(hourly):
    """The reproduction: quantstats' own metrics for this run have no drawdown numbers."""
    import quantstats as qs

    result, _, _ = hourly
    assert result.frequency.name == "hourly"
    returns = result.returns
    equity = (1.0 + returns).cumprod()
    traded = int(np.flatnonzero(returns.to_numpy() != 0.0)[0])
    assert (equity.iloc[traded:] < 1.0).all()  # under its start from its first trade on
    with quiet_third_party():
        raw = qs.reports.metrics(
            returns, result.benchmark, display=False, mode="full", internal="True"
        )
    assert str(raw.loc["Max Drawdown"].iloc[-1]) in ("", "-", "%")


def test_hourly_drawdowns_are_filled_with_our_max_drawdown(hourly):
    result, portfolio, page = hourly
    rows = metrics_rows(page)
    ours = own_max_drawdown(portfolio["equity"], 100_000.0)
    assert ours < -1.0
    assert percent(rows["Max Drawdown"][-1]) == pytest.approx(round(ours, 2), abs=0.006)
    assert percent(rows["Max Drawdown"][-1]) == pytest.approx(
        result.metrics["max_drawdown"] * 100.0, abs=0.006
    )  # the run's summary says the same
    for label in DD_ROWS:  # every cell of both columns
        assert all(c not in ("", "-", "%") for c in rows[label]), (label, rows[label])
    assert int(rows["Longest DD Days"][-1]) > 0
    assert pd.Timestamp(rows["Max DD Period Start"][-1]) <= pd.Timestamp(rows["Max DD Date"][-1])
    worst = drawdown_rows(page)
    assert worst, "the worst-drawdowns table is empty"
    assert float(worst[0][2]) == pytest.approx(round(ours, 2), abs=0.006)
    assert "Drawdown rows filled by metabt" in notes(page)


def test_hourly_day_rows_are_daily_compounded_and_say_so(hourly):
    result, _, page = hourly
    rows = metrics_rows(page)
    for label in DAY_ROWS:  # no row computed on hours under a day's name
        assert label not in rows
    mark = "days compounded from hourly bars"
    marked = [label for label in rows if mark in label]
    assert len(marked) == 6  # the five above and Expected Shortfall (cVaR)
    returns = result.returns
    daily = (1.0 + returns).groupby(returns.index.normalize()).prod() - 1.0
    worst_day = rows[f"Worst Day ({mark})"][-1]
    assert percent(worst_day) == pytest.approx(round(daily.min() * 100.0, 2), abs=0.006)
    assert percent(worst_day) < round(returns.min() * 100.0, 2)  # a day is worse than an hour
    said = notes(page)
    assert "Hourly bars" in said and "compounded within each calendar day" in said
    assert "annualised with 1,764 bars a year" in said
    assert "Periods/Year: 1764" in page


def test_hourly_time_in_market_is_the_positions_share(hourly):
    _, portfolio, page = hourly
    positions = portfolio["positions"]
    held = (positions != 0.0).any(axis=1)
    share = float(held.mean()) * 100.0
    assert 10.0 < share < 50.0  # the strategy is out of the market most of the time
    rows = metrics_rows(page)
    assert percent(rows["Time in Market"][-1]) == pytest.approx(round(share, 2), abs=0.006)
    gross = positions.abs().sum(axis=1) / portfolio["equity"].reindex(positions.index)
    exposure = rows["Avg. Gross Exposure"]
    assert exposure[0] == "-"  # the benchmark's positions are not known
    assert percent(exposure[-1]) == pytest.approx(round(float(gross.mean()) * 100.0, 2), abs=0.006)
    assert "Time in Market (strategy)" in notes(page)


@pytest.fixture(scope="module")
def daily():
    frame = gbm_frame(320, 3)
    result = run_backtest(
        SmaCross,
        {"GBM": frame},
        start=frame.index[60],
        warmup_bars=60,
        strategy_kwargs={"fast": 10, "slow": 40},
    )
    return result


def test_a_daily_tearsheet_keeps_quantstats_numbers(daily, tmp_path):
    import quantstats as qs

    from metabt.evaluate.tearsheet import _dd_cells, _qs_window

    result = daily
    assert result.frequency.name == "daily"
    benchmark = result.benchmark.rename("basket")
    raw = tmp_path / "raw.html"
    with quiet_third_party():
        qs.reports.html(result.returns, benchmark, title="t", output=str(raw))
    ours = write_tearsheet(result.returns, benchmark, tmp_path / "ours.html", title="t")
    raw_page, our_page = raw.read_text(encoding="utf-8"), ours.read_text(encoding="utf-8")
    assert metrics_rows(our_page) == metrics_rows(raw_page)
    assert drawdown_rows(our_page) == drawdown_rows(raw_page)
    assert notes(our_page) == ""
    # the cells metabt fills where quantstats leaves them blank are quantstats' own
    window, _ = _qs_window(result.returns, benchmark, times=2)
    raw_rows = metrics_rows(raw_page)
    assert _dd_cells(window) == {label: raw_rows[label][-1] for label in DD_ROWS}


def test_the_analyzer_records_the_exposure_of_the_positions(daily):
    result = daily
    exposure = result.analyzer.get_analysis()["exposure"]
    assert exposure.index.equals(result.returns.index)
    portfolio = result.strategy.analyzers.portfolio.get_analysis()
    positions = portfolio["positions"]
    assert ((exposure != 0.0) == (positions != 0.0).any(axis=1)).all()
    gross = positions.abs().sum(axis=1) / portfolio["equity"]
    assert np.allclose(exposure, gross)
    assert 0.0 < (exposure != 0.0).mean() < 1.0


@pytest.mark.parametrize(
    ("freq", "bars", "name", "unit", "periods"),
    [("ME", 100, "monthly", "Month", 12), ("W-FRI", 150, "weekly", "Week", 52)],
)
def test_lower_than_daily_rows_are_named_for_the_bar(tmp_path, freq, bars, name, unit, periods):
    frame = calendar_market(freq, bars)
    result = run_backtest(
        SmaCross,
        {"SLOW": frame},
        start=frame.index[24],
        warmup_bars=24,
        strategy_kwargs={"fast": 3, "slow": 12},
    )
    assert result.frequency.name == name and result.frequency.periods == periods
    page = result.tearsheet(tmp_path / "sheet.html").read_text(encoding="utf-8")
    assert f"Periods/Year: {periods}" in page
    rows = metrics_rows(page)
    for label in DAY_ROWS:
        assert label not in rows
    adjective = f"{unit}ly"
    assert f"{adjective} Value-at-Risk" in rows
    assert f"Best {unit}" in rows and f"Worst {unit}" in rows and f"Win {unit}" in rows
    assert f"Expected {adjective}" in rows
    returns = result.returns
    best = rows[f"Best {unit}"][-1]
    assert percent(best) == pytest.approx(round(returns.max() * 100.0, 2), abs=0.006)
    said = notes(page)
    assert f"{name.capitalize()} bars ({periods} a year)" in said
    assert f"{adjective} Returns" in said
    assert not re.search(r"\bDa(y|ily)\b", " ".join(rows))  # no row names a day


def test_exposure_must_cover_every_bar(tmp_path):
    index = pd.bdate_range("2021-01-04", periods=30)
    returns = pd.Series(np.linspace(-0.01, 0.01, 30), index=index)
    with pytest.raises(DataError, match="exposure has no value at 1 of the 30 bars"):
        write_tearsheet(returns, None, tmp_path / "x.html", exposure=returns.iloc[1:].abs())
    with pytest.raises(DataError, match="exposure must be a pandas Series"):
        write_tearsheet(returns, None, tmp_path / "x.html", exposure=[0.5] * 30)
    assert not (tmp_path / "x.html").exists()
