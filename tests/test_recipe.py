"""recipe: ERM trains for its stated budget, untrained learners are flagged, mismatches refused."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from metabt.config.defaults import DEMO
from metabt.data.ohlcv import load_ohlcv, sample_files
from metabt.errors import ConfigError
from metabt.experiments.roster import (
    RIDGE_GRID,
    RLS_GRID,
    check_train_config,
    roster,
    train_roster,
)

END = pd.Timestamp("2008-01-01")


@pytest.fixture(scope="module")
def frames():
    """Two real assets from 2000 to END (validation: the last two years before END)."""
    files = {p.stem: p for p in sample_files()}
    return {name: load_ohlcv(files[name]).loc[:END] for name in ("AAPL", "IBM")}


@pytest.fixture(scope="module")
def models(frames):
    cfg = DEMO.with_(meta_steps=12, batch_size=4)
    return cfg, train_roster(frames, cfg, END, progress=False)


def test_erm_trains_for_its_budget_and_is_not_its_initialisation(models):
    cfg, m = models
    erm = m.erm
    assert erm.fixed_budget and erm.fit.steps == cfg.meta_steps and not erm.untrained
    scratch = m.scratch.learner.model.state_dict()
    trained = erm.learner.model.state_dict()
    assert any(not torch.equal(scratch[k], trained[k]) for k in scratch)
    assert erm.learner.train_config["fixed_budget"] is True
    assert erm.learner.train_config["support"] == cfg.support


def test_linear_choices_come_from_the_grids_and_their_scores(models):
    _, m = models
    assert m.ridge_alpha in RIDGE_GRID and m.rls_forgetting in RLS_GRID
    ridge = m.selection["ridge_alpha"]
    assert ridge[m.ridge_alpha] == min(ridge.values())


def test_roster_shares_one_schedule(models):
    cfg, m = models
    runs = roster(m, cfg)
    names = [name for name, _, _ in runs]
    assert names[:3] == ["MetaStrategy", "MetaDrift", "StaticModel"] and len(set(names)) == 10
    for name, _, kwargs in runs:
        if "support" in kwargs and name != "RecursiveLeastSquares":
            assert kwargs["support"] == cfg.support and kwargs["adapt_every"] == cfg.adapt_every


def test_untrained_learner_is_flagged_in_the_summary(models):
    """Keep-best that kept step 0 is reported as untrained, never as a trained result."""
    from metabt.experiments.roster import TrainedLearner
    from metabt.learn.training import FitResult

    cfg, m = models
    learner = m.meta.learner
    kept_init = TrainedLearner(learner, FitResult(steps=50, best_step=0), 1.6, 1.6, 1.5)
    lines = kept_init.summary(cfg, ["AAPL"])
    assert kept_init.untrained and any(line.startswith("untrained:") for line in lines)
    assert any("does not beat predicting zero" in line for line in lines)  # 1.6 >= 1.5
    trained = TrainedLearner(learner, FitResult(steps=50, best_step=50), 1.4, 1.6, 1.5)
    assert not trained.untrained and len(trained.summary(cfg, ["AAPL"])) == 1
    budget = TrainedLearner(learner, FitResult(steps=50, best_step=0), 1.4, 1.6, 1.5, True)
    assert not budget.untrained  # a fixed budget keeps the last θ: trained


def test_a_backtest_with_another_support_is_refused(models):
    cfg, m = models
    check_train_config(m.meta.learner, cfg)  # the same: fine
    with pytest.raises(ConfigError, match="`support` 60"):
        check_train_config(m.meta.learner, cfg.with_(support=120))


def test_a_model_trained_on_daily_bars_is_refused_on_hourly_bars():
    """The checkpoint records its bar frequency; another frequency is another experiment."""
    from metabt.config.defaults import DEMO
    from metabt.data.ohlcv import load_ohlcv
    from metabt.data.synthetic import gbm_market
    from metabt.errors import ConfigError
    from metabt.experiments.roster import check_train_config
    from metabt.learn.learner import MetaLearner
    from metabt.learn.models import MLP

    learner = MetaLearner(MLP(DEMO.spec.n_features, (8,)), feature_spec=DEMO.spec)
    learner.train_config = {"support": DEMO.support, "bar_frequency": "daily"}
    daily = gbm_market(300, seed=0)
    check_train_config(learner, DEMO, {"A": daily})  # the same frequency: fine
    hourly = daily.copy()
    hourly.index = pd.date_range("2021-01-04", periods=300, freq="h", name="date")
    hourly = load_ohlcv(hourly)
    with pytest.raises(ConfigError, match=r"trained on daily bars.*hourly"):
        check_train_config(learner, DEMO, {"A": hourly})
    with pytest.raises(ConfigError, match=r"daily.*hourly|hourly.*daily"):
        check_train_config(learner, DEMO, {"A": daily, "B": hourly})


def test_a_given_bars_per_year_still_records_the_detected_frequency(sample_frames):
    """--bars-per-year at training must not make a same-frequency backtest look different."""
    from metabt.experiments.roster import check_train_config, train_learner

    cfg = DEMO.with_(meta_steps=2, val_years=0.5, sizer={**DEMO.sizer, "bars_per_year": 250})
    trained = train_learner(sample_frames, cfg, end="2010-06-01", progress=False)
    record = trained.learner.train_config
    assert record["bar_frequency"] == "daily" and record["bars_per_year"] == 250
    check_train_config(trained.learner, cfg, sample_frames)  # daily on daily: accepted
