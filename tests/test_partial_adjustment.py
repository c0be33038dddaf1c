"""The learned partial-adjustment rate κ (Gârleanu & Pedersen 2013) of the P&L objective:
κ = 1 is today's loss, its gradient matches finite differences, both engines agree, the
training path at the hard-clip limit is what SignalTrader trades at the same κ, and a
checkpoint keeps κ and trades identically."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import linear_task_batch

from metabt.config.defaults import DEMO
from metabt.errors import ConfigError
from metabt.learn.checkpoint import learner_state
from metabt.learn.learner import MetaLearner
from metabt.learn.losses import AdjustRate, PnLLoss, loss_from_config
from metabt.learn.models import MLP, CaviaMLP
from metabt.learn.objectives import PathCosts, partial_adjustment, path_pnl, sized_positions

F = 4
LOSS = PnLLoss(objective="sharpe", fill_cost=2e-3, borrow_per_bar=1e-5, smooth=3)
ADJUSTED = PnLLoss(
    objective="sharpe", fill_cost=2e-3, borrow_per_bar=1e-5, smooth=3, partial_adjustment=True
)


def _extras(b=3, q=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    returns = torch.randn(b, q, generator=g, dtype=torch.float64) * 0.01
    vol = 0.1 + torch.rand(b, q, generator=g, dtype=torch.float64) * 0.3
    return {"returns": returns, "vol": vol}


def _model(algorithm, seed=1):
    if algorithm == "cavia":
        return CaviaMLP(F, (8, 8), seed=seed).double()
    return MLP(F, (8, 8), seed=seed).double()


def _learner(algorithm="maml", loss=ADJUSTED, **kw):
    kw.setdefault("inner_lr", 1.0 if algorithm == "cavia" else 0.1)
    return MetaLearner(_model(algorithm), algorithm=algorithm, inner_steps=2, loss=loss, **kw)


def test_kappa_one_is_the_aim_itself_exactly():
    g = torch.Generator().manual_seed(0)
    aims = torch.randn(3, 7, generator=g, dtype=torch.float64)
    previous = torch.randn(3, generator=g, dtype=torch.float64)
    assert torch.equal(partial_adjustment(aims, previous, 1.0), aims)
    assert torch.equal(
        partial_adjustment(aims, previous, torch.tensor(1.0, dtype=aims.dtype)), aims
    )
    slow = partial_adjustment(aims, previous, 0.25)
    assert torch.allclose(slow[:, 0], 0.75 * previous + 0.25 * aims[:, 0])
    assert torch.allclose(slow[:, 3], 0.75 * slow[:, 2] + 0.25 * aims[:, 3])


def test_without_a_bound_rate_the_loss_is_todays_exactly():
    """Unbound (the linear baselines' scores) or off, the loss is the loss of the unadjusted
    path, bit for bit; a learner without the option has no rate and trades at 1."""
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    pred = batch[3] * 0.1
    assert torch.equal(
        ADJUSTED.batch_mean(pred, batch[3], extra), LOSS.batch_mean(pred, batch[3], extra)
    )
    w = sized_positions(
        pred, extra["vol"], signal_scale=0.25, target_vol=0.1, max_leverage=1.0, smooth=3
    )
    today = path_pnl(w, extra["returns"], w[:, 0], PathCosts(2e-3, 1e-5))
    assert torch.equal(LOSS.pnl(pred, extra), today)
    plain = _learner(loss=LOSS)
    assert plain.adjust is None and plain.adjust_rate == 1.0
    assert not any(k.startswith("adjust.") for k in learner_state(plain))
    # a rate at its κ → 1 limit gives today's loss (to rounding)
    learner = _learner()
    with torch.no_grad():
        learner.adjust.logit.fill_(60.0)
    bound = learner.loss.batch_mean(pred, batch[3], extra).detach()
    assert float(bound) == pytest.approx(float(LOSS.batch_mean(pred, batch[3], extra)), abs=1e-12)


def test_the_rate_is_meta_learned_with_theta_and_never_adapted():
    learner = _learner()
    assert isinstance(learner.adjust, AdjustRate)
    assert learner.adjust_rate == pytest.approx(0.5)
    assert learner.loss.adjust is learner.adjust and learner.loss.partial_adjustment
    names = dict(learner.model.named_parameters())
    assert "logit" not in names and all("adjust" not in n for n in learner.adapt_names)
    optimised = {id(p) for group in learner.optimizer.param_groups for p in group["params"]}
    assert id(learner.adjust.logit) in optimised
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    before = learner.adjust_rate
    for _ in range(3):
        learner.meta_step(*batch, extra=extra)
    assert learner.adjust_rate != before  # the outer step moved κ
    # test-time adaptation leaves κ alone
    kappa = learner.adjust_rate
    learner.adapt(batch[0][0], batch[1][0])
    assert learner.adjust_rate == kappa


@pytest.mark.parametrize("algorithm", ["reptile", "scratch", "protonet"])
def test_families_without_a_query_loss_gradient_record_full_adjustment(algorithm):
    if algorithm == "protonet":
        from metabt.learn.models import build_model

        model = build_model({"type": "protonet", "n_features": F, "hidden": [8], "seed": 0})
        learner = MetaLearner(model.double(), algorithm=algorithm, loss=ADJUSTED)
    else:
        learner = _learner(algorithm)
    assert learner.adjust is None and learner.adjust_rate == 1.0
    assert "partial_adjustment" not in learner.loss.config()


def test_a_bound_loss_is_not_shared_between_learners():
    learner = _learner()
    with pytest.raises(ConfigError, match="fresh"):
        _learner(loss=learner.loss)


def _rate_grads(learner, batch, extra):
    learner.optimizer.step = lambda *a, **k: None
    loss = learner.meta_step(*batch, extra=extra)
    grads = {n: p.grad.detach().clone() for n, p in learner.model.named_parameters()}
    grads.update({f"lr.{n}": p.grad.detach().clone() for n, p in learner.inner_lrs.items()})
    grads["adjust.logit"] = learner.adjust.logit.grad.detach().clone()
    return loss, grads


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil", "cavia"])
def test_func_equals_higher_with_a_learned_rate(algorithm):
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    loss_h, grads_h = _rate_grads(_learner(algorithm, engine="higher"), batch, extra)
    loss_f, grads_f = _rate_grads(_learner(algorithm, engine="func"), batch, extra)
    assert math.isclose(loss_h, loss_f, rel_tol=1e-10)
    assert grads_h.keys() == grads_f.keys()
    for name in grads_h:
        torch.testing.assert_close(grads_f[name], grads_h[name], rtol=1e-8, atol=1e-12)
    assert abs(float(grads_f["adjust.logit"])) > 1e-8


@pytest.mark.parametrize("algorithm", ["maml", "erm", "cnp"])
def test_the_rates_gradient_matches_finite_differences(algorithm):
    """d(batch loss)/d(logit κ), second order through the adaptation, equals a central
    difference (float64); ERM and CNP learn κ through their pooled loss too."""
    batch, extra = linear_task_batch(dtype=torch.float64), _extras()
    if algorithm == "cnp":
        from metabt.learn.models import build_model

        model = build_model({"type": "cnp", "n_features": F, "hidden": 8, "seed": 0}).double()
        learner = MetaLearner(model, algorithm="cnp", loss=ADJUSTED)
    else:
        learner = _learner(algorithm)
    learner.optimizer.step = lambda *a, **k: None
    learner.meta_step(*batch, extra=extra)
    analytic = float(learner.adjust.logit.grad)
    logit = learner.adjust.logit

    def loss_at(value):
        with torch.no_grad():
            logit.fill_(value)
        return _batch_loss(learner, batch, extra)

    start, eps = float(logit), 1e-6
    numeric = (loss_at(start + eps) - loss_at(start - eps)) / (2 * eps)
    assert abs(analytic) > 1e-6
    assert analytic == pytest.approx(numeric, rel=1e-5)


def _batch_loss(learner, batch, extra):
    """The loss meta_step differentiates, without the update (θ as it is)."""
    family = learner.family
    if learner.algorithm == "erm":
        xq = batch[2].flatten(0, 1)
        pred = learner.model(xq).reshape(batch[3].shape)
        return float(learner.loss.batch_mean(pred, batch[3], extra))
    if learner.algorithm == "cnp":
        learner.optimizer.zero_grad()
        saved = learner.optimizer.step
        learner.optimizer.step = lambda *a, **k: None
        value = learner.meta_step(*batch, extra=extra)
        learner.optimizer.step = saved
        return value
    from metabt.learn.algorithms.inner import query_losses

    params = dict(learner.model.named_parameters())
    lrs = {n: learner.inner_lr for n in learner.adapt_names}
    task = family._task_loss(learner, params, lrs, learner.inner_steps, first_order=False)
    with torch.no_grad():
        return float(family.batch_loss(query_losses(task, batch), batch[3], extra))


def _market(n=260, seed=3):
    rng = np.random.default_rng(seed)
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
    return frame, signal


def test_at_the_hard_clip_limit_the_adjusted_training_path_is_what_the_trader_trades():
    """The training map (hard clips) followed by partial adjustment from flat at κ = 0.3
    earns what backtrader books for SignalTrader(adjust_rate=0.3) on the same signals,
    before rounding to whole shares (1e9 of cash), as the unadjusted path does at κ = 1
    (test_pnl_objective): the weights agree to float32 rounding, and the compounded P&L to
    1e-4 without costs (5e-5 here: the held weights drift between the close that sizes
    them and the open that fills them) and 1e-3 at 20 bps. κ = 1 books something else."""
    import backtrader as bt

    from metabt.data import feed
    from metabt.experiments.backtest import Costs
    from metabt.features.tasks import path_extras
    from metabt.sizers import SignalSizer
    from metabt.strategies.trader import SignalTrader

    n = 260
    frame, signal = _market(n)
    # the adjusted path decays towards flat: end flat several bars before the data ends
    signal[-30:] = 0.0

    traded = {}  # bar -> the trader's adjusted weight

    class Fixed(SignalTrader):
        def compute_signal(self, i, data):
            return float(signal[len(data) - 1])

        def _partially_adjusted(self, active, signals, aims):
            out = super()._partially_adjusted(active, signals, aims)
            traded[len(self.datas[0]) - 1] = out[0]
            return out

    sizer = {"target_vol": 0.1, "max_leverage": 0.9, "signal_scale": 0.25}

    def backtest(bps, kappa):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(frame, name="A"))
        cerebro.broker.setcash(1e9)
        Costs(commission_bps=bps, slippage_bps=0.0, borrow_bps=0.0).apply(cerebro.broker)
        cerebro.addsizer(SignalSizer, deadband=0.0, **sizer)
        cerebro.addstrategy(Fixed, gross_leverage=1.0, adjust_rate=kappa)
        cerebro.run()
        return cerebro.broker.getvalue() / 1e9 - 1

    extras = path_extras(frame, vol_lookback=20, bars_per_year=252)
    rows = slice(25, n - 2)
    forecasts = torch.tensor(signal[rows], dtype=torch.float64)[None]
    vol = torch.tensor(extras["vol"][rows], dtype=torch.float64)[None]
    returns = torch.tensor(extras["returns"][rows], dtype=torch.float64)[None]
    aims = sized_positions(forecasts, vol, sharpness=math.inf, **sizer)
    flat = torch.zeros(1, dtype=torch.float64)
    w = partial_adjustment(aims, flat, 0.3)
    assert float((w - aims).abs().max()) > 0.05  # the adjustment changes the path
    backtest(0.0, 0.3)
    bars = range(rows.start, rows.stop)
    np.testing.assert_allclose([traded[t] for t in bars], w[0].numpy(), rtol=0, atol=1e-6)
    for bps, tol in ((0.0, 1e-4), (20.0, 1e-3)):
        pnl = path_pnl(w, returns, flat, PathCosts(bps / 1e4))
        training = float(torch.prod(1 + pnl) - 1)
        assert training == pytest.approx(backtest(bps, 0.3), abs=tol)
        assert abs(training - backtest(bps, 1.0)) > 5 * tol  # not what κ = 1 books


def test_the_trader_refuses_a_rate_outside_zero_one():
    import backtrader as bt

    from metabt.data import feed
    from metabt.strategies.baselines import ConstantLong

    frame, _ = _market(60)
    for bad in (0.0, 1.5, float("nan"), True):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(frame, name="A"))
        cerebro.addstrategy(ConstantLong, adjust_rate=bad)
        with pytest.raises(ConfigError, match="adjust_rate"):
            cerebro.run()


def test_a_checkpoint_keeps_the_rate_and_trades_identically(sample_frames, tmp_path):
    """Train with the option through RunConfig, save, load: κ (moved off its start) is the
    same, the loss config says so, and MetaStrategy trades the loaded learner at κ exactly
    as the trained one (and differently at κ = 1)."""
    from metabt.experiments.backtest import Costs, run_backtest
    from metabt.experiments.parts import train_learner
    from metabt.strategies.meta import MetaStrategy

    cfg = DEMO.with_(
        objective="sharpe",
        partial_adjustment=True,
        meta_steps=6,
        val_years=1.0,
        smooth=1,
        start="2011-01-01",
        hidden=(8,),
        meta_lr=0.05,
    )
    trained = train_learner(sample_frames, cfg, checkpoint_every=3, progress=False)
    learner = trained.learner
    assert learner.adjust is not None and learner.adjust_rate != pytest.approx(0.5, abs=1e-4)
    path = learner.save(tmp_path / "m.pt")
    back = MetaLearner.load(path)
    assert back.adjust_rate == learner.adjust_rate
    assert back.loss == learner.loss and back.loss.config()["partial_adjustment"] is True
    assert loss_from_config(back.loss.config()).partial_adjustment

    def run(model, **kw):
        result = run_backtest(
            MetaStrategy,
            sample_frames,
            start="2011-01-01",
            end="2011-06-30",
            warmup_bars=cfg.warmup_bars,
            costs=Costs(),
            strategy_kwargs={"learner": model, **cfg.strategy_kwargs(), **kw},
            sizer_kwargs={**cfg.sizer, "deadband": 0.0, "rebalance_band": 0.0},
        )
        return result.returns

    trained_returns, loaded_returns = run(learner), run(back)
    pd.testing.assert_series_equal(trained_returns, loaded_returns)
    assert not np.allclose(run(back, adjust_rate=1.0).to_numpy(), loaded_returns.to_numpy())


def test_the_option_reaches_the_loss_from_the_config_and_the_command_line():
    loss = DEMO.with_(objective="sharpe", partial_adjustment=True).task_loss(252.0)
    assert loss.partial_adjustment and loss.adjust is None
    assert not DEMO.with_(objective="sharpe").task_loss(252.0).partial_adjustment
    from metabt.cli.commands import config_of
    from metabt.cli.parser import _build_parser

    args = _build_parser().parse_args(["train", "--objective", "sharpe", "--partial-adjustment"])
    assert config_of(args).partial_adjustment is True
    args = _build_parser().parse_args(["train"])
    assert config_of(args).partial_adjustment is False
