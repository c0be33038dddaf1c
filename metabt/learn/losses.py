"""Task losses: what a learner family minimises on each task's query set (MSE by default).

A :class:`TaskLoss` is a parameter of every learner family
(:class:`metabt.learn.algorithms.base.LearnerFamily`): the outer loop minimises it on the
query sets, and ``MetaLearner.evaluate`` reports it. The inner loop, the test-time
adaptation and the support losses an ``AdaptedModel`` reports stay the mean squared error
of :func:`mse`: the inner loop fits the support labels, whatever the outer objective is.

A loss may read extra per-row arrays beside the predictions and targets (an after-cost
P&L loss needs each row's realised return and the previous position); it names them in
:attr:`TaskLoss.extras`, and they arrive in ``extra`` with the targets' shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from metabt.errors import ConfigError
from metabt.learn.objectives import (
    OBJECTIVES,
    PathCosts,
    check_sizing,
    path_pnl,
    pnl_loss,
    sized_positions,
)

__all__ = ["MSE", "MSELoss", "PnLLoss", "TaskLoss", "is_pooled", "loss_from_config", "mse"]


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

    Raises:
        ConfigError: an unknown objective, a negative cost or a non-positive sizer param.

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

    def config(self) -> dict[str, Any]:
        """The loss as JSON primitives (saved in checkpoints; :func:`loss_from_config`)."""
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
    known = set(PnLLoss.__dataclass_fields__) - {"extras", "pooled"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"loss config has unknown fields {unknown}; known: {sorted(known)}")
    return PnLLoss(**dict(config))
