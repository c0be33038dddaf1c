"""Reptile: θ moves towards the weights adapted to each task (a first-order meta-update)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from metabt.learn.adapted import Params
from metabt.learn.algorithms.base import Extra, Learner
from metabt.learn.algorithms.gradient import GradientFamily
from metabt.learn.algorithms.inner import inner_loop

# TaskLoss: Learner's loss field, named in this module's dataclass __init__ (get_type_hints)
from metabt.learn.losses import TaskLoss  # noqa: F401

__all__ = ["ReptileFamily"]


@dataclass(frozen=True, kw_only=True)
class ReptileFamily(GradientFamily):
    """Reptile (``reptile``): θ ← θ + ε·mean_b(φ_b − θ), φ_b adapted on task b's support ∪ query.

    The pseudo-gradient θ − mean φ is handed to the outer optimizer (Adam), as in Nichol
    et al. 2018, section 5; φ_b comes from first-order SGD at the scalar ``inner_lr``
    (engine "func": all tasks at once with ``torch.func.vmap``; "higher": one
    ``MetaLearner.adapt`` per task). The loss returned is ``MetaLearner.evaluate``'s, before
    the update; the task loss does not enter the update.

    References:
        Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning Algorithms".
    """

    learns_adjust_rate: ClassVar[bool] = False  # the task loss does not enter the update

    def meta_step(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> float:
        """Move θ towards the task-adapted weights; returns the mean query loss."""
        loss = learner.evaluate(xs, ys, xq, yq, extra=extra)
        x_all, y_all = torch.cat([xs, xq], 1), torch.cat([ys, yq], 1)
        params = dict(learner.model.named_parameters())
        with torch.no_grad():
            if learner.engine == "func":
                theta = {k: v.detach() for k, v in params.items()}
                lrs: dict[str, Tensor | float] = {n: learner.inner_lr for n in params}

                def adapt_one(x: Tensor, y: Tensor) -> Params:
                    return inner_loop(
                        theta, learner.forward_with, x, y, learner.inner_steps, lrs, True
                    )

                phi = torch.func.vmap(adapt_one)(x_all, y_all)
                mean_phi = {k: v.mean(0) for k, v in phi.items()}
            else:
                sums = {k: torch.zeros_like(v) for k, v in params.items()}
                for b in range(x_all.shape[0]):
                    adapted = learner.adapt(x_all[b], y_all[b])
                    for k in sums:
                        sums[k] += adapted.params[k]
                mean_phi = {k: v / x_all.shape[0] for k, v in sums.items()}
        learner.optimizer.zero_grad(set_to_none=True)
        for k, p in params.items():
            p.grad = (p.detach() - mean_phi[k]).clone()
        learner.optimizer.step()
        return loss
