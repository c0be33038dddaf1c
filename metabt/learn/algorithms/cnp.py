"""Conditional neural processes: one forward pass from the support pairs to the query labels."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
from torch import Tensor

from metabt.learn.adapted import AdaptedModel, support_arrays
from metabt.learn.algorithms.base import Extra, Learner, PairedFamily, update_theta

# TaskLoss: Learner's loss field, named in this module's dataclass __init__ (get_type_hints)
from metabt.learn.losses import TaskLoss  # noqa: F401
from metabt.learn.models import CNP

__all__ = ["CnpFamily"]


@dataclass(frozen=True, kw_only=True)
class CnpFamily(PairedFamily):
    """Conditional neural process (``cnp``): one forward pass from support to query labels.

    Meta-training minimises the query loss (MSE by default) of
    ``CNP.predict_with(θ, xs, ys, xq)`` by ordinary backpropagation (no inner loop: any
    engine name is accepted). At test time "adaptation" is encoding the support set
    (``steps`` is always 0, θ is untouched): ``loss_before`` is the support MSE with the
    zero context (the unconditional prediction), ``loss_after`` the support MSE given the
    encoded support set.

    References:
        Garnelo et al. 2018, "Conditional Neural Processes"; Kim et al. 2019, "Attentive
        Neural Processes".
    """

    model_type: ClassVar[str | None] = "cnp"

    def meta_step(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> float:
        """Update θ on the query loss; returns it (before the update)."""
        model = self._model(learner, CNP)
        pred = model.predict_with(dict(model.named_parameters()), xs, ys, xq)
        return update_theta(learner, self.loss.batch_mean(pred, yq, extra))

    def adapt(
        self,
        learner: Learner,
        x: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        steps: int,
        *,
        reference: bool = False,
    ) -> AdaptedModel:
        """Encode one support set (x (S, F), y (S,)); ``steps`` is ignored (0 taken).

        Runs in NumPy (``CNP.encode_numpy``, ``CNP.forward_numpy``: the per-bar
        ``predict_row`` of ``MetaStrategy`` too), from a copy of θ refreshed only when θ
        changes; equal to the torch forward (``CNP.encode_with``, ``decode_with``) to float
        precision, tested in float64. ``params`` and calling the model (``evaluate``) use
        the torch forward on the same arrays; ``reference`` changes nothing.
        """
        model = self._model(learner, CNP)
        theta = model.numpy_theta()
        xn, yn = support_arrays(x, y, next(iter(theta.values())))
        context, before, after, fold = model.encode_numpy(theta, xn, yn)
        return AdaptedModel(
            model.forward_with,
            None,
            loss_before=before,
            loss_after=after,
            steps=0,
            forward_numpy=partial(model.forward_folded_numpy, fold=fold),
            numpy_params={**theta, **context},
            backend="encoder",
        )
