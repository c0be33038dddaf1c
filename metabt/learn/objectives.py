"""After-cost P&L objectives: the query loss of a sized position path, in torch.

The MSE objective scores a forecast; a trader earns the P&L of the positions the forecast
is sized into, after the cost of changing them. These functions turn a batch of query
forecasts into that P&L, differentiably, so that meta-training can minimise the negative
Sharpe (or a mean-variance utility) of the path itself (Moody & Saffell 2001, costs inside
the objective; Lim, Zohren & Roberts 2019 and Zhang, Zohren & Roberts 2020, Sharpe loss):

1. ``w_t = soft_clip(f_t / signal_scale, ±1) · target_vol / σ_t``, then ``soft_clip`` to
   ``±max_leverage``: the map of :meth:`metabt.sizers.SignalSizer.target_weight` with a
   smooth clip in place of the hard one (:func:`soft_clip`; at ``sharpness → ∞`` it is the
   sizer's map exactly, tested);
2. optionally the mean of the last ``smooth`` forecasts, as the strategy trades them, and
   optionally partial adjustment towards that aim, ``w_t = (1 − κ) · w_{t−1} + κ · aim_t``
   (:func:`partial_adjustment`; Gârleanu & Pedersen 2013), as the strategy trades it;
3. ``pnl_t = w_t · r_t − c · |w_t − w_{t−1}| − borrow · max(−w_t, 0)``, with ``r_t`` the raw
   simple return from the open of bar t+1 to the open of bar t+2 (orders placed at bar t
   fill at the next open), ``c`` the cost of a fill (commission plus slippage, a fraction
   of traded value) and ``w_0`` the position held before the query window;
4. the loss: ``−mean(pnl) / std(pnl)`` over every (task, bar) of the batch (the Sharpe of
   the pooled path), or ``−(mean − λ·var)``.

Everything here is torch only and knows nothing of features or backtrader: the per-row
returns and volatilities come in as tensors beside the query rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from metabt.errors import ConfigError
from metabt.learn.names import OBJECTIVES

__all__ = [
    "OBJECTIVES",
    "PathCosts",
    "check_sizing",
    "partial_adjustment",
    "path_pnl",
    "pnl_loss",
    "sized_positions",
    "soft_clip",
]


def soft_clip(x: Tensor, limit: float, sharpness: float = 50.0) -> Tensor:
    """A smooth ``clamp(x, -limit, limit)``: ``x − sp(x − limit) + sp(−x − limit)``.

    ``sp`` is softplus with ``beta = sharpness / limit``; the result is smooth everywhere,
    equals ``x`` well inside the limits and tends to the hard clamp as ``sharpness → ∞``
    (the error is at most ``log(2) · limit / sharpness``, at the limits themselves).

    Args:
        x: any shape, float.
        limit: the bound (> 0).
        sharpness: how close to the hard clamp (dimensionless, > 0). ``math.inf`` gives
            the hard clamp itself (not differentiable at the limits).

    Returns:
        Tensor of ``x``'s shape.
    """
    if math.isinf(sharpness):
        return torch.clamp(x, -limit, limit)
    beta = sharpness / limit
    return x - F.softplus(x - limit, beta=beta) + F.softplus(-x - limit, beta=beta)


def check_sizing(
    *, signal_scale: float, target_vol: float, max_leverage: float, smooth: int
) -> None:
    """Check the sizing map's parameters (those of :func:`sized_positions`).

    Raises:
        ConfigError: ``smooth`` not an integer >= 1, or a non-positive or non-finite
            scale, target or cap (the message names it).
    """
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ConfigError(f"smooth must be an integer >= 1 (bars), got {smooth!r}")
    for name, value in (
        ("signal_scale", signal_scale),
        ("target_vol", target_vol),
        ("max_leverage", max_leverage),
    ):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value!r}")


def sized_positions(
    forecasts: Tensor,
    vol: Tensor,
    *,
    signal_scale: float,
    target_vol: float,
    max_leverage: float,
    smooth: int = 1,
    sharpness: float = 50.0,
) -> Tensor:
    """Position weights of a forecast path, as the sizer sets them (smooth clips).

    Args:
        forecasts: (B, Q) model outputs (signal units), in bar order.
        vol: (B, Q) annualised realised volatility at each bar (fraction, > 0).
        signal_scale: signal at which the position reaches its full size (signal units).
        target_vol: annualised volatility target of one position (fraction).
        max_leverage: cap on one position's weight (multiple of equity).
        smooth: forecasts averaged into the traded one (bars; the first rows average the
            ones available, as the strategy does).
        sharpness: of :func:`soft_clip`.

    Returns:
        (B, Q) weights, fractions of equity, signed.

    Raises:
        ConfigError: ``smooth`` < 1 or a non-positive scale, target or cap.
    """
    check_sizing(
        signal_scale=signal_scale, target_vol=target_vol, max_leverage=max_leverage, smooth=smooth
    )
    traded = forecasts
    if smooth > 1:  # the mean of the last `smooth` forecasts, over the ones available
        padded = F.pad(forecasts, (smooth - 1, 0))
        sums = padded.unfold(-1, smooth, 1).sum(-1)
        counts = torch.clamp(torch.arange(1, forecasts.shape[-1] + 1), max=smooth)
        traded = sums / counts.to(forecasts.dtype)
    direction = soft_clip(traded / signal_scale, 1.0, sharpness)
    return soft_clip(direction * (target_vol / vol), max_leverage, sharpness)


def partial_adjustment(aims: Tensor, previous: Tensor, rate: Tensor | float) -> Tensor:
    """The position path that moves a fraction κ of the way to its aim each bar.

    ``w_t = (1 − κ) · w_{t−1} + κ · aim_t`` with ``w_0 = previous``: under quadratic
    costs of trading, the optimal rule trades partially towards an aim portfolio
    (Gârleanu & Pedersen 2013, "Dynamic Trading with Predictable Returns and Transaction
    Costs", J. Finance 68(6)). κ = 1 is the aim itself, exactly (the product
    ``0 · w_{t−1}`` adds nothing): full adjustment, metabt's default.
    ``metabt.strategies.trader.SignalTrader`` trades the same recursion (its
    ``adjust_rate``), bar by bar.

    Args:
        aims: (B, Q) aim weights (fractions of equity), in bar order.
        previous: (B,) the position before the first bar.
        rate: κ in (0, 1], a float or a 0-d tensor (differentiable).

    Returns:
        (B, Q) position weights, ``aims``' dtype.
    """
    keep = 1.0 - rate
    w = previous
    out = []
    for t in range(aims.shape[-1]):
        w = keep * w + rate * aims[..., t]
        out.append(w)
    return torch.stack(out, dim=-1)


class PathCosts:
    """What changing and holding a position costs, per bar, as fractions.

    Args:
        fill_cost: cost of trading one unit of equity, commission plus slippage
            (fraction; 7 bps = 7e-4).
        borrow_per_bar: short-borrow fee per bar held (fraction of the short's value;
            25 bps a year on daily bars = 0.0025 / 252).

    Raises:
        ConfigError: a negative or non-finite cost.
    """

    def __init__(self, fill_cost: float, borrow_per_bar: float = 0.0) -> None:
        for name, value in (("fill_cost", fill_cost), ("borrow_per_bar", borrow_per_bar)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number >= 0 (fraction), got {value!r}")
        self.fill_cost = float(fill_cost)
        self.borrow_per_bar = float(borrow_per_bar)

    def __repr__(self) -> str:
        return f"PathCosts(fill_cost={self.fill_cost!r}, borrow_per_bar={self.borrow_per_bar!r})"


def path_pnl(weights: Tensor, returns: Tensor, previous: Tensor, costs: PathCosts) -> Tensor:
    """Per-bar P&L of a position path after costs (fractions of equity).

    ``pnl_t = w_t · r_t − c · |w_t − w_{t−1}| − borrow · max(−w_t, 0)``, ``w_0 = previous``.

    Args:
        weights: (B, Q) positions set at each bar's close.
        returns: (B, Q) simple return each position earns: from the open of bar t+1 to the
            open of bar t+2 (fills at the next open).
        previous: (B,) the position held before the first bar.
        costs: the fill and borrow costs.

    Returns:
        (B, Q) P&L per bar.
    """
    before = torch.cat([previous.unsqueeze(-1), weights[..., :-1]], dim=-1)
    # |Δw| has no gradient at 0 (no trade); a tiny epsilon keeps it finite and smooth
    trade = torch.sqrt((weights - before) ** 2 + 1e-12)
    short = F.relu(-weights)
    return weights * returns - costs.fill_cost * trade - costs.borrow_per_bar * short


def pnl_loss(pnl: Tensor, objective: str, *, risk_aversion: float = 1.0) -> Tensor:
    """The loss of a batch's P&L paths (lower is better).

    Args:
        pnl: (B, Q) per-bar P&L of every task's query path.
        objective: ``"sharpe"``: ``−mean / std`` over all B·Q bars (the pooled path's
            Sharpe, per bar, not annualised); ``"utility"``: ``−(mean − λ · var)``.
        risk_aversion: λ of the utility (per bar units).

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: an unknown objective (``"mse"`` is not a P&L objective).
    """
    flat = pnl.reshape(-1)
    if objective == "sharpe":
        return -flat.mean() / torch.sqrt(flat.var(unbiased=True) + 1e-12)
    if objective == "utility":
        return -(flat.mean() - risk_aversion * flat.var(unbiased=True))
    raise ConfigError(f"objective {objective!r} is not a P&L objective; use 'sharpe' or 'utility'")
