"""metabt.learn.objectives: the sized, after-cost P&L path and its losses, against the
sizer's own map, a hand-written loop and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metabt.errors import ConfigError
from metabt.learn.objectives import PathCosts, path_pnl, pnl_loss, sized_positions, soft_clip
from metabt.sizers import SignalSizer

G = torch.Generator().manual_seed(0)


def _batch(b=3, q=12):
    f = torch.randn(b, q, generator=G, dtype=torch.float64) * 0.4
    vol = 0.1 + torch.rand(b, q, generator=G, dtype=torch.float64) * 0.4
    r = torch.randn(b, q, generator=G, dtype=torch.float64) * 0.01
    prev = torch.randn(b, generator=G, dtype=torch.float64) * 0.3
    return f, vol, r, prev


def test_soft_clip_tends_to_the_hard_clamp():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    hard = x.clamp(-1, 1)
    for k, bound in ((10.0, 0.07), (100.0, 0.007), (1000.0, 0.0007)):
        assert float((soft_clip(x, 1.0, k) - hard).abs().max()) < bound
    assert torch.equal(soft_clip(x, 1.0, math.inf), hard)
    inside = x.abs() < 0.5
    assert torch.allclose(soft_clip(x, 1.0, 200.0)[inside], x[inside], atol=1e-12)


def test_at_the_hard_limit_the_weights_are_the_sizers():
    sizer = SignalSizer(target_vol=0.12, signal_scale=0.25, max_leverage=1.5)
    f, vol, _, _ = _batch()
    w = sized_positions(
        f, vol, signal_scale=0.25, target_vol=0.12, max_leverage=1.5, sharpness=math.inf
    )
    expected = [
        [sizer.target_weight(float(a), float(v)) for a, v in zip(fr, vr)] for fr, vr in zip(f, vol)
    ]
    np.testing.assert_allclose(w.numpy(), np.array(expected), rtol=1e-12, atol=1e-15)


def test_smoothing_averages_the_last_n_forecasts_as_the_strategy_does():
    f, vol, _, _ = _batch(b=1, q=8)
    w = sized_positions(
        f, vol, signal_scale=1e9, target_vol=1.0, max_leverage=1e9, smooth=3, sharpness=math.inf
    )
    means = [f[0, max(0, k - 2) : k + 1].mean() for k in range(8)]
    np.testing.assert_allclose((w[0] * vol[0] * 1e9).numpy(), torch.stack(means).numpy(), rtol=1e-9)


def test_path_pnl_equals_a_hand_written_loop():
    f, vol, r, prev = _batch()
    w = sized_positions(f, vol, signal_scale=0.25, target_vol=0.1, max_leverage=1.0)
    costs = PathCosts(fill_cost=7e-4, borrow_per_bar=0.0025 / 252)
    got = path_pnl(w, r, prev, costs).numpy()
    for b in range(w.shape[0]):
        held = float(prev[b])
        for t in range(w.shape[1]):
            wt = float(w[b, t])
            hand = wt * float(r[b, t]) - 7e-4 * abs(wt - held) - 0.0025 / 252 * max(-wt, 0.0)
            assert got[b, t] == pytest.approx(hand, abs=1e-9)
            held = wt


def test_losses_by_hand_and_their_gradients_by_finite_differences():
    f, vol, r, prev = _batch()
    costs = PathCosts(fill_cost=5e-4)

    def loss_of(forecasts, objective):
        w = sized_positions(forecasts, vol, signal_scale=0.25, target_vol=0.1, max_leverage=1.0)
        return pnl_loss(path_pnl(w, r, prev, costs), objective, risk_aversion=2.0)

    pnl = path_pnl(
        sized_positions(f, vol, signal_scale=0.25, target_vol=0.1, max_leverage=1.0), r, prev, costs
    ).reshape(-1)
    assert float(loss_of(f, "sharpe")) == pytest.approx(
        -float(pnl.mean()) / float(pnl.std()),
        rel=1e-6,  # the losses' 1e-12 epsilons
    )
    assert float(loss_of(f, "utility")) == pytest.approx(
        -(float(pnl.mean()) - 2.0 * float(pnl.var())), rel=1e-6
    )
    for objective in ("sharpe", "utility"):
        x = f.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda z, o=objective: loss_of(z, o), (x,), eps=1e-6, atol=1e-5
        )


def test_bad_arguments_are_refused():
    f, vol, r, _ = _batch()
    with pytest.raises(ConfigError, match="smooth"):
        sized_positions(f, vol, signal_scale=0.25, target_vol=0.1, max_leverage=1.0, smooth=0)
    with pytest.raises(ConfigError, match="target_vol"):
        sized_positions(f, vol, signal_scale=0.25, target_vol=0.0, max_leverage=1.0)
    with pytest.raises(ConfigError, match="fill_cost"):
        PathCosts(fill_cost=-1.0)
    with pytest.raises(ConfigError, match="not a P&L objective"):
        pnl_loss(r, "mse")
