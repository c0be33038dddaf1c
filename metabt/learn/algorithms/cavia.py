"""CAVIA: only a task context φ is adapted in the inner loop; the network θ is shared."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from metabt.learn.adapted import AdaptedModel, support_arrays
from metabt.learn.algorithms.base import Extra, Learner, PairedFamily, theta_of, update_theta
from metabt.learn.algorithms.inner import SupportLoss, support_objective

# TaskLoss: Learner's loss field, named in this module's dataclass __init__ (get_type_hints)
from metabt.learn.losses import TaskLoss, is_pooled, mse  # noqa: F401
from metabt.learn.models import CaviaMLP

__all__ = ["CaviaFamily", "context_loop"]


def context_loop(
    model: CaviaMLP,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float,
    *,
    first_order: bool = False,
    loss: SupportLoss = mse,
) -> Tensor:
    """CAVIA's inner loop: φ ← φ − α ∇_φ mse(f_θ(x, φ), y), ``steps`` times from φ = 0.

    Written with ``torch.func.grad``, so it runs under ``vmap`` (one task per call) and is
    differentiable with respect to θ (second order) unless ``first_order``.

    Args:
        model: the CAVIA MLP. params: θ (with autograd history for a meta-gradient).
        x: (S, F) support inputs; y: (S,) labels. steps: inner steps (>= 0). lr: α.
        first_order: treat the inner gradients as constants.
        loss: the support loss (pred, y) -> () in place of the MSE (a P&L inner loop,
            ``metabt.learn.algorithms.inner.support_objective``). Default the MSE.

    Returns:
        φ, (C,) tensor of θ's dtype.

    References:
        Zintgraf et al. 2019, "Fast Context Adaptation via Meta-Learning", algorithm 1.
    """
    key = CaviaMLP.CONTEXT_KEY

    def support_loss(context: Tensor) -> Tensor:
        return loss(model.forward_with({**params, key: context}, x), y)

    grad_fn = torch.func.grad(support_loss)
    context = x.new_zeros(model.context_size)
    for _ in range(steps):
        grad = grad_fn(context)
        context = context - lr * (grad.detach() if first_order else grad)
    return context


@dataclass(frozen=True, kw_only=True)
class CaviaFamily(PairedFamily):
    """CAVIA (``cavia``): only a task context φ is adapted in the inner loop; θ is shared.

    φ (``CaviaMLP.context_size`` dims, concatenated to the input) starts at 0 for every
    task and is not meta-learned; ``inner_steps`` steps of gradient descent at ``inner_lr``
    adapt it to the support set (the paper uses a large rate, ~1, since only φ moves), and
    θ is updated by the meta-gradient of the query loss (MSE by default) at the adapted φ.
    Engines: ``func`` (:func:`context_loop` inside ``vmap``, all tasks at once) and
    ``higher`` (one task at a time with ``torch.autograd.grad(create_graph=...)``, the
    reference) compute the same meta-gradient. At test time φ is adapted by
    ``torch.autograd`` (no graph kept) and is exposed as ``AdaptedModel.context``, a task
    embedding.

    Args:
        second_order: differentiate through the inner loop (default); False treats the
            inner gradients as constants (first-order CAVIA).
        loss: the query loss (:class:`metabt.learn.losses.TaskLoss`). Default MSE.

    References:
        Zintgraf, Shiarlis, Kurin, Hofmann, Whiteson 2019, "Fast Context Adaptation via
        Meta-Learning".
    """

    second_order: bool = True
    model_type: ClassVar[str | None] = "cavia"
    pnl_inner: ClassVar[bool] = True

    def meta_step(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> float:
        """Update θ by the meta-gradient; returns the mean query loss (before the update)."""
        model = self._model(learner, CaviaMLP)
        params = dict(model.named_parameters())
        support = self.support_extra(extra)
        if learner.engine == "func":
            task_loss = self._vmapped_loss(learner, model, params, not self.second_order)
            per_task = torch.func.vmap(task_loss)(xs, ys, xq, yq, *support)
            return update_theta(learner, self.batch_loss(per_task, yq, extra))
        learner.optimizer.zero_grad(set_to_none=True)
        if is_pooled(self.loss):
            preds = [
                self._task_loss(
                    learner, model, params, xs[b], ys[b], xq[b], yq[b], tuple(e[b] for e in support)
                )
                for b in range(xs.shape[0])
            ]
            return update_theta(learner, self.batch_loss(torch.stack(preds), yq, extra))
        total, batch = 0.0, xs.shape[0]
        for b in range(batch):
            loss = self._task_loss(learner, model, params, xs[b], ys[b], xq[b], yq[b])
            (loss / batch).backward()
            total += float(loss.detach())
        learner.optimizer.step()
        return total / batch

    def _vmapped_loss(
        self, learner: Learner, model: CaviaMLP, params: Mapping[str, Tensor], first_order: bool
    ) -> Callable[..., Tensor]:
        """One task's query loss, (xs, ys, xq, yq, *support extras) -> (), through
        :func:`context_loop` (``torch.func``: runs under ``vmap``)."""
        key, inner = CaviaMLP.CONTEXT_KEY, self.inner_loss

        def task_loss(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, *support: Tensor) -> Tensor:
            context = context_loop(
                model,
                params,
                xs,
                ys,
                learner.inner_steps,
                learner.inner_lr,
                first_order=first_order,
                loss=support_objective(inner, support),
            )
            return self.per_task(model.forward_with({**params, key: context}, xq), yq)

        return task_loss

    def evaluate(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        steps: int,
        extra: Extra = None,
    ) -> float:
        """The query loss after adapting φ to each support set (θ unchanged): one
        :meth:`adapt` per task, or, for a P&L inner loop, :func:`context_loop` on each
        task's support path (first order, no graph)."""
        support = self.support_extra(extra)
        if not support:
            return super().evaluate(learner, xs, ys, xq, yq, steps, extra)
        model = self._model(learner, CaviaMLP)
        theta = theta_of(model)
        key, inner = CaviaMLP.CONTEXT_KEY, self.inner_loss
        with torch.no_grad():
            per_task = []
            for b in range(xs.shape[0]):
                loss = support_objective(inner, tuple(e[b] for e in support))
                context = context_loop(
                    model, theta, xs[b], ys[b], steps, learner.inner_lr, first_order=True, loss=loss
                )
                per_task.append(
                    self.per_task(model.forward_with({**theta, key: context}, xq[b]), yq[b])
                )
            return float(self.batch_loss(torch.stack(per_task), yq, extra))

    def _task_loss(
        self,
        learner: Learner,
        model: CaviaMLP,
        params: Mapping[str, Tensor],
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        support: tuple[Tensor, ...] = (),
    ) -> Tensor:
        """One task's query loss, inner loop by ``torch.autograd`` (the reference engine),
        on the support MSE or, given the task's support extras, the P&L of its path."""
        key = CaviaMLP.CONTEXT_KEY
        inner = support_objective(self.inner_loss, support)
        context = xs.new_zeros(model.context_size, requires_grad=True)
        for _ in range(learner.inner_steps):
            loss = inner(model.forward_with({**params, key: context}, xs), ys)
            (grad,) = torch.autograd.grad(loss, context, create_graph=self.second_order)
            context = context - learner.inner_lr * grad
            if not self.second_order:
                context = context.detach().requires_grad_()
        return self.per_task(model.forward_with({**params, key: context}, xq), yq)

    def adapt(
        self,
        learner: Learner,
        x: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        steps: int,
        *,
        reference: bool = False,
    ) -> AdaptedModel:
        """Adapt φ to one support set (x (S, F), y (S,)) with ``steps`` gradient steps
        (``torch.autograd``, the only path: ``reference`` changes nothing)."""
        model = self._model(learner, CaviaMLP)
        theta = theta_of(model)
        xn, yn = support_arrays(x, y, next(iter(theta.values())))
        xt, yt = torch.from_numpy(xn), torch.from_numpy(yn)
        key, context = CaviaMLP.CONTEXT_KEY, xt.new_zeros(model.context_size)
        before = math.nan
        with torch.enable_grad():
            for i in range(steps):
                leaf = context.detach().requires_grad_()
                loss = mse(model.forward_with({**theta, key: leaf}, xt), yt)
                before = float(loss.detach()) if i == 0 else before
                (grad,) = torch.autograd.grad(loss, leaf)
                context = (leaf - learner.inner_lr * grad).detach()
        with torch.no_grad():
            after = float(mse(model.forward_with({**theta, key: context}, xt), yt))
        return AdaptedModel(
            model.forward_with,
            {**theta, key: context},
            loss_before=after if steps == 0 else before,
            loss_after=after,
            steps=steps,
            backend="context",
        )
