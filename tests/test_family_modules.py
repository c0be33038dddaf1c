"""One test per learner-family module: each family's outer update against a hand-written step.

metabt.learn.algorithms.erm (joint training; scratch never moves), .reptile (θ moves towards
the task-adapted weights), .maml (the variants' flags), .engines (vmap detection),
metabt.learn.adapted (the adapted model predicts with its own φ), metabt.experiments.log.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from metabt.experiments.log import Log, silent
from metabt.learn import MetaLearner
from metabt.learn.adapted import AdaptedModel, support_arrays
from metabt.learn.algorithms import FAMILIES
from metabt.learn.algorithms.engines import resolve_engine, vmap_failure
from metabt.learn.algorithms.erm import ErmFamily, ScratchFamily
from metabt.learn.algorithms.maml import AnilFamily, MamlFamily, MetaSgdFamily
from metabt.learn.algorithms.reptile import ReptileFamily
from metabt.learn.models import MLP

G = torch.Generator().manual_seed(0)


def _batch(b=2, s=6, q=4, f=3, dtype=torch.float64):
    r = lambda *shape: torch.randn(*shape, generator=G, dtype=dtype)  # noqa: E731
    return r(b, s, f), r(b, s), r(b, q, f), r(b, q)


def _learner(algorithm: str, **kwargs) -> MetaLearner:
    model = MLP(3, (5,), seed=2).double()
    return MetaLearner(model, algorithm=algorithm, inner_steps=2, inner_lr=0.1, **kwargs)


def test_the_registry_maps_names_to_their_family_classes():
    assert type(FAMILIES["erm"]) is ErmFamily and type(FAMILIES["scratch"]) is ScratchFamily
    assert type(FAMILIES["reptile"]) is ReptileFamily
    assert type(FAMILIES["maml"]) is MamlFamily and FAMILIES["maml"].second_order
    assert type(FAMILIES["fomaml"]) is MamlFamily and not FAMILIES["fomaml"].second_order
    assert type(FAMILIES["metasgd"]) is MetaSgdFamily and type(FAMILIES["anil"]) is AnilFamily


def test_erm_takes_one_joint_gradient_step_and_scratch_none():
    xs, ys, xq, yq = _batch()
    learner = _learner("erm", meta_lr=1e-2)
    reference = copy.deepcopy(learner.model)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    x = torch.cat([xs, xq], 1).flatten(0, 1)
    y = torch.cat([ys, yq], 1).flatten()
    opt.zero_grad()
    ((reference(x).squeeze(-1) - y) ** 2).mean().backward()
    opt.step()
    learner.meta_step(xs, ys, xq, yq)
    for a, b in zip(learner.model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    scratch = _learner("scratch")
    before = [p.detach().clone() for p in scratch.model.parameters()]
    scratch.meta_step(xs, ys, xq, yq)
    assert all(torch.equal(a, b) for a, b in zip(before, scratch.model.parameters()))


def test_reptile_moves_theta_towards_the_mean_adapted_weights():
    xs, ys, xq, yq = _batch()
    learner = _learner("reptile", meta_lr=1e-2, engine="higher")
    theta = {k: v.detach().clone() for k, v in learner.model.named_parameters()}
    x_all, y_all = torch.cat([xs, xq], 1), torch.cat([ys, yq], 1)
    phis = [learner.adapt(x_all[b], y_all[b]).params for b in range(2)]
    direction = {k: theta[k] - (phis[0][k] + phis[1][k]) / 2 for k in theta}
    learner.meta_step(xs, ys, xq, yq)
    for k, p in learner.model.named_parameters():
        moved = p.detach() - theta[k]
        # Adam's first step moves each weight by -lr * sign(gradient): towards mean φ
        nonzero = direction[k].abs() > 1e-12
        assert torch.all(torch.sign(moved[nonzero]) == -torch.sign(direction[k][nonzero]))


def test_engines_detect_what_vmap_cannot_batch():
    assert vmap_failure(MLP(3, (4,))) is None
    assert resolve_engine("auto", MLP(3, (4,)), FAMILIES["maml"]) == "func"

    dropping = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))  # train mode
    assert vmap_failure(dropping) is not None
    with pytest.warns(UserWarning):
        assert resolve_engine("auto", dropping, FAMILIES["maml"]) == "higher"


def test_the_adapted_model_predicts_with_its_own_parameters():
    learner = _learner("maml")
    xs, ys, _, _ = _batch(b=1)
    adapted = learner.adapt(xs[0], ys[0])
    assert isinstance(adapted, AdaptedModel) and adapted.steps == 2
    x = np.random.default_rng(0).normal(size=(5, 3))
    expected = learner.forward_with(adapted.params, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(adapted.predict(x), expected, rtol=1e-10)
    assert adapted.predict_row(x[0]) == pytest.approx(expected[0], rel=1e-10)
    xn, yn = support_arrays(xs[0], ys[0], next(learner.model.parameters()))
    assert xn.dtype == np.float64 and xn.shape == (6, 3) and yn.shape == (6,)


def test_silent_is_a_log_that_drops_every_line():
    lines: list[str] = []
    keep: Log = lines.append
    keep("one")
    assert lines == ["one"] and silent("anything") is None
