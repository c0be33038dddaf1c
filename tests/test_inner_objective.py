"""The P&L inner loop (``inner_objective="same"``): the meta-training inner loop descends
the P&L objective on the support path. Both engines agree in float64 for maml, fomaml,
metasgd, anil and cavia; the meta-gradient matches finite differences; the tasks carry
the support rows' path without a return that is unknown where the adaptation trades."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import linear_task_batch

from metabt.config.defaults import DEMO
from metabt.errors import ConfigError
from metabt.features.spec import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn.algorithms.inner import query_losses, support_objective
from metabt.learn.learner import MetaLearner
from metabt.learn.losses import SUPPORT_EXTRAS, PnLLoss, mse
from metabt.learn.models import MLP, CaviaMLP

F = 4
COSTS = {"objective": "sharpe", "fill_cost": 2e-3, "borrow_per_bar": 1e-5, "smooth": 3}
SAME = PnLLoss(**COSTS, inner_objective="same")
OUTER_ONLY = PnLLoss(**COSTS)
BOTH = PnLLoss(**COSTS, inner_objective="same", partial_adjustment=True)


def _extras(b=3, s=8, q=5, seed=0):
    g = torch.Generator().manual_seed(seed)

    def path(n):
        returns = torch.randn(b, n, generator=g, dtype=torch.float64) * 0.01
        vol = 0.1 + torch.rand(b, n, generator=g, dtype=torch.float64) * 0.3
        return returns, vol

    returns, vol = path(q)
    s_returns, s_vol = path(s)
    return {"returns": returns, "vol": vol, "support_returns": s_returns, "support_vol": s_vol}


def _frame(n=400, seed=4):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.002, n))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": 1e6,
        },
        index=pd.bdate_range("2005-01-03", periods=n),
    )


def _model(algorithm, seed=1):
    if algorithm == "cavia":
        return CaviaMLP(F, (8, 8), seed=seed).double()
    return MLP(F, (8, 8), seed=seed).double()


def _learner(algorithm="maml", loss=SAME, **kw):
    kw.setdefault("inner_lr", 1.0 if algorithm == "cavia" else 0.1)
    return MetaLearner(_model(algorithm), algorithm=algorithm, inner_steps=3, loss=loss, **kw)


def _meta_grads(learner, batch, extra):
    learner.optimizer.step = lambda *a, **k: None
    loss = learner.meta_step(*batch, extra=extra)
    grads = {n: p.grad.detach().clone() for n, p in learner.model.named_parameters()}
    grads.update({f"lr.{n}": p.grad.detach().clone() for n, p in learner.inner_lrs.items()})
    if learner.adjust is not None:
        grads["adjust.logit"] = learner.adjust.logit.grad.detach().clone()
    return loss, grads


@pytest.mark.parametrize("loss", [SAME, BOTH], ids=["same", "same+kappa"])
@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil", "cavia"])
def test_func_engine_equals_higher_for_the_pnl_inner_loop(algorithm, loss):
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    higher = _learner(algorithm, loss=loss, engine="higher")
    func = _learner(algorithm, loss=loss, engine="func")
    assert higher.family.inner_loss is not None
    loss_h, grads_h = _meta_grads(higher, batch, extra)
    loss_f, grads_f = _meta_grads(func, batch, extra)
    assert math.isclose(loss_h, loss_f, rel_tol=1e-10)
    assert grads_h.keys() == grads_f.keys()
    for name in grads_h:
        torch.testing.assert_close(grads_f[name], grads_h[name], rtol=1e-8, atol=1e-12)
    assert any(float(g.abs().max()) > 0 for g in grads_f.values())
    # validation scores the same adaptation on both engines
    assert higher.evaluate(*batch, extra=extra) == pytest.approx(
        func.evaluate(*batch, extra=extra), rel=1e-10
    )


@pytest.mark.parametrize("algorithm", ["maml", "anil", "cavia"])
def test_the_inner_loop_descends_the_support_path_not_the_mse(algorithm):
    """The P&L inner loop adapts to other weights than the MSE one: the query loss after
    adaptation differs, and with 0 inner steps both are θ's own loss."""
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    same, outer = _learner(algorithm, loss=SAME), _learner(algorithm, loss=OUTER_ONLY)
    assert same.evaluate(*batch, extra=extra) != pytest.approx(
        outer.evaluate(*batch, extra=extra), rel=1e-6
    )
    assert same.evaluate(*batch, steps=0, extra=extra) == pytest.approx(
        outer.evaluate(*batch, steps=0, extra=extra), rel=1e-12
    )


def test_the_support_objective_is_the_losss_own_on_the_support_path():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(8, generator=g, dtype=torch.float64) * 0.2
    extra = _extras(b=1)
    support = (extra["support_returns"][0], extra["support_vol"][0])
    path = support_objective(SAME, support)(pred, torch.zeros(8, dtype=torch.float64))
    query_view = {"returns": support[0][None], "vol": support[1][None]}
    assert float(path) == pytest.approx(float(SAME.batch_mean(pred[None], pred[None], query_view)))
    assert support_objective(None, ()) is mse


def test_meta_gradient_of_the_pnl_inner_loop_matches_finite_differences():
    """Second-order MAML through a P&L inner loop (with a learned κ): the directional
    derivative of the batch loss in θ equals a central difference (float64)."""
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    learner = _learner("maml", loss=BOTH)
    family = learner.family
    params = dict(learner.model.named_parameters())
    g = torch.Generator().manual_seed(5)
    direction = {
        k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in params.items()
    }
    support = family.support_extra(extra)
    assert len(support) == len(SUPPORT_EXTRAS)

    def batch_loss(theta):
        lrs = {n: learner.inner_lr for n in learner.adapt_names}
        task = family._task_loss(learner, theta, lrs, 3, first_order=False)
        return family.batch_loss(query_losses(task, (*batch, *support)), batch[3], extra)

    loss = batch_loss(params)
    grads = torch.autograd.grad(loss, list(params.values()))
    analytic = sum(float((gr * direction[k]).sum()) for gr, k in zip(grads, params))
    eps = 1e-6
    with torch.no_grad():
        plus = {k: v + eps * direction[k] for k, v in params.items()}
        minus = {k: v - eps * direction[k] for k, v in params.items()}
        numeric = (float(batch_loss(plus)) - float(batch_loss(minus))) / (2 * eps)
    assert abs(analytic) > 1e-4
    assert analytic == pytest.approx(numeric, rel=1e-5)


def test_a_pnl_inner_loop_needs_the_support_rows_path():
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    learner = _learner("maml")
    query_only = {k: extra[k] for k in ("returns", "vol")}
    with pytest.raises(ConfigError, match="support_returns"):
        learner.meta_step(*batch, extra=query_only)
    bad = {**extra, "support_vol": torch.ones(3, 2, dtype=torch.float64)}
    with pytest.raises(ConfigError, match="support labels"):
        learner.evaluate(*batch, extra=bad)
    # the MSE inner loop does not read them
    _learner("maml", loss=OUTER_ONLY).meta_step(*batch, extra=query_only)


@pytest.mark.parametrize("algorithm", ["reptile", "erm", "scratch"])
def test_families_without_a_meta_trained_gradient_inner_loop_record_the_mse(algorithm):
    learner = _learner(algorithm)
    assert learner.family.inner_loss is None
    assert "inner_objective" not in learner.loss.config()


@pytest.mark.parametrize("horizon", [1, 2, 5])
def test_tasks_carry_the_support_path_known_where_the_adaptation_trades(horizon):
    """Each support row's return and vol, as the query rows carry theirs; a return that is
    realised after the first query bar (the last 2 - horizon rows) earns 0."""
    frame = _frame()
    spec = FeatureSpec(horizon=horizon)
    support, query = 30, 10
    tasks = TaskSampler.from_frames(
        {"A": frame}, spec, support=support, query=query, extras=True, bars_per_year=252.0
    )
    batch = tasks.fixed(4)
    extra = batch.extra
    assert extra["support_returns"].shape == batch[1].shape
    assert extra["support_vol"].shape == batch[1].shape
    opens = frame["open"].to_numpy()
    X_all = spec.transform(frame).astype(np.float32)
    for b in range(len(batch[0])):
        # locate the task's first support row by its features
        first = int(np.flatnonzero((X_all == batch[0][b, 0].numpy()).all(axis=1))[0])
        rows = first + np.arange(support)
        q0 = first + support - 1 + horizon
        expected = opens[rows + 2] / opens[rows + 1] - 1
        known = rows + 2 <= q0
        got = extra["support_returns"][b].numpy()
        np.testing.assert_allclose(got[known], expected[known], rtol=1e-5)
        assert (got[~known] == 0).all()
        assert int((~known).sum()) == max(2 - horizon, 0)


def test_the_option_reaches_the_loss_from_the_config_and_the_command_line():
    assert DEMO.inner_objective == "mse"
    loss = DEMO.with_(objective="sharpe", inner_objective="same").task_loss(252.0)
    assert loss.inner_objective == "same" and loss.config()["inner_objective"] == "same"
    with pytest.raises(ConfigError, match="inner_objective"):
        DEMO.with_(objective="sharpe", inner_objective="pnl").task_loss(252.0)
    from metabt.cli.commands import config_of
    from metabt.cli.parser import _build_parser

    args = _build_parser().parse_args(
        ["train", "--objective", "sharpe", "--inner-objective", "same"]
    )
    assert config_of(args).inner_objective == "same"


def test_a_pnl_inner_learner_trains_saves_and_loads(sample_frames, tmp_path):
    from metabt.experiments.parts import train_learner

    cfg = DEMO.with_(
        objective="sharpe",
        inner_objective="same",
        meta_steps=4,
        val_years=1.0,
        smooth=5,
        start="2011-01-01",
        hidden=(8,),
    )
    trained = train_learner(sample_frames, cfg, checkpoint_every=2, progress=False)
    learner = trained.learner
    assert learner.family.inner_loss is not None
    curve = dict(trained.fit.val_losses)
    assert trained.fit.best_step == min(curve, key=curve.get)
    assert all(math.isfinite(v) for v in curve.values())
    back = MetaLearner.load(learner.save(tmp_path / "m.pt"))
    assert back.loss == learner.loss and back.family.inner_loss is not None
    assert isinstance(pd.Timestamp(learner.train_range[1]), pd.Timestamp)
