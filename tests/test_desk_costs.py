"""Costs a desk would recognise: half-spread and square-root impact booked by backtrader's
broker as the formula says, a participation cap on each bar's volume, the capacity curve,
the warning when costs eat the P&L, and the cost-aware objective's c."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from metabt.analyzers import PortfolioAnalyzer
from metabt.costs import Costs, DeskCommission, ParticipationFiller
from metabt.data import feed
from metabt.errors import ConfigError, DataError
from metabt.experiments.backtest import cost_warning, run_backtest
from metabt.experiments.compare import rejection_warnings
from metabt.sizers import SignalSizer
from metabt.strategies.baselines import BuyAndHold, SmaCross
from metabt.strategies.trader import SignalTrader

STEP = 0.01  # every close-to-close log return is +1% or -1%


def _zigzag(bars: int = 40, volume: float = 10_000.0) -> pd.DataFrame:
    """Closes that alternate +1% / -1% (open = close), constant volume: σ and ADV by hand."""
    index = pd.bdate_range("2021-01-04", periods=bars)
    close = 100.0 * np.exp(np.cumsum(np.where(np.arange(bars) % 2, -STEP, STEP)))
    return pd.DataFrame(
        {
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": volume,
        },
        index=index,
    )


class _Orders(bt.Strategy):
    """Sends the planned market orders (bar index -> signed units); records executions."""

    params = (("plan", {}),)

    def __init__(self):
        self.fills = []  # (bar of the fill, status, units of this execution, price, comm)

    def next(self):
        size = self.p.plan.get(len(self) - 1)
        if size:
            (self.buy if size > 0 else self.sell)(size=abs(size))

    def notify_order(self, order):
        if order.status in (order.Partial, order.Completed):
            for bit in order.executed.iterpending():
                self.fills.append(
                    (len(self) - 1, order.getstatusname(), bit.size, bit.price, bit.comm)
                )


def _run_orders(frame, costs, plan, cash=1_000_000.0):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame, name="X"))
    cerebro.broker.setcash(cash)
    costs.apply(cerebro.broker, cerebro.datas)
    cerebro.addstrategy(_Orders, plan=plan)
    cerebro.addanalyzer(PortfolioAnalyzer, _name="book")
    return cerebro.run()[0]


def test_spread_and_impact_cost_what_the_formula_says_on_a_hand_computable_fill():
    frame = _zigzag()
    costs = Costs(commission_bps=5, slippage_bps=0, borrow_bps=0, spread_bps=1, impact=0.5)
    strat = _run_orders(frame, costs, {25: 100})
    ((bar, status, size, price, comm),) = strat.fills
    assert (bar, status, size) == (26, "Completed", 100)
    assert price == frame["open"].iloc[26]
    # the 20 log returns before the fill alternate ±1%: σ = 0.01·sqrt(20/19) (ddof=1);
    # ADV = 10,000; 100 units are 1% of it: impact = 0.5 · σ · sqrt(0.01) of the value
    sigma = STEP * math.sqrt(20 / 19)
    impact = 0.5 * sigma * 0.1
    value = 100 * price
    assert comm == pytest.approx(value * (5e-4 + 1e-4 + impact), rel=1e-12)
    # backtrader booked it: cash is down by the value and exactly that commission
    assert strat.broker.getcash() == pytest.approx(1_000_000.0 - value - comm, rel=1e-12)
    ledger = strat.analyzers.book.get_analysis()["ledger"]
    row = ledger.loc[frame.index[26]]
    assert row["commission"] == pytest.approx(5e-4 * value, rel=1e-12)
    assert row["spread"] == pytest.approx(1e-4 * value, rel=1e-12)
    assert row["impact"] == pytest.approx(impact * value, rel=1e-12)
    assert ledger[["spread", "impact"]].sum().sum() == pytest.approx(row["spread"] + row["impact"])


def test_a_reversal_pays_the_impact_of_one_fill_of_its_whole_size():
    frame = _zigzag()
    costs = Costs(commission_bps=0, slippage_bps=0, borrow_bps=0, impact=1.0)
    strat = _run_orders(frame, costs, {25: 100, 30: -300})
    (_, _, _, _, _), (bar, _, size, price, comm) = strat.fills
    assert (bar, size) == (31, -300)  # 100 closed, 200 opened: backtrader prices two pieces
    rate = STEP * math.sqrt(20 / 19) * math.sqrt(300 / 10_000)
    assert comm == pytest.approx(300 * price * rate, rel=1e-12)  # not 100^1.5 + 200^1.5


def test_the_participation_cap_limits_each_fill_to_a_share_of_its_bars_volume():
    frame = _zigzag(volume=1_000.0)
    costs = Costs(commission_bps=0, slippage_bps=0, borrow_bps=0, participation=0.1)
    strat = _run_orders(frame, costs, {25: 250})
    fills = [(bar, status, size) for bar, status, size, _, _ in strat.fills]
    assert fills == [(26, "Partial", 100), (27, "Partial", 100), (28, "Completed", 50)]
    traded = strat.analyzers.book.get_analysis()["ledger"]["traded"]
    opens = frame["open"].to_numpy()
    expected = [100 * opens[26], 100 * opens[27], 50 * opens[28]]
    assert traded[traded > 0].tolist() == pytest.approx(expected, rel=1e-12)
    # fractional units are capped to the lot, not to whole units (FixedBarPerc floors)
    thin = _zigzag(volume=3.0)
    filler = ParticipationFiller(0.1, lot=1e-8)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(thin, name="X"))
    cerebro.broker.set_filler(filler)
    cerebro.addstrategy(_Orders, plan={25: 1.0})
    strat = cerebro.run()[0]
    assert strat.fills[0][2] == pytest.approx(0.3, abs=1e-8)
    assert bt.broker.fillers.FixedBarPerc(perc=10)(_order(thin), 0.0, 0) == 0  # what it fixes
    with pytest.raises(ConfigError, match=r"participation must be in \(0, 1\]"):
        Costs(participation=1.5)


def _order(frame):
    """A stand-in buy order of 1 unit on ``frame``'s last bar, for a filler's call."""
    data = SimpleNamespace(volume=[float(frame["volume"].iloc[-1])])
    return SimpleNamespace(data=data, executed=SimpleNamespace(remsize=1.0))


class _AlwaysLong(SignalTrader):
    """A constant long signal: the sizer's volatility-target position, every bar."""

    def compute_signal(self, i, data):
        return 1.0


def test_a_capped_order_is_resized_not_doubled_by_the_next_rebalance():
    frame = _zigzag(bars=80, volume=4.0)
    frame["close"] *= np.exp(np.random.default_rng(1).normal(0, 0.01, len(frame)))
    frame["open"] = frame["close"]
    frame["high"], frame["low"] = frame["close"] * 1.02, frame["close"] * 0.98

    def run(participation):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(frame, name="X"))
        cerebro.broker.setcash(1_000.0)
        costs = Costs(commission_bps=0, slippage_bps=0, borrow_bps=0, participation=participation)
        costs.apply(cerebro.broker, cerebro.datas)
        cerebro.addsizer(SignalSizer, target_vol=0.5, deadband=0.0)
        cerebro.addstrategy(_AlwaysLong, trade_start=frame.index[30].date())
        cerebro.addanalyzer(PortfolioAnalyzer, _name="book")
        strat = cerebro.run()[0]
        value = strat.analyzers.book.get_analysis()["positions"]["X"]
        return (value / frame["close"].reindex(value.index)).round(9)

    free, capped = run(None), run(0.25)
    # one unit a bar at most (25% of 4), so the position builds up over several bars ...
    steps = capped.diff().abs().dropna()
    assert steps.max() <= 1.0 + 1e-9 and (steps > 0).sum() >= 3
    # ... towards the same targets, never past the largest of them
    assert capped.max() <= free.max() + 1e-9
    assert capped.iloc[-1] == pytest.approx(free.iloc[-1], abs=1.0)


def test_impact_or_a_cap_on_data_without_volume_is_a_clear_error():
    frame = _zigzag(volume=0.0)
    for costs in (Costs(impact=1.0), Costs(participation=0.1)):
        with pytest.raises(DataError, match=r"X: the data have no volume .*`impact` 0"):
            run_backtest(BuyAndHold, {"X": frame}, start=frame.index[25], costs=costs)
    run_backtest(BuyAndHold, {"X": frame}, start=frame.index[25])  # no impact: runs
    # a stretch without volume inside a file that has some is named with its date
    frame = _zigzag(bars=60)
    frame.iloc[20:45, frame.columns.get_loc("volume")] = 0.0
    with pytest.raises(DataError, match="X: no traded volume in the 20 bars before 2021-03-"):
        _run_orders(frame, Costs(impact=1.0), {44: 10})
    with pytest.raises(ConfigError, match="impact > 0 needs the feed"):
        DeskCommission(impact=1.0)
    cerebro = bt.Cerebro()
    with pytest.raises(ConfigError, match="pass the named feeds"):
        Costs(impact=1.0).apply(cerebro.broker)


def test_the_cost_schemes_pickle_by_name_for_optstrategy():
    data = feed(_zigzag(), name="X")
    scheme = DeskCommission(commission=5e-4, spread=1e-4, impact=1.0, data=data)
    filler = ParticipationFiller(0.1, lot=1e-8)
    assert type(pickle.loads(pickle.dumps(scheme))) is DeskCommission
    back = pickle.loads(pickle.dumps(filler))
    assert (back.participation, back.lot) == (0.1, 1e-8)
    assert DeskCommission.__module__ == ParticipationFiller.__module__ == "metabt.costs"


@pytest.mark.slow
def test_optstrategy_in_parallel_with_desk_costs_equals_one_process(sample_frames):
    frames = {n: f.loc["2010-01-01":"2011-06-30"] for n, f in sample_frames.items()}

    def run(maxcpus):
        cerebro = bt.Cerebro(stdstats=False, maxcpus=maxcpus)
        for name, frame in frames.items():
            cerebro.adddata(feed(frame, name=name))
        Costs(spread_bps=1.0, impact=1.0, participation=0.01).apply(cerebro.broker, cerebro.datas)
        cerebro.optstrategy(SmaCross, fast=[5, 10], slow=[30], long_only=[False])
        cerebro.addsizer(SignalSizer)
        cerebro.addanalyzer(PortfolioAnalyzer, _name="book")
        out = []
        for (run,) in cerebro.run():
            book = run.analyzers.book.get_analysis()
            value = round(float(book["equity"].iloc[-1]), 6)
            out.append((run.p.fast, value, round(float(book["ledger"]["impact"].sum()), 6)))
        return sorted(out)

    serial = run(1)
    assert len({value for _, value, _ in serial}) == 2 and all(i > 0 for _, _, i in serial)
    assert run(2) == serial


def _churn(costs, **kwargs):
    frame = _zigzag(bars=160)
    frame["close"] *= np.exp(np.random.default_rng(3).normal(0, 0.01, len(frame)))
    frame["open"] = frame["close"].shift(1).fillna(frame["close"].iloc[0])
    frame["high"] = frame[["open", "close"]].max(axis=1) * 1.005
    frame["low"] = frame[["open", "close"]].min(axis=1) * 0.995
    return run_backtest(
        SmaCross,
        {"X": frame},
        start=frame.index[40],
        warmup_bars=40,
        costs=costs,
        strategy_kwargs={"fast": 2, "slow": 3, "long_only": False},
        sizer_kwargs={"deadband": 0.0},
        **kwargs,
    )


def test_the_warning_fires_when_costs_eat_half_the_gross_pnl_and_not_on_a_quiet_run(
    sample_frames,
):
    churned = _churn(Costs(commission_bps=20.0))
    assert churned.metrics["turnover_two_way"] > 50
    line = cost_warning(churned)
    assert line is not None and line.startswith("warning: SmaCross: costs of ")
    assert "of its P&L before costs" in line and "x two-way turnover a year" in line
    assert churned.cost_share > 0.5
    assert line in rejection_warnings([churned])
    paid = churned.costs_paid
    assert churned.gross_pnl == pytest.approx(churned.pnl + sum(paid.values()))
    assert paid["commission"] == pytest.approx(20e-4 * churned.traded, rel=1e-9)

    quiet = run_backtest(
        BuyAndHold, {"AAPL": sample_frames["AAPL"]}, start="2010-01-04", warmup_bars=50
    )
    assert quiet.metrics["turnover_two_way"] < 1 and quiet.cost_share < 0.01
    assert cost_warning(quiet) is None
    assert not any("costs of" in w for w in rejection_warnings([quiet]))


def test_the_objectives_c_is_commission_plus_half_spread_plus_slippage():
    from metabt.config.defaults import DEMO

    costs = Costs.for_asset_class("crypto", slippage_bps=2.0, impact=1.0)
    cfg = costs.configure(DEMO)
    assert cfg.fill_cost_bps == 10.0 + 1.0 + 2.0  # impact is left out of c
    assert cfg.borrow_bps == 300.0
    loss = cfg.with_(objective="sharpe").task_loss(365.0)
    assert loss.fill_cost == pytest.approx(13e-4)
    assert Costs().configure(DEMO) == DEMO  # the default: 5 + 0 + 2 bps, as before


@pytest.mark.slow
def test_the_capacity_curve_falls_with_capital_under_impact_and_is_flat_without(
    sample_frames, small_learner, tmp_path
):
    from metabt.config.defaults import DEMO
    from metabt.experiments.capacity import capacity_curve
    from metabt.experiments.settings import RunSettings

    frames = {n: f.loc[:"2010-12-31"] for n, f in sample_frames.items()}
    # fractional units: positions scale exactly with capital (whole shares round, and a
    # rounding can tip a deadband decision), so without impact the curve is exactly flat
    sizer = {**DEMO.sizer, "fractional": True}
    cfg = DEMO.with_(support=40, smooth=5, warmup_bars=150, sizer=sizer)

    def curve(impact):
        settings = RunSettings(
            frames=frames,
            train_frames=frames,
            start=pd.Timestamp("2010-01-04"),
            costs=Costs(impact=impact),
            cfg=cfg,
        )
        return capacity_curve(settings, [1e5, 1e7, 1e9], learner=small_learner)

    on, off = curve(1.0), curve(0.0)
    assert list(on.table.index) == [1e5, 1e7, 1e9]
    impact = on.table["impact_bps"].to_numpy()
    assert (np.diff(impact) > 0).all() and impact[0] < 1 < impact[-1]
    sharpe = on.table["net_sharpe"].to_numpy()
    assert sharpe[-1] < sharpe[0] - 0.05 and (np.diff(sharpe) < 0).all()
    flat = off.table["net_sharpe"].to_numpy()
    assert (off.table["impact_bps"] == 0).all()
    assert np.ptp(flat) < 1e-6 and flat[0] == pytest.approx(sharpe[0], abs=0.01)
    assert any("impact is off" in line for line in off.lines())
    paths = on.write(tmp_path / "run")
    table = pd.read_csv(paths["capacity_csv"])
    assert list(table["capital"]) == [1e5, 1e7, 1e9] and "net_sharpe" in table
    assert paths["capacity_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
