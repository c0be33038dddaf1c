"""The outer-step registry of every algorithm, and the MAML family's steps and inner loops.

The other families' steps (CNP, ProtoNet, CAVIA), the adapted model and the step base
class live in ``metabt.learn.families``; they are re-exported here and registered in
:data:`OUTER_STEPS`.

Every step runs on any ``torch.nn.Module`` mapping (N, F_in) to (N,) or (N, 1): the
``func`` engine calls it through ``torch.func.functional_call`` inside ``vmap``/``grad``
(PyTorch docs, "torch.func"), the ``higher`` engine patches it (Grefenstette et al. 2019).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from metabt._checks import did_you_mean
from metabt.errors import ConfigError
from metabt.learn.families import (
    AdaptedModel,
    CaviaStep,
    CnpStep,
    OuterStep,
    ProtoStep,
    mse,
    support_arrays,
)
from metabt.learn.models import MetaModel, input_width
from metabt.learn.names import ALGORITHM_NAMES, ENGINE_NAMES

__all__ = [
    "ALGORITHMS",
    "AdaptedModel",
    "CaviaStep",
    "CnpStep",
    "ENGINES",
    "ErmStep",
    "GradientStep",
    "Learner",
    "OUTER_STEPS",
    "OuterStep",
    "ProtoStep",
    "ReptileStep",
    "ScratchStep",
    "adapt_autograd",
    "adapt_head",
    "inner_loop",
    "mse",
    "outer_step",
    "prediction",
    "query_losses",
    "resolve_engine",
    "support_arrays",
    "vmap_failure",
]

Params = dict[str, Tensor]
Forward = Callable[[Mapping[str, Tensor], Tensor], Tensor]

#: Engines computing the MAML-family meta-gradient: "auto" picks "func" unless the model
#: cannot be batched by ``torch.func.vmap`` (then "higher").
ENGINES = ENGINE_NAMES


def prediction(out: Tensor, x: Tensor, model: nn.Module) -> Tensor:
    """A model's output as one prediction per input row: (N,) or (N, 1) -> (N,).

    Every loss is ``mse(prediction, labels)`` on (N,) labels: an (N, 1) output, what an
    ``nn.Linear(h, 1)`` head returns, would otherwise broadcast into an (N, N) loss and
    train on nonsense without a word.

    Args:
        out: the model's output for ``x``.
        x: its input, (N, F_in).
        model: the module (named in the error).

    Returns:
        (N,) tensor.

    Raises:
        ConfigError: any other output shape.
    """
    rows = x.shape[0]
    if out.shape == (rows,):
        return out
    if out.shape == (rows, 1):
        return out.squeeze(-1)
    raise ConfigError(
        f"{type(model).__name__} returned shape {tuple(out.shape)} for {rows} input rows; "
        f"a metabt model must map (N, F) to (N,) or (N, 1), here ({rows},) or ({rows}, 1)"
    )


class _Adapted(Protocol):
    @property
    def params(self) -> Params: ...


class Learner(Protocol):
    """What an outer-loop step reads from its learner (``metabt.learn.learner.MetaLearner`` is one).

    Attributes:
        model: the module holding θ; its parameters are what the optimizer updates.
        engine: "higher" or "func" (resolved, never "auto").
        inner_lr: scalar inner learning rate; inner_steps: inner steps per adaptation.
        inner_lrs: learned per-parameter inner rates (Meta-SGD), else empty.
        optimizer: the outer-loop optimizer over θ and ``inner_lrs``.
        adapt_names: names of the parameters the inner loop adapts.
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

    def forward_with(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Prediction with explicit parameters. x: (N, F_in) -> (N,)."""
        ...

    def adapt(self, x_support: Tensor, y_support: Tensor, steps: int | None = None) -> _Adapted:
        """Test-time adaptation to one support set."""
        ...

    def evaluate(
        self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, steps: int | None = None
    ) -> float:
        """Mean query loss after adaptation."""
        ...


# ----------------------------------------------------------------------- inner loops
def inner_loop(
    fast: Params,
    predict: Forward,
    x: Tensor,
    y: Tensor,
    steps: int,
    lrs: Mapping[str, Tensor | float],
    first_order: bool,
) -> Params:
    """``steps`` steps of gradient descent on the support MSE, written with ``torch.func.grad``.

    ``φ ← φ − α ⊙ ∇_φ mse(predict(φ, x), y)`` (Finn et al. 2017, eq. 1; per-parameter α
    for Meta-SGD, Li et al. 2017). Differentiable with respect to the starting point (and
    learned rates) unless ``first_order`` (FOMAML), in which case the inner gradients are
    treated as constants. Runs under ``torch.func.vmap`` (one task per call).

    Args:
        fast: starting parameters, name -> tensor (the adapted subset of θ).
        predict: (params, x) -> predictions.
        x: (S, F_in) support inputs; y: (S,) support labels.
        steps: inner steps (>= 0).
        lrs: name -> inner rate (float or tensor of the parameter's shape) for each of fast.
        first_order: treat the inner gradients as constants.

    Returns:
        The adapted parameters φ, name -> tensor.
    """

    def support_loss(p: Params) -> Tensor:
        return mse(predict(p, x), y)

    grad_fn = torch.func.grad(support_loss)
    for _ in range(steps):
        grads = grad_fn(fast)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        fast = {k: fast[k] - lrs[k] * grads[k] for k in fast}
    return fast


def _task_loss(
    learner: Learner,
    params: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor | float],
    steps: int,
    first_order: bool,
    head_only: bool,
    xs: Tensor,
    ys: Tensor,
    xq: Tensor,
    yq: Tensor,
) -> Tensor:
    """Query loss of one task after adaptation (vmapped over tasks by :func:`query_losses`)."""
    model = learner.model
    head = {k: params[k] for k in learner.adapt_names}
    if head_only and isinstance(model, MetaModel) and tuple(head) == model.head_names:
        hs, hq = model.body_with(params, xs), model.body_with(params, xq)  # body once
        head = inner_loop(head, model.head_with, hs, ys, steps, lrs, first_order)
        return mse(model.head_with(head, hq), yq)
    if head_only:  # any other module: the whole forward pass, only the head adapted
        rest = {k: v for k, v in params.items() if k not in head}

        def predict(p: Mapping[str, Tensor], x: Tensor) -> Tensor:
            return learner.forward_with({**rest, **p}, x)

        head = inner_loop(head, predict, xs, ys, steps, lrs, first_order)
        return mse(predict(head, xq), yq)
    fast = inner_loop(dict(params), learner.forward_with, xs, ys, steps, lrs, first_order)
    return mse(learner.forward_with(fast, xq), yq)


def query_losses(
    learner: Learner,
    params: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor | float],
    steps: int,
    batch: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    first_order: bool,
    head_only: bool = False,
) -> Tensor:
    """Query MSE of every task after ``steps`` inner steps, all tasks at once (``vmap``).

    Args:
        learner: supplies the model, ``forward_with`` and ``adapt_names``.
        params: θ, name -> tensor (with autograd history for a meta-gradient).
        lrs: inner rate of each adapted parameter (keys: ``learner.adapt_names``).
        steps: inner steps.
        batch: xs (B, S, F_in), ys (B, S), xq (B, Q, F_in), yq (B, Q), θ's dtype.
        first_order: treat the inner gradients as constants (FOMAML).
        head_only: adapt only ``learner.adapt_names`` (ANIL): for metabt's models on body
            features computed once, for any other module through its whole forward pass.

    Returns:
        (B,) tensor of query losses.
    """

    def task_loss(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> Tensor:
        return _task_loss(learner, params, lrs, steps, first_order, head_only, xs, ys, xq, yq)

    return torch.func.vmap(task_loss)(*batch)


# ---------------------------- test-time adaptation: pure update functions (AdaptedModel: learners)
def adapt_autograd(
    forward: Forward,
    theta: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor | float],
    x: Tensor,
    y: Tensor,
    steps: int,
) -> tuple[float, float, Params]:
    """The reference test-time inner loop, with ``torch.autograd`` (any model).

    A pure update function: ``steps`` steps of ``φ ← φ − α ⊙ ∇_φ mse(forward(φ, x), y)``
    on the parameters named in ``lrs`` (the rest of θ stays fixed), no graph kept between
    steps. The fast paths (``metabt.learn.kernels.fused``, :func:`adapt_head`) are tested
    against it.

    Args:
        forward: (params, x) -> predictions (N,).
        theta: θ, name -> tensor without autograd history.
        lrs: name -> inner rate (float or tensor of the parameter's shape); its keys are the
            parameters adapted.
        x: (S, F_in) support inputs; y: (S,) support labels, θ's dtype.
        steps: inner steps (>= 0).

    Returns:
        (loss_before, loss_after, φ): support MSE at θ and at φ (equal when ``steps`` is 0)
        and φ, name -> tensor for every parameter of θ.

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks", eq. 1; Li et al. 2017, "Meta-SGD".
    """
    names = list(lrs)
    fast = {n: theta[n] for n in names}
    rest = {k: v for k, v in theta.items() if k not in fast}
    loss_before = math.nan
    with torch.enable_grad():
        for i in range(steps):
            leaves = [fast[n].detach().requires_grad_() for n in names]
            loss = mse(forward({**rest, **dict(zip(names, leaves))}, x), y)
            if i == 0:
                loss_before = float(loss.detach())
            grads = torch.autograd.grad(loss, leaves)
            fast = {n: (p - lrs[n] * g).detach() for n, p, g in zip(names, leaves, grads)}
    with torch.no_grad():
        loss_after = float(mse(forward({**rest, **fast}, x), y))
    return (loss_after if steps == 0 else loss_before), loss_after, {**rest, **fast}


def adapt_head(
    model: MetaModel,
    theta: Mapping[str, Tensor],
    lrs: Mapping[str, np.ndarray | float],
    x: Tensor,
    y: Tensor,
    steps: int,
) -> tuple[float, float, Params]:
    """ANIL's test-time inner loop: the body runs once; the linear head's gradient is closed-form.

    With body features h (S, H), the head's MSE gradient is ``2/S hᵀr`` (weight) and
    ``2/S Σr`` (bias) for residuals r; only the head is adapted (Raghu et al. 2020).

    Args:
        model: a :class:`metabt.learn.models.MetaModel`.
        theta: θ, name -> tensor without autograd history.
        lrs: inner rate of ``head.weight`` and ``head.bias`` (float or ndarray).
        x: (S, F_in) support inputs; y: (S,) support labels, θ's dtype.
        steps: inner steps (>= 0).

    Returns:
        (loss_before, loss_after, φ) as :func:`adapt_autograd` returns them.

    References:
        Raghu, Raghu, Bengio, Vinyals 2020, "Rapid Learning or Feature Reuse? Towards
        Understanding the Effectiveness of MAML".
    """
    with torch.no_grad():
        h = model.body_with(theta, x).numpy()
    weight, bias = theta["head.weight"].numpy(), theta["head.bias"].numpy()
    yn = y.numpy()
    loss_before = math.nan
    for i in range(steps):
        residual = h @ weight[0] + bias[0] - yn
        if i == 0:
            loss_before = float(residual @ residual) / len(yn)
        d_out = (2.0 / len(yn)) * residual
        weight = weight - lrs["head.weight"] * (d_out @ h)[None, :]
        bias = bias - lrs["head.bias"] * np.atleast_1d(d_out.sum())
    residual = h @ weight[0] + bias[0] - yn
    loss_after = float(residual @ residual) / len(yn)
    params = {
        **theta,
        "head.weight": torch.from_numpy(weight),
        "head.bias": torch.from_numpy(bias),
    }
    return (loss_after if steps == 0 else loss_before), loss_after, params


# ----------------------------------------------------------------------- outer steps
@dataclass(frozen=True)
class GradientStep(OuterStep):
    """MAML, FOMAML, Meta-SGD and ANIL: the meta-gradient of the query loss after adaptation.

    One gradient path with three flags and two engines computing the same meta-gradient:
    ``func`` (all tasks at once with ``torch.func``: ``grad`` inside ``vmap``) and
    ``higher`` (one ``higher.innerloop_ctx`` per task, the reference).

    Args:
        second_order: differentiate through the inner loop (MAML); False treats the inner
            gradients as constants (FOMAML, Finn et al. 2017, section 5.2).
        head_only: adapt only the head in the inner loop (ANIL, Raghu et al. 2020).
        learned_lr: meta-learn a per-parameter inner rate (Meta-SGD, Li et al. 2017).

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks"; Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
        Learning"; Raghu et al. 2020, "Rapid Learning or Feature Reuse?"; Grefenstette et
        al. 2019, "Generalized Inner Loop Meta-Learning" (``higher``); PyTorch docs,
        "torch.func" (the MAML example).
    """

    second_order: bool
    head_only: bool = False
    learned_lr: bool = False

    def __call__(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """Update θ (and learned rates) by the meta-gradient; returns the mean query loss."""
        if learner.engine == "func":
            return self._func(learner, xs, ys, xq, yq)
        return self._higher(learner, xs, ys, xq, yq)

    def _func(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        params = dict(learner.model.named_parameters())
        lrs: dict[str, Tensor | float] = {
            n: (learner.inner_lrs[n] if learner.inner_lrs else learner.inner_lr)
            for n in learner.adapt_names
        }
        losses = query_losses(
            learner,
            params,
            lrs,
            learner.inner_steps,
            (xs, ys, xq, yq),
            first_order=not self.second_order,
            head_only=self.head_only,
        )
        loss = losses.mean()
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

    def _higher(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        import higher

        batch = xs.shape[0]
        second_order = self.second_order
        inner_opt, override = self._inner_optimizer(learner)
        theta = list(learner.model.parameters())
        learner.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for b in range(batch):
            with higher.innerloop_ctx(
                learner.model,
                inner_opt,
                copy_initial_weights=False,
                track_higher_grads=second_order,
                override=override or None,
            ) as (fmodel, diffopt):
                model = learner.model
                for _ in range(learner.inner_steps):
                    diffopt.step(mse(prediction(fmodel(xs[b]), xs[b], model), ys[b]))
                query_loss = mse(prediction(fmodel(xq[b]), xq[b], model), yq[b])
                if second_order:
                    (query_loss / batch).backward()
                else:
                    grads = torch.autograd.grad(query_loss, list(fmodel.parameters()))
                    for p, g in zip(theta, grads):
                        p.grad = g / batch if p.grad is None else p.grad + g / batch
                total += float(query_loss.detach())
        learner.optimizer.step()
        return total / batch


@dataclass(frozen=True)
class ReptileStep(OuterStep):
    """Reptile: θ ← θ + ε·mean_b(φ_b − θ), φ_b adapted on task b's support ∪ query.

    The pseudo-gradient θ − mean φ is handed to the outer optimizer (Adam), as in Nichol
    et al. 2018, section 5; φ_b comes from first-order SGD at the scalar ``inner_lr``.

    References:
        Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning Algorithms".
    """

    def __call__(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """Move θ towards the task-adapted weights; returns the mean query loss."""
        loss = learner.evaluate(xs, ys, xq, yq)
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


@dataclass(frozen=True)
class ErmStep(OuterStep):
    """ERM, the non-meta baseline: one joint gradient step on all tasks' support ∪ query.

    At test time it is fine-tuned like the others, so it measures what meta-learning adds.
    """

    def __call__(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """Joint training step; returns the mean query loss after adaptation (before it)."""
        loss = learner.evaluate(xs, ys, xq, yq)
        learner.optimizer.zero_grad(set_to_none=True)
        x_all = torch.cat([xs, xq], 1).flatten(0, 1)
        joint = prediction(learner.model(x_all), x_all, learner.model)
        mse(joint, torch.cat([ys, yq], 1).flatten()).backward()
        learner.optimizer.step()
        return loss


@dataclass(frozen=True)
class ScratchStep(OuterStep):
    """Scratch, the non-meta baseline: no training; fine-tunes the random initialisation."""

    updates_theta: bool = False

    def __call__(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """θ is not changed; returns the mean query loss after adaptation."""
        return learner.evaluate(xs, ys, xq, yq)


#: Algorithm name -> its outer-loop step (read only).
OUTER_STEPS: Mapping[str, OuterStep] = MappingProxyType(
    {
        "maml": GradientStep(second_order=True),
        "fomaml": GradientStep(second_order=False),
        "metasgd": GradientStep(second_order=True, learned_lr=True),
        "anil": GradientStep(second_order=True, head_only=True),
        "reptile": ReptileStep(),
        "erm": ErmStep(),
        "scratch": ScratchStep(),
        "cnp": CnpStep(),
        "protonet": ProtoStep(),
        "cavia": CaviaStep(),
    }
)

#: The algorithms a ``MetaLearner`` runs, in the order of the registry.
ALGORITHMS = tuple(OUTER_STEPS)
if ALGORITHMS != ALGORITHM_NAMES:  # pragma: no cover - a registry edit without its name
    raise ImportError(
        f"metabt.learn.algorithms registers {ALGORITHMS}, but metabt.learn.names lists "
        f"{ALGORITHM_NAMES}: update both together"
    )


def outer_step(algorithm: str, engine: str) -> OuterStep:
    """The registered outer step of ``algorithm``, after checking both names.

    Args:
        algorithm: one of ``ALGORITHMS``.
        engine: one of ``ENGINES``.

    Returns:
        ``OUTER_STEPS[algorithm]``.

    Raises:
        ConfigError: an unknown algorithm or engine (with the closest valid name).
    """
    if algorithm not in OUTER_STEPS:
        raise ConfigError(
            f"algorithm {algorithm!r} is unknown{did_you_mean(str(algorithm), ALGORITHMS)}; "
            f"use one of {', '.join(ALGORITHMS)}"
        )
    if engine not in ENGINES:
        raise ConfigError(
            f"engine {engine!r} is unknown{did_you_mean(str(engine), ENGINES)}; "
            f"use one of {', '.join(ENGINES)}"
        )
    return OUTER_STEPS[algorithm]


def vmap_failure(model: nn.Module) -> str | None:
    """Why ``torch.func.vmap`` cannot batch ``model``'s inner loop, or None when it can.

    A trial: ``grad`` inside ``vmap`` on two zero tasks, via ``functional_call`` on copies of
    the buffers (module, buffers and torch's random state untouched). Typical failures:
    dropout or batch norm in training mode, ``.item()``, data-dependent control flow.

    Args:
        model: the module (input width: :func:`metabt.learn.models.input_width`, else the
            first ``nn.Linear``'s).

    Returns:
        The error's first line, or None (also when the width is unknown or wrong).

    Raises:
        ConfigError: the model runs but its output is not (N,) or (N, 1).

    References:
        PyTorch docs, "torch.func", "UX Limitations" (what vmap cannot batch).
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    width = input_width(model) or (linears[0].in_features if linears else None)
    if not params or width is None:
        return None
    state = {**params, **{k: v.clone() for k, v in model.named_buffers()}}
    x = torch.zeros(2, 3, width, dtype=next(iter(params.values())).dtype)

    def loss(p: Params, xb: Tensor) -> Tensor:
        out = torch.func.functional_call(model, {**state, **p}, (xb,))
        return mse(prediction(out, xb, model), xb[:, 0])

    with torch.random.fork_rng(devices=[]):
        try:
            with torch.no_grad():
                out = torch.func.functional_call(model, state, (x[0],))
        except Exception:  # a wrong width guess: nothing to learn from the trial
            return None
        prediction(out, x[0], model)  # ConfigError for a wrong output shape
        try:
            torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
        except ConfigError:
            raise
        except Exception as exc:  # whatever torch.func refuses
            text = str(exc).strip()
            return text.splitlines()[0] if text else type(exc).__name__
    return None


def resolve_engine(engine: str, model: nn.Module, step: OuterStep) -> str:
    """The engine that runs ``step`` on ``model``: "auto" is "func" unless vmap cannot batch it.

    metabt's models always run on ``func``. For any other module a trial call
    (:func:`vmap_failure`) decides: "auto" falls back to "higher" with a warning naming
    the cause; an explicit "func" that cannot work is a ConfigError.

    Args:
        engine: "auto", "higher" or "func".
        model: the module holding θ.
        step: the algorithm's outer step.

    Returns:
        "func" or "higher".

    Raises:
        ConfigError: "func" for a model ``torch.func.vmap`` cannot batch, a model whose
            output is not (N,) or (N, 1), or a model of another family
            (:meth:`metabt.learn.families.OuterStep.check_model`).

    Warns:
        UserWarning: "auto" fell back to "higher".
    """
    step.check_model(model)
    if engine == "higher" or isinstance(model, MetaModel):
        return "func" if engine == "auto" else engine
    failure = vmap_failure(model)
    if failure is None:
        return "func"
    name = type(model).__name__
    if engine == "func":
        raise ConfigError(
            f"engine 'func' cannot batch {name} with torch.func.vmap ({failure}); use "
            "engine='higher', or make the forward pass vmap-compatible (no dropout or batch "
            "norm in training mode, no .item(), no in-place updates of buffers)"
        )
    warnings.warn(
        f"engine='auto': torch.func.vmap cannot batch {name} ({failure}); using "
        "engine='higher' (one task at a time, slower). Pass engine='higher' to silence this.",
        UserWarning,
        stacklevel=3,
    )
    return "higher"
