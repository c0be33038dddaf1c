"""The gradient families' shared base: test-time adaptation by gradient descent on θ.

MAML, FOMAML, Meta-SGD, ANIL (``metabt.learn.algorithms.maml``), Reptile
(``metabt.learn.algorithms.reptile``), ERM and scratch (``metabt.learn.algorithms.erm``)
differ in their outer update only: at test time each takes ``steps`` steps of gradient
descent on the support MSE from θ (Finn et al. 2017, eq. 1), on the cheapest exact path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metabt.learn.adapted import AdaptedModel, support_arrays
from metabt.learn.algorithms.base import Extra, Learner, LearnerFamily
from metabt.learn.algorithms.inner import (
    TaskFn,
    adapt_autograd,
    module_runner,
    query_loss,
    query_losses,
    support_objective,
    vmap_batch,
)
from metabt.learn.kernels.batched import BatchAdapted, kernel_batch, stack_adapted
from metabt.learn.kernels.fused import FastKernel, as_batch_kernel

__all__ = ["GradientFamily", "VMAP_MIN_TASKS"]

#: Fewest tasks that ``adapt_batch`` batches with ``torch.func.vmap`` (a module without a
#: NumPy kernel); fewer adapt one at a time on the module runner. ``vmap`` traces the inner
#: loop on every call: for a user Conv1d and GRU (window 10, support 60, 5 steps, one
#: thread) 2 tasks took 25 and 74 ms batched against 13 and 52 ms one at a time, 8 tasks
#: 16 and 122 ms against 37 and 171 ms (``benchmarks/README.md``).
VMAP_MIN_TASKS = 4


@dataclass(frozen=True, kw_only=True)
class GradientFamily(LearnerFamily):
    """A family whose test-time adaptation is gradient descent on θ's adapted parameters.

    :meth:`adapt` runs the model's fused NumPy kernel (``metabt.learn.kernels.fused``)
    when it has one, else the reference's update on a private copy of the module
    (``metabt.learn.algorithms.inner.ModuleRunner``), else (``reference``, or a module
    ``copy.deepcopy`` refuses) the ``torch.autograd`` reference
    (``metabt.learn.algorithms.inner.adapt_autograd``); :meth:`adapt_batch` the kernel's
    task axis, else ``torch.func.vmap`` of the inner loop, else (the "higher" engine: a
    module vmap cannot batch) one :meth:`adapt` per task; :meth:`evaluate` (engine
    "func") all tasks at once with ``vmap``. Subclasses (ANIL) change the paths through
    :meth:`_adapt`, :meth:`_adapt_many` and :meth:`_task_loss`. The paths agree to float64
    precision (tested).

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks", eq. 1; Li et al. 2017, "Meta-SGD".
    """

    # -------------------------------------------------------------- one support set
    def adapt(
        self,
        learner: Learner,
        x: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        steps: int,
        *,
        reference: bool = False,
    ) -> AdaptedModel:
        """``steps`` steps of gradient descent on the support MSE of x (S, F_in), y (S,).

        The learned per-parameter rates for Meta-SGD, the adapted parameters only
        (``learner.adapt_names``), no graph kept between steps; ``reference`` runs the
        ``torch.autograd`` reference instead of a fast path.

        Raises:
            ConfigError: mismatched shapes, an empty support set or non-finite values.
        """
        xn, yn = support_arrays(x, y, learner._named_params[0][1])
        return self._adapt(learner, xn, yn, steps, reference)

    def _adapt(
        self, learner: Learner, x: np.ndarray, y: np.ndarray, steps: int, reference: bool
    ) -> AdaptedModel:
        """The fused kernel when the model has one, else the module runner (not
        ``reference``); else, or for a module that cannot be copied, autograd."""
        cache = learner._fold_cache
        if cache is not None and not reference:
            before, after, phi_numpy = cache.kernel.adapt(*learner._folded(), x, y, steps)
            return AdaptedModel(
                learner.forward_with,
                None,
                loss_before=before,
                loss_after=after,
                steps=steps,
                forward_numpy=learner._forward_numpy,
                numpy_params=phi_numpy,
                backend="kernel",
            )
        if not reference:
            fast = self._adapt_module(learner, x, y, steps)
            if fast is not None:
                return fast
        return self._adapt_autograd(learner, x, y, steps)

    @staticmethod
    def _adapt_module(
        learner: Learner, x: np.ndarray, y: np.ndarray, steps: int
    ) -> AdaptedModel | None:
        """The fast path of any module (``metabt.learn.algorithms.inner.ModuleRunner``):
        the reference's update on a private copy of the module, one torch thread;
        backend "module". None when the module cannot be copied."""
        runner = module_runner(learner.model)
        if runner is None:
            return None
        theta = {k: v.detach() for k, v in learner._named_params}
        before, after, phi = runner.adapt(theta, learner._detached_lrs(), x, y, steps)
        return AdaptedModel(
            learner.forward_with,
            phi,
            loss_before=before,
            loss_after=after,
            steps=steps,
            backend="module",
            forward_rows=runner.forward_rows,
        )

    @staticmethod
    def _adapt_autograd(learner: Learner, x: np.ndarray, y: np.ndarray, steps: int) -> AdaptedModel:
        """The ``torch.autograd`` reference inner loop (any model); backend "autograd"."""
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        theta = {k: v.detach() for k, v in learner._named_params}
        lrs = learner._detached_lrs()
        before, after, phi = adapt_autograd(learner.forward_with, theta, lrs, xt, yt, steps)
        return AdaptedModel(
            learner.forward_with, phi, loss_before=before, loss_after=after, steps=steps
        )

    # ------------------------------------------------------------ B support sets
    def adapt_batch(
        self,
        learner: Learner,
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
        *,
        reference: bool = False,
    ) -> BatchAdapted:
        """B support sets at once: x (B, S, F_in), y (B, S) ndarrays of θ's dtype (checked).

        One :meth:`adapt` per task for ``reference``, B = 1, or the "higher" engine
        without a fused kernel (a model ``vmap`` may not batch); else :meth:`_adapt_many`.
        """
        cache = learner._fold_cache
        kernel = None if cache is None else cache.kernel
        if reference or len(x) == 1 or (learner.engine == "higher" and kernel is None):
            return super().adapt_batch(learner, x, y, steps, reference=reference)
        return self._adapt_many(learner, x, y, steps, kernel)

    def _adapt_many(
        self,
        learner: Learner,
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
        kernel: FastKernel | None,
    ) -> BatchAdapted:
        """The kernel's task axis (a ``BatchKernel``), else ``torch.func.vmap``."""
        many = as_batch_kernel(kernel)
        if many is not None:
            return kernel_batch(many, learner.forward_with, learner._folded(), x, y, steps)
        return self._vmap_many(learner, x, y, steps)

    @staticmethod
    def _vmap_many(learner: Learner, x: np.ndarray, y: np.ndarray, steps: int) -> BatchAdapted:
        """``torch.func.vmap`` of the inner loop over the B tasks, one torch thread
        (``metabt.learn.algorithms.inner.vmap_batch``); each task's model predicts on the
        module runner. Fewer than :data:`VMAP_MIN_TASKS` tasks: one fast :meth:`adapt` per
        task (backend "loop"), which costs less than ``vmap``'s overhead there."""
        runner = module_runner(learner.model)
        if runner is not None and len(x) < VMAP_MIN_TASKS:
            tasks = [learner.adapt(xb, yb, steps) for xb, yb in zip(x, y)]
            return stack_adapted(tasks, x.dtype)
        detached = {k: v.detach() for k, v in learner._named_params}
        rows = None if runner is None else runner.forward_rows
        lrs = learner._detached_lrs()
        return vmap_batch(learner.forward_with, detached, lrs, x, y, steps, rows)

    # ------------------------------------------------------------------ evaluation
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
        """Mean query loss after ``steps`` inner steps per task; θ is not changed.

        Engine "func": every task at once (:func:`metabt.learn.algorithms.inner.query_losses`,
        first order, no graph); "higher": one :meth:`adapt` per task, or, for a P&L inner
        loop (:attr:`inner_loss`), the same per-task function as "func", one task at a time.
        """
        support = self.support_extra(extra)
        if learner.engine != "func" and not support:
            return super().evaluate(learner, xs, ys, xq, yq, steps, extra)
        params = {k: v.detach() for k, v in learner.model.named_parameters()}
        lrs = learner._detached_lrs()
        with torch.no_grad():
            task_loss = self._task_loss(learner, params, lrs, steps, first_order=True)
            batch = (xs, ys, xq, yq, *support)
            if learner.engine == "func":
                per_task = query_losses(task_loss, batch)
            else:  # a model vmap cannot batch: one task at a time
                per_task = torch.stack([task_loss(*(t[b] for t in batch)) for b in range(len(xs))])
            return float(self.batch_loss(per_task, yq, extra))

    def _task_loss(
        self,
        learner: Learner,
        params: Mapping[str, Tensor],
        lrs: Mapping[str, Tensor | float],
        steps: int,
        *,
        first_order: bool,
    ) -> TaskFn:
        """One task's query loss after adapting every parameter (vmapped over tasks).

        Args:
            learner: supplies ``forward_with``.
            params: θ, name -> tensor (with autograd history for a meta-gradient).
            lrs: inner rate of each adapted parameter (keys: ``learner.adapt_names``).
            steps: inner steps. first_order: treat the inner gradients as constants.

        The function returned takes a task's support extras after (xs, ys, xq, yq) when the
        inner loop descends a P&L loss (:meth:`support_extra`).
        """
        forward, loss, inner = learner.forward_with, self.per_task, self.inner_loss

        def task_loss(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, *support: Tensor) -> Tensor:
            task = (xs, ys, xq, yq)
            return query_loss(
                forward,
                params,
                lrs,
                steps,
                task,
                first_order=first_order,
                loss=loss,
                inner=support_objective(inner, support),
            )

        return task_loss
