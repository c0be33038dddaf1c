"""metabt.learn.losses: the TaskLoss protocol, MSE as the default, a loss as a family parameter."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from synthetic import linear_task_batch as _batch

from metabt.learn.algorithms import FAMILIES
from metabt.learn.learner import MetaLearner
from metabt.learn.losses import MSE, MSELoss, TaskLoss, mse
from metabt.learn.models import CNP, MLP


def test_mse_is_the_task_loss_of_every_family_and_equals_the_inner_loss():
    assert isinstance(MSE, TaskLoss) and MSE.extras == ()
    assert all(family.loss is MSE for family in FAMILIES.values())
    pred, target = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    per_task = MSE(pred, target)
    assert per_task.shape == (3,)
    for b in range(3):  # one task: bit for bit the inner loop's mse
        assert torch.equal(MSE(pred[b], target[b]), mse(pred[b], target[b]))
    assert torch.equal(MSE.batch_mean(pred, target), mse(pred, target))
    torch.testing.assert_close(MSE.batch_mean(pred, target), per_task.mean())
    assert torch.equal(MSE(pred, target, {"returns": target}), per_task)  # extra: ignored


@dataclasses.dataclass(frozen=True)
class _Doubled:
    """2 × MSE: doubling is exact in floating point, so every loss doubles bit for bit."""

    extras: tuple[str, ...] = ()

    def __call__(self, pred, target, extra=None):
        return 2 * MSELoss()(pred, target, extra)

    def batch_mean(self, pred, target, extra=None):
        return 2 * MSELoss().batch_mean(pred, target, extra)


@pytest.mark.parametrize(
    ("algorithm", "engine"),
    [("maml", "func"), ("maml", "higher"), ("anil", "func"), ("erm", "func"), ("cnp", "func")],
)
def test_the_query_loss_flows_through_the_family(algorithm, engine):
    assert isinstance(_Doubled(), TaskLoss)
    model = CNP(4, 8, seed=1) if algorithm == "cnp" else MLP(4, (8,), seed=1)
    learner = MetaLearner(model.double(), algorithm=algorithm, engine=engine, inner_steps=2)
    twin = copy.deepcopy(learner)
    doubled = dataclasses.replace(FAMILIES[algorithm], loss=_Doubled())
    batch = _batch()
    assert doubled.evaluate(twin, *batch, 2) == 2 * learner.evaluate(*batch, steps=2)
    learner.optimizer.step = twin.optimizer.step = lambda *a, **k: None  # gradients only
    loss = learner.meta_step(*batch)
    if algorithm != "erm":  # erm reports evaluate's loss before its step
        assert doubled.meta_step(twin, *batch) == 2 * loss
    else:
        doubled.meta_step(twin, *batch)
    for p, q in zip(learner.model.parameters(), twin.model.parameters()):
        assert torch.equal(2 * p.grad, q.grad)  # the outer gradient doubles too
