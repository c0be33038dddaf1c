"""Baselines share MetaStrategy's data, warm-up, costs and sizer, and differ where they should."""

from __future__ import annotations

import pandas as pd
import pytest

from metabt.errors import ConfigError
from metabt.experiments.backtest import Costs, run_backtest
from metabt.strategies.baselines import BuyAndHold, ErmAdapt, ScratchAdapt, StaticModel

START = "2010-03-01"


def _run(frames, learner, strategy):
    return run_backtest(
        strategy,
        frames,
        start=START,
        warmup_bars=150,
        costs=Costs(),
        strategy_kwargs={"learner": learner, "adapt_every": 5, "support": 40},
    )


def test_model_baselines_share_data_costs_and_sizer(sample_frames, small_learner):
    from metabt.learn.learner import MetaLearner
    from metabt.learn.models import MLP

    spec = small_learner.feature_spec
    scratch = MetaLearner(
        MLP(spec.n_features, (16, 16), seed=0),
        algorithm="scratch",
        inner_steps=3,
        feature_spec=spec,
    )
    static = _run(sample_frames, small_learner, strategy=StaticModel)
    adapted = _run(sample_frames, scratch, strategy=ScratchAdapt)
    holder = run_backtest(BuyAndHold, sample_frames, start=START, warmup_bars=150)
    log = static.strategy.adaptation_log()
    assert (log["steps"] == 0).all() and (log["loss_before"] == log["loss_after"]).all()
    for run in (static, adapted, holder):
        pd.testing.assert_index_equal(run.returns.index, static.returns.index)
        strat = run.strategy
        assert strat.getsizer().p.target_vol == static.strategy.getsizer().p.target_vol
        info = strat.broker.getcommissioninfo(strat.datas[0])
        assert info.p.commission == Costs().commission_bps / 1e4
    with pytest.raises(ConfigError, match="algorithm='erm'"):
        _run(sample_frames, small_learner, strategy=ErmAdapt)  # a maml learner is refused


def test_time_series_momentum_is_the_sign_of_the_trailing_return(sample_frames):
    import backtrader as bt
    import numpy as np

    from metabt.data import feed
    from metabt.sizers import SignalSizer
    from metabt.strategies.baselines import TimeSeriesMomentum

    frame = sample_frames["AAPL"]
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame), name="AAPL")
    cerebro.addsizer(SignalSizer)
    cerebro.addstrategy(TimeSeriesMomentum, lookback=60, skip=5)
    strat = cerebro.run()[0]
    line = strat.signals[0].lines[0]
    got = np.array([line[-k] for k in range(len(frame) - 1, -1, -1)])
    close = frame["close"].to_numpy()
    t = np.arange(len(close))
    ok = t >= 65
    trailing = np.full(len(close), np.nan)
    trailing[ok] = np.log(close[t[ok] - 5] / close[t[ok] - 65])
    expected = np.where(ok, np.sign(trailing), np.nan)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got[ok], expected[ok])
    assert (got[ok] == -1).any() and (got[ok] == 1).any()  # it does go short


def test_constant_long_holds_a_vol_targeted_long_through_the_sizer(sample_frames):
    from metabt.strategies.baselines import ConstantLong

    result = run_backtest(
        ConstantLong,
        {"IBM": sample_frames["IBM"]},
        start="2009-01-02",
        costs=Costs(),
        strategy_kwargs={"level": 1.0},
        sizer_kwargs={"target_vol": 0.10},
    )
    positions = result.assets  # per-asset results table
    assert result.metrics["turnover_two_way"] > 0.5  # it rebalances as volatility moves
    assert positions.loc["IBM", "exposure"] > 0.2
    with pytest.raises(ConfigError, match="level must be a number > 0"):
        run_backtest(
            ConstantLong,
            {"IBM": sample_frames["IBM"]},
            start="2009-01-02",
            strategy_kwargs={"level": 0.0},
        )
