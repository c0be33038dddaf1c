"""metabt.learn.algorithms: MAML-family meta-gradients vs a hand-computed reference, 2 engines."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic import linear_task_batch as _batch

import metabt.learn.learner as meta
from metabt.learn.algorithms import (
    ALGORITHMS,
    ENGINES,
    FAMILIES,
    OUTER_STEPS,
    AnilFamily,
    GradientFamily,
    MamlFamily,
    MetaSgdFamily,
    PairedFamily,
)
from metabt.learn.learner import MetaLearner
from metabt.learn.models import GRU, MLP

F = 4
#: throwaway modules built without user_model: these learners are never saved
UNSAVED = {"check_saveable": False}


def _meta_grads(learner, batch):
    """Meta-gradient of one meta_step, without applying the update."""
    learner.optimizer.step = lambda *a, **k: None
    loss = learner.meta_step(*batch)
    grads = {n: p.grad.detach().clone() for n, p in learner.model.named_parameters()}
    grads.update({f"lr.{n}": p.grad.detach().clone() for n, p in learner.inner_lrs.items()})
    return loss, grads


def test_registry_holds_every_algorithm_and_the_gradient_family_shares_one_step():
    assert ALGORITHMS[:7] == ("maml", "fomaml", "metasgd", "anil", "reptile", "erm", "scratch")
    assert ALGORITHMS[7:] == ("cnp", "protonet", "cavia")  # PairedFamily
    assert tuple(OUTER_STEPS) == ALGORITHMS and ENGINES == ("auto", "higher", "func")
    assert OUTER_STEPS is FAMILIES  # the registry's former name
    assert meta.ALGORITHMS is ALGORITHMS and meta.ENGINES is ENGINES  # re-exported
    family = {name: OUTER_STEPS[name] for name in ("maml", "fomaml", "metasgd", "anil")}
    assert all(isinstance(step, MamlFamily) for step in family.values())  # one meta-gradient
    assert [s.second_order for s in family.values()] == [True, False, True, True]
    assert isinstance(family["metasgd"], MetaSgdFamily) and isinstance(family["anil"], AnilFamily)
    assert all(isinstance(FAMILIES[a], GradientFamily) for a in ALGORITHMS[:7])
    assert all(isinstance(FAMILIES[a], PairedFamily) for a in ALGORITHMS[7:])
    assert not OUTER_STEPS["scratch"].updates_theta


def test_one_step_maml_meta_gradient_equals_hand_computed_reference():
    # A linear model f(x) = w.x + b (an MLP without hidden layers), one inner step, float64.
    # With z = [x, 1] and θ = [w, b]: L_s(θ) = mean((Zθ - y)^2), ∇L_s = 2/S Zᵀ(Zθ - y),
    # H_s = 2/S ZᵀZ, θ' = θ - α∇L_s(θ), and the MAML meta-gradient is (I - α H_s) ∇L_q(θ').
    alpha = 0.1
    model = MLP(F, hidden=(), seed=3).double()
    learner = MetaLearner(model, algorithm="maml", inner_lr=alpha, inner_steps=1, engine="higher")
    xs, ys, xq, yq = _batch()
    theta = torch.cat([model.head.weight.detach().reshape(-1), model.head.bias.detach()])
    expected = torch.zeros_like(theta)
    for b in range(xs.shape[0]):
        zs = torch.cat([xs[b], torch.ones(xs.shape[1], 1, dtype=torch.float64)], 1)
        zq = torch.cat([xq[b], torch.ones(xq.shape[1], 1, dtype=torch.float64)], 1)
        grad_s = 2 / len(zs) * zs.T @ (zs @ theta - ys[b])
        hess_s = 2 / len(zs) * zs.T @ zs
        adapted = theta - alpha * grad_s
        grad_q = 2 / len(zq) * zq.T @ (zq @ adapted - yq[b])
        expected += (torch.eye(F + 1, dtype=torch.float64) - alpha * hess_s) @ grad_q / xs.shape[0]
    for engine in ("higher", "func"):
        learner = MetaLearner(
            MLP(F, hidden=(), seed=3).double(),
            algorithm="maml",
            inner_lr=alpha,
            inner_steps=1,
            engine=engine,
        )
        _, grads = _meta_grads(learner, (xs, ys, xq, yq))
        got = torch.cat([grads["head.weight"].reshape(-1), grads["head.bias"]])
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_first_order_differs_from_second_order_by_the_hessian_term():
    alpha = 0.1
    xs, ys, xq, yq = _batch()
    _, so = _meta_grads(
        MetaLearner(
            MLP(F, hidden=(), seed=3).double(), algorithm="maml", inner_lr=alpha, inner_steps=1
        ),
        (xs, ys, xq, yq),
    )
    _, fo = _meta_grads(
        MetaLearner(
            MLP(F, hidden=(), seed=3).double(), algorithm="fomaml", inner_lr=alpha, inner_steps=1
        ),
        (xs, ys, xq, yq),
    )
    # for a linear model the difference is exactly -α H_s ∇L_q(θ'), which is not zero
    assert not torch.allclose(so["head.weight"], fo["head.weight"], atol=1e-6)
    # with zero inner steps there is nothing to differentiate through: they agree
    _, so0 = _meta_grads(
        MetaLearner(MLP(F, (6,), seed=3).double(), algorithm="maml", inner_steps=0),
        (xs, ys, xq, yq),
    )
    _, fo0 = _meta_grads(
        MetaLearner(MLP(F, (6,), seed=3).double(), algorithm="fomaml", inner_steps=0),
        (xs, ys, xq, yq),
    )
    for name in so0:
        torch.testing.assert_close(so0[name], fo0[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil"])
@pytest.mark.parametrize("model_type", ["mlp", "gru"])
def test_func_engine_meta_gradient_equals_higher_reference(algorithm, model_type):
    def make():
        if model_type == "mlp":
            return MLP(F, (8, 8), seed=1).double()
        return GRU(2, hidden=6, window=2, seed=1).double()

    batch = _batch()
    loss_h, grads_h = _meta_grads(
        MetaLearner(make(), algorithm=algorithm, inner_lr=0.1, inner_steps=3, engine="higher"),
        batch,
    )
    loss_f, grads_f = _meta_grads(
        MetaLearner(make(), algorithm=algorithm, inner_lr=0.1, inner_steps=3, engine="func"), batch
    )
    assert math.isclose(loss_h, loss_f, rel_tol=1e-12)
    assert grads_h.keys() == grads_f.keys()
    for name in grads_h:
        torch.testing.assert_close(grads_f[name], grads_h[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil", "reptile", "erm"])
def test_meta_step_moves_every_parameter(algorithm):
    learner = MetaLearner(MLP(F, (8,), seed=0), algorithm=algorithm, meta_lr=1e-2)
    before = [p.detach().clone() for p in learner.model.parameters()]
    lrs_before = [p.detach().clone() for p in learner.inner_lrs.values()]
    loss = learner.meta_step(*(t.float() for t in _batch()))
    assert math.isfinite(loss)
    for p, b in zip(learner.model.parameters(), before):
        assert not torch.equal(p.detach(), b)  # the meta-gradient reached every part of θ
    for p, b in zip(learner.inner_lrs.values(), lrs_before):
        assert not torch.equal(p.detach(), b)  # metasgd learns its inner rates


def test_a_column_output_is_squeezed_and_any_other_shape_refused():
    """An nn.Linear(h, 1) head returns (N, 1): it must not broadcast into an (N, N) loss."""
    import copy

    from torch import nn

    from metabt.errors import ConfigError

    xs, ys, xq, yq = _batch(b=2, s=6, q=4)
    torch.manual_seed(0)
    column = nn.Sequential(nn.Linear(F, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    flat = nn.Sequential(copy.deepcopy(column), nn.Flatten(0))  # the same net, (N,) output
    a = MetaLearner(column, algorithm="maml", engine="higher", inner_steps=2, **UNSAVED)
    b = MetaLearner(flat, algorithm="maml", engine="higher", inner_steps=2, **UNSAVED)
    assert a.evaluate(xs, ys, xq, yq) == pytest.approx(b.evaluate(xs, ys, xq, yq), rel=1e-12)
    assert a.meta_step(xs, ys, xq, yq) == pytest.approx(b.meta_step(xs, ys, xq, yq), rel=1e-12)
    for p, q in zip(column.parameters(), flat[0].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)  # the same outer update
    wide = MetaLearner(nn.Linear(F, 2).double(), algorithm="maml", engine="higher", **UNSAVED)
    with pytest.raises(ConfigError, match=r"Linear returned shape \(6, 2\) for 6 input rows"):
        wide.meta_step(xs, ys, xq, yq)
    erm = MetaLearner(nn.Linear(F, 3).double(), algorithm="erm", engine="higher", **UNSAVED)
    with pytest.raises(ConfigError, match="must map"):
        erm.meta_step(xs, ys, xq, yq)


# ---------------------------------------------------------- any nn.Module is a model
def _sequential(h=6, seed=0):
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(F, h), nn.Tanh(), nn.Linear(h, 1)).double()


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil"])
def test_func_engine_equals_higher_on_a_plain_sequential(algorithm):
    """torch.func.functional_call + vmap/grad on a user module: the same meta-gradient."""
    import copy

    batch, net = _batch(), _sequential()
    learners = {
        engine: MetaLearner(
            copy.deepcopy(net),
            algorithm=algorithm,
            inner_lr=0.1,
            inner_steps=3,
            engine=engine,
            **UNSAVED,
        )
        for engine in ("higher", "func")
    }
    assert MetaLearner(copy.deepcopy(net), algorithm=algorithm, **UNSAVED).engine == "func"  # auto
    if algorithm == "anil":  # the last nn.Linear is the head
        assert learners["func"].adapt_names == ("2.weight", "2.bias")
    for learner in learners.values():
        for p in learner.inner_lrs.values():
            p.data.uniform_(0.05, 0.2, generator=torch.Generator().manual_seed(0))
    loss_h, grads_h = _meta_grads(learners["higher"], batch)
    loss_f, grads_f = _meta_grads(learners["func"], batch)
    assert math.isclose(loss_h, loss_f, rel_tol=1e-10)
    assert grads_h.keys() == grads_f.keys()
    for name in grads_h:
        torch.testing.assert_close(grads_f[name], grads_h[name], rtol=1e-10, atol=1e-12)
    if algorithm == "anil":  # the body is meta-learned too, through the adapted head
        assert grads_f["0.weight"].abs().sum() > 0


def test_auto_engine_falls_back_to_higher_when_vmap_cannot_batch_the_model():
    from nets import Dropper

    from metabt.errors import ConfigError

    with pytest.warns(UserWarning, match=r"cannot batch Dropper .*random.*engine='higher'"):
        learner = MetaLearner(Dropper(F, 5).double(), **UNSAVED)
    assert learner.engine == "higher"
    assert math.isfinite(learner.meta_step(*_batch()))
    with pytest.raises(ConfigError, match="engine 'func' cannot batch Dropper"):
        MetaLearner(Dropper(F, 5), engine="func", **UNSAVED)
    assert MetaLearner(Dropper(F, 5).eval(), **UNSAVED).engine == "func"  # no dropout in eval mode


def test_anil_head_of_a_user_model_is_named_or_the_last_linear():
    from torch import nn

    from metabt.errors import ConfigError

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.out, self.scale = nn.Linear(F, 4), nn.Linear(4, 1), nn.Linear(1, 1)

        def forward(self, x):
            return self.scale(self.out(torch.relu(self.body(x))))

    assert MetaLearner(Net(), algorithm="anil", **UNSAVED).adapt_names == (
        "scale.weight",
        "scale.bias",
    )
    named = MetaLearner(Net(), algorithm="anil", head="out", **UNSAVED)
    assert named.adapt_names == ("out.weight", "out.bias") and named.head == "out"
    with pytest.raises(ConfigError, match="did you mean 'out'"):
        MetaLearner(Net(), algorithm="anil", head="outt", **UNSAVED)
    with pytest.raises(ConfigError, match="for algorithm 'anil' only"):
        MetaLearner(Net(), algorithm="maml", head="out", **UNSAVED)
    with pytest.raises(ConfigError, match="has none"):
        MetaLearner(nn.Sequential(nn.Bilinear(F, F, 1)), algorithm="anil", **UNSAVED)
