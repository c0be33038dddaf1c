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
