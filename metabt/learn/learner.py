"""MetaLearner: meta-trains θ with one learner family (MAML, ..., CAVIA) and adapts it.

The learner knows nothing of backtrader or finance: it meta-trains an initialisation θ of a
small regression model on batches of support/query tasks and adapts θ to new support data.

Two engines compute the same meta-gradient:

* ``higher``: one ``higher.innerloop_ctx`` per task, the reference implementation
  (Grefenstette et al. 2019);
* ``func``: all tasks of a batch at once with ``torch.func`` (``grad`` inside ``vmap``,
  parameters passed explicitly), several times faster on small models.

``engine="auto"`` picks ``func`` for any module that ``torch.func.vmap`` can batch (a trial
call, ``metabt.learn.algorithms.engines.vmap_failure``), else ``higher`` with a warning. Any
``torch.nn.Module`` mapping (N, F_in) to (N,) or (N, 1) is a model; metabt's own MLP and
GRU, and a user's ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations, also
get fused NumPy inner loops at test time, chosen automatically; any other module adapts on
a private copy of itself with one torch thread
(``metabt.learn.algorithms.inner.ModuleRunner``).

What an algorithm does (outer step, test-time adaptation, evaluation, the models it runs
on) is its learner family's (``metabt.learn.algorithms``, one family per module), which
the learner delegates to; the inner loops are in ``metabt.learn.algorithms.inner``, the
NumPy kernels in ``metabt.learn.kernels.fused``, batched test-time adaptation in
``metabt.learn.kernels.batched``, the training loop in ``metabt.learn.training``, files in
``metabt.learn.checkpoint``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from metabt._trust import trust
from metabt.errors import ConfigError
from metabt.learn.adapted import AdaptedModel
from metabt.learn.algorithms import (
    ALGORITHMS,
    ENGINES,
    LearnerFamily,
    family_for,
    family_path,
    is_family_path,
    resolve_engine,
)
from metabt.learn.algorithms.base import Extra
from metabt.learn.algorithms.inner import prediction
from metabt.learn.checkpoint import load_learner, save_learner
from metabt.learn.kernels.batched import BatchAdapted, batch_support_arrays
from metabt.learn.kernels.fused import FoldCache, Folded, kernel_for
from metabt.learn.losses import SUPPORT_EXTRAS, AdjustRate, PnLLoss, TaskLoss, is_pooled
from metabt.learn.models import MetaModel, check_row_independent
from metabt.learn.models import check_saveable as _check_saveable
from metabt.learn.names import check_algorithm, default_inner_lr
from metabt.learn.training import Batch, FitResult, TaskSource, as_batch
from metabt.learn.training import fit as _fit

if TYPE_CHECKING:
    from metabt.learn.spec import FeatureSpecLike

__all__ = ["ALGORITHMS", "AdaptedModel", "BatchAdapted", "ENGINES", "FitResult", "MetaLearner"]

_Array = Tensor | np.ndarray  # a tensor or an ndarray (converted to θ's dtype)


def _steps(steps: int | None, default: int) -> int:
    """Inner steps of one adaptation: ``steps``, or ``default`` when None; ConfigError if < 0."""
    steps = default if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
    return steps


class MetaLearner:
    """Meta-learns an initialisation θ of a regression model and adapts it to new tasks.

    A task is a support set (xs, ys) and a query set (xq, yq) from the same regime. The
    inner loop adapts θ to the support set with ``inner_steps`` steps of gradient descent
    (learning rate ``inner_lr``) on the mean squared error; the outer loop (Adam, learning
    rate ``meta_lr``) moves θ so that the adapted model does well on the query set.

    Algorithms (``metabt.learn.algorithms.FAMILIES``, one learner family each):
        ``maml``: second-order MAML (Finn et al. 2017).
        ``fomaml``: first-order MAML (Finn et al. 2017, section 5.2).
        ``metasgd``: MAML with a learned per-parameter inner learning rate (Li et al. 2017).
        ``anil``: only the output head is adapted in the inner loop (Raghu et al. 2020):
            metabt's models' ``head``, else the module's last ``nn.Linear`` or ``head``.
        ``reptile``: moves θ towards the task-adapted weights (Nichol et al. 2018).
        ``erm``: non-meta baseline, ordinary joint training on all tasks' data; the same
            fine-tuning at test time.
        ``scratch``: non-meta baseline, no training; fine-tunes a random initialisation.
        ``cnp`` (Garnelo et al. 2018), ``protonet`` (Snell et al. 2017), ``cavia``
            (Zintgraf et al. 2019): the other families on their own models; they adapt by
            encoding, prototypes, or a task context.
        Your own: a :class:`metabt.LearnerFamily` subclass, as the class or its import path
            ``"package.module:ClassName"`` (``examples/imaml.py`` is one).

    Args:
        model: a :class:`metabt.learn.models.MetaModel` (MLP or GRU), or any ``nn.Module``
            mapping (N, F_in) -> (N,) or (N, 1); to be saved, build it with
            :func:`metabt.learn.models.user_model` (an import path and JSON kwargs).
        algorithm: one of ``ALGORITHMS``. Default "maml". Or a user's learner family (a
            concrete :class:`metabt.LearnerFamily` subclass, built as ``cls()``): the class
            itself, or its import path ``"package.module:ClassName"``. Naming either here
            trusts its module (:func:`metabt.trust`), as ``user_model`` does, so a checkpoint
            of this learner loads again in this process; a checkpoint records the path, and
            loading it elsewhere imports the module only if it is trusted there.
        inner_lr: inner-loop learning rate (initial value for metasgd). Default None: the
            algorithm's (``metabt.learn.names.default_inner_lr``: 0.02, 1.0 for cavia), as
            on the command line.
        inner_steps: inner-loop gradient steps per adaptation. Default 5.
        meta_lr: outer-loop Adam learning rate. Default 1e-3.
        engine: "auto", "higher" or "func". Default "auto" ("func" unless vmap cannot
            batch the model).
        seed: seed of the task-sampling generator used by :meth:`fit`. Default 0.
        feature_spec: the ``FeatureSpec`` the model's inputs come from (saved with it).
        head: anil only: name of the submodule the inner loop adapts (as in
            ``named_modules()``); None takes metabt's ``head`` or the last ``nn.Linear``.
        loss: the outer loop's query loss and the validation objective
            (:class:`metabt.learn.losses.TaskLoss`); None is the MSE. An after-cost P&L
            objective is :class:`metabt.learn.losses.PnLLoss` (``objective="sharpe"``): its
            task batches must carry each query row's returns and volatility
            (``TaskSampler.from_frames(..., extras=True)``). The inner loop descends the
            support MSE unless the loss's ``inner_objective`` is ``"same"`` (then its P&L
            on the support path in meta-training and validation, which needs the support
            rows' extras too; :meth:`adapt`, so the backtest, still descends the support
            MSE: it has no returns to earn). A P&L loss with
            ``partial_adjustment`` gets a learned rate κ (:attr:`adjust`), meta-learned
            with θ by the outer optimizer and never adapted by the inner loop; the families
            whose outer loop has no query-loss gradient (``reptile``, ``scratch``,
            ``protonet``) keep κ = 1. Saved with the learner.
        check_saveable: check at construction that :meth:`save` will be able to store the
            model (:func:`metabt.learn.models.check_saveable`: a metabt model, or a
            :func:`metabt.learn.models.user_model` of an importable class), so that an
            unsaveable model fails before a long :meth:`fit` rather than at :meth:`save`
            after it. Default True. False is for learners that are never saved (a quick
            experiment in a notebook, a test on a throwaway ``nn.Sequential``): such a
            learner works in full, and :meth:`save` raises ``CheckpointError`` then.

    Attributes:
        model, algorithm, inner_lr, inner_steps, meta_lr, engine (resolved), seed,
        feature_spec, head: as given. train_range: (first, last) training date or None.
        train_config: how it was trained (support, query, horizon, validation years,
            budget, untrained flag), set by ``metabt.experiments.roster.train_learner``; saved.
        step_count: outer steps taken. inner_lrs: metasgd's learned rates, name -> tensor.
        adjust: the learned partial-adjustment rate (``metabt.learn.losses.AdjustRate``),
            or None; :attr:`adjust_rate` is κ as a float.
        family: the algorithm's :class:`metabt.learn.algorithms.LearnerFamily`.

    Raises:
        ConfigError: unknown algorithm or engine (a family path or class that is not a
            concrete ``LearnerFamily`` subclass, or defined in ``__main__``), non-positive
            rates, negative steps, a model without parameters, with batch norm
            (``check_row_independent``) or a wrong output shape, a model that cannot be
            saved (defined in ``__main__`` or inside a function, or not built by
            ``user_model``; unless ``check_saveable=False``), "func" for a model vmap
            cannot batch, ``head`` unknown or given without anil, anil without a head.

    Warns:
        UserWarning: engine "auto" fell back to "higher" (the model cannot be vmapped).

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks"; Li et al. 2017, "Meta-SGD"; Raghu et al. 2020, "Rapid Learning or
        Feature Reuse?"; Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning
        Algorithms"; Grefenstette et al. 2019, "Generalized Inner Loop Meta-Learning"
        (``higher``); PyTorch docs, "torch.func" (the MAML example).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        algorithm: str | type[LearnerFamily] = "maml",
        inner_lr: float | None = None,
        inner_steps: int = 5,
        meta_lr: float = 1e-3,
        engine: str = "auto",
        seed: int = 0,
        feature_spec: FeatureSpecLike | None = None,
        head: str | None = None,
        loss: TaskLoss | None = None,
        check_saveable: bool = True,
    ) -> None:
        if isinstance(algorithm, type):  # a user's family class: recorded by its import path
            self._family = family_for(algorithm, engine)
            name = family_path(algorithm)
            trust(name.partition(":")[0])  # named here: a checkpoint of it loads again
        else:
            name = algorithm
            if is_family_path(name):  # the user names the path here: trust its module
                trust(check_algorithm(name).partition(":")[0])
            self._family = family_for(name, engine)
        if loss is not None:
            if not isinstance(loss, TaskLoss):
                raise ConfigError(
                    f"loss must be a metabt.learn.losses.TaskLoss (e.g. PnLLoss(...)), got "
                    f"{type(loss).__name__}"
                )
            if loss.extras and not is_pooled(loss):
                raise ConfigError(
                    "a loss that reads extra per-row arrays must be pooled (pooled = True): "
                    "the families hand extras only to batch_mean"
                )
            if isinstance(loss, PnLLoss) and loss.adjust is not None:
                raise ConfigError(
                    "this PnLLoss is bound to another learner's adjust rate; pass a fresh "
                    "PnLLoss(..., partial_adjustment=True): each learner learns its own κ"
                )
            self._family = dataclasses.replace(self._family, loss=loss)
        self._family.check_head(head)
        if not any(True for _ in model.parameters()):
            raise ConfigError(f"model {type(model).__name__} has no parameters to learn")
        check_row_independent(model)
        if check_saveable:
            try:
                _check_saveable(model)
            except ConfigError as exc:
                raise ConfigError(
                    f"{exc} (MetaLearner checks this at construction, before a fit whose "
                    "result could not be saved; pass check_saveable=False for a learner that "
                    "is never saved)"
                ) from exc
        if inner_lr is None:
            inner_lr = default_inner_lr(name)
        for label, rate in (("inner_lr", inner_lr), ("meta_lr", meta_lr)):
            if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
                raise ConfigError(f"{label} must be a positive number, got {rate!r}")
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
            raise ConfigError(f"inner_steps must be an integer >= 0, got {inner_steps!r}")
        self.model = model
        self.algorithm = name
        self.inner_lr = float(inner_lr)
        self.inner_steps = inner_steps
        self.meta_lr = float(meta_lr)
        self.seed = int(seed)
        self.feature_spec = feature_spec
        self.head = head
        self.train_range: tuple[str, str] | None = None
        self.train_config: dict[str, Any] | None = None
        self.step_count = 0
        self.engine = resolve_engine(engine, model, self._family)
        self._named_params = list(model.named_parameters())
        kernel = kernel_for(model)  # the NumPy inner loop of metabt's models, else None
        self._fold_cache = None if kernel is None else FoldCache(kernel)
        self._forward_numpy = None if kernel is None else kernel.forward
        self._adapt_names = self._family.adapt_names(model, head)
        self.inner_lrs: dict[str, nn.Parameter] = self._family.inner_rates(
            model, self._adapt_names, self.inner_lr
        )
        self.adjust: AdjustRate | None = None
        task_loss = self._family.loss
        if isinstance(task_loss, PnLLoss):
            # what the family cannot learn is recorded as not done (and saved so): κ = 1
            # without a query-loss gradient, the support MSE without a P&L inner loop
            if task_loss.partial_adjustment and not self._family.learns_adjust_rate:
                task_loss = dataclasses.replace(task_loss, partial_adjustment=False)
            if task_loss.inner_objective != "mse" and not self._family.pnl_inner:
                task_loss = dataclasses.replace(task_loss, inner_objective="mse")
            if task_loss.partial_adjustment:
                self.adjust = AdjustRate(dtype=self.dtype)
                task_loss = dataclasses.replace(task_loss, adjust=self.adjust)
            self._family = dataclasses.replace(self._family, loss=task_loss)
        extra_params = [] if self.adjust is None else list(self.adjust.parameters())
        self._optimizer = torch.optim.Adam(
            [*model.parameters(), *self.inner_lrs.values(), *extra_params], lr=self.meta_lr
        )

    # ------------------------------------------------------------------ helpers
    @property
    def horizon(self) -> int | None:
        """Label horizon in bars, from the feature spec (None without one)."""
        return None if self.feature_spec is None else self.feature_spec.horizon

    @property
    def window(self) -> int:
        """Consecutive feature rows one model input holds (1 for the MLP)."""
        return int(getattr(self.model, "window", 1))

    @property
    def dtype(self) -> torch.dtype:
        """θ's dtype (torch.float32 unless the model was converted)."""
        return next(self.model.parameters()).dtype

    @property
    def adjust_rate(self) -> float:
        """κ, the partial-adjustment rate the learner's forecasts are traded at: the learned
        rate (:attr:`adjust`), else 1.0 (full adjustment to the aim every bar).

        ``metabt.strategies.meta.MetaStrategy`` trades at it (``SignalTrader``'s
        ``adjust_rate`` None), as the P&L loss trained with it."""
        return 1.0 if self.adjust is None else self.adjust.value()

    @property
    def family(self) -> LearnerFamily:
        """The algorithm's learner family (``metabt.learn.algorithms.FAMILIES[algorithm]``,
        or an instance of the user's family class)."""
        return self._family

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The outer-loop Adam optimizer over θ and ``inner_lrs`` (every outer step's update)."""
        return self._optimizer

    @property
    def adapt_names(self) -> tuple[str, ...]:
        """Names of the parameters the inner loop adapts: all of θ, or the head's for anil."""
        return self._adapt_names

    def forward_with(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The model's prediction with explicit parameters. x: (N, F_in) -> (N,), θ's dtype."""
        if isinstance(self.model, MetaModel):
            return self.model.forward_with(params, x)
        out = torch.func.functional_call(self.model, dict(params), (x,))
        return prediction(out, x, self.model)

    def _detached_lrs(self) -> dict[str, Tensor | float]:
        return {
            n: (self.inner_lrs[n].detach() if self.inner_lrs else self.inner_lr)
            for n in self._adapt_names
        }

    def _numpy_lrs(self) -> dict[str, np.ndarray | float]:
        if self.inner_lrs:
            return {n: self.inner_lrs[n].detach().numpy() for n in self._adapt_names}
        return {n: self.inner_lr for n in self._adapt_names}

    def _numpy_theta(self) -> dict[str, np.ndarray]:  # views, no copy: read only
        return {k: v.detach().numpy() for k, v in self._named_params}

    def _folded(self) -> Folded:
        """θ and the rates in the kernel's flat layout, from the fold cache."""
        assert self._fold_cache is not None
        tensors = [p for _, p in self._named_params]  # θ and rates: the fold cache's key
        tensors += [self.inner_lrs[n] for n in self._adapt_names] if self.inner_lrs else []
        return self._fold_cache.get(tensors, self.inner_lr, self._numpy_theta, self._numpy_lrs)

    # ----------------------------------------------------------------- outer loop
    def meta_step(
        self, xs: _Array, ys: _Array, xq: _Array, yq: _Array, extra: Extra = None
    ) -> float:
        """One outer-loop update of θ on a batch of tasks (the family's ``meta_step``).

        Args:
            xs: support inputs, (B, S, F_in) float (tensor or ndarray; cast to θ's dtype).
            ys: support labels, (B, S) float.
            xq: query inputs, (B, Q, F_in) float.
            yq: query labels, (B, Q) float.
            extra: the loss's per-row arrays, name -> (B, Q) (None for MSE).

        Returns:
            Mean over tasks of the query loss (the family's task loss, MSE) after inner-loop
            adaptation, before this update (for ``erm`` and ``scratch`` too, so that curves
            are comparable).

        Raises:
            ConfigError: if the shapes do not fit together.
        """
        xs, ys, xq, yq = as_batch(xs, ys, xq, yq, self.dtype)
        loss = self._family.meta_step(self, xs, ys, xq, yq, self._extra(extra, yq, ys))
        self.step_count += 1
        return loss

    # -------------------------------------------------------------- adaptation
    def adapt(
        self,
        x_support: Tensor | np.ndarray,
        y_support: Tensor | np.ndarray,
        steps: int | None = None,
        *,
        reference: bool = False,
    ) -> AdaptedModel:
        """Adapt θ to one support set; θ itself is left untouched (the family's ``adapt``).

        For the gradient families, plain gradient descent on the support MSE (learned
        per-parameter rates for metasgd, the head only for anil), with no graph kept between
        steps: this is the test-time inner loop that ``MetaStrategy`` runs inside the
        backtest. It runs on the cheapest exact path: the model's fused NumPy kernel
        (``metabt.learn.kernels.fused.kernel_for``: metabt's MLP and GRU, a user's
        ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations), a
        closed-form gradient of the linear head for ANIL on metabt's models (the body runs
        once), else, for any other module, ``torch.autograd`` on a private copy of it with
        one torch thread and predictions under ``torch.inference_mode``
        (``metabt.learn.algorithms.inner.ModuleRunner``, backend "module"). The paths
        agree to float64 precision (tested). CNP encodes the support set, ProtoNet builds its
        prototypes, CAVIA adapts its task context.

        Args:
            x_support: (S, F_in) float inputs (tensor or ndarray).
            y_support: (S,) float labels.
            steps: inner steps; None uses the learner's ``inner_steps``.
            reference: run the ``torch.autograd`` reference inner loop
                (``metabt.learn.algorithms.inner.adapt_autograd``) instead of the fast path;
                for tests and benchmarks. Default False.

        Returns:
            An :class:`AdaptedModel` mapping x (N, F_in) -> predictions (N,), with the
            support loss before and after adaptation.

        Raises:
            ConfigError: on mismatched shapes, an empty support set, non-finite values or
                a negative ``steps``.
        """
        steps = _steps(steps, self.inner_steps)
        return self._family.adapt(self, x_support, y_support, steps, reference=reference)

    def adapt_batch(
        self,
        x_support: _Array,
        y_support: _Array,
        steps: int | None = None,
        *,
        reference: bool = False,
    ) -> BatchAdapted:
        """Adapt θ to B support sets of equal length at once (``metabt.learn.kernels.batched``).

        Task b's model equals ``adapt(x_support[b], y_support[b], steps)`` to float
        precision, on the fused NumPy kernels over a task axis (MLP, GRU, a user's dense
        ``nn.Sequential``), ANIL's closed-form head, ``torch.func.vmap`` of the inner loop
        with one torch thread (other modules, "func" engine), or separate :meth:`adapt`
        calls (B = 1, the "higher" engine for a module vmap cannot batch, ``reference``).

        Args:
            x_support: (B, S, F_in) float inputs; y_support: (B, S) float labels. Support
                sets of different lengths go in separate calls, one per length.
            steps: inner steps; None uses ``inner_steps``.
            reference: separate reference :meth:`adapt` calls (tests, benchmarks).

        Returns:
            A :class:`BatchAdapted`: ``predict_rows(x (B, F_in)) -> (B,)``, ``model(i)``,
            ``loss_before``/``loss_after`` (B,).

        Raises:
            ConfigError: shapes that do not fit, B or S of 0, non-finite values, bad steps.
        """
        steps = _steps(steps, self.inner_steps)
        xn, yn = batch_support_arrays(x_support, y_support, self._named_params[0][1])
        return self._family.adapt_batch(self, xn, yn, steps, reference=reference)

    def evaluate(
        self,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        steps: int | None = None,
        extra: Extra = None,
    ) -> float:
        """Mean query loss after adapting to each task's support set; θ is not changed.

        Args:
            xs, ys, xq, yq: a task batch, shapes as in :meth:`meta_step`.
            steps: inner steps; None uses the learner's ``inner_steps``.
            extra: the loss's per-row arrays, name -> (B, Q) (None for MSE).

        Returns:
            Mean over tasks of the query loss (the family's task loss, MSE) after adaptation.

        Raises:
            ConfigError: if the shapes do not fit together.
        """
        xs, ys, xq, yq = as_batch(xs, ys, xq, yq, self.dtype)
        steps = self.inner_steps if steps is None else steps
        return self._family.evaluate(self, xs, ys, xq, yq, steps, self._extra(extra, yq, ys))

    @property
    def loss(self) -> TaskLoss:
        """The query loss the outer loop minimises and validation scores (the family's)."""
        return self._family.loss

    def _extra(
        self, extra: Extra, yq: Tensor, ys: Tensor | None = None
    ) -> dict[str, Tensor] | None:
        """The loss's extras as θ's-dtype tensors of yq's shape (and, for a P&L inner loop,
        the support rows' of ys's shape); ConfigError if missing."""
        names = self._family.loss.extras
        if not names:
            return None
        support = self._family.inner_loss is not None and ys is not None
        wanted = [*names, *(SUPPORT_EXTRAS if support else ())]
        if extra is None or any(k not in extra for k in wanted):
            raise ConfigError(
                f"the learner's loss needs per-row arrays {wanted} beside the task batch "
                f"(got {sorted(extra) if extra else 'none'}); build the tasks with "
                "TaskSampler.from_frames(..., extras=True)"
            )
        out = {k: torch.as_tensor(extra[k]).to(self.dtype) for k in wanted}
        for k, v in out.items():
            rows = ys if k in SUPPORT_EXTRAS else yq
            assert rows is not None
            if v.shape != rows.shape:
                which = "support" if k in SUPPORT_EXTRAS else "query"
                raise ConfigError(
                    f"extra {k!r} has shape {tuple(v.shape)}, the {which} labels "
                    f"{tuple(rows.shape)}"
                )
        return out

    # --------------------------------------------------- training and checkpoints
    def fit(
        self,
        tasks: TaskSource,
        steps: int,
        *,
        batch_size: int = 16,
        val_tasks: TaskSource | Batch | None = None,
        val_size: int = 64,
        val_every: int = 50,
        patience: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        resume: bool = True,
        progress: bool = True,
        val_steps: int | None = None,
    ) -> FitResult:
        """Meta-train: ``steps`` outer steps, each on ``batch_size`` tasks from ``tasks``.

        Runs :func:`metabt.learn.training.fit` on this learner: task batches from
        ``np.random.default_rng([seed, step])`` (a resumed run draws exactly the tasks an
        uninterrupted run would have drawn), keep-best validation, early stopping.

        Args:
            tasks: task sampler with ``sample(batch_size, rng)`` (a ``TaskSampler``).
            steps: total number of outer steps (a resumed run continues up to it).
            batch_size, val_tasks, val_size, val_every, patience, checkpoint, resume,
                progress, val_steps: as in :func:`metabt.learn.training.fit` (validation
                tasks: a sampler with ``fixed(n, seed)`` or a fixed batch; the θ with the
                lowest validation loss is kept, scored after ``val_steps`` inner steps;
                ``checkpoint`` is written every ``val_every`` steps).

        Returns:
            A :class:`FitResult`.

        Raises:
            ConfigError: bad arguments. CheckpointError: a checkpoint to resume from is
            corrupt or was written for another configuration.
        """
        return _fit(
            self,
            tasks,
            steps,
            batch_size=batch_size,
            val_tasks=val_tasks,
            val_size=val_size,
            val_every=val_every,
            patience=patience,
            checkpoint=checkpoint,
            resume=resume,
            progress=progress,
            val_steps=val_steps,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint atomically (:func:`metabt.learn.checkpoint.save_learner`).

        The checkpoint holds θ (and learned inner rates), the hyper-parameters, the model
        config, the feature spec, the training date range and package versions, all as
        tensors and plain Python values, so it loads with ``weights_only=True``.

        Args:
            path: destination file (parent folders are created).

        Returns:
            The path written.

        Raises:
            CheckpointError: the model is not a metabt model.
        """
        return save_learner(self, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        feature_spec: FeatureSpecLike | None = None,
        engine: str | None = None,
    ) -> MetaLearner:
        """Load a checkpoint written by :meth:`save` or :meth:`fit`, without unpickling code.

        Args:
            path: checkpoint file.
            feature_spec: if given, must equal the checkpoint's feature spec.
            engine: override the saved engine ("auto", "higher", "func").

        Returns:
            A MetaLearner with θ, hyper-parameters, feature spec and training range restored.

        Raises:
            CheckpointError: missing, corrupt or truncated file; not a metabt checkpoint; a
                newer format version; a model or feature spec that does not match.
        """
        return load_learner(cls, path, feature_spec=feature_spec, engine=engine)

    def __repr__(self) -> str:
        return (
            f"MetaLearner(algorithm={self.algorithm!r}, engine={self.engine!r}, "
            f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
            f"meta_lr={self.meta_lr}, model={type(self.model).__name__})"
        )
