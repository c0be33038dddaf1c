"""One selection rule for every learner: the kept θ is the argmin of its logged validation
curve, scored as the learner is traded (adapted, or unadapted with ``val_steps=0``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metabt.errors import ConfigError
from metabt.learn import MetaLearner
from metabt.learn.models import MLP, build_model
from metabt.learn.names import ALGORITHM_NAMES, PAIRED_ALGORITHMS

F = 4


class _LinearTasks:
    """Regression tasks y = x·a_task + noise, with a shared offset that training can learn."""

    def sample(self, batch_size: int, rng: np.random.Generator):
        a = rng.normal(0.5, 0.5, (batch_size, 1, F))
        x = rng.normal(size=(batch_size, 20, F))
        y = (x * a).sum(-1) + 0.3 + rng.normal(0, 0.3, (batch_size, 20))
        t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
        return t(x[:, :12]), t(y[:, :12]), t(x[:, 12:]), t(y[:, 12:])

    def fixed(self, n: int, seed: int):
        return self.sample(n, np.random.default_rng([seed, 10_000]))


def _learner(algorithm: str) -> MetaLearner:
    if algorithm in PAIRED_ALGORITHMS:
        model = build_model({"type": algorithm, "n_features": F})
    else:
        model = MLP(F, (8,), seed=1)
    return MetaLearner(model, algorithm=algorithm, inner_steps=2, meta_lr=3e-2, seed=0)


@pytest.mark.parametrize(
    ("algorithm", "val_steps"), [*[(a, None) for a in ALGORITHM_NAMES], ("erm", 0)]
)
def test_the_kept_step_is_the_argmin_of_the_logged_validation_curve(algorithm, val_steps):
    learner = _learner(algorithm)
    tasks = _LinearTasks()
    result = learner.fit(
        tasks,
        40,
        batch_size=4,
        val_tasks=tasks,
        val_size=16,
        val_every=5,
        progress=False,
        val_steps=val_steps,
    )
    steps, losses = zip(*result.val_losses)
    best = int(np.argmin(losses))  # the first minimum, as keep-best keeps it
    assert result.best_step == steps[best] and result.best_val_loss == losses[best]
    # the θ kept is the one that scored it
    again = learner.evaluate(*tasks.fixed(16, learner.seed), steps=val_steps)
    assert again == pytest.approx(losses[best], rel=1e-5)
    if algorithm != "scratch":  # scratch never trains: its curve is the initialisation only
        assert len(losses) == 9


def test_static_and_adapted_scoring_can_keep_different_steps():
    """ERM traded unadapted (ErmStatic) and fine-tuned (ErmAdapt) is selected twice by the
    same rule on its two uses; the curves differ, so the rule is not a no-op."""
    tasks = _LinearTasks()
    curves = {}
    for val_steps in (None, 0):
        learner = _learner("erm")
        fit = learner.fit(
            tasks,
            40,
            batch_size=4,
            val_tasks=tasks,
            val_size=16,
            val_every=5,
            progress=False,
            val_steps=val_steps,
        )
        curves[val_steps] = [v for _, v in fit.val_losses]
    assert curves[None] != curves[0]


def test_val_steps_must_be_a_count():
    with pytest.raises(ConfigError, match="val_steps"):
        _learner("erm").fit(_LinearTasks(), 1, val_steps=-1, progress=False)
