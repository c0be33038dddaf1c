"""metabt.strategies.trader: forecast smoothing and the cost-derived no-trade region.

A scripted strategy emits a known signal path; the traded signal, the orders and the kept
positions are checked against hand computations of the rules in SignalTrader's docstring.
"""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from metabt.errors import ConfigError
from metabt.sizers import SignalSizer
from metabt.strategies.trader import SignalTrader

N = 160


def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, N)))
    idx = pd.bdate_range("2020-01-01", periods=N)
    return pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e6},
        index=idx,
    )


#: a noisy forecast: its sign flips on about half the bars
SIGNALS = np.random.default_rng(7).normal(0.05, 0.2, N)


class _Scripted(SignalTrader):
    """Emits SIGNALS[bar]; records the traded signal and the position at every bar."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.traded: list[float] = []
        self.held: list[float] = []
        self.book: list[float] = []  # gross position value / portfolio value

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        return float(SIGNALS[len(data) - 1])

    def rebalance(self, active, signals) -> None:
        self.traded.append(signals[0])
        self.held.append(self.getposition(self.data).size)
        self.book.append(abs(self.held[-1]) * self.data.close[0] / self.broker.getvalue())
        super().rebalance(active, signals)


def _run(**params):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=_frame(), openinterest=None), name="A")
    cerebro.broker.setcash(100_000.0)
    cerebro.addsizer(SignalSizer, target_vol=0.15, vol_lookback=10, deadband=0.0)
    cerebro.addstrategy(_Scripted, **params)
    return cerebro.run()[0]


def _orders(strat) -> int:
    pos = np.asarray(strat.held)
    return int(np.count_nonzero(np.diff(pos)))


def test_smoothing_trades_the_mean_of_the_last_n_forecasts_and_keeps_the_raw_line():
    strat = _run(smooth=5)
    expected = [np.mean(SIGNALS[max(0, k - 4) : k + 1]) for k in range(N)]
    np.testing.assert_allclose(strat.traded, expected, rtol=1e-12)
    raw = np.array([strat.signals[0].lines[0][-k] for k in range(N - 1, -1, -1)])
    np.testing.assert_allclose(raw, SIGNALS)  # the signal line keeps the raw forecast
    # averaging five overlapping forecasts cuts the sign flips, hence the orders
    assert _orders(strat) < _orders(_run(smooth=1))


def test_smoothing_1_is_the_raw_signal():
    strat = _run()
    np.testing.assert_array_equal(strat.traded, SIGNALS)


def _keep_rule(weight: float, held: float, mu: float, cost: float) -> bool:
    move = weight - held
    return move * mu <= abs(move) * cost


def test_the_no_trade_region_moves_only_towards_a_forecast_that_pays_for_the_fill():
    scale, bps = 0.02, 5.0  # 0.2 signal units = 40 bps expected over the horizon
    strat = _run(no_trade_bps=bps, forecast_scale=scale)
    free = _run()
    assert _orders(strat) < _orders(free)
    pos = np.asarray(strat.held)
    # on each bar where the position changed, the move went the forecast's way and the
    # forecast return beat the cost of a fill
    checked = 0
    for k in range(len(pos) - 1):
        trim = abs(pos[k + 1]) < abs(pos[k]) and strat.book[k] > 0.95  # the gross cap
        if pos[k + 1] != pos[k] and not trim:
            mu = scale * SIGNALS[k]
            assert np.sign(pos[k + 1] - pos[k]) == np.sign(mu) and abs(mu) > bps / 1e4
            checked += 1
    assert checked > 5
    assert _keep_rule(0.5, 0.2, mu=0.001, cost=5e-4) is False  # towards it, pays: trade
    assert _keep_rule(0.5, 0.2, mu=0.0004, cost=5e-4) is True  # too small to pay: keep
    assert _keep_rule(0.1, 0.2, mu=0.001, cost=5e-4) is True  # against the forecast: keep


def test_no_trade_needs_a_forecast_scale_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match="forecast_scale"):
        _run(no_trade_bps=5.0)
    with pytest.raises(ConfigError, match="no_trade_bps"):
        _run(no_trade_bps=-1.0, forecast_scale=0.1)
    with pytest.raises(ConfigError, match="smooth must be an integer >= 1"):
        _run(smooth=0)
    assert math.isfinite(_run(no_trade_bps=0.0).broker.getvalue())
