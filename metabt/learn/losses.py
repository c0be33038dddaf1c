"""Task losses: what a learner family minimises on each task's query set (MSE by default).

A :class:`TaskLoss` is a parameter of every learner family
(:class:`metabt.learn.algorithms.base.LearnerFamily`): the outer loop minimises it on the
query sets, and ``MetaLearner.evaluate`` reports it. By default the inner loop, the
test-time adaptation and the support losses an ``AdaptedModel`` reports stay the mean
squared error of :func:`mse`: the inner loop fits the support labels, whatever the outer
objective is. A :class:`PnLLoss` with ``inner_objective="same"`` makes the meta-training
inner loop and the validation's adaptation descend its own P&L loss on the support path
instead (:func:`inner_loss_of`); test-time adaptation (``MetaLearner.adapt``, so
``MetaStrategy``) stays on the support MSE.

A loss may read extra per-row arrays beside the predictions and targets (an after-cost
P&L loss needs each row's realised return and the previous position); it names them in
:attr:`TaskLoss.extras`, and they arrive in ``extra`` with the targets' shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from metabt.errors import ConfigError
from metabt.learn.names import INNER_OBJECTIVES
from metabt.learn.objectives import (
    OBJECTIVES,
    PathCosts,
    check_sizing,
    partial_adjustment,
    path_pnl,
    pnl_loss,
    sized_positions,
)

__all__ = [
    "ADJUST_RATE_START",
    "AdjustRate",
    "INNER_OBJECTIVES",
    "MSE",
    "MSELoss",
    "PnLLoss",
    "SUPPORT_EXTRAS",
    "TaskLoss",
    "inner_loss_of",
    "is_pooled",
    "loss_from_config",
    "mse",
]

#: The support rows' extras of a P&L inner loop, name -> the query extra it mirrors: each
#: (B, S) array beside the support rows (``TaskSampler.from_frames(extras=True)``).
SUPPORT_EXTRAS = {"support_returns": "returns", "support_vol": "vol"}
#: κ at the start of meta-training when it is learned (:class:`AdjustRate`): halfway, where
#: the sigmoid's slope is largest.
ADJUST_RATE_START = 0.5


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every element, the loss of every inner loop. (N,), (N,) -> ()."""
    return ((pred - target) ** 2).mean()


@runtime_checkable
class TaskLoss(Protocol):
    """The query loss of a batch of tasks: predictions and targets (and extra per-row arrays)
    in, one loss per task out.

    Shapes: ``pred`` and ``target`` are (..., N): (B, Q) for a batch of B tasks of Q query
    rows, or (Q,) for one task (inside ``torch.func.vmap``, or one task at a time); every
    array of ``extra`` has the targets' shape. Both methods must be differentiable in
    ``pred`` with ``torch.autograd`` and ``torch.func`` (no ``.item()``, no in-place
    updates of inputs, no data-dependent control flow).

    Attributes:
        extras: the names of the per-row arrays this loss reads from ``extra`` (empty for
            MSE; e.g. realised returns and the previous position for an after-cost P&L
            loss).

    A loss with a true attribute ``pooled`` is not a mean of per-task losses (the Sharpe of
    the batch's pooled P&L): the families then collect every task's query predictions,
    (B, Q), and call :meth:`batch_mean` once (:func:`is_pooled`).
    """

    @property
    def extras(self) -> tuple[str, ...]: ...

    def __call__(
        self, pred: Tensor, target: Tensor, extra: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Per-task losses: pred (..., N), target (..., N) -> (...), the dtype of pred.

        Args:
            pred: the adapted model's predictions of the query rows.
            target: the query labels.
            extra: name -> (..., N) per-row array, with every name of :attr:`extras`.
        """
        ...

    def batch_mean(
        self, pred: Tensor, target: Tensor, extra: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """The mean over tasks of :meth:`__call__`: pred (B, N), target (B, N) -> ().

        The loss of the families that predict every task's query rows at once (CNP,
        ProtoNet's reported loss) and of ERM's joint step.
        """
        ...


@dataclass(frozen=True)
class MSELoss:
    """Mean squared error, the default :class:`TaskLoss` of every learner family.

    ``__call__`` averages over the last axis (one loss per task); ``batch_mean`` averages
    over every element at once, which equals the mean of the per-task losses when every
    task has N rows (as in metabt's task batches), up to rounding. No extra arrays.
    """

    extras: tuple[str, ...] = ()

    def __call__(
        self, pred: Tensor, target: Tensor, extra: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Per-task MSE: (..., N), (..., N) -> (...); ``extra`` is ignored."""
        return ((pred - target) ** 2).mean(-1)

    def batch_mean(
        self, pred: Tensor, target: Tensor, extra: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """MSE over every row of every task: (B, N), (B, N) -> (); ``extra`` is ignored."""
        return ((pred - target) ** 2).mean()

    def config(self) -> dict[str, Any]:
        """The loss as JSON primitives: ``{"objective": "mse"}``."""
        return {"objective": "mse"}


@dataclass(frozen=True)
class _Predictions:
    """The per-task "loss" of a pooled objective: the query predictions themselves."""

    extras: tuple[str, ...] = ()

    def __call__(
        self, pred: Tensor, target: Tensor, extra: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        return pred

    def batch_mean(
        self, pred: Tensor, target: Tensor, extra: Mapping[str, Tensor] | None = None
    ) -> Tensor:  # pragma: no cover - never called: a pooled loss's batch_mean is
        raise NotImplementedError


#: What a family's per-task function returns for a pooled loss (:func:`is_pooled`).
PREDICTIONS = _Predictions()


#: The default task loss (:class:`MSELoss`).
MSE = MSELoss()


def is_pooled(loss: TaskLoss) -> bool:
    """True when ``loss`` must see the whole batch at once (its ``pooled`` attribute)."""
    return bool(getattr(loss, "pooled", False))


class AdjustRate(nn.Module):
    """A learned partial-adjustment rate κ = sigmoid(logit) in (0, 1), a scalar parameter.

    ``MetaLearner`` holds one when its :class:`PnLLoss` has ``partial_adjustment``: the
    outer optimizer updates ``logit`` with θ (it is meta-learned), the inner loop never
    adapts it (it is not a parameter of the model), and the checkpoint stores it
    (``"adjust.logit"``). The sigmoid keeps κ inside (0, 1) without a clamp, so its
    gradient never vanishes at a bound.

    Args:
        start: κ at the start, in (0, 1). Default :data:`ADJUST_RATE_START`.
        dtype: of the parameter (θ's). Default torch.float32.

    Raises:
        ConfigError: ``start`` outside (0, 1).
    """

    def __init__(self, start: float = ADJUST_RATE_START, dtype: torch.dtype = torch.float32):
        super().__init__()
        if not (isinstance(start, (int, float)) and 0 < start < 1):
            raise ConfigError(
                f"the starting partial-adjustment rate must be in (0, 1), got {start!r}"
            )
        self.logit = nn.Parameter(torch.tensor(math.log(start / (1 - start)), dtype=dtype))

    def rate(self) -> Tensor:
        """κ, a 0-d tensor with autograd history (for the loss)."""
        return torch.sigmoid(self.logit)

    def value(self) -> float:
        """κ as a float (what the strategy trades)."""
        return float(torch.sigmoid(self.logit.detach()))


@dataclass(frozen=True)
class PnLLoss:
    """The after-cost P&L of the sized query path: negative Sharpe or mean-variance utility.

    Each task's query forecasts (B, Q), in bar order, are sized as the strategy sizes them
    (:func:`metabt.learn.objectives.sized_positions`: the mean of the last ``smooth``
    forecasts, ``signal_scale``, the volatility target and the leverage cap, with smooth
    clips), then earn ``pnl_t = w_t · r_t − c · |w_t − w_{t−1}| − borrow · max(−w_t, 0)``
    (:func:`metabt.learn.objectives.path_pnl`). ``r_t`` is the raw simple return from the
    open of bar t+1 to the open of bar t+2 (an order placed at bar t fills at the next
    open), not the volatility-scaled, clipped label. The position before the window is the
    first query position (the window's entry is not charged: a path already in the market).
    With ``partial_adjustment``, the sized forecasts are the aims and the positions move a
    learned fraction κ of the way to them each bar,
    ``w_t = (1 − κ) · w_{t−1} + κ · aim_t``
    (:func:`metabt.learn.objectives.partial_adjustment`), as
    ``metabt.strategies.trader.SignalTrader`` trades them (its ``adjust_rate``).
    The loss is :func:`metabt.learn.objectives.pnl_loss` of every (task, bar) of the batch
    pooled (``pooled`` is True), so the Sharpe is that of the meta-batch's whole path.

    Extras (per query row, the targets' shape): ``"returns"``, ``r_t`` (fraction);
    ``"vol"``, annualised realised volatility at bar t as the sizer computes it (fraction,
    > 0). :meth:`metabt.features.tasks.TaskSampler.from_frames` builds both
    (``extras=True``), from prices realised by the end of the tasks' date range.

    Args:
        objective: ``"sharpe"`` or ``"utility"`` (mean − ``risk_aversion`` · variance).
        fill_cost: commission plus slippage per unit traded (fraction; 7 bps = 7e-4).
        borrow_per_bar: short-borrow fee per bar (fraction of the short's value).
        signal_scale, target_vol, max_leverage: the sizer's (``SignalSizer``) params.
        smooth: forecasts averaged into the traded one (bars), as the strategy trades.
        sharpness: of the smooth clips (:func:`metabt.learn.objectives.soft_clip`).
        risk_aversion: λ of the utility (per-bar units).
        partial_adjustment: learn a partial-adjustment rate κ with θ (Gârleanu & Pedersen
            2013): the learner that takes this loss binds an :class:`AdjustRate` to it
            (``adjust``). Unbound (a loss scoring the linear baselines, which trade every
            bar at their aim), κ is 1. Default False: κ = 1, the aim itself.
        inner_objective: what the meta-training inner loop descends: ``"mse"``, the
            support labels' MSE (default), or ``"same"``, this loss on the support path
            (the support rows' extras :data:`SUPPORT_EXTRAS` are then needed).
        adjust: the learned rate bound by ``MetaLearner`` (not part of the config).

    Raises:
        ConfigError: an unknown objective or inner objective, a negative cost or a
            non-positive sizer param.

    References:
        Moody & Saffell 2001, "Learning to Trade via Direct Reinforcement" (costs inside
        the objective); Lim, Zohren & Roberts 2019, "Enhancing Time Series Momentum
        Strategies Using Deep Neural Networks"; Zhang, Zohren & Roberts 2020, "Deep
        Learning for Portfolio Optimisation" (Sharpe loss).
    """

    objective: str = "sharpe"
    fill_cost: float = 7e-4
    borrow_per_bar: float = 0.0
    signal_scale: float = 0.25
    target_vol: float = 0.10
    max_leverage: float = 1.0
    smooth: int = 1
    sharpness: float = 50.0
    risk_aversion: float = 1.0
    partial_adjustment: bool = False
    inner_objective: str = "mse"
    adjust: AdjustRate | None = field(default=None, compare=False, repr=False)
    extras: tuple[str, ...] = ("returns", "vol")
    pooled: bool = True

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES or self.objective == "mse":
            raise ConfigError(
                f"PnLLoss objective must be 'sharpe' or 'utility', got {self.objective!r}; "
                "'mse' is the MSE loss (metabt.learn.losses.MSE)"
            )
        PathCosts(self.fill_cost, self.borrow_per_bar)  # checks both
        check_sizing(
            signal_scale=self.signal_scale,
            target_vol=self.target_vol,
            max_leverage=self.max_leverage,
            smooth=self.smooth,
        )
        for name in ("sharpness", "risk_aversion"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and not math.isnan(value)):
                raise ConfigError(f"PnLLoss {name} must be a positive number, got {value!r}")
        if not isinstance(self.partial_adjustment, bool):
            raise ConfigError(
                f"PnLLoss partial_adjustment must be True or False, got {self.partial_adjustment!r}"
            )
        if self.inner_objective not in INNER_OBJECTIVES:
            raise ConfigError(
                f"PnLLoss inner_objective must be one of {', '.join(INNER_OBJECTIVES)}, got "
                f"{self.inner_objective!r}"
            )
        if self.adjust is not None and not self.partial_adjustment:
            raise ConfigError("PnLLoss: a bound adjust rate needs partial_adjustment=True")

    def pnl(self, pred: Tensor, extra: Mapping[str, Tensor] | None) -> Tensor:
        """Per-bar after-cost P&L of the sized paths: pred (..., Q) -> (..., Q).

        Raises:
            ConfigError: ``extra`` lacks ``"returns"`` or ``"vol"``, or a shape differs.
        """
        if extra is None or any(k not in extra for k in self.extras):
            raise ConfigError(
                f"the {self.objective!r} objective needs each query row's realised return "
                "and volatility (extras 'returns' and 'vol'); build the tasks with "
                "TaskSampler.from_frames(..., extras=True)"
            )
        returns, vol = extra["returns"].to(pred.dtype), extra["vol"].to(pred.dtype)
        if returns.shape != pred.shape or vol.shape != pred.shape:
            raise ConfigError(
                f"extras 'returns' {tuple(returns.shape)} and 'vol' {tuple(vol.shape)} must "
                f"have the predictions' shape {tuple(pred.shape)}"
            )
        paths = pred.reshape(-1, pred.shape[-1])
        weights = sized_positions(
            paths,
            vol.reshape(paths.shape),
            signal_scale=self.signal_scale,
            target_vol=self.target_vol,
            max_leverage=self.max_leverage,
            smooth=self.smooth,
            sharpness=self.sharpness,
        )
        if self.adjust is not None:  # the sized forecasts are the aims
            weights = partial_adjustment(weights, weights[:, 0], self.adjust.rate())
        costs = PathCosts(self.fill_cost, self.borrow_per_bar)
        out = path_pnl(weights, returns.reshape(paths.shape), weights[:, 0], costs)
        return out.reshape(pred.shape)

    def __call__(
        self, pred: Tensor, target: Tensor, extra: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Per-task loss: the objective of each task's own path, (..., Q) -> (...)."""
        pnl = self.pnl(pred, extra)
        if pnl.ndim == 1:
            return pnl_loss(pnl.unsqueeze(0), self.objective, risk_aversion=self.risk_aversion)
        flat = pnl.reshape(-1, pnl.shape[-1])
        losses = [
            pnl_loss(row.unsqueeze(0), self.objective, risk_aversion=self.risk_aversion)
            for row in flat
        ]
        return torch.stack(losses).reshape(pnl.shape[:-1])

    def batch_mean(
        self, pred: Tensor, target: Tensor, extra: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """The objective of the batch's pooled path: pred (B, Q) -> () (lower is better)."""
        return pnl_loss(self.pnl(pred, extra), self.objective, risk_aversion=self.risk_aversion)

    def support_loss(self, pred: Tensor, extra: Mapping[str, Tensor]) -> Tensor:
        """The P&L inner loop's loss of one support path: pred (S,) -> ().

        ``extra`` holds the support rows' :data:`SUPPORT_EXTRAS` ((S,) each); the loss is
        this objective of the path, with the same sizing, costs and κ (κ is a constant of
        the inner loop: it is not adapted).
        """
        rows = {q: extra[s] for s, q in SUPPORT_EXTRAS.items()}
        return pnl_loss(self.pnl(pred, rows), self.objective, risk_aversion=self.risk_aversion)

    def config(self) -> dict[str, Any]:
        """The loss as JSON primitives (saved in checkpoints; :func:`loss_from_config`).

        ``partial_adjustment`` and ``inner_objective`` appear only when set, so that the
        config of a loss without them is what it was before they existed; the learned κ is
        a tensor of the checkpoint's state, not of the config.
        """
        out = self._base_config()
        if self.partial_adjustment:
            out["partial_adjustment"] = True
        if self.inner_objective != "mse":
            out["inner_objective"] = self.inner_objective
        return out

    def _base_config(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "fill_cost": self.fill_cost,
            "borrow_per_bar": self.borrow_per_bar,
            "signal_scale": self.signal_scale,
            "target_vol": self.target_vol,
            "max_leverage": self.max_leverage,
            "smooth": self.smooth,
            "sharpness": self.sharpness,
            "risk_aversion": self.risk_aversion,
        }


def loss_from_config(config: Mapping[str, Any] | None) -> TaskLoss:
    """The task loss a checkpoint records: None or ``{"objective": "mse"}`` is MSE.

    Raises:
        ConfigError: an unknown objective or a bad parameter (with the field named).
    """
    if config is None or config.get("objective", "mse") == "mse":
        return MSE
    known = set(PnLLoss.__dataclass_fields__) - {"extras", "pooled", "adjust"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"loss config has unknown fields {unknown}; known: {sorted(known)}")
    return PnLLoss(**dict(config))


def inner_loss_of(loss: TaskLoss) -> PnLLoss | None:
    """The P&L loss the inner loop descends, or None for the support MSE (the default).

    A :class:`PnLLoss` with ``inner_objective="same"``; any other loss (MSE, a P&L loss
    with ``inner_objective="mse"``) leaves the inner loop on the support MSE.
    """
    if isinstance(loss, PnLLoss) and loss.inner_objective == "same":
        return loss
    return None
