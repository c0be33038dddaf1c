"""metabt.learn.adapter: MetaLearner, the linear baselines and their fits satisfy the protocols."""

from __future__ import annotations

import numpy as np

from metabt.learn.adapter import Adapted, Adapter, BatchAdapter
from metabt.learn.learner import MetaLearner
from metabt.learn.linear import RidgeAdapter, RLSAdapter
from metabt.learn.models import MLP


def test_a_meta_learner_adapts_one_window_or_many_and_a_linear_adapter_one():
    learner = MetaLearner(MLP(4, (8,), seed=0))
    assert isinstance(learner, Adapter) and isinstance(learner, BatchAdapter)
    for linear in (RidgeAdapter(None), RLSAdapter(None)):
        assert isinstance(linear, Adapter) and not isinstance(linear, BatchAdapter)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=20).astype(np.float32)
    assert isinstance(learner.adapt(x, y), Adapted)
    assert isinstance(RidgeAdapter(None).adapt(x, y), Adapted)
    batch = learner.adapt_batch(np.stack([x, x]), np.stack([y, -y]))
    assert len(batch) == 2 and isinstance(batch.model(1), Adapted)
    assert not isinstance(object(), Adapter)


def test_the_strategy_uses_the_learning_core_protocols():
    import metabt.learn.adapter as core
    import metabt.strategies.meta as strategy

    assert strategy.Adapter is core.Adapter and strategy.Adapted is core.Adapted
