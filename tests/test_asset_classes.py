"""Asset classes, declared, not guessed: each sets the costs, the units and the calendar;
flags and Python keywords override it; the default stays US equities."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metabt.cli.commands import config_of, costs_of
from metabt.cli.main import _apply_config
from metabt.cli.parser import _build_parser
from metabt.config.assets import ASSET_CLASS_NAMES, ASSET_CLASSES, asset_class
from metabt.config.defaults import DEMO
from metabt.costs import Costs
from metabt.data.bars import CALENDARS, common_frequency, infer_frequency, timeframe_frequency
from metabt.errors import ConfigError
from metabt.experiments.backtest import run_backtest
from metabt.sizers import SignalSizer
from metabt.strategies.baselines import BuyAndHold, SmaCross


def _parse(argv):
    parser = _build_parser()
    return _apply_config(parser, parser.parse_args(argv), argv)


def _coin(price: float = 50_000.0, bars: int = 400, weekends: bool = True) -> pd.DataFrame:
    """A coin near ``price``: daily bars every day of the week, volume in coins."""
    rng = np.random.default_rng(7)
    index = pd.date_range("2020-01-01", periods=bars, freq="D" if weekends else "B")
    close = price * np.exp(np.cumsum(rng.normal(0.0, 0.03, bars)))
    frame = pd.DataFrame(
        {
            "open": close * np.exp(rng.normal(0.0, 0.002, bars)),
            "close": close,
            "volume": rng.uniform(20_000, 40_000, bars),
        },
        index=index,
    )
    frame["high"] = frame[["open", "close"]].max(axis=1) * 1.01
    frame["low"] = frame[["open", "close"]].min(axis=1) * 0.99
    return frame[["open", "high", "low", "close", "volume"]]


@pytest.mark.parametrize("name", ASSET_CLASS_NAMES)
def test_each_class_sets_its_costs_units_and_calendar(name):
    spec = asset_class(name)
    costs = Costs.for_asset_class(name)
    assert (costs.commission_bps, costs.spread_bps, costs.slippage_bps, costs.borrow_bps) == (
        spec.commission_bps,
        spec.spread_bps,
        spec.slippage_bps,
        spec.borrow_bps,
    )
    assert costs.asset_class == name and costs.impact == 0 and costs.participation is None
    assert costs.per_fill_bps == spec.commission_bps + spec.spread_bps + spec.slippage_bps
    sizer = costs.sizer_kwargs()
    assert sizer["calendar"] == spec.calendar and spec.calendar in CALENDARS
    assert sizer["fractional"] == (name in ("fx", "crypto"))
    assert sizer.get("lot", 1.0) == spec.lot
    assert f"asset class {name}" in costs.describe()


def test_the_class_defaults_are_the_documented_ones():
    by_name = {
        name: (a.commission_bps, a.spread_bps, a.slippage_bps, a.borrow_bps, a.lot)
        for name, a in ASSET_CLASSES.items()
    }
    assert by_name == {
        "equity": (5.0, 0.0, 2.0, 25.0, 1.0),
        "fx": (0.0, 0.5, 0.0, 0.0, 1.0),
        "crypto": (10.0, 1.0, 0.0, 300.0, 1e-8),
        "futures": (0.5, 0.25, 0.0, 0.0, 1.0),
    }


def test_the_default_stays_us_equity():
    assert Costs() == Costs.for_asset_class(None)
    assert (Costs().commission_bps, Costs().slippage_bps, Costs().borrow_bps) == (5.0, 2.0, 25.0)
    assert Costs().sizer_kwargs() == {}  # whole shares, calendar from the dates
    assert Costs().describe().startswith("costs of US equities (no asset class declared")
    args = _parse(["backtest"])
    assert costs_of(args) == Costs()
    cfg = config_of(args)
    assert cfg.fill_cost_bps == 7.0 and cfg.borrow_bps == 25.0 and cfg.sizer == DEMO.sizer


def test_keywords_and_flags_override_the_class_defaults(tmp_path):
    fx = Costs.for_asset_class("fx", commission_bps=0.3, spread_bps=None)
    assert (fx.commission_bps, fx.spread_bps, fx.borrow_bps) == (0.3, 0.5, 0.0)  # None: kept
    with pytest.raises(ConfigError, match="has no setting 'comission_bps'"):
        Costs.for_asset_class("fx", comission_bps=1.0)
    with pytest.raises(ConfigError, match="asset class 'bond' is unknown"):
        Costs.for_asset_class("bond")

    args = _parse(["backtest", "--asset-class", "crypto", "--commission", "3", "--impact", "1"])
    costs = costs_of(args)
    assert (costs.commission_bps, costs.spread_bps, costs.borrow_bps) == (3.0, 1.0, 300.0)
    assert costs.impact == 1.0 and costs.asset_class == "crypto"
    cfg = config_of(args)
    assert cfg.fill_cost_bps == 4.0  # commission + half-spread + slippage; impact is not in c
    assert cfg.borrow_bps == 300.0
    assert cfg.sizer == {**DEMO.sizer, "fractional": True, "lot": 1e-8, "calendar": "24/7"}
    # --bars-per-year still wins over the calendar; --fractional over whole units
    args = _parse(
        ["backtest", "--asset-class", "futures", "--fractional", "--bars-per-year", "300"]
    )
    sizer = config_of(args).sizer
    assert sizer["fractional"] is True and sizer["bars_per_year"] == 300
    assert sizer["calendar"] == "futures"

    # a config file declares it too, and a flag wins over the file
    path = tmp_path / "run.toml"
    path.write_text('asset_class = "fx"\nspread = 0.8\n[backtest]\nparticipation = 0.1\n')
    costs = costs_of(_parse(["backtest", "--config", str(path), "--borrow", "10"]))
    assert (costs.asset_class, costs.spread_bps, costs.borrow_bps) == ("fx", 0.8, 10.0)
    assert costs.participation == 0.1
    with pytest.raises(SystemExit):
        _parse(["backtest", "--asset-class", "bonds"])


def test_a_declared_calendar_counts_the_bars_of_a_year():
    weekdays = pd.bdate_range("2020-01-01", "2021-12-31")
    assert infer_frequency(weekdays).bars_per_year == 252  # guessed: trading days
    assert infer_frequency(weekdays, calendar="24/5").bars_per_year == 260
    crypto = infer_frequency(weekdays, calendar="24/7")
    assert crypto.bars_per_year == 365 and "measured 261" in crypto.basis  # gaps are said
    hours = pd.date_range("2021-01-04", "2021-06-30", freq="h")
    hours = hours[hours.day_of_week < 5]
    assert infer_frequency(hours, calendar="24/5").bars_per_year == 24 * 260
    assert infer_frequency(hours[:10], calendar="24/7").bars_per_year == 24 * 365  # short
    session = pd.DatetimeIndex(
        [
            d + pd.Timedelta(hours=9.5 + h)
            for d in pd.bdate_range("2021-01-04", "2021-04-30")
            for h in range(7)
        ]
    )
    assert infer_frequency(session, calendar="exchange").bars_per_year == 7 * 252
    assert infer_frequency(session, calendar="futures").bars_per_year == 23 * 252
    assert common_frequency({"a": weekdays}, None, "24/7").bars_per_year == 365
    assert common_frequency({"a": weekdays}, 100.0, "24/7").bars_per_year == 100  # given wins
    assert timeframe_frequency("Minutes", 60) is None  # intraday hours unknown ...
    assert timeframe_frequency("Minutes", 60, "24/7").bars_per_year == 8760  # ... unless declared
    assert timeframe_frequency("Days", 1, "24/5").bars_per_year == 260
    with pytest.raises(ConfigError, match="calendar must be one of exchange, 24/5, 24/7"):
        infer_frequency(weekdays, calendar="24/6")
    with pytest.raises(ConfigError, match="SignalSizer: calendar"):
        SignalSizer(calendar="lunar")


def test_crypto_trades_fractions_of_a_50000_coin_with_10000_cash():
    frames = {"BTC": _coin()}
    kwargs = {"fast": 5, "slow": 20, "long_only": False}
    run = {
        declared: run_backtest(
            SmaCross,
            frames,
            start="2020-03-01",
            warmup_bars=40,
            cash=10_000.0,
            costs=Costs.for_asset_class(declared),
            strategy_kwargs=kwargs,
            name=str(declared),
        )
        for declared in (None, "crypto")
    }
    # as US equities (whole coins) every position rounds to nothing: no trade at all
    whole = run[None]
    assert whole.traded == 0 and whole.strategy.targets_rounded_away > 0
    assert whole.frequency.bars_per_year == 365  # 7-day bars: detected as 24/7 anyway
    coin = run["crypto"]
    assert coin.traded > 0 and coin.strategy.targets_rounded_away == 0
    value = coin.strategy.analyzers.portfolio.get_analysis()["positions"]["BTC"]
    coins = (value / frames["BTC"]["close"].reindex(value.index)).abs()
    held = coins[coins > 0]
    assert len(held) > 50 and (held < 1).all()  # fractions of one coin, bar after bar
    assert not np.allclose(held, held.round())
    assert coin.frequency.bars_per_year == 365 and "24/7, declared" in coin.frequency.basis
    # the class's costs were charged: 10 bps commission and 1 bp half-spread of traded value
    paid = coin.costs_paid
    assert paid["commission"] == pytest.approx(10e-4 * coin.traded, rel=1e-9)
    assert paid["spread"] == pytest.approx(1e-4 * coin.traded, rel=1e-9)
    assert paid["slippage"] == 0.0 and paid["impact"] == 0.0
    # BuyAndHold buys fractions too
    held = run_backtest(
        BuyAndHold,
        frames,
        start="2020-03-01",
        warmup_bars=40,
        cash=10_000.0,
        costs=Costs.for_asset_class("crypto"),
    )
    sizer = held.strategy.getsizer()
    assert sizer.p.fractional and sizer.p.lot == 1e-8 and sizer.p.calendar == "24/7"
    coins = held.strategy.getposition(held.strategy.datas[0]).size
    assert 0 < coins < 1 and not float(coins).is_integer()
    assert math.isclose(coins / 1e-8, round(coins / 1e-8), abs_tol=1e-6)  # whole lots
    price = frames["BTC"].loc["2020-03-02", "open"]
    assert coins * price == pytest.approx(0.98 * 10_000, rel=0.02)


def test_the_header_says_which_class_applied(sample_frames):
    from metabt.experiments.settings import RunSettings

    frames = {"AAPL": sample_frames["AAPL"]}
    settings = RunSettings(
        frames=frames,
        train_frames=frames,
        start=pd.Timestamp("2011-01-03"),
        costs=Costs.for_asset_class("futures", impact=1.0),
    )
    result = settings.run(BuyAndHold, "BuyAndHold")
    line = settings.header(result)
    assert "asset class futures (futures calendar, whole units)" in line
    assert "commission 0.5 bps, half-spread 0.25 bps" in line and "impact k=1" in line
    assert result.frequency.bars_per_year == 252


def test_backtraders_own_target_orders_buy_fractions_under_a_fractional_class():
    import backtrader as bt

    from metabt.costs import DeskCommission
    from metabt.data import feed

    assert DeskCommission(lot=1e-8).getsize(50_000.0, 10_000.0) == pytest.approx(0.2)
    assert DeskCommission().getsize(50_000.0, 10_000.0) == 0  # whole units, as backtrader's

    class Half(bt.Strategy):
        def next(self):
            if len(self) == 5:
                self.order_target_percent(target=0.5)  # sized by comminfo.getsize

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(_coin(bars=30), name="BTC"))
    cerebro.broker.setcash(10_000.0)
    Costs.for_asset_class("crypto").apply(cerebro.broker, cerebro.datas)
    cerebro.addstrategy(Half)
    strat = cerebro.run()[0]
    coins = strat.getposition(strat.datas[0]).size
    assert 0.05 < coins < 0.2 and coins == pytest.approx(round(coins / 1e-8) * 1e-8)


def test_buy_and_hold_sends_a_rejected_fractional_entry_again():
    frame = _coin()
    gap = pd.Timestamp("2020-03-02")  # the entry's fill bar opens 5% above the last close
    frame.loc[gap, "open"] = frame.loc["2020-03-01", "close"] * 1.05
    frame.loc[gap, "high"] = max(frame.loc[gap, "high"], frame.loc[gap, "open"])
    run = run_backtest(
        BuyAndHold,
        {"BTC": frame},
        start="2020-03-01",
        warmup_bars=40,
        cash=10_000.0,
        costs=Costs.for_asset_class("crypto"),
    )
    assert [r["date"].isoformat() for r in run.rejected_orders] == ["2020-03-02"]
    coins = run.strategy.getposition(run.strategy.datas[0]).size
    price = frame.loc["2020-03-03", "open"]
    assert coins * price == pytest.approx(0.98 * 10_000, rel=0.03)  # bought a bar later
