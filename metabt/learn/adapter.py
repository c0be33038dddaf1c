"""The adapter protocols: what adapts to a support window (``adapt``), or to many at once.

``MetaStrategy`` (``metabt.strategies.meta``) adapts whatever satisfies :class:`Adapter`
on each support window: a ``metabt.learn.learner.MetaLearner``, or a baseline's adapter
(``metabt.learn.linear.RidgeAdapter``, ``RLSAdapter``). An adapter that also satisfies
:class:`BatchAdapter` (a ``MetaLearner``) adapts the windows of several assets in one
call. All three protocols are ``runtime_checkable``: ``isinstance(obj, BatchAdapter)``
checks that the members exist (not their signatures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from metabt.learn.spec import FeatureSpecLike

if TYPE_CHECKING:
    from metabt.learn.kernels.batched import BatchAdapted

__all__ = ["Adapted", "Adapter", "BatchAdapter"]


@runtime_checkable
class Adapted(Protocol):
    """A model adapted to one support window (``metabt.learn.adapted.AdaptedModel``,
    ``metabt.learn.linear.LinearFit``).

    Attributes:
        loss_before: support loss before adaptation; loss_after: after it.
        steps: inner-loop steps taken (0 for a closed-form fit).
    """

    loss_before: float
    loss_after: float
    steps: int

    def predict_row(self, x: np.ndarray) -> float:
        """One prediction for one input row: x (F_in,) float ndarray -> float."""
        ...


@runtime_checkable
class Adapter(Protocol):
    """What adapts to one support window: a MetaLearner, or a baseline's adapter
    (``metabt.learn.linear.RidgeAdapter``, ``RLSAdapter``).

    Attributes:
        feature_spec: the features and label the inputs come from.
        algorithm: its name (``maml``, ``erm``, ``ridge``, ...), checked by baselines.
        window: feature rows per model input (1 unless a sequence model).
    """

    feature_spec: FeatureSpecLike | None
    algorithm: str

    @property
    def window(self) -> int: ...

    def adapt(
        self, x_support: np.ndarray, y_support: np.ndarray, steps: int | None = None
    ) -> Adapted:
        """Fit on x (S, window * F) and y (S,) realised pairs; leave the adapter unchanged.

        Raises:
            ConfigError: mismatched shapes, an empty support set or non-finite values.
        """
        ...


@runtime_checkable
class BatchAdapter(Adapter, Protocol):
    """An :class:`Adapter` that also adapts B support windows of equal length in one call
    (``metabt.learn.learner.MetaLearner.adapt_batch``)."""

    def adapt_batch(
        self, x_support: np.ndarray, y_support: np.ndarray, steps: int | None = None
    ) -> BatchAdapted:
        """Adapt to x (B, S, window * F) and y (B, S); task b's model equals
        ``adapt(x[b], y[b], steps)`` to float precision.

        Returns:
            A ``metabt.learn.kernels.batched.BatchAdapted``: ``predict_rows(x (B, F_in))``,
            ``model(b)``, ``loss_before`` and ``loss_after`` (B,), ``backend``.

        Raises:
            ConfigError: shapes that do not fit, B or S of 0, non-finite values.
        """
        ...
