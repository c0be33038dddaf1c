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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["MSE", "MSELoss", "TaskLoss", "mse"]


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


#: The default task loss (:class:`MSELoss`).
MSE = MSELoss()
