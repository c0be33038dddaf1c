"""MAML and its variants: FOMAML, Meta-SGD (learned inner rates) and ANIL (head only).

One meta-gradient, computed by two engines: ``func`` (all tasks at once with
``torch.func``: ``grad`` inside ``vmap``; PyTorch docs, "torch.func", the MAML example) and
``higher`` (one ``higher.innerloop_ctx`` per task, the reference; Grefenstette et al.
2019). :class:`MamlFamily` is MAML (``second_order=True``) and FOMAML (False);
:class:`MetaSgdFamily` adds meta-learned inner rates, :class:`AnilFamily` adapts only the
head.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from metabt.learn.adapted import AdaptedModel
from metabt.learn.algorithms.base import Extra, Learner
from metabt.learn.algorithms.gradient import GradientFamily
from metabt.learn.algorithms.inner import (
    TaskFn,
    adapt_head,
    head_query_loss,
    partial_query_loss,
    prediction,
    query_losses,
    support_objective,
)
from metabt.learn.kernels.batched import BatchAdapted, head_batch
from metabt.learn.kernels.fused import FastKernel

# TaskLoss: Learner's loss field, named in this module's dataclass __init__ (get_type_hints)
from metabt.learn.losses import TaskLoss, is_pooled  # noqa: F401
from metabt.learn.models import MetaModel, find_head

__all__ = ["AnilFamily", "MamlFamily", "MetaSgdFamily"]


@dataclass(frozen=True, kw_only=True)
class MamlFamily(GradientFamily):
    """MAML (``maml``) and first-order MAML (``fomaml``): the meta-gradient of the query loss
    after ``inner_steps`` steps of gradient descent on the support MSE.

    Args:
        second_order: differentiate through the inner loop (MAML); False treats the inner
            gradients as constants (FOMAML, Finn et al. 2017, section 5.2). Default True.
        loss: the query loss (:class:`metabt.learn.losses.TaskLoss`). Default MSE.

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks"; Grefenstette et al. 2019, "Generalized Inner Loop Meta-Learning"
        (``higher``); PyTorch docs, "torch.func" (the MAML example).
    """

    second_order: bool = True
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
        """Update θ (and learned rates) by the meta-gradient; returns the mean query loss."""
        if learner.engine == "func":
            return self._func(learner, xs, ys, xq, yq, extra)
        if is_pooled(self.loss):
            return self._higher_pooled(learner, xs, ys, xq, yq, extra)
        return self._higher(learner, xs, ys, xq, yq)

    def _func(
        self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, extra: Extra
    ) -> float:
        params = dict(learner.model.named_parameters())
        lrs: dict[str, Tensor | float] = {
            n: (learner.inner_lrs[n] if learner.inner_lrs else learner.inner_lr)
            for n in learner.adapt_names
        }
        task_loss = self._task_loss(
            learner, params, lrs, learner.inner_steps, first_order=not self.second_order
        )
        batch = (xs, ys, xq, yq, *self.support_extra(extra))
        loss = self.batch_loss(query_losses(task_loss, batch), yq, extra)
        learner.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        learner.optimizer.step()
        return float(loss.detach())

    @staticmethod
    def _inner_optimizer(learner: Learner) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
        params = dict(learner.model.named_parameters())
        groups = [{"params": [params[n]]} for n in learner.adapt_names]
        override: dict[str, Any] = {}
        if learner.inner_lrs:
            override = {"lr": [learner.inner_lrs[n] for n in learner.adapt_names]}
        return torch.optim.SGD(groups, lr=learner.inner_lr), override

    def _adapted(
        self, learner: Learner, xs: Tensor, ys: Tensor, support: tuple[Tensor, ...] = ()
    ) -> Iterator[nn.Module]:
        """Each task's adapted functional model (``higher``), its inner loop run on the
        support (its MSE, or the P&L of its path given the support extras ``support``):
        valid until the next one is drawn (the reference engine, one task at a time;
        second order unless the family is first order)."""
        import higher

        inner_opt, override = self._inner_optimizer(learner)
        model = learner.model
        for b in range(xs.shape[0]):
            inner = support_objective(self.inner_loss, tuple(e[b] for e in support))
            with higher.innerloop_ctx(
                model,
                inner_opt,
                copy_initial_weights=False,
                track_higher_grads=self.second_order,
                override=override or None,
            ) as (fmodel, diffopt):
                for _ in range(learner.inner_steps):
                    diffopt.step(inner(prediction(fmodel(xs[b]), xs[b], model), ys[b]))
                yield fmodel

    def _higher(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        batch = xs.shape[0]
        theta = list(learner.model.parameters())
        learner.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for b, fmodel in enumerate(self._adapted(learner, xs, ys)):
            query_loss = self.loss(prediction(fmodel(xq[b]), xq[b], learner.model), yq[b])
            if self.second_order:
                (query_loss / batch).backward()
            else:
                grads = torch.autograd.grad(query_loss, list(fmodel.parameters()))
                for p, g in zip(theta, grads):
                    p.grad = g / batch if p.grad is None else p.grad + g / batch
            total += float(query_loss.detach())
        learner.optimizer.step()
        return total / batch

    def _higher_pooled(
        self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, extra: Extra
    ) -> float:
        """The "higher" engine for a pooled loss: every task's adapted query predictions,
        then one loss of the whole batch and one backward pass (first order: its gradient
        with respect to each task's adapted weights, summed into θ's, and with respect to
        a learned partial-adjustment rate, which the query loss reads directly)."""
        theta = list(learner.model.parameters())
        learner.optimizer.zero_grad(set_to_none=True)
        preds, fast = [], []
        support = self.support_extra(extra)
        for b, fmodel in enumerate(self._adapted(learner, xs, ys, support)):
            preds.append(prediction(fmodel(xq[b]), xq[b], learner.model))
            fast.append(list(fmodel.parameters()))
        loss = self.loss.batch_mean(torch.stack(preds), yq, extra)
        if self.second_order:
            loss.backward()
        else:
            adjust = getattr(self.loss, "adjust", None)
            rates = [] if adjust is None else list(adjust.parameters())
            flat = [p for ps in fast for p in ps]
            grads = torch.autograd.grad(loss, flat + rates, allow_unused=True)
            n = len(theta)
            for b in range(len(fast)):
                for p, g in zip(theta, grads[b * n : (b + 1) * n]):
                    if g is not None:
                        p.grad = g.clone() if p.grad is None else p.grad + g
            for p, g in zip(rates, grads[len(flat) :]):
                if g is not None:
                    p.grad = g.clone()
        learner.optimizer.step()
        return float(loss.detach())


@dataclass(frozen=True, kw_only=True)
class MetaSgdFamily(MamlFamily):
    """Meta-SGD (``metasgd``): MAML with a meta-learned inner rate per parameter entry.

    The rates start at ``inner_lr`` (``MetaLearner.inner_lrs``) and are updated by the
    outer optimizer with θ; the inner loop multiplies each gradient entry by its rate.

    References:
        Li, Zhou, Chen, Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
        Learning".
    """

    def inner_rates(
        self, model: nn.Module, names: tuple[str, ...], inner_lr: float
    ) -> dict[str, nn.Parameter]:
        """One rate per entry of each adapted parameter, all ``inner_lr`` at the start."""
        params = dict(model.named_parameters())
        return {n: nn.Parameter(torch.full_like(params[n].detach(), inner_lr)) for n in names}


@dataclass(frozen=True, kw_only=True)
class AnilFamily(MamlFamily):
    """ANIL (``anil``): MAML whose inner loop adapts only the output head.

    The head is metabt's models' ``head``, else the module's last ``nn.Linear`` or
    ``head``, or the submodule named by ``MetaLearner(head=...)``. On metabt's models the
    body runs once per task and the test-time head gradient is closed-form
    (``metabt.learn.algorithms.inner.adapt_head``); on any other module the whole forward
    pass runs with only the head adapted. The body is meta-learned through the adapted
    head.

    References:
        Raghu, Raghu, Bengio, Vinyals 2020, "Rapid Learning or Feature Reuse? Towards
        Understanding the Effectiveness of MAML".
    """

    def check_head(self, head: str | None) -> None:
        """Any ``head`` name is accepted here (checked by :meth:`adapt_names`)."""

    def adapt_names(self, model: nn.Module, head: str | None) -> tuple[str, ...]:
        """The parameters of the head submodule (``metabt.learn.models.find_head``).

        Raises:
            ConfigError: ``head`` names no submodule, or the model has no head.
        """
        prefix = find_head(model, head) + "."
        return tuple(n for n, _ in model.named_parameters() if n.startswith(prefix))

    @staticmethod
    def _fast_head(learner: Learner) -> MetaModel | None:
        """The model, when it is a metabt model adapted at its own head (the fast paths)."""
        model = learner.model
        if isinstance(model, MetaModel) and learner.adapt_names == model.head_names:
            return model
        return None

    def _adapt(
        self, learner: Learner, x: np.ndarray, y: np.ndarray, steps: int, reference: bool
    ) -> AdaptedModel:
        """ANIL's closed-form head (the body once) on metabt's own head, else the module
        runner (the head adapted through the whole forward pass), else autograd."""
        model = None if reference else self._fast_head(learner)
        if model is None:
            fast = None if reference else self._adapt_module(learner, x, y, steps)
            return self._adapt_autograd(learner, x, y, steps) if fast is None else fast
        theta = {k: v.detach() for k, v in learner._named_params}
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        before, after, phi = adapt_head(model, theta, learner._numpy_lrs(), xt, yt, steps)
        return AdaptedModel(
            model.forward_with,
            phi,
            loss_before=before,
            loss_after=after,
            steps=steps,
            forward_numpy=learner._forward_numpy,
            backend="head",
        )

    def _adapt_many(
        self,
        learner: Learner,
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
        kernel: FastKernel | None,
    ) -> BatchAdapted:
        """The closed-form head over batched body features, else ``torch.func.vmap``."""
        detached = {k: v.detach() for k, v in learner._named_params}
        model = self._fast_head(learner)
        if model is not None:
            return head_batch(model, detached, learner._numpy_lrs(), x, y, steps, kernel)
        return self._vmap_many(learner, x, y, steps)

    def _task_loss(
        self,
        learner: Learner,
        params: Mapping[str, Tensor],
        lrs: Mapping[str, Tensor | float],
        steps: int,
        *,
        first_order: bool,
    ) -> TaskFn:
        """One task's query loss after adapting the head only."""
        model, loss, inner = self._fast_head(learner), self.per_task, self.inner_loss
        if model is not None:
            head_model = model

            def head_task(
                xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, *support: Tensor
            ) -> Tensor:
                task = (xs, ys, xq, yq)
                return head_query_loss(
                    head_model,
                    params,
                    lrs,
                    steps,
                    task,
                    first_order=first_order,
                    loss=loss,
                    inner=support_objective(inner, support),
                )

            return head_task
        forward, names = learner.forward_with, learner.adapt_names

        def partial_task(
            xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, *support: Tensor
        ) -> Tensor:
            task = (xs, ys, xq, yq)
            return partial_query_loss(
                forward,
                params,
                names,
                lrs,
                steps,
                task,
                first_order=first_order,
                loss=loss,
                inner=support_objective(inner, support),
            )

        return partial_task
