"""The after-cost P&L meta-objective (objective="sharpe"): both engines agree in float64,
the meta-gradient matches finite differences, tasks carry realised returns without
look-ahead, and every gradient algorithm trains, saves, loads and backtests with it."""

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
from metabt.features.tasks import TaskSampler, path_extras
from metabt.learn.algorithms.inner import query_losses
from metabt.learn.learner import MetaLearner
from metabt.learn.losses import MSE, PnLLoss, loss_from_config
from metabt.learn.models import MLP, CaviaMLP
from metabt.learn.objectives import PathCosts, path_pnl, pnl_loss, sized_positions
from metabt.learn.training import TaskBatch

F = 4
# costs high enough that turnover matters; the sizer's map at signal scale 0.25
LOSS = PnLLoss(objective="sharpe", fill_cost=2e-3, borrow_per_bar=1e-5, smooth=3)


def _extras(b=3, q=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    returns = torch.randn(b, q, generator=g, dtype=torch.float64) * 0.01
    vol = 0.1 + torch.rand(b, q, generator=g, dtype=torch.float64) * 0.3
    return {"returns": returns, "vol": vol}


def _model(algorithm, seed=1):
    if algorithm == "cavia":
        return CaviaMLP(F, (8, 8), seed=seed).double()
    return MLP(F, (8, 8), seed=seed).double()


def _meta_grads(learner, batch, extra):
    learner.optimizer.step = lambda *a, **k: None
    loss = learner.meta_step(*batch, extra=extra)
    grads = {n: p.grad.detach().clone() for n, p in learner.model.named_parameters()}
    grads.update({f"lr.{n}": p.grad.detach().clone() for n, p in learner.inner_lrs.items()})
    return loss, grads


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil", "cavia"])
def test_func_engine_equals_higher_for_the_pooled_pnl_loss(algorithm):
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    kw = {"algorithm": algorithm, "inner_steps": 3, "loss": LOSS}
    kw["inner_lr"] = 1.0 if algorithm == "cavia" else 0.1
    loss_h, grads_h = _meta_grads(
        MetaLearner(_model(algorithm), engine="higher", **kw), batch, extra
    )
    loss_f, grads_f = _meta_grads(MetaLearner(_model(algorithm), engine="func", **kw), batch, extra)
    assert math.isclose(loss_h, loss_f, rel_tol=1e-10)
    assert grads_h.keys() == grads_f.keys()
    for name in grads_h:
        torch.testing.assert_close(grads_f[name], grads_h[name], rtol=1e-8, atol=1e-12)
    assert any(float(g.abs().max()) > 0 for g in grads_f.values())


def test_the_pooled_loss_is_the_sharpe_of_the_whole_batch_path():
    """The learner's loss is the negative Sharpe of every (task, bar) pooled, not a mean of
    per-task Sharpes: checked against the objectives' functions on the adapted predictions."""
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    learner = MetaLearner(_model("maml"), algorithm="maml", inner_steps=2, inner_lr=0.1, loss=LOSS)
    xs, ys, xq, yq = batch
    preds = torch.stack([learner.adapt(xs[b], ys[b])(xq[b]) for b in range(len(xs))])
    w = sized_positions(
        preds, extra["vol"], signal_scale=0.25, target_vol=0.1, max_leverage=1.0, smooth=3
    )
    pnl = path_pnl(w, extra["returns"], w[:, 0], PathCosts(2e-3, 1e-5))
    expected = float(pnl_loss(pnl, "sharpe"))
    assert learner.evaluate(*batch, extra=extra) == pytest.approx(expected, rel=1e-10)
    per_task = float(LOSS(preds, yq, extra).mean())
    assert per_task != pytest.approx(expected, rel=1e-3)  # the pooled loss is not that


def test_meta_gradient_matches_finite_differences():
    """Second-order MAML on the pooled Sharpe: the directional derivative of the batch loss
    in θ equals a central difference (float64)."""
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    learner = MetaLearner(_model("maml"), algorithm="maml", inner_steps=2, inner_lr=0.1, loss=LOSS)
    family = learner.family
    params = dict(learner.model.named_parameters())
    g = torch.Generator().manual_seed(5)
    direction = {
        k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in params.items()
    }

    def batch_loss(theta):
        lrs = {n: learner.inner_lr for n in learner.adapt_names}
        task = family._task_loss(learner, theta, lrs, 2, first_order=False)
        return family.batch_loss(query_losses(task, batch), batch[3], extra)

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


def test_a_pnl_learner_refuses_batches_without_returns_and_mse_ignores_them():
    batch = linear_task_batch(dtype=torch.float64)
    learner = MetaLearner(_model("maml"), algorithm="maml", loss=LOSS)
    with pytest.raises(ConfigError, match=r"extras=True"):
        learner.meta_step(*batch)
    with pytest.raises(ConfigError, match="shape"):
        learner.evaluate(*batch, extra={"returns": torch.zeros(3, 4), "vol": torch.ones(3, 4)})
    plain = MetaLearner(_model("maml"), algorithm="maml")
    assert plain.loss is MSE
    assert plain.evaluate(*batch, extra=_extras()) == plain.evaluate(*batch)
    with pytest.raises(ConfigError, match="'sharpe' or 'utility'"):
        PnLLoss(objective="mse")
    with pytest.raises(ConfigError, match="fill_cost"):
        PnLLoss(fill_cost=-1.0)
    with pytest.raises(ConfigError, match="unknown fields"):
        loss_from_config({"objective": "sharpe", "fill_cots": 1e-3})
    assert loss_from_config(LOSS.config()) == LOSS and loss_from_config(None) is MSE


def _frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.003, n))
    idx = pd.bdate_range("2001-01-01", periods=n)
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": 1e6,
        },
        index=idx,
    )


def test_path_extras_are_next_open_returns_and_the_sizers_volatility():
    frame = _frame()
    ex = path_extras(frame, vol_lookback=20, bars_per_year=252)
    o, c = frame["open"].to_numpy(), frame["close"].to_numpy()
    t = 100
    assert ex["returns"][t] == pytest.approx(o[t + 2] / o[t + 1] - 1, rel=1e-6)
    logret = np.diff(np.log(c[t - 20 : t + 1]))
    assert ex["vol"][t] == pytest.approx(np.std(logret, ddof=1) * math.sqrt(252), rel=1e-5)
    assert np.isnan(ex["returns"][-2:]).all() and np.isnan(ex["vol"][:20]).all()


def test_tasks_with_extras_use_no_price_on_or_after_end():
    """Perturb every price on or after ``end``: no batch (features, labels, returns,
    volatility) changes. Perturb one bar before ``end``: some batch does (the check can fail).
    It sees only what the frames hold: a user column built from future prices is the
    feature-causality check's business (metabt.features.causality)."""
    frames = {"A": _frame(seed=1), "B": _frame(seed=2)}
    end = frames["A"].index[300]
    spec = FeatureSpec()

    def batches(fr):
        tasks = TaskSampler.from_frames(fr, spec, support=30, query=10, end=end, extras=True)
        out = tasks.fixed(1000)
        assert isinstance(out, TaskBatch)
        return [t.numpy() for t in out] + [out.extra[k].numpy() for k in ("returns", "vol")]

    reference = batches(frames)
    rng = np.random.default_rng(9)
    future = {n: f.copy() for n, f in frames.items()}
    for f in future.values():
        late = f.index >= end
        f.loc[late, ["open", "high", "low", "close"]] *= rng.uniform(0.5, 1.5, (late.sum(), 1))
    for a, b in zip(reference, batches(future)):
        np.testing.assert_array_equal(a, b)
    past = {n: f.copy() for n, f in frames.items()}
    # the last usable row is 294 (its 5-bar label is realised at 299 < end); its return is
    # open(296) / open(295) - 1: moving that open changes the returns, and only them
    past["A"].loc[past["A"].index[296], "open"] *= 1.3
    changed = [not np.array_equal(a, b) for a, b in zip(reference, batches(past))]
    assert changed == [False, False, False, False, True, False]


def test_pnl_tasks_need_returns_realised_two_bars_on_even_at_horizon_one():
    frames = {"A": _frame(seed=3)}
    end = frames["A"].index[300]
    spec = FeatureSpec(horizon=1)
    plain = TaskSampler.from_frames(frames, spec, support=30, query=10, end=end)
    pnl = TaskSampler.from_frames(frames, spec, support=30, query=10, end=end, extras=True)
    assert plain.date_range[1] < end and pnl.date_range[1] < end
    assert pnl.n_tasks == plain.n_tasks - 1  # the last task's return is realised at end


@pytest.mark.parametrize(
    "algorithm", ["maml", "fomaml", "metasgd", "anil", "reptile", "erm", "scratch", "cavia"]
)
def test_every_gradient_algorithm_trains_saves_and_loads_with_the_sharpe_objective(
    algorithm, sample_frames, tmp_path
):
    from metabt.experiments.parts import train_learner

    cfg = DEMO.with_(
        algorithm=algorithm,
        objective="sharpe",
        meta_steps=4,
        val_years=1.0,
        smooth=5,
        start="2011-01-01",
        hidden=(8,),
    )
    trained = train_learner(sample_frames, cfg, checkpoint_every=2, progress=False)
    learner = trained.learner
    assert isinstance(learner.loss, PnLLoss) and learner.loss.smooth == 5
    assert learner.loss.fill_cost == pytest.approx(7e-4)
    assert learner.train_config["objective"] == "sharpe"
    curve = dict(trained.fit.val_losses)
    assert trained.fit.best_step == min(curve, key=curve.get)  # keep-best on the P&L loss
    assert all(math.isfinite(v) for v in curve.values())
    path = learner.save(tmp_path / "m.pt")
    back = MetaLearner.load(path)
    assert back.loss == learner.loss


def test_at_the_hard_clip_limit_the_training_pnl_is_the_backtests():
    """A fixed forecast path, sized by the training map at the hard-clip limit, earns what
    backtrader's broker books for the same signals (fills at the next open, commission on
    every change of position), before rounding to whole shares (1e9 of cash). The training
    path is per bar; the broker compounds: compounded, they agree to 1e-5 without costs and
    to 1e-3 of 20 bps costs (the rest is the drift of held weights between rebalances).
    Misaligned by one bar, they do not."""
    import backtrader as bt

    from metabt.data import feed
    from metabt.experiments.backtest import Costs
    from metabt.sizers import SignalSizer
    from metabt.strategies.trader import SignalTrader

    n = 260
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.001, n))
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": 1e6,
        },
        index=pd.bdate_range("2005-01-03", periods=n),
    )
    signal = 0.3 * np.sin(np.arange(n) / 6.0) + rng.normal(0, 0.1, n)
    signal[:25] = 0.0  # before the sizer's volatility is known
    signal[-4:] = 0.0  # flat at the end: nothing left to mark to market

    class Fixed(SignalTrader):
        def compute_signal(self, i, data):
            return float(signal[len(data) - 1])

    sizer = {"target_vol": 0.1, "max_leverage": 0.9, "signal_scale": 0.25}

    def backtest(bps):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(frame, name="A"))
        cerebro.broker.setcash(1e9)
        Costs(commission_bps=bps, slippage_bps=0.0, borrow_bps=0.0).apply(cerebro.broker)
        cerebro.addsizer(SignalSizer, deadband=0.0, **sizer)
        cerebro.addstrategy(Fixed, gross_leverage=1.0)
        cerebro.run()
        return cerebro.broker.getvalue() / 1e9 - 1

    extras = path_extras(frame, vol_lookback=20, bars_per_year=252)
    rows = slice(25, n - 2)
    forecasts = torch.tensor(signal[rows], dtype=torch.float64)[None]
    vol = torch.tensor(extras["vol"][rows], dtype=torch.float64)[None]
    returns = torch.tensor(extras["returns"][rows], dtype=torch.float64)[None]
    w = sized_positions(forecasts, vol, sharpness=math.inf, **sizer)
    flat = torch.zeros(1, dtype=torch.float64)
    for bps, tol in ((0.0, 1e-5), (20.0, 1e-3)):
        pnl = path_pnl(w, returns, flat, PathCosts(bps / 1e4))
        booked = backtest(bps)
        assert float(torch.prod(1 + pnl) - 1) == pytest.approx(booked, abs=tol)
        late = path_pnl(w[:, :-1], returns[:, 1:], flat, PathCosts(bps / 1e4))
        assert abs(float(torch.prod(1 + late) - 1) - booked) > 0.01


def _pnl_cfg():
    return DEMO.with_(objective="sharpe", val_years=1.0, smooth=5, start="2011-01-01")


def _validation_batch(frames, cfg, support):
    """The validation tasks select_linear scores on, rebuilt here independently."""
    from metabt.experiments.parts import VAL_TASKS, validation_split

    end = pd.Timestamp(cfg.start)
    tasks = TaskSampler.from_frames(
        frames,
        cfg.spec,
        support=support,
        query=cfg.query,
        end=end,
        extras=True,
        bars_per_year=252.0,
    )
    _, val = tasks.split(validation_split(frames, cfg, end))
    return val.fixed(VAL_TASKS, cfg.seed)


def test_the_linear_baselines_are_chosen_by_the_runs_pnl_objective(sample_frames):
    from metabt.experiments.parts import RIDGE_GRID, RIDGE_ZERO, select_linear
    from metabt.learn.linear import RidgeAdapter

    cfg = _pnl_cfg()
    alpha, lam, scores, _ = select_linear(sample_frames, cfg, pd.Timestamp(cfg.start))
    loss = cfg.task_loss(252.0)
    batch = _validation_batch(sample_frames, cfg, cfg.support)
    xs, ys, xq, yq = (t.double().numpy() for t in batch[:4])
    extra = {k: v.double() for k, v in batch.extra.items()}
    for a in (RIDGE_GRID[0], RIDGE_GRID[3]):  # the loss of the ridge's own predictions
        ridge = RidgeAdapter(cfg.spec, a)
        pred = np.stack([ridge.adapt(xs[b], ys[b]).predict(xq[b]) for b in range(len(xs))])
        expected = float(loss.batch_mean(torch.from_numpy(pred), torch.from_numpy(yq), extra))
        assert scores["ridge_alpha"][a] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    finite = {a: s for a, s in scores["ridge_alpha"].items() if a != RIDGE_ZERO}
    assert alpha == min(finite, key=finite.get)  # the argmin of the P&L loss, not the MSE
    _, _, mse_scores, _ = select_linear(
        sample_frames, cfg.with_(objective="mse"), pd.Timestamp(cfg.start)
    )
    assert mse_scores["ridge_alpha"] != scores["ridge_alpha"]
    assert lam == min(scores["rls_forgetting"], key=scores["rls_forgetting"].get)


def test_lightgbm_keeps_the_round_count_of_the_best_pnl_loss(sample_frames):
    from metabt.experiments.parts import train_gbm

    cfg = _pnl_cfg()
    trained = train_gbm(sample_frames, cfg, pd.Timestamp(cfg.start))
    gbm = trained.learner
    assert gbm.rounds == int(np.argmin(gbm.val_curve)) + 1
    batch = _validation_batch(sample_frames, cfg, cfg.support)
    xq, yq = batch[2].numpy(), batch[3].double().numpy()
    extra = {k: v.double() for k, v in batch.extra.items()}
    loss = cfg.task_loss(252.0)
    for rounds in (1, gbm.rounds):  # the logged curve is the P&L loss of its predictions
        pred = gbm.booster.predict(xq.reshape(-1, xq.shape[-1]), num_iteration=rounds)
        pred = torch.from_numpy(np.asarray(pred, dtype=np.float64).reshape(yq.shape))
        expected = float(loss.batch_mean(pred, torch.from_numpy(yq), extra))
        assert gbm.val_curve[rounds - 1] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert trained.objective == "sharpe" and trained.val_zero_mse == 0.0
    assert "after-cost loss" in trained.summary(list(sample_frames))[0]
