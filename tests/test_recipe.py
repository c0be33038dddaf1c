"""recipe: one selection rule (keep-best on validation), grids with their limits, the roster.

ERM is selected like the meta-learner (its kept step is the argmin of its validation curve,
scored as it is traded), untrained learners are flagged, mismatches refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metabt.config.defaults import DEMO
from metabt.data.ohlcv import load_ohlcv, sample_files
from metabt.errors import ConfigError
from metabt.experiments.parts import (
    RIDGE_GRID,
    RIDGE_ZERO,
    RLS_GRID,
    ZeroForecast,
    check_train_config,
    train_learner,
    train_roster,
    validation_split,
)
from metabt.experiments.roster import STRATEGY_NEEDS, roster

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


def _argmin_step(curve: list[tuple[int, float]]) -> int:
    """The first step of the lowest validation loss (keep-best keeps the first of ties)."""
    best = min(loss for _, loss in curve)
    return next(step for step, loss in curve if loss == best)


def test_erm_is_selected_by_the_meta_learners_rule_for_both_uses(models):
    cfg, m = models
    for trained, val_steps in ((m.erm, None), (m.erm_static, 0)):
        assert trained.learner.algorithm == "erm" and trained.val_steps == val_steps
        assert trained.fit.steps == cfg.meta_steps
        assert trained.fit.best_step == _argmin_step(trained.fit.val_losses)
        assert trained.val_loss == min(loss for _, loss in trained.fit.val_losses)
        assert trained.learner.train_config["val_steps"] == val_steps
        assert trained.learner.train_config["kept_step"] == trained.fit.best_step
        assert trained.learner.train_config["support"] == cfg.support
        assert "fixed_budget" not in trained.learner.train_config
        if not trained.untrained:  # a kept step > 0 is a trained θ, not the initialisation
            scratch = m.scratch.learner.model.state_dict()
            ours = trained.learner.model.state_dict()
            assert any(not torch.equal(scratch[k], ours[k]) for k in scratch)
    assert m.erm.fit.val_losses != m.erm_static.fit.val_losses  # scored adapted vs as it is
    assert m.meta.fit.best_step == _argmin_step(m.meta.fit.val_losses)


def test_erm_keeps_its_best_step_not_its_last_when_validation_rises(frames):
    """A run whose validation curve rises after its minimum: the kept θ is the minimum's."""
    from metabt.features.tasks import TaskSampler

    cfg = DEMO.with_(meta_steps=60, batch_size=8, meta_lr=3e-3, algorithm="erm", inner_steps=1)
    tasks = TaskSampler.from_frames(frames, cfg.spec, support=cfg.support, query=cfg.query, end=END)
    split = validation_split(frames, cfg, END)
    batch = tasks.split(split)[1].fixed(64, cfg.seed)
    for val_steps in (None, 0):
        trained = train_learner(
            frames, cfg, end=END, progress=False, checkpoint_every=5, val_steps=val_steps
        )
        curve = trained.fit.val_losses
        kept = trained.fit.best_step
        assert kept == _argmin_step(curve) and kept not in (0, cfg.meta_steps), curve
        assert curve[-1][1] > trained.val_loss  # the last θ is worse: it was not kept
        # the kept θ is the one scored by the rule (adapted, or as it is)
        assert trained.learner.evaluate(*batch, steps=val_steps) == trained.val_loss
        line = trained.summary(cfg, list(frames))[0]
        assert f"{cfg.meta_steps} outer steps" in line and f"kept θ of step {kept}" in line
        assert "parameters" in line and "inner steps" in line and "keep-best" in line
        assert ("unadapted" in line) == (val_steps == 0)
        assert "fixed budget" not in line and "last θ" not in line


def test_linear_grids_reach_their_limits_and_choices_come_from_them(models):
    _, m = models
    assert RIDGE_ZERO in RIDGE_GRID and max(RIDGE_GRID) == RIDGE_ZERO  # the zero forecast
    assert 1e6 in RIDGE_GRID  # ridge's own large-α limit (the support mean)
    assert min(RLS_GRID) == 0.9 and max(RLS_GRID) == 1.0
    assert m.ridge_alpha in RIDGE_GRID and m.rls_forgetting in RLS_GRID
    ridge = m.selection["ridge_alpha"]
    finite = {a: v for a, v in ridge.items() if a != RIDGE_ZERO}
    assert set(ridge) == set(RIDGE_GRID) and ridge[m.ridge_alpha] == min(finite.values())
    assert m.ridge_alpha != RIDGE_ZERO  # RollingRidge trades a ridge, never a flat book
    # the zero forecast scores the validation tasks' mean squared label
    assert ridge[RIDGE_ZERO] == pytest.approx(m.meta.val_zero_mse, rel=1e-6)
    rls = m.selection["rls_forgetting"]
    assert set(rls) == set(RLS_GRID) and rls[m.rls_forgetting] == min(rls.values())


def test_an_edge_choice_is_flagged_and_the_zero_forecast_is_scored_not_traded(models):
    from dataclasses import replace

    cfg, m = models
    middle = replace(
        m,
        ridge_alpha=100.0,
        rls_forgetting=0.99,
        selection={"ridge_alpha": {100.0: 1.0}, "rls_forgetting": {0.99: 1.0}},
    )
    assert "edge" not in middle.summary()
    edge = replace(
        m,
        ridge_alpha=1e6,
        rls_forgetting=0.9,
        selection={"ridge_alpha": {1e6: 1.1, RIDGE_ZERO: 1.0}, "rls_forgetting": {0.9: 1.0}},
    )
    text = edge.summary()
    assert text.count("at the edge of its grid") == 2 and "zero forecast 1.0000" in text
    kwargs = {name: kw for name, _, kw in roster(edge, cfg)}["RollingRidge"]
    assert not isinstance(kwargs["learner"], ZeroForecast) and kwargs["learner"].alpha == 1e6
    width = cfg.spec.n_features
    fit = ZeroForecast(cfg.spec).adapt(np.ones((5, width)), np.ones(5))  # how zero is scored
    assert fit.predict_row(np.ones(width)) == 0.0 and fit.loss_after == 1.0
    ridge = {name: kw for name, _, kw in roster(middle, cfg)}["RollingRidge"]
    assert ridge["learner"].alpha == 100.0


def test_roster_shares_one_schedule(models):
    cfg, m = models
    runs = roster(m, cfg)
    names = [name for name, _, _ in runs]
    assert names[:3] == ["MetaStrategy", "MetaDrift", "StaticModel"] and len(set(names)) == 13
    for name, _, kwargs in runs:
        if "support" in kwargs and name != "RecursiveLeastSquares":
            assert kwargs["support"] == cfg.support and kwargs["adapt_every"] == cfg.adapt_every
        # smooth reaches every signal-trading strategy (BuyAndHold holds a basket)
        assert ("smooth" in kwargs) == (name != "BuyAndHold"), name
    smooth = {name: kw.get("smooth") for name, _, kw in roster(m, cfg.with_(smooth=5))}
    assert {v for k, v in smooth.items() if k != "BuyAndHold"} == {5}


def test_roster_lists_the_controls_and_lightgbm_with_their_needs(models):
    cfg, m = models
    runs = {name: (cls.__name__, kwargs) for name, cls, kwargs in roster(m, cfg)}
    # every signal-trading control gets the run's smooth (compare then chooses its own on
    # the validation years, metabt.experiments.smoothing)
    smooth = cfg.smooth
    assert runs["TimeSeriesMomentum"] == ("TimeSeriesMomentum", {"lookback": 252, "smooth": smooth})
    assert runs["ConstantLong"] == ("ConstantLong", {"smooth": smooth})
    assert runs["LightGBM"][1]["learner"] is m.gbm.learner
    assert STRATEGY_NEEDS["TimeSeriesMomentum"] == () and STRATEGY_NEEDS["ConstantLong"] == ()
    assert STRATEGY_NEEDS["LightGBM"] == ("gbm",)
    assert STRATEGY_NEEDS["ErmStatic"] == ("erm_static",)
    assert STRATEGY_NEEDS["ErmAdapt"] == ("erm",)
    assert runs["ErmStatic"][1]["learner"] is m.erm_static.learner
    assert runs["ErmAdapt"][1]["learner"] is m.erm.learner


def test_untrained_learner_is_flagged_in_the_summary(models):
    """Keep-best that kept step 0 is reported as untrained, never as a trained result."""
    from metabt.experiments.parts import TrainedLearner
    from metabt.learn.training import FitResult

    cfg, m = models
    learner = m.meta.learner
    kept_init = TrainedLearner(learner, FitResult(steps=50, best_step=0), 1.6, 1.6, 1.5)
    lines = kept_init.summary(cfg, ["AAPL"])
    assert kept_init.untrained and any(line.startswith("untrained:") for line in lines)
    assert any("does not beat predicting zero" in line for line in lines)  # 1.6 >= 1.5
    trained = TrainedLearner(learner, FitResult(steps=50, best_step=50), 1.4, 1.6, 1.5)
    assert not trained.untrained and len(trained.summary(cfg, ["AAPL"])) == 1
    erm = m.erm_static  # the same rule for ERM: a kept step 0 is untrained
    kept_init_erm = TrainedLearner(erm.learner, FitResult(steps=50, best_step=0), 1.4, 1.6, 1.5, 0)
    assert kept_init_erm.untrained
    assert any(line.startswith("untrained:") for line in kept_init_erm.summary(cfg, ["AAPL"]))


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
    from metabt.experiments.parts import check_train_config
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
    from metabt.experiments.parts import check_train_config, train_learner

    cfg = DEMO.with_(meta_steps=2, val_years=0.5, sizer={**DEMO.sizer, "bars_per_year": 250})
    trained = train_learner(sample_frames, cfg, end="2010-06-01", progress=False)
    record = trained.learner.train_config
    assert record is not None
    assert record["bar_frequency"] == "daily" and record["bars_per_year"] == 250
    check_train_config(trained.learner, cfg, sample_frames)  # daily on daily: accepted
