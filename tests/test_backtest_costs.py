"""run_backtest's cost columns: gross and net Sharpe, break-even, holding, long share, alpha."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metabt.evaluate.costs import COST_GRID_BPS
from metabt.evaluate.metrics import COST_COLUMNS, basket_returns
from metabt.experiments.backtest import Costs, run_backtest
from metabt.strategies.baselines import BuyAndHold, SmaCross, StaticModel

START = "2010-03-01"
END = "2011-06-30"
CASH = 100_000.0


def _run(frames, strategy=SmaCross, costs=None, **strategy_kwargs):
    return run_backtest(
        strategy,
        frames,
        start=START,
        end=END,
        warmup_bars=150,
        cash=CASH,
        costs=costs,
        strategy_kwargs=strategy_kwargs or None,
    )


def _own_series(run) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """(net, trading cost, borrow, turnover), the last three as fractions of the previous
    close's equity, recomputed from the run's own ledger and returns."""
    portfolio = run.strategy.analyzers.portfolio.get_analysis()
    ledger, net = portfolio["ledger"], run.returns
    equity = CASH * (1.0 + net).cumprod()  # no order before START: equity enters at CASH
    assert np.allclose(equity, portfolio["equity"].reindex(net.index), rtol=1e-12)
    prev = equity.shift(1, fill_value=CASH)
    trading = (ledger["commission"] + ledger["slippage"]).reindex(net.index) / prev
    return net, trading, ledger["borrow"].reindex(net.index) / prev, ledger["traded"] / prev


def test_cost_columns_come_last_and_net_sharpe_is_sharpe(sample_frames):
    run = _run(sample_frames)
    keys = list(run.metrics)
    assert keys[-len(COST_COLUMNS) :] == list(COST_COLUMNS)
    assert keys[:2] == ["sharpe", "sortino"]  # the existing columns first, as before
    assert "net_sharpe" not in run.metrics
    for key in COST_COLUMNS:
        assert math.isfinite(run.metrics[key]), key
    assert list(run.cost_sensitivity.index) == list(COST_GRID_BPS)
    assert run.cost_per_fill_bps == 7.0  # Costs(): 5 bps commission + 2 bps slippage


def test_costs_on_gross_sharpe_above_net_and_break_even_by_hand(sample_frames):
    # fast crossovers, shorts too: commission, slippage and borrow all paid
    run = _run(sample_frames, long_only=False, fast=5, slow=20)
    m = run.metrics
    net, trading, borrow, turnover = _own_series(run)
    assert trading.sum() > 0 and borrow.sum() > 0
    assert m["gross_sharpe"] >= m["sharpe"]
    assert m["cost_drag"] == pytest.approx(m["gross_sharpe"] - m["sharpe"], abs=1e-12)
    gross = net + trading + borrow
    assert m["gross_sharpe"] == pytest.approx(gross.mean() / gross.std(ddof=1) * math.sqrt(252))
    # mean(gross before trading costs - c * 1e-4 * turnover) = 0 at c = break_even_bps
    expected = 1e4 * (net + trading).mean() / turnover.mean()
    assert m["break_even_bps"] == pytest.approx(expected, rel=1e-9)
    shortfall = net + trading - m["break_even_bps"] * 1e-4 * turnover
    assert shortfall.mean() == pytest.approx(0.0, abs=1e-15)
    # the run paid about 7 bps per fill: its net Sharpe lies between the curve's 6 and 8 bps
    curve = run.cost_sensitivity
    assert curve[8.0] <= m["sharpe"] <= curve[6.0]
    assert 0.0 < m["long_share"] < 1.0
    assert m["holding_bars"] > 1.0


def test_without_costs_gross_equals_net(sample_frames):
    for strategy in (BuyAndHold, SmaCross):
        run = _run(sample_frames, strategy, costs=Costs(0.0, 0.0, 0.0))
        m = run.metrics
        assert m["gross_sharpe"] == pytest.approx(m["sharpe"], abs=1e-9)
        assert m["cost_drag"] == 0.0
        assert run.cost_sensitivity[0.0] == pytest.approx(m["sharpe"], abs=1e-9)
        assert run.cost_per_fill_bps == 0.0


def test_buy_and_hold_is_long_only_and_tracks_the_basket(sample_frames):
    run = _run(sample_frames, BuyAndHold)
    m = run.metrics
    assert m["long_share"] == 1.0
    # it holds the equal-weight basket (bought once, then drifting): beta near 1
    assert 0.8 < m["beta"] < 1.2 and m["beta_t"] > 10
    assert m["holding_bars"] > len(run.returns)  # one entry, never sold within the test
    basket = basket_returns(sample_frames, run.returns.index)
    assert basket.index.equals(run.returns.index)
    assert np.corrcoef(basket, run.returns)[0, 1] > 0.95


def test_a_model_strategy_gets_the_cost_columns(sample_frames, small_learner):
    run = _run(sample_frames, StaticModel, learner=small_learner, adapt_every=5, support=40)
    m = run.metrics
    assert m["gross_sharpe"] >= m["sharpe"]
    assert math.isfinite(m["break_even_bps"]) and math.isfinite(m["alpha_t"])
    assert list(m)[-len(COST_COLUMNS) :] == list(COST_COLUMNS)
    assert "ic" in m and list(m).index("ic") < list(m).index("gross_sharpe")
