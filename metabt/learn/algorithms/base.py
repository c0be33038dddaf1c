"""The base of every learner family: what a family does for ``MetaLearner``, and what it reads.

A learner family is one meta-learning algorithm: its outer update (:meth:`meta_step`), its
test-time adaptation to one support set (:meth:`adapt`) and to B at once
(:meth:`adapt_batch`), its evaluation (:meth:`evaluate`) and the models it runs on
(:meth:`check_model`). ``metabt.learn.learner.MetaLearner`` holds one family, from the
registry ``metabt.learn.algorithms.FAMILIES``, and delegates to it.

Two branches derive from :class:`LearnerFamily`:

* ``metabt.learn.algorithms.gradient.GradientFamily``: test-time adaptation is gradient
  descent on θ (MAML, FOMAML, Meta-SGD, ANIL, Reptile, ERM, scratch), on any model whose
  ``paired_algorithm`` is None;
* :class:`PairedFamily`: a family with its own model and its own adaptation (CNP,
  ProtoNet, CAVIA).

These classes are public (``metabt.LearnerFamily``, ``metabt.GradientFamily``,
``metabt.Learner``, and in ``metabt.learn``): a user's own algorithm subclasses
:class:`LearnerFamily` in an importable module and is named by its import path
(``MetaLearner(algorithm="mypkg.fam:MyFamily")``, ``--algorithm mypkg.fam:MyFamily``);
``examples/imaml.py`` is a worked example.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from metabt.errors import ConfigError
from metabt.learn.adapted import AdaptedModel, Params
from metabt.learn.kernels.batched import BatchAdapted, stack_adapted
from metabt.learn.kernels.fused import FoldCache, Folded
from metabt.learn.losses import (
    MSE,
    PREDICTIONS,
    SUPPORT_EXTRAS,
    PnLLoss,
    TaskLoss,
    inner_loss_of,
    is_pooled,
)
from metabt.learn.models import MetaModel

__all__ = ["Extra", "Learner", "LearnerFamily", "PairedFamily", "theta_of", "update_theta"]

M = TypeVar("M", bound=MetaModel)


class Learner(Protocol):
    """What a family reads from its learner (``metabt.learn.learner.MetaLearner`` is one).

    Public, for user families (``metabt.Learner``): the attributes below, plus
    :meth:`forward_with` (predictions with explicit parameters, (N, F_in) -> (N,)),
    :meth:`adapt` (the learner's checked entry to the family's own ``adapt``; the default
    ``adapt_batch`` and ``evaluate`` call it) and :meth:`evaluate`.

    Attributes:
        model: the ``nn.Module`` holding θ; its parameters are what the optimizer updates
            (``model.named_parameters()`` gives θ by name, θ's dtype).
        engine: "higher" or "func" (resolved, never "auto"); a family may ignore it.
        inner_lr: scalar inner learning rate; inner_steps: inner steps per adaptation
            (the default of ``steps``).
        inner_lrs: learned per-parameter inner rates (Meta-SGD), else empty.
        optimizer: the outer-loop optimizer (Adam) over θ, ``inner_lrs`` and a learned
            partial-adjustment rate; ``meta_step`` steps it once.
        adapt_names: names of the parameters the inner loop adapts.

    The underscored members are ``MetaLearner``'s test-time caches, shared with its
    families (not public API): θ's (name, parameter) pairs, the fold cache of the model's
    fused NumPy kernel (``metabt.learn.kernels.fused``; None without a kernel), the
    kernel's NumPy forward pass, and the inner rates detached or as ndarrays.
    """

    @property
    def model(self) -> nn.Module: ...
    @property
    def engine(self) -> str: ...
    @property
    def inner_lr(self) -> float: ...
    @property
    def inner_steps(self) -> int: ...
    @property
    def inner_lrs(self) -> Mapping[str, nn.Parameter]: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def adapt_names(self) -> tuple[str, ...]: ...
    @property
    def _named_params(self) -> list[tuple[str, nn.Parameter]]: ...
    @property
    def _fold_cache(self) -> FoldCache | None: ...
    @property
    def _forward_numpy(
        self,
    ) -> Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray] | None: ...

    def forward_with(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Prediction with explicit parameters. x: (N, F_in) -> (N,)."""
        ...

    def adapt(
        self,
        x_support: Tensor | np.ndarray,
        y_support: Tensor | np.ndarray,
        steps: int | None = None,
        *,
        reference: bool = False,
    ) -> AdaptedModel:
        """Test-time adaptation to one support set."""
        ...

    def evaluate(
        self,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        steps: int | None = None,
        extra: Mapping[str, Tensor] | None = None,
    ) -> float:
        """Query loss after adaptation (mean over tasks, or pooled)."""
        ...

    def _detached_lrs(self) -> dict[str, Tensor | float]: ...
    def _numpy_lrs(self) -> dict[str, np.ndarray | float]: ...
    def _folded(self) -> Folded: ...


#: The per-row arrays of a task batch a loss reads (name -> (B, Q) tensor), or None.
Extra = Mapping[str, Tensor] | None


def theta_of(model: nn.Module) -> Params:
    """θ without autograd history: name -> detached parameter (no copy)."""
    return {k: v.detach() for k, v in model.named_parameters()}


def update_theta(learner: Learner, loss: Tensor) -> float:
    """One step of the learner's outer optimizer on ``loss`` (a () tensor); returns its value."""
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    learner.optimizer.step()
    return float(loss.detach())


@dataclass(frozen=True, kw_only=True)
class LearnerFamily(abc.ABC):
    """One meta-learning algorithm: outer update, test-time adaptation, evaluation, models.

    The base class of every learner family, built-in or the user's own. A family holds no
    learner state (θ, optimizer and caches live in the learner it is handed, read through
    the :class:`Learner` protocol), so one instance serves every learner of its
    algorithm; a subclass is a frozen, keyword-only dataclass
    (``@dataclass(frozen=True, kw_only=True)``) whose extra fields all have defaults
    (``MetaLearner`` builds it as ``cls()``, then sets :attr:`loss` with
    ``dataclasses.replace``).

    Shapes and dtypes: a task batch is xs (B, S, F_in), ys (B, S), xq (B, Q, F_in),
    yq (B, Q), torch tensors in θ's dtype (float32, or float64 for a converted model); one
    support set is x (S, F_in), y (S,), a tensor or an ndarray (convert it with
    :func:`metabt.learn.adapted.support_arrays`, which also checks it). ``extra`` maps
    the loss's per-row array names (:attr:`TaskLoss.extras`) to (B, Q) tensors, or is None
    for the MSE. Predictions of one model are (N,): use ``learner.forward_with(params, x)``.

    A user family must implement:

    * :meth:`meta_step` (learner, xs, ys, xq, yq, extra) -> float: one outer update of θ
      with ``learner.optimizer`` (set each parameter's ``.grad``, or call ``backward`` on
      a loss, then ``learner.optimizer.step()``); returns the batch's query loss after
      adaptation, measured before the update.
    * :meth:`adapt` (learner, x, y, steps, reference=False) -> ``AdaptedModel``: test-time
      adaptation to one support set, θ untouched; this is what ``MetaStrategy`` runs in
      the backtest.

    and may override:

    * :meth:`adapt_batch` (B support sets as ndarrays (B, S, F_in), (B, S)): by default
      one ``learner.adapt`` per task;
    * :meth:`evaluate` (a task batch and ``steps`` -> float query loss, θ unchanged): by
      default one ``learner.adapt`` per task, scored with :attr:`loss`;
    * :meth:`check_model` (refuse a model the family cannot run; by default any model
      whose ``paired_algorithm`` is None), :meth:`check_head`, :meth:`adapt_names`,
      :meth:`inner_rates` (set-up hooks, called once by ``MetaLearner``);
    * the class attributes below.

    The loss is a parameter: score queries with :attr:`loss` (or :attr:`per_task` and
    :meth:`batch_loss`, which handle a pooled loss), never with a hard-wired MSE, and the
    cost-aware objectives (``objective="sharpe"``/``"utility"``,
    :class:`metabt.learn.losses.PnLLoss`, with its learned partial-adjustment rate when
    :attr:`learns_adjust_rate`) work for the family unchanged. ``GradientFamily`` is the
    base to start from when test-time adaptation is plain gradient descent on θ: it
    brings the fused NumPy kernels and the batched paths, and only :meth:`meta_step` is
    left to write.

    The underscored members of the learner (its caches) are private: a user family
    reads only the public members of :class:`Learner`.

    Args:
        loss: the query loss the outer loop minimises and :meth:`evaluate` reports
            (:class:`metabt.learn.losses.TaskLoss`). Default MSE.

    Attributes:
        model_type: the metabt model type the family runs on (``"cnp"``, ...), or None:
            any model whose ``paired_algorithm`` is None.
        updates_theta: False when the outer loop never changes θ (scratch): ``fit`` then
            runs no step.
        learns_adjust_rate: False when the outer loop takes no gradient of the query loss
            (reptile, scratch, protonet), so a learned partial-adjustment rate would stay
            where it started: ``MetaLearner`` then trades and scores at κ = 1.
        pnl_inner: True when the family's meta-trained inner loop can descend a P&L loss
            on the support path (``inner_objective="same"``: maml, fomaml, metasgd, anil,
            cavia); the others keep the support MSE (``MetaLearner`` records it so).

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks" (the outer/inner split every family follows).
    """

    loss: TaskLoss = MSE
    model_type: ClassVar[str | None] = None
    updates_theta: ClassVar[bool] = True
    learns_adjust_rate: ClassVar[bool] = True
    pnl_inner: ClassVar[bool] = False

    # ---------------------------------------------------------------- set-up hooks
    def check_model(self, model: nn.Module) -> None:
        """Refuse a model of another family: a model paired with an algorithm ("cnp",
        "protonet", "cavia") runs only with it.

        Raises:
            ConfigError: the model does not fit the algorithm (with the fix).
        """
        paired = getattr(model, "paired_algorithm", None) if isinstance(model, MetaModel) else None
        if paired is not None:
            raise ConfigError(
                f"model {type(model).__name__} is meta-trained only by algorithm {paired!r}; "
                f"pass algorithm={paired!r}, or an 'mlp' or 'gru' model for a gradient-based "
                "algorithm"
            )

    def check_head(self, head: str | None) -> None:
        """Refuse a ``head`` name: only ANIL adapts a named submodule.

        Raises:
            ConfigError: ``head`` is not None.
        """
        if head is not None:
            raise ConfigError(f"head={head!r} is for algorithm 'anil' only; drop it")

    def adapt_names(self, model: nn.Module, head: str | None) -> tuple[str, ...]:
        """Names of the parameters the inner loop adapts: all of θ (``named_parameters``)."""
        return tuple(n for n, _ in model.named_parameters())

    def inner_rates(
        self, model: nn.Module, names: tuple[str, ...], inner_lr: float
    ) -> dict[str, nn.Parameter]:
        """Meta-learned inner rates, name -> parameter of its parameter's shape: none here."""
        return {}

    # ------------------------------------------------------------- the query loss
    @property
    def per_task(self) -> TaskLoss:
        """What a family's per-task function computes on the query rows: the loss, or, for
        a pooled loss (:func:`metabt.learn.losses.is_pooled`), the predictions (Q,)."""
        return PREDICTIONS if is_pooled(self.loss) else self.loss

    @property
    def inner_loss(self) -> PnLLoss | None:
        """The P&L loss the inner loop descends on the support path, or None for the support
        MSE (:func:`metabt.learn.losses.inner_loss_of`; only where :attr:`pnl_inner`)."""
        return inner_loss_of(self.loss) if self.pnl_inner else None

    def support_extra(self, extra: Extra) -> tuple[Tensor, ...]:
        """The support rows' extras a P&L inner loop reads, in
        :data:`metabt.learn.losses.SUPPORT_EXTRAS` order ((B, S) each), or () for the MSE."""
        if self.inner_loss is None or extra is None:
            return ()
        return tuple(extra[k] for k in SUPPORT_EXTRAS)

    def batch_loss(self, per_task: Tensor, yq: Tensor, extra: Extra) -> Tensor:
        """The batch's query loss from the per-task outputs of :attr:`per_task`.

        Args:
            per_task: (B,) per-task losses, or (B, Q) query predictions for a pooled loss.
            yq: (B, Q) query labels.
            extra: the loss's per-row arrays, name -> (B, Q), or None.

        Returns:
            () tensor: the mean of the per-task losses, or the pooled loss of the batch.
        """
        if is_pooled(self.loss):
            return self.loss.batch_mean(per_task, yq, extra)
        return per_task.mean()

    # ------------------------------------------------------------------ the algorithm
    @abc.abstractmethod
    def meta_step(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> float:
        """One outer-loop update of θ with ``learner.optimizer`` on a task batch.

        Must be implemented by every family. ``MetaLearner.meta_step`` has already cast
        and checked the batch.

        Args:
            learner: the learner (θ is ``learner.model``'s parameters).
            xs: (B, S, F_in) support inputs; ys: (B, S) support labels.
            xq: (B, Q, F_in) query inputs; yq: (B, Q) query labels (all θ's dtype).
            extra: the per-row arrays :attr:`loss` reads (name -> (B, Q); with a P&L inner
                loop also the support rows' (B, S)), or None for the MSE.

        Returns:
            The query loss after inner-loop adaptation (the mean over tasks, or the pooled
            loss, as :meth:`batch_loss` computes it), measured before the update.
        """

    @abc.abstractmethod
    def adapt(
        self,
        learner: Learner,
        x: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        steps: int,
        *,
        reference: bool = False,
    ) -> AdaptedModel:
        """Test-time adaptation to one support set; θ is left untouched.

        Must be implemented by every family: ``MetaStrategy`` calls it (through
        ``MetaLearner.adapt``, which checks ``steps``) inside the backtest.

        Args:
            learner: the learner. x: (S, F_in) support inputs; y: (S,) labels (tensor or
                ndarray, converted to θ's dtype). steps: checked inner steps (>= 0).
            reference: run the reference implementation instead of a fast path.

        Returns:
            An :class:`metabt.learn.adapted.AdaptedModel`.

        Raises:
            ConfigError: mismatched shapes, an empty support set or non-finite values.
        """

    def adapt_batch(
        self,
        learner: Learner,
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
        *,
        reference: bool = False,
    ) -> BatchAdapted:
        """Adapt to B support sets, x (B, S, F_in) and y (B, S) ndarrays of θ's dtype
        (checked); here one ``learner.adapt`` per task (backend "loop").

        Returns:
            A :class:`metabt.learn.kernels.batched.BatchAdapted`.
        """
        tasks = [learner.adapt(xb, yb, steps, reference=reference) for xb, yb in zip(x, y)]
        return stack_adapted(tasks, x.dtype)

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
        """The query loss after adapting to each support set (θ unchanged): the mean over
        tasks, or the pooled loss; here one ``learner.adapt`` per task."""
        if is_pooled(self.loss):
            with torch.no_grad():
                preds = torch.stack(
                    [
                        torch.as_tensor(learner.adapt(xs[b], ys[b], steps=steps)(xq[b]))
                        for b in range(xs.shape[0])
                    ]
                ).to(yq.dtype)
                return float(self.loss.batch_mean(preds, yq, extra))
        losses = [
            float(self.loss(learner.adapt(xs[b], ys[b], steps=steps)(xq[b]), yq[b]))
            for b in range(xs.shape[0])
        ]
        return float(np.mean(losses))


@dataclass(frozen=True, kw_only=True)
class PairedFamily(LearnerFamily):
    """A family with its own model type and its own test-time adaptation (CNP, ProtoNet,
    CAVIA): it runs only on the model of its name, and that model only with it.

    Attributes:
        model_type: the model type (``metabt.learn.models.build_model``) of the family.
    """

    def check_model(self, model: nn.Module) -> None:
        """Refuse any model but the family's own.

        Raises:
            ConfigError: the model is of another type (with the fix).
        """
        paired = getattr(model, "paired_algorithm", None) if isinstance(model, MetaModel) else None
        kind = self.model_type
        if paired != kind:
            raise ConfigError(
                f"algorithm {kind!r} needs the {kind!r} model, got {type(model).__name__}; "
                f"build it with build_model({{'type': {kind!r}, 'n_features': F}}) "
                f"(model_type={kind!r}; it replaces the default model_type='mlp')"
            )

    @staticmethod
    def _model(learner: Learner, cls: type[M]) -> M:
        """The learner's model, checked to be a ``cls``."""
        model = learner.model
        if not isinstance(model, cls):
            raise ConfigError(
                f"this algorithm needs a {cls.__name__} model, got {type(model).__name__}"
            )
        return model
