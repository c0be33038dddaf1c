"""Does adaptation help where it should? A seeded synthetic market whose regimes switch.

In ``regime_frame`` the next bar's return follows today's volume surge up in one regime and
down in the other; nothing in any single feature row tells the regimes apart, only the
recent (features, return) pairs do. A meta-learned initialisation adapted on the last 60
realised bars should find the current regime's response; the same model never adapted
(StaticModel) cannot, and a jointly trained model fine-tuned the same way (ErmAdapt) starts
from the regime average, where volume predicts nothing.

Design: MLP 2x32, maml with the library defaults (5 inner steps, inner lr 0.05), 300 outer
steps on two training assets (3,000 bars each), tested on a third asset never seen in
training, 1,000 bars after a 300-bar warm-up, costs on; labels one bar ahead, where the
regime acts. The learner settings were never changed. The market was changed twice before
this one, for stated reasons: returns that depended on past returns let a static model read
the regime from the features (momentum regimes trend, so volatility ratios differ); a
half-sd volume effect with 5-bar labels was too weak for any of the three to learn in 300
steps. With this market, seeds 0-4 of the whole pipeline were each run once: MetaStrategy
won on Sharpe and IC in every one (see the issue note).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import regime_frame

from metabt.analyzers import signal_frames
from metabt.backtest import Costs, run_backtest
from metabt.features import FeatureSpec
from metabt.meta import MetaLearner
from metabt.models import MLP
from metabt.strategy import MetaStrategy
from metabt.tasks import TaskSampler
from strategies import ErmAdapt, StaticModel

SEED = 0
STRENGTH = 1.0  # a surge moves the next bar by one noise sd, up or down with the regime


@pytest.fixture(scope="module")
def runs():
    train = {f"train{i}": regime_frame(3000, SEED * 10 + i, strength=STRENGTH)[0] for i in (1, 2)}
    test_frame, regime = regime_frame(1300, SEED * 10 + 3, strength=STRENGTH)
    spec = FeatureSpec(horizon=1)  # the regime's response is one bar ahead
    tasks = TaskSampler.from_frames(train, spec, support=60, query=20)
    learners = {}
    for algorithm in ("maml", "erm"):
        learner = MetaLearner(
            MLP(spec.n_features, seed=SEED), algorithm=algorithm, seed=SEED, feature_spec=spec
        )
        learner.fit(tasks, 300, progress=False)
        learners[algorithm] = learner
    start = test_frame.index[300]
    results = {
        name: run_backtest(
            cls,
            {"X": test_frame},
            start=start,
            warmup_bars=300,
            costs=Costs(),
            strategy_kwargs={"learner": learners[algorithm]},
            name=name,
        )
        for name, cls, algorithm in (
            ("MetaStrategy", MetaStrategy, "maml"),
            ("StaticModel", StaticModel, "maml"),
            ("ErmAdapt", ErmAdapt, "erm"),
        )
    }
    # what the right response is at each bar: regime x volume z-score
    z = (np.log(test_frame["volume"]) - 14.0) / 0.3
    truth = pd.Series(regime * z.to_numpy(), index=test_frame.index)
    return results, truth, start


@pytest.mark.slow
def test_meta_strategy_beats_static_model_and_erm_adapt_after_costs(runs):
    results, _, _ = runs
    meta, static, erm = (results[n].metrics for n in ("MetaStrategy", "StaticModel", "ErmAdapt"))
    assert meta["sharpe"] > static["sharpe"] and meta["sharpe"] > erm["sharpe"]
    assert meta["ic"] > static["ic"] and meta["ic"] > erm["ic"]
    assert meta["sharpe"] > 1.0 and meta["ic"] > 0.2  # not merely the least bad
    assert meta["hit_rate"] > 0.55


@pytest.mark.slow
def test_adapted_signal_tracks_the_hidden_regime(runs):
    """The gain comes from following the regime, not from a lucky bias."""
    results, truth, start = runs
    corr = {}
    for name, result in results.items():
        strat = result.strategy
        pairs = signal_frames(strat, strat.horizon, start)["X"]
        corr[name] = pairs["signal"].corr(truth.reindex(pairs.index))
    assert corr["MetaStrategy"] > 0.4
    assert abs(corr["StaticModel"]) < corr["MetaStrategy"] / 2
    assert corr["ErmAdapt"] < corr["MetaStrategy"]
