"""QuantStatsAnalyzer against the broker's own values and quantstats.stats, in a short run."""

from __future__ import annotations

import logging

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from oracles import quantstats_metrics

from metabt import QuantStatsAnalyzer
from metabt.errors import ConfigError, DataError

CASH = 100_000.0
START = pd.Timestamp("2021-03-01")  # a Monday, bar 41 of the synthetic data


def _frame(n: int = 120, seed: int = 7) -> pd.DataFrame:
    """Synthetic daily OHLCV bars (a geometric random walk), business days from 2021-01-04."""
    rng = np.random.default_rng(seed)
    close = 80.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.012, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.004, n))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.004,
            "low": np.minimum(open_, close) * 0.996,
            "close": close,
            "volume": 1e6,
        },
        index=pd.bdate_range("2021-01-04", periods=n),
    )


class _Flipper(bt.Strategy):
    """Cycles long 400 / short 250 / flat every 7 bars; records the broker value each bar."""

    def __init__(self) -> None:
        self.values: list[tuple[pd.Timestamp, float]] = []

    def next(self) -> None:
        self.values.append((pd.Timestamp(self.datetime.date(0)), self.broker.getvalue()))
        if len(self) % 7 == 0:
            target = (400, -250, 0)[(len(self) // 7) % 3]
            self.order_target_size(self.data, target)


def _run(frame: pd.DataFrame, **analyzers: dict) -> bt.Strategy:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, openinterest=None), name="SYNTH")
    cerebro.broker.setcash(CASH)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addstrategy(_Flipper)
    for name, kwargs in analyzers.items():
        cerebro.addanalyzer(QuantStatsAnalyzer, _name=name, **kwargs)
    return cerebro.run()[0]


@pytest.fixture(scope="module")
def run():
    """One backtest with three analyzers: every bar, from START, and weekly annualisation."""
    frame = _frame()
    strat = _run(frame, full={}, late={"start": START.date()}, weekly={"periods_per_year": 52})
    values = pd.Series(dict(strat.values), dtype="float64")
    return frame, strat, values


def test_returns_are_the_broker_value_per_bar_change(run):
    frame, strat, values = run
    returns = strat.analyzers.full.get_analysis()["returns"]
    expected = values.pct_change()
    expected.iloc[0] = values.iloc[0] / CASH - 1.0  # first bar: against the starting cash
    pd.testing.assert_index_equal(returns.index, frame.index, check_names=False, check_freq=False)
    np.testing.assert_allclose(returns.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-14)
    assert (returns != 0).sum() > 50  # the strategy traded: the check is not vacuous


def test_returns_series_shape_and_index(run):
    _, strat, _ = run
    returns = strat.analyzers.full.get_analysis()["returns"]
    assert isinstance(returns.index, pd.DatetimeIndex)
    assert returns.index.tz is None
    assert (returns.index == returns.index.normalize()).all()  # dates of the bars, no times
    assert returns.name == "returns"
    assert returns.dtype == np.float64
    assert np.isfinite(returns.to_numpy()).all()


def test_benchmark_is_close_to_close_of_data0(run):
    frame, strat, _ = run
    analysis = strat.analyzers.full.get_analysis()
    benchmark = analysis["benchmark"]
    expected = frame["close"].pct_change().fillna(0.0)
    pd.testing.assert_index_equal(benchmark.index, analysis["returns"].index)
    np.testing.assert_allclose(benchmark.to_numpy(), expected.to_numpy(), rtol=1e-12, atol=0)
    assert benchmark.iloc[0] == 0.0  # no close before the first bar
    assert benchmark.name == "SYNTH"


@pytest.mark.parametrize(("name", "periods"), [("full", 252), ("weekly", 52)])
def test_metrics_equal_quantstats_on_the_same_returns(run, name, periods):
    _, strat, _ = run
    analysis = strat.analyzers.getbyname(name).get_analysis()
    r, m = analysis["returns"], analysis["metrics"]
    expected = quantstats_metrics(r, periods)
    assert set(expected) <= set(m)
    for key, value in expected.items():
        assert m[key] == pytest.approx(float(value), rel=1e-12), key
    # quantstats 0.0.86 counts years in bars: cagr = (1 + total) ** (periods / n) - 1
    total = float(np.prod(1.0 + r.to_numpy()) - 1.0)
    assert m["cagr"] == pytest.approx((1.0 + total) ** (periods / len(r)) - 1.0, rel=1e-9)


def test_periods_per_year_changes_annualised_metrics(run):
    _, strat, _ = run
    full = strat.analyzers.full.get_analysis()["metrics"]
    weekly = strat.analyzers.weekly.get_analysis()["metrics"]
    assert weekly["sharpe"] == pytest.approx(full["sharpe"] * np.sqrt(52 / 252), rel=1e-12)
    assert weekly["total_return"] == full["total_return"]


def test_start_skips_the_warmup_and_chains_from_the_bar_before(run):
    frame, strat, values = run
    full = strat.analyzers.full.get_analysis()
    late = strat.analyzers.late.get_analysis()
    assert late["returns"].index[0] == START
    assert len(late["returns"]) == (frame.index >= START).sum()
    pd.testing.assert_series_equal(late["returns"], full["returns"].loc[START:])
    pd.testing.assert_series_equal(late["benchmark"], full["benchmark"].loc[START:])
    # the first recorded return is against the value at the close of the bar before START
    before = values.index[values.index < START][-1]
    first = values.loc[START] / values.loc[before] - 1.0
    assert late["returns"].iloc[0] == pytest.approx(first, rel=1e-12, abs=1e-15)
    assert late["benchmark"].iloc[0] == pytest.approx(
        frame["close"].loc[START] / frame["close"].loc[before] - 1.0, rel=1e-12
    )
    assert late["benchmark"].iloc[0] != 0.0
    assert late["metrics"]["sharpe"] == pytest.approx(
        qs.stats.sharpe(late["returns"], periods=252), rel=1e-12
    )
    assert late["metrics"]["sharpe"] != pytest.approx(full["metrics"]["sharpe"])


def test_start_after_the_data_raises():
    with pytest.raises(DataError, match="no bars"):
        _run(_frame(30), qs={"start": "2030-01-01"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"periods_per_year": 0}, "periods_per_year"),
        ({"periods_per_year": 252.5}, "periods_per_year"),
        ({"start": "not a date"}, "start"),
        ({"strat": "2021-01-01"}, "did you mean 'start'"),
    ],
)
def test_bad_params_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _run(_frame(10), qs=kwargs)


def test_tearsheet_writes_html_with_the_benchmark_quietly(run, tmp_path, caplog, recwarn, capfd):
    _, strat, _ = run
    analyzer = strat.analyzers.late
    caplog.set_level(logging.DEBUG, logger="matplotlib.font_manager")
    capfd.readouterr()  # drop anything printed before
    path = analyzer.tearsheet(tmp_path / "sub" / "sheet.html", title="Flipper test")
    out, err = capfd.readouterr()

    assert path == tmp_path / "sub" / "sheet.html"
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    assert "Flipper test" in html
    assert "Benchmark: SYNTH" in html  # quantstats names the benchmark in the header
    assert html.count("SYNTH") > 3  # and in the metrics table columns and charts
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind

    findfont = [r for r in caplog.records if "findfont" in r.getMessage()]
    assert not findfont
    assert not [str(w.message) for w in recwarn]
    assert "findfont" not in out + err
    assert "Warning" not in err


def test_adaptation_analyzer_collects_the_log_and_writes_the_page(
    tmp_path, sample_frames, small_learner
):
    from metabt import AdaptationAnalyzer, MetaStrategy, QuantStatsAnalyzer
    from metabt.data.feeds import feed

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(sample_frames["IBM"].loc["2009-06-01":"2010-12-31"], name="IBM"))
    cerebro.addstrategy(MetaStrategy, learner=small_learner, support=40)
    cerebro.addanalyzer(QuantStatsAnalyzer, _name="qs", start="2010-01-01")
    cerebro.addanalyzer(AdaptationAnalyzer, _name="adapt", start="2010-01-01", ic_window=20)
    strat = cerebro.run()[0]
    analysis = strat.analyzers.adapt.get_analysis()
    full = strat.adaptation_log()  # the analyzer keeps the test period's adaptations only
    in_period = full[full["date"] >= pd.Timestamp("2010-01-01")].reset_index(drop=True)
    assert len(in_period) < len(full)  # the warm-up adapted too, and is left out
    pd.testing.assert_frame_equal(analysis["adaptations"], in_period)
    pair = analysis["signals"]["IBM"]
    assert pair.index[0] >= pd.Timestamp("2010-01-01") and len(pair) > 200
    ic = analysis["rolling_ic"]["IBM"]
    expected = pair["signal"].iloc[-20:].corr(pair["forward"].iloc[-20:])
    assert ic.iloc[-1] == pytest.approx(expected) and ic.iloc[:19].isna().all()
    page = strat.analyzers.adapt.write(tmp_path / "diag.html")
    assert page.stat().st_size > 20_000


def test_adaptation_analyzer_needs_a_meta_strategy(sample_frames):
    from metabt import AdaptationAnalyzer
    from metabt.data.feeds import feed
    from metabt.errors import ConfigError

    for kwargs, match in (({}, "needs a MetaStrategy"), ({"ic_window": 1}, "ic_window")):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(sample_frames["IBM"].iloc[:50], name="IBM"))
        cerebro.addstrategy(bt.Strategy)
        cerebro.addanalyzer(AdaptationAnalyzer, **kwargs)
        with pytest.raises(ConfigError, match=match):
            cerebro.run()


class _LongShort(bt.Strategy):
    """Buys 50 shares of data0 and shorts 30 of data1 on the first bar; closes both at 60."""

    def next(self) -> None:
        if len(self) == 1:
            self.buy(self.datas[0], size=50)
            self.sell(self.datas[1], size=30)
        elif len(self) == 60:
            self.close(self.datas[0])
            self.close(self.datas[1])


def test_the_cost_ledger_books_commission_slippage_and_borrow_as_the_broker_charged():
    from metabt.analyzers import PortfolioAnalyzer
    from metabt.experiments.backtest import Costs

    a, b = _frame(seed=1), _frame(seed=2)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=a, openinterest=None), name="A")
    cerebro.adddata(bt.feeds.PandasData(dataname=b, openinterest=None), name="B")
    cerebro.broker.setcash(100_000.0)
    Costs(commission_bps=5, slippage_bps=2, borrow_bps=2500).apply(cerebro.broker)
    cerebro.addstrategy(_LongShort)
    cerebro.addanalyzer(PortfolioAnalyzer, _name="book")
    strat = cerebro.run()[0]
    got = strat.analyzers.book.get_analysis()
    ledger, equity = got["ledger"], got["equity"]
    cols = ["traded", "commission", "spread", "impact", "slippage", "borrow"]
    assert list(ledger.columns) == cols and (ledger[["spread", "impact"]] == 0).all().all()
    assert ledger.index.equals(equity.index) and len(equity) == len(a)
    assert ledger["traded"].sum() == pytest.approx(got["traded"], rel=1e-12)
    assert ledger["commission"].sum() == pytest.approx(5e-4 * got["traded"], rel=1e-12)
    # fills at the open moved 2 bps against the trade: slippage = 2 bps of the open's value
    fills = ledger[ledger["traded"] > 0]
    assert len(fills) == 2
    ratio = (fills["slippage"] / fills["traded"]).to_numpy()  # buys 1.0002x, sells 0.9998x
    assert ratio == pytest.approx([2e-4, 2e-4], rel=2e-4)
    # borrow: 25% a year on the short's entry value, per calendar day held (backtrader's rule)
    entry = b["open"].iloc[1] * (1 - 2e-4)
    days = (b.index[60] - b.index[1]).days
    assert ledger["borrow"].sum() == pytest.approx(0.25 * days / 365 * 30 * entry, rel=0.05)
    assert (ledger["borrow"] >= 0).all() and ledger["borrow"].iloc[:2].sum() == 0
    # the cash identity: every currency unit of cost the ledger books left the account
    final = strat.broker.getvalue()
    pnl = 50 * (a["open"].iloc[60] * (1 - 2e-4) - a["open"].iloc[1] * (1 + 2e-4))
    pnl += 30 * (entry - b["open"].iloc[60] * (1 + 2e-4))
    costs = ledger["commission"].sum() + ledger["borrow"].sum()
    assert final == pytest.approx(100_000.0 + pnl - costs, rel=1e-9)
