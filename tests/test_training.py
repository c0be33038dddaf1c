"""metabt.learn.training: the fit loop learns, keeps the best θ, stops early and resumes exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import linear_task_batch as _batch

from metabt.errors import CheckpointError
from metabt.learn.learner import FitResult, MetaLearner
from metabt.learn.models import MLP
from metabt.learn.training import FitResult as TrainingFitResult

F = 4


class LinearTasks:
    """Task source: linear regression tasks with random weights (float32)."""

    date_range = (np.datetime64("2001-01-01"), np.datetime64("2004-12-31"))

    def sample(self, batch_size, rng):
        seed = int(rng.integers(0, 2**31))
        return tuple(t.float() for t in _batch(b=batch_size, seed=seed))

    def fixed(self, n, seed):
        return tuple(t.float() for t in _batch(b=n, seed=10_000 + seed))


def test_scratch_never_changes_theta():
    learner = MetaLearner(MLP(F, (8,), seed=0), algorithm="scratch")
    before = [p.detach().clone() for p in learner.model.parameters()]
    learner.meta_step(*(t.float() for t in _batch()))
    learner.fit(LinearTasks(), 5, progress=False)
    assert all(torch.equal(p.detach(), b) for p, b in zip(learner.model.parameters(), before))


def test_maml_meta_training_lowers_query_loss_after_adaptation():
    learner = MetaLearner(MLP(F, (16,), seed=0), inner_lr=0.1, inner_steps=3, meta_lr=3e-3)
    val = LinearTasks().fixed(32, 0)
    start = learner.evaluate(*val)
    result = learner.fit(
        LinearTasks(), 150, batch_size=8, val_tasks=val, val_every=50, progress=False
    )
    assert FitResult is TrainingFitResult and isinstance(result, FitResult)
    assert result.best_val_loss < 0.8 * start
    assert math.isclose(learner.evaluate(*val), result.best_val_loss, rel_tol=1e-6)
    assert learner.train_range == ("2001-01-01", "2004-12-31")


def test_fit_resumes_exactly_where_it_stopped(tmp_path):
    def make():
        return MetaLearner(MLP(F, (8,), seed=0), algorithm="maml", meta_lr=1e-2)

    full = make()
    full.fit(
        LinearTasks(),
        40,
        batch_size=4,
        val_tasks=LinearTasks(),
        val_size=8,
        val_every=10,
        progress=False,
    )
    ckpt = tmp_path / "run.pt"
    first = make()
    first.fit(
        LinearTasks(),
        20,
        batch_size=4,
        val_tasks=LinearTasks(),
        val_size=8,
        val_every=10,
        checkpoint=ckpt,
        progress=False,
    )
    resumed = make()
    result = resumed.fit(
        LinearTasks(),
        40,
        batch_size=4,
        val_tasks=LinearTasks(),
        val_size=8,
        val_every=10,
        checkpoint=ckpt,
        progress=False,
    )
    assert result.resumed_from == 20 and result.steps == 40
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = MetaLearner(MLP(F, (8,), seed=0), algorithm="fomaml")
    with pytest.raises(CheckpointError, match="another configuration"):
        other.fit(LinearTasks(), 40, checkpoint=ckpt, progress=False)


def test_fit_stops_early_and_keeps_the_best_theta():
    # a meta learning rate far too high makes validation worse after the first evaluations
    learner = MetaLearner(MLP(F, (8,), seed=0), meta_lr=0.5)
    result = learner.fit(
        LinearTasks(),
        200,
        batch_size=4,
        val_tasks=LinearTasks(),
        val_size=16,
        val_every=5,
        patience=3,
        progress=False,
    )
    assert result.stopped_early and result.steps < 200
    best = min(v for _, v in result.val_losses)
    assert result.best_val_loss == best
    assert math.isclose(learner.evaluate(*LinearTasks().fixed(16, 0)), best, rel_tol=1e-6)


def test_a_non_finite_validation_loss_is_an_error_never_a_best():
    """A NaN validation loss would compare false with everything and be kept as 'best'."""
    import math as _math

    from metabt.errors import ConfigError as _ConfigError
    from metabt.learn.learner import MetaLearner as _MetaLearner
    from metabt.learn.models import MLP as _MLP

    learner = _MetaLearner(_MLP(3, (4,)), algorithm="maml", inner_steps=1)
    x = torch.randn(2, 8, 3)
    y = torch.randn(2, 8)
    bad = (x, y, x, torch.full((2, 8), _math.nan))
    good = (x, y, x, y)

    class Tasks:
        def sample(self, batch_size, rng):
            return good

    with pytest.raises(_ConfigError, match="validation loss is nan"):
        learner.fit(Tasks(), 4, batch_size=2, val_tasks=bad, val_every=2, progress=False)
