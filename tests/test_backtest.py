"""run_backtest: costs, turnover, IC and attribution measured the same way for every strategy."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from metabt.errors import ConfigError
from metabt.experiments.backtest import Costs, run_backtest
from metabt.strategies.baselines import BuyAndHold, SmaCross

START = "2010-03-01"


def test_turnover_of_buy_and_hold_is_its_single_entry(sample_frames):
    run = run_backtest(BuyAndHold, sample_frames, start=START, warmup_bars=150, cash=100_000)
    traded = run.strategy.analyzers.portfolio.get_analysis()["traded"]
    assert 0.97 * 100_000 < traded < 0.99 * 100_000  # 98% invested once, then held
    equity = 100_000 * (1 + run.returns).cumprod()
    expected = traded / equity.mean() * 252 / len(run.returns)
    assert math.isclose(run.metrics["turnover_two_way"], expected, rel_tol=1e-12)
    assert math.isclose(run.metrics["turnover_one_way"], expected / 2, rel_tol=1e-12)


class _Oracle(SmaCross):
    """Test-only strategy that looks ahead on purpose: its signal is the forward return."""

    horizon = 5
    future: ClassVar[dict] = {}

    def compute_signal(self, i, data):
        closes = self.future[data._name]
        t = pd.Timestamp(data.datetime.date(0))
        pos = closes.index.get_loc(t)
        if pos + self.horizon >= len(closes):
            return math.nan
        value = math.log(closes.iloc[pos + self.horizon] / closes.iloc[pos])
        return self.sign * value

    sign = 1.0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_signal_ic_is_one_for_a_signal_that_knows_the_future(sample_frames, sign):
    _Oracle.future = {name: f["close"] for name, f in sample_frames.items()}
    _Oracle.sign = sign
    run = run_backtest(_Oracle, sample_frames, start=START, warmup_bars=210)
    assert run.metrics["ic"] == pytest.approx(sign, abs=1e-9)
    assert run.metrics["rank_ic"] == pytest.approx(sign, abs=1e-9)


def test_contributions_add_up_to_buy_and_hold_pnl(sample_frames):
    """Without costs, the per-asset contributions add up to the portfolio's whole P&L."""
    run = run_backtest(BuyAndHold, sample_frames, start=START, warmup_bars=5, costs=Costs(0.0, 0.0))
    equity = 100_000.0 * (1 + run.returns).cumprod()
    pnl = run.assets.loc[list(sample_frames), "contribution"].sum() * 100_000.0
    assert pnl == pytest.approx(equity.iloc[-1] - 100_000.0, rel=1e-9)
    assert run.metrics["hit_rate"] == run.assets.loc["portfolio", "hit_rate"]


# ---------------------------------------------------------------- costs as a desk charges them
def _cost_run(frame: pd.DataFrame, costs: Costs, size: int):
    import backtrader as bt

    from metabt.data.feeds import feed

    fills = []

    class Once(bt.Strategy):
        def next(self):
            if len(self) == 1:
                (self.buy if size > 0 else self.sell)(size=abs(size))

        def notify_order(self, order):
            if order.status == order.Completed:
                fills.append(order.executed.price)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame, name="X"))
    cerebro.broker.setcash(100_000.0)
    costs.apply(cerebro.broker)
    cerebro.addstrategy(Once)
    cerebro.run()
    return fills, cerebro.broker.getvalue()


def _bars(n: int = 30) -> pd.DataFrame:
    dates = pd.bdate_range("2021-01-04", periods=n)
    close = 100.0 + np.arange(n, dtype=float)
    # every open is the bar's high: a slippage capped by the range would be zero on buys
    return pd.DataFrame(
        {"open": close + 1, "high": close + 1, "low": close - 1, "close": close, "volume": 1e6},
        index=pd.DatetimeIndex(dates, name="date"),
    )


def test_slippage_applies_to_every_fill_even_beyond_the_bars_range():
    frame = _bars()
    fills, _ = _cost_run(frame, Costs(commission_bps=0.0, slippage_bps=2.0, borrow_bps=0.0), 100)
    # ordered at bar 0, filled at bar 1's open (= its high) plus the full 2 bps
    assert fills == [pytest.approx(frame["open"].iloc[1] * (1 + 2e-4), rel=1e-12)]


def test_short_borrow_fee_by_hand():
    frame = _bars()
    free = Costs(commission_bps=0.0, slippage_bps=0.0, borrow_bps=0.0)
    fees = Costs(commission_bps=0.0, slippage_bps=0.0, borrow_bps=100.0)  # 1% a year
    (entry,), value_free = _cost_run(frame, free, -100)
    _, value_fee = _cost_run(frame, fees, -100)
    days = (frame.index[-1] - frame.index[1]).days  # calendar days held, entry at bar 1
    expected = days / 365 * 0.01 * 100 * entry
    assert value_free - value_fee == pytest.approx(expected, rel=1e-9)
    _, long_fee = _cost_run(frame, fees, 100)
    _, long_free = _cost_run(frame, free, 100)
    assert long_fee == pytest.approx(long_free)  # longs pay no borrow
    assert "short borrow 100 bps a year" in fees.describe()


def _reclock(frame: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    from metabt.data.ohlcv import load_ohlcv

    out = frame.iloc[: len(index)].copy()
    out.index = index
    return load_ohlcv(out.rename_axis("date"))


def _fx_hours(n: int) -> pd.DatetimeIndex:
    """Hourly FX bars, 24 a day, Monday to Friday."""
    hours = pd.date_range("2021-01-04", periods=n * 2, freq="h")
    return hours[hours.day_of_week < 5][:n]


@pytest.mark.parametrize(
    "clock, bars_per_year, name",
    [
        (lambda n: _fx_hours(n), 6240, "hourly"),
        (lambda n: pd.date_range("2000-01-07", periods=n, freq="W-FRI"), 52, "weekly"),
    ],
)
def test_non_daily_bars_are_annualised_with_their_own_bars_per_year(clock, bars_per_year, name):
    """Sharpe, volatility, CAGR and turnover use the bars' own frequency, not 252."""
    from metabt.data.synthetic import gbm_market

    n = 900
    frame = _reclock(gbm_market(n, seed=3, vol=0.004), clock(n))
    start = frame.index[400].normalize()  # a date: the test period starts with its first bar
    result = run_backtest(BuyAndHold, {"FX": frame}, start=start, costs=Costs(0, 0, 0))
    assert result.frequency.name == name
    assert result.frequency.bars_per_year == bars_per_year
    r = result.returns
    tested = frame.index[frame.index >= start]
    assert len(r) == len(tested) > 400  # one return per bar, not per day
    assert r.index.equals(tested.rename("date"))
    sharpe = r.mean() / r.std(ddof=1) * math.sqrt(bars_per_year)
    assert result.metrics["sharpe"] == pytest.approx(sharpe, rel=1e-6)
    assert result.metrics["volatility"] == pytest.approx(
        r.std(ddof=1) * math.sqrt(bars_per_year), rel=1e-6
    )
    years = len(r) / bars_per_year
    cagr = (1 + r).prod() ** (1 / years) - 1
    assert result.metrics["cagr"] == pytest.approx(cagr, rel=1e-6)
    # turnover: the one entry, about 0.95 of equity, over len(r) bars, per year
    expected = (
        result.strategy.analyzers.portfolio.get_analysis()["traded"]
        / (100_000 * (1 + r).cumprod()).mean()
        * bars_per_year
        / len(r)
    )
    assert result.metrics["turnover_two_way"] == pytest.approx(expected, rel=1e-9)


def test_explicit_bars_per_year_overrides_detection():
    from metabt.data.synthetic import gbm_market

    frame = gbm_market(600, seed=1)
    result = run_backtest(
        BuyAndHold,
        {"A": frame},
        start=frame.index[300],
        sizer_kwargs={"bars_per_year": 365},
    )
    assert result.frequency.bars_per_year == 365
    r = result.returns
    assert result.metrics["sharpe"] == pytest.approx(
        r.mean() / r.std(ddof=1) * math.sqrt(365), rel=1e-6
    )


def test_an_end_date_keeps_the_whole_of_that_days_intraday_bars():
    """``end=2021-02-05`` on hourly bars keeps Feb 5's 24 bars, not only its 00:00 bar."""
    from metabt.data.synthetic import gbm_market

    frame = _reclock(gbm_market(900, seed=3, vol=0.004), _fx_hours(900))
    start = frame.index[400].normalize()
    end = pd.Timestamp("2021-02-05")
    result = run_backtest(BuyAndHold, {"FX": frame}, start=start, end=end, costs=Costs(0, 0, 0))
    last_day = result.returns.index[result.returns.index.normalize() == end]
    assert len(last_day) == 24
    assert result.returns.index[-1] == pd.Timestamp("2021-02-05 23:00")
    # an end with a time of day is kept as it is
    noon = run_backtest(
        BuyAndHold,
        {"FX": frame},
        start=start,
        end=end + pd.Timedelta(hours=12),
        costs=Costs(0, 0, 0),
    )
    assert noon.returns.index[-1] == pd.Timestamp("2021-02-05 12:00")


def test_a_given_bars_per_year_keeps_the_label_of_the_bars():
    """The header says "hourly bars, 5,000 a year (given)", not "given bars"."""
    from metabt.data.synthetic import gbm_market

    frame = _reclock(gbm_market(900, seed=3, vol=0.004), _fx_hours(900))
    result = run_backtest(
        BuyAndHold,
        {"FX": frame},
        start=frame.index[400],
        sizer_kwargs={"bars_per_year": 5000},
        costs=Costs(0, 0, 0),
    )
    assert result.frequency.name == "hourly"
    assert result.frequency.bars_per_year == 5000
    assert result.frequency.describe() == "hourly bars, 5,000 per year (given)"
    r = result.returns
    assert result.metrics["sharpe"] == pytest.approx(
        r.mean() / r.std(ddof=1) * math.sqrt(5000), rel=1e-6
    )


def test_weekly_bars_resampled_inside_cerebro_are_annualised_with_52():
    """A feed resampled in Cerebro holds no bars at start: its timeframe gives the frequency."""
    import backtrader as bt

    from metabt import QuantStatsAnalyzer
    from metabt.data.feeds import feed
    from metabt.data.synthetic import gbm_market

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.resampledata(feed(gbm_market(800, seed=2)), timeframe=bt.TimeFrame.Weeks)
    cerebro.addstrategy(BuyAndHold)
    cerebro.addanalyzer(QuantStatsAnalyzer, _name="qs")
    strategy = cerebro.run()[0]
    assert strategy.bar_frequency.name == "weekly"
    assert strategy.bar_frequency.bars_per_year == 52
    rets = strategy.analyzers.qs.get_analysis()
    r = rets["returns"]
    assert 150 < len(r) < 170  # weekly bars of 800 business days, not daily ones
    assert rets["metrics"]["sharpe"] == pytest.approx(
        r.mean() / r.std(ddof=1) * math.sqrt(52), rel=1e-6
    )


def test_intraday_resampled_feeds_without_bars_per_year_are_refused():
    import backtrader as bt

    from metabt.data.feeds import feed
    from metabt.data.synthetic import gbm_market

    frame = _reclock(gbm_market(900, seed=3), _fx_hours(900))
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.resampledata(feed(frame), timeframe=bt.TimeFrame.Minutes, compression=120)
    cerebro.addstrategy(BuyAndHold)
    with pytest.raises(ConfigError, match="bars_per_year"):
        cerebro.run()


def test_a_too_short_history_is_refused_quoting_the_checkpoints_own_horizon(sample_frames):
    """The run's flags say horizon 5; the checkpoint was trained with horizon 1: the
    refusal quotes the horizon the traded model has."""
    from metabt.errors import DataError
    from metabt.experiments.compare import main_backtest
    from metabt.experiments.settings import RunSettings
    from metabt.features.spec import FeatureSpec
    from metabt.learn.learner import MetaLearner
    from metabt.learn.models import MLP

    spec = FeatureSpec(horizon=1)
    learner = MetaLearner(MLP(spec.n_features, (4,)), feature_spec=spec)
    short = {"AAPL": sample_frames["AAPL"].loc["2011-01-01":"2011-04-30"]}
    settings = RunSettings(short, short, pd.Timestamp("2011-03-01"))
    assert settings.cfg.spec.horizon == 5
    with pytest.raises(DataError, match=r"horizon 1 \(MetaStrategy's first adaptation\)"):
        main_backtest(settings, learner, progress=False)
