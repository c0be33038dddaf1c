"""SignalSizer: hand-computed sizes, caps, deadband, long-only, invalid inputs, properties."""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metabt.errors import ConfigError
from metabt.sizers import SignalSizer
from metabt.strategies.meta import SignalTrader

NAN, INF = math.nan, math.inf


def _frame(n: int = 60, seed: int = 3) -> pd.DataFrame:
    """Synthetic daily OHLCV bars (a geometric random walk)."""
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.004, n))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.005,
            "low": np.minimum(open_, close) * 0.995,
            "close": close,
            "volume": 1e6,
        },
        index=pd.bdate_range("2021-01-04", periods=n),
    )


# ---- target_weight: the pure formula


@pytest.mark.parametrize(
    ("kwargs", "signal", "vol", "expected"),
    [
        ({}, 0.125, 0.20, 0.25),  # half signal (0.125/0.25), 0.10/0.20 vol ratio
        ({}, -0.25, 0.40, -0.25),  # full short signal, vol ratio 0.25
        ({}, 1.0, 0.40, 0.25),  # signal clipped to the full weight
        ({}, 0.25, 0.05, 1.0),  # 0.10/0.05 = 2 capped at max_leverage 1
        ({"max_leverage": 1.5}, -0.25, 0.05, -1.5),
        ({"max_leverage": 1.5}, 0.125, 0.05, 1.0),  # 0.5 * 2 = 1.0 under the 1.5 cap
        ({"target_vol": 0.2, "signal_scale": 1.0}, 0.5, 0.25, 0.4),
        ({"long_only": True}, -0.25, 0.20, 0.0),
        ({"long_only": True}, 0.25, 0.20, 0.5),
        ({}, 0.0, 0.20, 0.0),
    ],
)
def test_target_weight_hand_computed(kwargs, signal, vol, expected):
    assert SignalSizer(**kwargs).target_weight(signal, vol) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("signal", [NAN, INF, -INF])
def test_target_weight_invalid_signal_is_flat(signal):
    assert SignalSizer().target_weight(signal, 0.2) == 0.0


@pytest.mark.parametrize("vol", [NAN, INF, -INF, 0.0, -0.1])
def test_target_weight_invalid_vol_is_flat(vol):
    assert SignalSizer().target_weight(0.2, vol) == 0.0


def test_target_weight_tiny_vol_is_capped_not_nan():
    sizer = SignalSizer(max_leverage=2.0)
    assert sizer.target_weight(0.1, 1e-320) == 2.0  # target_vol / vol overflows to inf
    assert sizer.target_weight(-0.1, 1e-320) == -2.0
    assert sizer.target_weight(0.0, 1e-320) == 0.0  # not 0 * inf = NaN


# ---- target_shares: signal, vol, price, value -> shares


@pytest.mark.parametrize(
    ("signal", "vol", "price", "value", "expected"),
    [
        (0.125, 0.20, 50.0, 100_000.0, 500),  # w 0.25 -> 25,000 / 50
        (0.125, 0.20, 30.0, 100_000.0, 833),  # 833.33 truncated
        (-0.125, 0.20, 30.0, 100_000.0, -833),  # toward zero, not -834
        (0.25, 0.05, 7.0, 10_000.0, 1428),  # w capped at 1: 1428.57
        (0.25, 1.0, 10.0, 1_000.0, 10),  # w 0.1: 0.1 * 1000 / 10 = 10 despite float error
        (0.05, 0.2, 10.0, 1_000.0, 10),  # w 0.1 again, another float path
        (0.125, 0.20, 300_000.0, 100_000.0, 0),  # one share costs more than the weight
    ],
)
def test_target_shares_hand_computed(signal, vol, price, value, expected):
    shares = SignalSizer(deadband=0.0).target_shares(signal, vol, price, value)
    assert shares == expected
    assert type(shares) is int


def test_weight_scale_scales_the_target():
    sizer = SignalSizer(deadband=0.0)
    assert sizer.target_shares(0.125, 0.20, 50.0, 100_000.0, weight_scale=0.5) == 250
    assert sizer.target_shares(0.125, 0.20, 30.0, 100_000.0, weight_scale=0.3) == 250  # 250.0
    for bad in (0.0, -0.5, 1.5, NAN, INF):
        with pytest.raises(ConfigError, match="weight_scale"):
            sizer.target_shares(0.125, 0.20, 50.0, 100_000.0, weight_scale=bad)


def test_deadband_holds_small_moves_and_trades_big_ones():
    sizer = SignalSizer(deadband=0.05)  # target weight 0.25 = 500 shares at 50
    # current 480 shares = weight 0.24: within the band, hold
    assert sizer.target_shares(0.125, 0.20, 50.0, 100_000.0, current=480) == 480
    # current 300 shares = weight 0.15: 0.10 away, trade to the target
    assert sizer.target_shares(0.125, 0.20, 50.0, 100_000.0, current=300) == 500
    # from flat, a target weight of 0.03 is below the band: stay flat
    assert sizer.target_shares(0.015, 0.20, 50.0, 100_000.0) == 0
    assert SignalSizer(deadband=0.0).target_shares(0.015, 0.20, 50.0, 100_000.0) == 60
    # a valid zero signal with a small position inside the band holds it
    assert sizer.target_shares(0.0, 0.20, 50.0, 100_000.0, current=20) == 20
    # a short position far from a long target is closed and reversed
    assert sizer.target_shares(0.125, 0.20, 50.0, 100_000.0, current=-100) == 500


def test_rebalance_band_keeps_a_same_side_size_within_a_share_of_its_target():
    # target weight 0.25 = 500 shares at 50; band max(0.05, 0.4 * 0.25 = 0.10)
    sizer = SignalSizer(deadband=0.05, rebalance_band=0.4)
    assert sizer.target_shares(0.125, 0.20, 50.0, 100_000.0, current=380) == 380  # 0.19: kept
    assert sizer.target_shares(0.125, 0.20, 50.0, 100_000.0, current=280) == 500  # 0.14: moves
    # a change of side, or going flat, uses the deadband alone
    assert sizer.target_shares(0.125, 0.20, 50.0, 100_000.0, current=-20) == 500
    assert sizer.target_shares(-0.0015, 0.20, 50.0, 100_000.0, current=20) == 20  # 0.01 < 0.05
    assert sizer.target_shares(-0.125, 0.20, 50.0, 100_000.0, current=420) == -500
    # 0 (the default) is the plain deadband; an explicit override gives the exact size
    assert SignalSizer(deadband=0.05).target_shares(0.125, 0.2, 50.0, 1e5, current=380) == 500
    exact = sizer.shares_for_weight(0.25, 50.0, 1e5, current=420, deadband=0, rebalance_band=0)
    assert exact == 500


@given(
    st.floats(-2.0, 2.0),
    st.integers(-4000, 4000),
    st.floats(0.0, 0.2),
    st.floats(0.0, 0.95),
)
def test_rebalance_band_only_ever_keeps_more_than_the_deadband(weight, held, band, relative):
    value, price = 100_000.0, 50.0
    plain = SignalSizer(deadband=band).shares_for_weight(weight, price, value, current=held)
    wide = SignalSizer(deadband=band, rebalance_band=relative)
    banded = wide.shares_for_weight(weight, price, value, current=held)
    assert banded in (plain, held)  # it moves to the same size, or keeps the position
    if banded == held != plain:  # kept by the relative band: same side, within it
        held_weight = held * price / value
        assert held_weight * weight > 0
        assert abs(weight - held_weight) < relative * abs(weight)


def test_long_only_never_targets_a_short():
    sizer = SignalSizer(long_only=True, deadband=0.0)
    assert sizer.target_shares(-0.25, 0.2, 50.0, 100_000.0) == 0
    assert sizer.target_shares(-0.25, 0.2, 50.0, 100_000.0, current=-300) == 0
    assert sizer.target_shares(0.25, 0.2, 50.0, 100_000.0) == 1000


@pytest.mark.parametrize(
    ("signal", "vol", "price", "value"),
    [
        (NAN, 0.2, 50.0, 1e5),
        (INF, 0.2, 50.0, 1e5),
        (-INF, 0.2, 50.0, 1e5),
        (0.1, NAN, 50.0, 1e5),
        (0.1, INF, 50.0, 1e5),
        (0.1, 0.0, 50.0, 1e5),
        (0.1, -0.2, 50.0, 1e5),
        (0.1, 0.2, NAN, 1e5),
        (0.1, 0.2, INF, 1e5),
        (0.1, 0.2, 0.0, 1e5),
        (0.1, 0.2, -50.0, 1e5),
        (0.1, 0.2, 50.0, NAN),
        (0.1, 0.2, 50.0, INF),
        (0.1, 0.2, 50.0, 0.0),
        (0.1, 0.2, 50.0, -1e5),
    ],
)
@pytest.mark.parametrize("current", [0, 480, -70])
def test_invalid_inputs_give_flat_not_nan(signal, vol, price, value, current):
    """Invalid inputs go flat whatever the deadband or the current position."""
    shares = SignalSizer(deadband=0.5).target_shares(signal, vol, price, value, current=current)
    assert shares == 0
    assert type(shares) is int


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_vol": 0.0}, "target_vol"),
        ({"target_vol": NAN}, "target_vol"),
        ({"max_leverage": -1.0}, "max_leverage"),
        ({"signal_scale": 0}, "signal_scale"),
        ({"deadband": -0.01}, "deadband"),
        ({"deadband": INF}, "deadband"),
        ({"rebalance_band": 1.0}, "rebalance_band"),
        ({"rebalance_band": -0.1}, "rebalance_band"),
        ({"rebalance_band": NAN}, "rebalance_band"),
        ({"vol_lookback": 1}, "vol_lookback"),
        ({"vol_lookback": 20.5}, "vol_lookback"),
        ({"bars_per_year": 0}, "bars_per_year"),
        ({"long_only": "yes"}, "long_only"),
        ({"target_volatility": 0.1}, "did you mean 'target_vol'"),
    ],
)
def test_bad_params_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SignalSizer(**kwargs)


# ---- inside a backtest: the one sizing path (SignalTrader.rebalance)


class _Probe(SignalTrader):
    """Constant signal; records the sizing inputs at every bar."""

    params = (("signal", 0.2),)

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, dict[str, float]] = {}

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        return self.p.signal

    def rebalance(self, active: list[int], signals: list[float]) -> None:
        self.seen[len(self.data)] = {
            "vol": self.realised_vol(0),
            "value": self.broker.getvalue(),
            "position": self.getposition(self.data).size,
        }
        super().rebalance(active, signals)


@pytest.fixture(scope="module")
def probe_run():
    frame = _frame()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, openinterest=None), name="SYN")
    cerebro.broker.setcash(100_000.0)
    cerebro.addsizer(SignalSizer, target_vol=0.15, vol_lookback=10, deadband=0.0)
    cerebro.addstrategy(_Probe)
    strat = cerebro.run()[0]
    return frame, strat


def test_realised_vol_matches_numpy(probe_run):
    frame, strat = probe_run
    log_returns = np.diff(np.log(frame["close"].to_numpy()))
    for n, row in strat.seen.items():
        if n < 11:  # fewer than vol_lookback + 1 closes
            assert math.isnan(row["vol"])
        else:
            expected = np.std(log_returns[n - 11 : n - 1], ddof=1) * math.sqrt(252)
            assert row["vol"] == pytest.approx(expected, rel=1e-12)


def test_positions_follow_the_pure_formula(probe_run):
    """Each bar's order brings the position to target_shares, capped at gross leverage."""
    frame, strat = probe_run
    sizer = SignalSizer(target_vol=0.15, vol_lookback=10, deadband=0.0)
    checked = 0
    for n, row in strat.seen.items():
        if n + 1 not in strat.seen:
            continue
        price = frame["close"].iloc[n - 1]
        weight = sizer.target_weight(0.2, row["vol"])
        scale = min(1.0, 0.95 / abs(weight)) if weight else 1.0
        expected = sizer.target_shares(
            0.2, row["vol"], price, row["value"], current=row["position"], weight_scale=scale
        )
        assert strat.seen[n + 1]["position"] == expected  # filled at the next open
        checked += expected != 0
    assert checked > 40  # the comparison is not vacuous


class _LoneBuyer(SignalTrader):
    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        return 1.0

    def rebalance(self, active: list[int], signals: list[float]) -> None:
        self.buy()  # no size: SignalSizer refuses to size one order alone


def test_a_lone_buy_without_size_is_refused():
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=_frame(), openinterest=None), name="SYN")
    cerebro.addsizer(SignalSizer)
    cerebro.addstrategy(_LoneBuyer)
    with pytest.raises(ConfigError, match="size="):
        cerebro.run()


# ---- properties

finite = st.floats(-1e6, 1e6, allow_nan=False)
anything = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(
    signal=anything,
    vol=anything,
    max_leverage=st.floats(0.1, 5.0),
    long_only=st.booleans(),
)
def test_weight_is_capped_finite_and_follows_the_signal(signal, vol, max_leverage, long_only):
    w = SignalSizer(max_leverage=max_leverage, long_only=long_only).target_weight(signal, vol)
    assert math.isfinite(w)
    assert abs(w) <= max_leverage
    if w != 0:
        assert math.copysign(1.0, w) == math.copysign(1.0, signal)
    if long_only:
        assert w >= 0


@settings(max_examples=300, deadline=None)
@given(
    signal=finite,
    vol=st.floats(1e-4, 10.0),
    price=st.floats(0.01, 1e5),
    value=st.floats(1e3, 1e9),
)
def test_doubling_value_doubles_size_up_to_truncation(signal, vol, price, value):
    sizer = SignalSizer(deadband=0.0)
    one = sizer.target_shares(signal, vol, price, value)
    two = sizer.target_shares(signal, vol, price, 2 * value)
    assert abs(two - 2 * one) <= 1
    assert one * two >= 0  # same direction
    if one:
        assert math.copysign(1, one) == math.copysign(1, signal)


@settings(max_examples=300, deadline=None)
@given(
    signal=anything,
    vol=anything,
    price=anything,
    value=anything,
    current=st.integers(-(10**6), 10**6),
)
@example(signal=1.0, vol=0.0625, price=3.4e-277, value=6.1e32, current=0)  # size overflows
def test_target_shares_is_always_an_int(signal, vol, price, value, current):
    shares = SignalSizer().target_shares(signal, vol, price, value, current=current)
    assert type(shares) is int


def test_overflowing_size_is_flat():
    assert SignalSizer().target_shares(1.0, 0.0625, 3.4e-277, 6.1e32) == 0


def test_another_kind_of_sizer_is_refused_never_silently_replaced():
    """No sizer: the default SignalSizer; a backtrader sizer: a clear error at start."""
    for sizer, ok in ((None, True), (bt.sizers.FixedSize, False), (bt.sizers.PercentSizer, False)):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(bt.feeds.PandasData(dataname=_frame(), openinterest=None), name="SYN")
        if sizer is not None:
            cerebro.addsizer(sizer)
        cerebro.addstrategy(_Probe)
        if ok:
            (strat,) = cerebro.run()
            assert isinstance(strat.getsizer(), SignalSizer)
        else:
            with pytest.raises(ConfigError, match=r"metabt\.SignalSizer"):
                cerebro.run()


# ---- bars_per_year: the data's own frequency unless given (metabt.data.bars)


def _bars(index: pd.DatetimeIndex, seed: int = 5) -> pd.DataFrame:
    """Geometric random-walk OHLCV bars on the given bar times."""
    frame = _frame(len(index), seed)
    frame.index = index
    return frame


def _hourly_fx(weeks: int = 8) -> pd.DatetimeIndex:
    """Hourly bars 24 hours a day, Monday to Friday (FX 24/5)."""
    hours = pd.date_range("2021-01-04", periods=weeks * 7 * 24, freq="h")
    return hours[hours.day_of_week < 5]


def _probe(frames: dict[str, pd.DataFrame], **sizer_kwargs) -> _Probe:
    cerebro = bt.Cerebro(stdstats=False)
    for name, frame in frames.items():
        intraday = (frame.index[1] - frame.index[0]) < pd.Timedelta(days=1)
        extra = {"timeframe": bt.TimeFrame.Minutes, "compression": 60} if intraday else {}
        cerebro.adddata(bt.feeds.PandasData(dataname=frame, openinterest=None, **extra), name=name)
    cerebro.addsizer(SignalSizer, vol_lookback=10, **sizer_kwargs)
    cerebro.addstrategy(_Probe)
    return cerebro.run()[0]


def _hand_vol(frame: pd.DataFrame, n: int, bars_per_year: float) -> float:
    """std (ddof=1) of the 10 log returns up to bar n (1-based), times sqrt(bars_per_year)."""
    log_returns = np.diff(np.log(frame["close"].to_numpy()))
    return float(np.std(log_returns[n - 11 : n - 1], ddof=1) * math.sqrt(bars_per_year))


@pytest.mark.parametrize(
    ("index", "name", "per_year"),
    [
        (_hourly_fx(), "hourly", 6240.0),  # 24 x 260 weekdays
        (pd.date_range("2015-01-02", periods=150, freq="W-FRI"), "weekly", 52.0),
        (pd.bdate_range("2021-01-04", periods=80), "daily", 252.0),
    ],
)
def test_realised_vol_is_annualised_with_the_datas_own_frequency(index, name, per_year):
    frame = _bars(index)
    strat = _probe({"SYN": frame})
    assert strat.getsizer().p.bars_per_year is None  # the default: infer
    assert strat.bar_frequency.name == name
    assert strat.bar_frequency.bars_per_year == per_year
    checked = 0
    for n, row in strat.seen.items():
        if n >= 11:
            assert row["vol"] == pytest.approx(_hand_vol(frame, n, per_year), rel=1e-12)
            checked += 1
    assert checked > 50


def test_an_explicit_bars_per_year_overrides_the_inference():
    frame = _bars(_hourly_fx(4))
    strat = _probe({"SYN": frame}, bars_per_year=1000)
    # the label still names the bars; the count is the given one
    assert strat.bar_frequency.name == "hourly" and strat.bar_frequency.bars_per_year == 1000.0
    assert strat.bar_frequency.basis == "given"
    n = max(strat.seen)
    assert strat.seen[n]["vol"] == pytest.approx(_hand_vol(frame, n, 1000), rel=1e-12)


def test_mixed_bar_frequencies_are_refused_at_start_unless_given():
    daily = _bars(pd.bdate_range("2021-01-04", periods=80))
    hourly = _bars(_hourly_fx(4), seed=6)
    with pytest.raises(ConfigError, match=r"different bar frequencies.*daily.*hourly"):
        _probe({"D": daily, "H": hourly})
    assert _probe({"D": daily, "H": hourly}, bars_per_year=252).bar_frequency.name == "given"


@pytest.mark.parametrize("bad", [0, -5, math.nan, math.inf, "252", True])
def test_bars_per_year_must_be_none_or_positive(bad):
    with pytest.raises(ConfigError, match=r"^SignalSizer: bars_per_year must be a positive"):
        SignalSizer(bars_per_year=bad)
    assert SignalSizer(bars_per_year=6240.0).p.bars_per_year == 6240.0


def test_the_deadband_scales_with_the_gross_cap_so_a_wide_universe_still_trades():
    """64 assets at the cap: each weight is ~1.5%, inside an unscaled 5% band forever."""
    import backtrader as bt

    from metabt.data.feeds import feed
    from metabt.data.synthetic import gbm_market
    from metabt.strategies.meta import SignalTrader

    class Constant(SignalTrader):
        def compute_signal(self, i, data):
            return 0.25 if len(data) > 30 else float("nan")

    cerebro = bt.Cerebro(stdstats=False)
    for k in range(64):
        cerebro.adddata(feed(gbm_market(80, seed=k), name=f"A{k}"))
    cerebro.broker.setcash(1_000_000.0)
    cerebro.addstrategy(Constant)
    cerebro.addsizer(SignalSizer, target_vol=0.10, deadband=0.05)
    strat = cerebro.run()[0]
    held = [strat.getposition(d).size for d in strat.datas]
    assert all(h > 0 for h in held)  # every asset traded into its (small) capped weight


def test_capped_targets_trim_only_the_positions_held_above_their_exact_target():
    from metabt.strategies.trader import capped_targets

    sizer, value, prices = SignalSizer(), 100_000.0, [100.0, 100.0, 50.0]
    weights = [0.5, 0.3, 0.2]  # exact: 500, 300 and 400 shares, a book of 100,000
    # all three within a 6% band of their weight, held: 540, 290, 420 -> a book of 104,000
    held = [540, 290, 420]
    targets = capped_targets(sizer, weights, prices, held, value, cap=1.0, deadband=0.06)
    assert targets == [500, 290, 400]  # the two held above their exact size trim to it
    assert sum(abs(t) * p for t, p in zip(targets, prices)) <= value
    # within the cap, the band keeps every position
    within = capped_targets(sizer, weights, prices, [480, 290, 420], value, cap=1.0, deadband=0.06)
    assert within == [480, 290, 420]
    # no band: the exact targets
    exact = capped_targets(sizer, weights, prices, held, value, cap=1.0, deadband=0.0)
    assert exact == [500, 300, 400]


@given(
    st.lists(
        st.tuples(st.floats(-0.5, 0.5), st.floats(1.0, 500.0), st.integers(-3000, 3000)),
        min_size=1,
        max_size=12,
    ),
    st.floats(0.0, 0.2),
    st.floats(0.2, 2.0),
)
def test_capped_targets_keep_a_capped_book_within_the_cap(rows, band, cap):
    from metabt.strategies.trader import capped_targets

    weights, prices, held = (list(x) for x in zip(*rows))
    gross = sum(abs(w) for w in weights)
    if gross > cap:
        weights = [w * cap / gross for w in weights]
    value = 100_000.0
    targets = capped_targets(SignalSizer(), weights, prices, held, value, cap=cap, deadband=band)
    book = sum(abs(t) * p for t, p in zip(targets, prices))
    assert book <= cap * value * (1 + 1e-12)
    for t, c, w, p in zip(targets, held, weights, prices):
        exact = SignalSizer().shares_for_weight(w, p, value, deadband=0.0)
        assert t == c or t == exact  # a position is kept or moves to its exact size


def test_fractional_units_round_down_to_the_lot():
    sizer = SignalSizer(fractional=True, deadband=0.0)
    # weight 0.25 of 10,000 at 50,000 a unit: 0.05 units, not 0
    assert sizer.target_shares(0.125, 0.20, 50_000.0, 10_000.0) == pytest.approx(0.05)
    assert SignalSizer(deadband=0.0).target_shares(0.125, 0.20, 50_000.0, 10_000.0) == 0
    lot = SignalSizer(fractional=True, lot=0.01, deadband=0.0)
    assert lot.target_shares(0.125, 0.20, 30_000.0, 10_000.0) == pytest.approx(0.08)  # 0.0833
    assert lot.target_shares(-0.125, 0.20, 30_000.0, 10_000.0) == pytest.approx(-0.08)
    for bad in ({"lot": 0}, {"lot": NAN}, {"fractional": "yes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SignalSizer(**bad)


def test_an_expensive_asset_trades_in_fractions_and_whole_units_say_what_they_lost(
    sample_frames,
):
    """A 50,000-priced asset with 10,000 cash: whole units can never hold it (and the run
    says so); fractional units trade it."""
    from metabt.experiments.backtest import run_backtest
    from metabt.experiments.compare import rejection_warnings
    from metabt.strategies.baselines import ConstantLong

    frame = sample_frames["AAPL"].copy()
    frame[["open", "high", "low", "close"]] *= 50_000.0 / float(frame["close"].iloc[0])
    kwargs = {"start": "2010-01-04", "end": "2010-12-31", "warmup_bars": 30, "cash": 10_000.0}
    whole = run_backtest(ConstantLong, {"BTC": frame}, **kwargs)
    assert whole.metrics["turnover_two_way"] == 0.0
    assert whole.strategy.targets_set > 0
    assert whole.strategy.targets_rounded_away == whole.strategy.targets_set
    (line,) = [w for w in rejection_warnings([whole]) if "whole units" in w]
    assert "100%" in line and "--fractional" in line
    parts = run_backtest(ConstantLong, {"BTC": frame}, **kwargs, sizer_kwargs={"fractional": True})
    assert parts.metrics["turnover_two_way"] > 0
    assert parts.strategy.targets_rounded_away == 0
    assert not [w for w in rejection_warnings([parts]) if "whole units" in w]
