"""The non-meta baselines: ERM (joint training on every task's rows) and scratch (no training).

Both are fine-tuned at test time like the meta-learners (:class:`GradientFamily`'s
adaptation), so they measure what meta-learning adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from metabt.learn.algorithms.base import Extra, Learner
from metabt.learn.algorithms.gradient import GradientFamily
from metabt.learn.algorithms.inner import prediction

# TaskLoss: Learner's loss field, named in this module's dataclass __init__ (get_type_hints)
from metabt.learn.losses import TaskLoss, is_pooled  # noqa: F401

__all__ = ["ErmFamily", "ScratchFamily"]


@dataclass(frozen=True, kw_only=True)
class ErmFamily(GradientFamily):
    """ERM (``erm``), the non-meta baseline: one joint gradient step on all tasks' rows.

    The step minimises the task loss's :meth:`~metabt.learn.losses.TaskLoss.batch_mean`
    on every task's support ∪ query rows, θ's prediction without adaptation (empirical
    risk minimisation over the pooled tasks).
    """

    def meta_step(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> float:
        """Joint training step; returns the mean query loss after adaptation (before it)."""
        loss = learner.evaluate(xs, ys, xq, yq, extra=extra)
        learner.optimizer.zero_grad(set_to_none=True)
        if is_pooled(self.loss):  # a path loss: θ's unadapted query paths, as it is scored
            x_q = xq.flatten(0, 1)
            pred = prediction(learner.model(x_q), x_q, learner.model).reshape(yq.shape)
            self.loss.batch_mean(pred, yq, extra).backward()
        else:
            x_all = torch.cat([xs, xq], 1).flatten(0, 1)
            joint = prediction(learner.model(x_all), x_all, learner.model)
            y_all = torch.cat([ys, yq], 1)
            self.loss.batch_mean(joint.reshape(y_all.shape), y_all).backward()
        learner.optimizer.step()
        return loss


@dataclass(frozen=True, kw_only=True)
class ScratchFamily(GradientFamily):
    """Scratch (``scratch``), the non-meta baseline: no training; fine-tunes the random
    initialisation at test time. ``fit`` runs no step (``updates_theta`` is False)."""

    updates_theta: ClassVar[bool] = False
    learns_adjust_rate: ClassVar[bool] = False

    def meta_step(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> float:
        """θ is not changed; returns the mean query loss after adaptation."""
        return learner.evaluate(xs, ys, xq, yq, extra=extra)
