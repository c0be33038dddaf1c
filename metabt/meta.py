"""MetaLearner: the MAML family (MAML, FOMAML, Meta-SGD, ANIL, Reptile) and ERM/scratch baselines.

The learner knows nothing of backtrader or finance: it meta-trains an initialisation θ of a
small regression model on batches of support/query tasks and adapts θ to new support data.

Two engines compute the same meta-gradient:

* ``higher``: one ``higher.innerloop_ctx`` per task, the reference implementation
  (Grefenstette et al. 2019);
* ``func``: all tasks of a batch at once with ``torch.func`` (``grad`` inside ``vmap``,
  parameters passed explicitly), several times faster on small models.

``engine="auto"`` picks ``func`` for metabt's own models and ``higher`` for any other module.
"""

from __future__ import annotations

import math
import os
import pickle
import platform
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from metabt._checks import did_you_mean
from metabt.errors import CheckpointError, ConfigError
from metabt.models import MetaModel, build_model

if TYPE_CHECKING:
    from metabt.features import FeatureSpec

__all__ = ["ALGORITHMS", "AdaptedModel", "ENGINES", "FitResult", "MetaLearner"]

ALGORITHMS = ("maml", "fomaml", "metasgd", "anil", "reptile", "erm", "scratch")
ENGINES = ("auto", "higher", "func")

CHECKPOINT_FORMAT = "metabt-checkpoint"
CHECKPOINT_VERSION = 1

Batch = tuple[Tensor, Tensor, Tensor, Tensor]
Params = dict[str, Tensor]


@dataclass(frozen=True)
class _Algorithm:
    kind: str  # "gradient" (MAML family), "reptile", "erm", "scratch"
    second_order: bool = False
    head_only: bool = False
    learned_lr: bool = False


_ALGORITHMS = {
    "maml": _Algorithm("gradient", second_order=True),
    "fomaml": _Algorithm("gradient"),
    "metasgd": _Algorithm("gradient", second_order=True, learned_lr=True),
    "anil": _Algorithm("gradient", second_order=True, head_only=True),
    "reptile": _Algorithm("reptile"),
    "erm": _Algorithm("erm"),
    "scratch": _Algorithm("scratch"),
}


class TaskSource(Protocol):
    """Anything that samples task batches: ``metabt.tasks.TaskSampler`` is one."""

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch: ...


def _to_numpy(values: Tensor | np.ndarray, dtype: np.dtype) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=dtype)


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred - target) ** 2).mean()


class AdaptedModel:
    """A model adapted to one support set: φ = θ after a few inner-loop steps.

    Holds its own copy φ of the parameters; θ of the learner is untouched.

    Attributes:
        params: the adapted parameters φ, name -> tensor (no autograd history).
        loss_before: mean squared error on the support set at θ (before adaptation).
        loss_after: mean squared error on the support set at φ (after adaptation).
        steps: number of inner-loop gradient steps taken.
    """

    def __init__(
        self,
        forward: Callable[[Mapping[str, Tensor], Tensor], Tensor],
        params: Params | None,
        *,
        loss_before: float,
        loss_after: float,
        steps: int,
        forward_numpy: Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray] | None = None,
        numpy_params: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        if params is None and numpy_params is None:
            raise ValueError("AdaptedModel needs params or numpy_params")
        self._forward = forward
        self._params = params
        self.loss_before = loss_before
        self.loss_after = loss_after
        self.steps = steps
        self._forward_numpy = forward_numpy
        if numpy_params is None and forward_numpy is not None and params is not None:
            numpy_params = {k: v.numpy() for k, v in params.items()}
        self._numpy_params = numpy_params
        some = next(iter(numpy_params.values())) if numpy_params else None
        self._numpy_dtype = some.dtype if some is not None else None

    @property
    def params(self) -> Params:
        """φ as name -> tensor (built on first use when adaptation ran in NumPy)."""
        if self._params is None:
            assert self._numpy_params is not None
            self._params = {
                k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self._numpy_params.items()
            }
        return self._params

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def __call__(self, x: Tensor) -> Tensor:
        """Predictions. x: (N, F) float tensor -> (N,) tensor of the model's dtype."""
        with torch.no_grad():
            return self._forward(self.params, x.to(self.dtype))

    def predict_row(self, x: np.ndarray) -> float:
        """One prediction for one input row: x (F_in,) float ndarray -> float.

        The per-bar path of ``MetaStrategy``: no batching, no dtype round trips when the
        row already has the model's dtype.
        """
        if self._forward_numpy is not None and self._numpy_params is not None:
            return float(self._forward_numpy(self._numpy_params, x))
        return float(self.predict(x)[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for a NumPy array. x: (N, F_in) or (F_in,) -> (N,) float64 ndarray."""
        arr = np.asarray(x)
        if arr.ndim == 1:
            arr = arr[None, :]
        if self._forward_numpy is not None and self._numpy_params is not None:
            x_np = arr.astype(self._numpy_dtype, copy=False)
            return self._forward_numpy(self._numpy_params, x_np).astype(np.float64)
        return self(torch.from_numpy(np.ascontiguousarray(arr))).double().numpy()


@dataclass
class FitResult:
    """What :meth:`MetaLearner.fit` did.

    Attributes:
        steps: outer steps run in total (including any before a resume).
        best_step: the step whose θ was kept (the best validation loss), or the last step.
        best_val_loss: mean query loss after adaptation on the validation tasks at best_step
            (NaN without validation tasks).
        train_losses: mean query loss after adaptation of every outer step.
        val_losses: (step, validation loss) pairs.
        stopped_early: True if validation stopped improving for ``patience`` evaluations.
        resumed_from: the step training resumed from (0 for a fresh start).
    """

    steps: int = 0
    best_step: int = 0
    best_val_loss: float = math.nan
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from: int = 0


class MetaLearner:
    """Meta-learns an initialisation θ of a regression model and adapts it to new tasks.

    A task is a support set (xs, ys) and a query set (xq, yq) from the same regime. The
    inner loop adapts θ to the support set with ``inner_steps`` steps of gradient descent
    (learning rate ``inner_lr``) on the mean squared error; the outer loop (Adam, learning
    rate ``meta_lr``) moves θ so that the adapted model does well on the query set.

    Algorithms:
        ``maml``: second-order MAML (Finn et al. 2017).
        ``fomaml``: first-order MAML (Finn et al. 2017, section 5.2).
        ``metasgd``: MAML with a learned per-parameter inner learning rate (Li et al. 2017).
        ``anil``: only the output head is adapted in the inner loop (Raghu et al. 2020).
        ``reptile``: moves θ towards the task-adapted weights (Nichol et al. 2018).
        ``erm``: non-meta baseline, ordinary joint training on all tasks' data; the same
            fine-tuning at test time.
        ``scratch``: non-meta baseline, no training; fine-tunes a random initialisation.

    Args:
        model: a :class:`metabt.models.MetaModel` (MLP or GRU), or any module mapping
            (N, F_in) -> (N,) (then only the ``higher`` engine and no ANIL/saving).
        algorithm: one of ``ALGORITHMS``. Default "maml".
        inner_lr: inner-loop learning rate (initial value for metasgd). Default 0.05.
        inner_steps: inner-loop gradient steps per adaptation. Default 5.
        meta_lr: outer-loop Adam learning rate. Default 1e-3.
        engine: "auto", "higher" or "func". Default "auto".
        seed: seed of the task-sampling generator used by :meth:`fit`. Default 0.
        feature_spec: the ``FeatureSpec`` the model's inputs come from (saved with it).

    Raises:
        ConfigError: unknown algorithm or engine, non-positive rates, negative steps, or an
            engine/algorithm the model cannot support.

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
        algorithm: str = "maml",
        inner_lr: float = 0.05,
        inner_steps: int = 5,
        meta_lr: float = 1e-3,
        engine: str = "auto",
        seed: int = 0,
        feature_spec: FeatureSpec | None = None,
    ) -> None:
        if algorithm not in _ALGORITHMS:
            raise ConfigError(
                f"algorithm {algorithm!r} is unknown{did_you_mean(str(algorithm), ALGORITHMS)}; "
                f"use one of {', '.join(ALGORITHMS)}"
            )
        if engine not in ENGINES:
            raise ConfigError(
                f"engine {engine!r} is unknown{did_you_mean(str(engine), ENGINES)}; "
                f"use one of {', '.join(ENGINES)}"
            )
        if not (isinstance(inner_lr, (int, float)) and math.isfinite(inner_lr) and inner_lr > 0):
            raise ConfigError(f"inner_lr must be a positive number, got {inner_lr!r}")
        if not (isinstance(meta_lr, (int, float)) and math.isfinite(meta_lr) and meta_lr > 0):
            raise ConfigError(f"meta_lr must be a positive number, got {meta_lr!r}")
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
            raise ConfigError(f"inner_steps must be an integer >= 0, got {inner_steps!r}")
        self.model = model
        self.algorithm = algorithm
        self._algo = _ALGORITHMS[algorithm]
        self.inner_lr = float(inner_lr)
        self.inner_steps = inner_steps
        self.meta_lr = float(meta_lr)
        self.seed = int(seed)
        self.feature_spec = feature_spec
        self.train_range: tuple[str, str] | None = None
        self.step_count = 0

        is_meta_model = isinstance(model, MetaModel)
        if engine == "auto":
            engine = "func" if is_meta_model else "higher"
        if engine == "func" and not is_meta_model:
            raise ConfigError(
                f"engine 'func' needs a metabt.models model (MLP, GRU), got "
                f"{type(model).__name__}; use engine='higher'"
            )
        if self._algo.head_only and not is_meta_model:
            raise ConfigError(
                "algorithm 'anil' needs a model with a 'head' (metabt.models.MLP/GRU)"
            )
        self.engine = engine

        self._named_params = list(model.named_parameters())
        self._fold_cache: tuple[tuple[Any, ...], tuple[np.ndarray, np.ndarray | float]] | None = (
            None
        )
        names = [n for n, _ in self._named_params]
        if self._algo.head_only:
            assert isinstance(model, MetaModel)
            self._adapt_names = [n for n in names if n in model.head_names]
        else:
            self._adapt_names = names
        self.inner_lrs: dict[str, nn.Parameter] = {}
        if self._algo.learned_lr:
            params = dict(model.named_parameters())
            self.inner_lrs = {
                n: nn.Parameter(torch.full_like(params[n].detach(), self.inner_lr))
                for n in self._adapt_names
            }
        self._optimizer = torch.optim.Adam(
            [*model.parameters(), *self.inner_lrs.values()], lr=self.meta_lr
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
        return next(self.model.parameters()).dtype

    def _forward_with(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        if isinstance(self.model, MetaModel):
            return self.model.forward_with(params, x)
        out = torch.func.functional_call(self.model, dict(params), (x,))
        return out.reshape(out.shape[0])

    def _lr(self, name: str) -> Tensor | float:
        return self.inner_lrs[name] if self.inner_lrs else self.inner_lr

    def _as_batch(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> Batch:
        out = []
        for label, t, ndim in (("xs", xs, 3), ("ys", ys, 2), ("xq", xq, 3), ("yq", yq, 2)):
            t = torch.as_tensor(t)
            if t.ndim != ndim:
                raise ConfigError(
                    f"{label} must have {ndim} dimensions, got shape {tuple(t.shape)}"
                )
            out.append(t.to(self.dtype))
        xs, ys, xq, yq = out
        if xs.shape[:2] != ys.shape or xq.shape[:2] != yq.shape or xs.shape[0] != xq.shape[0]:
            raise ConfigError(
                f"task shapes do not fit: xs {tuple(xs.shape)}, ys {tuple(ys.shape)}, "
                f"xq {tuple(xq.shape)}, yq {tuple(yq.shape)}; "
                "expected (B,S,F), (B,S), (B,Q,F), (B,Q)"
            )
        return xs, ys, xq, yq

    # --------------------------------------------------------- inner loop (func)
    def _inner_func(
        self,
        fast: Params,
        predict: Callable[[Mapping[str, Tensor], Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        steps: int,
        lrs: Mapping[str, Tensor | float],
        first_order: bool,
    ) -> Params:
        """``steps`` steps of gradient descent on the support loss, written with torch.func.grad.

        Differentiable with respect to the starting point (and learned rates) unless
        ``first_order``, in which case the inner gradients are treated as constants.
        """

        def support_loss(p: Params) -> Tensor:
            return _mse(predict(p, x), y)

        grad_fn = torch.func.grad(support_loss)
        for _ in range(steps):
            grads = grad_fn(fast)
            if first_order:
                grads = {k: g.detach() for k, g in grads.items()}
            fast = {k: fast[k] - lrs[k] * grads[k] for k in fast}
        return fast

    def _task_loss_func(
        self,
        params: Mapping[str, Tensor],
        lrs: Mapping[str, Tensor | float],
        steps: int,
        first_order: bool,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
    ) -> Tensor:
        """Query loss of one task after adaptation (vmapped over tasks by the func engine)."""
        if self._algo.head_only:
            model = self.model
            assert isinstance(model, MetaModel)
            hs, hq = model.body_with(params, xs), model.body_with(params, xq)
            head = {k: params[k] for k in self._adapt_names}
            head = self._inner_func(head, model.head_with, hs, ys, steps, lrs, first_order)
            return _mse(model.head_with(head, hq), yq)
        fast = self._inner_func(dict(params), self._forward_with, xs, ys, steps, lrs, first_order)
        return _mse(self._forward_with(fast, xq), yq)

    # ----------------------------------------------------------------- outer loop
    def meta_step(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """One outer-loop update of θ on a batch of tasks.

        Args:
            xs: support inputs, (B, S, F_in) float32.
            ys: support labels, (B, S) float32.
            xq: query inputs, (B, Q, F_in) float32.
            yq: query labels, (B, Q) float32.

        Returns:
            Mean over tasks of the query loss (MSE) after inner-loop adaptation, before this
            update (for ``erm`` and ``scratch`` too, so that curves are comparable).

        Raises:
            ConfigError: if the shapes do not fit together.
        """
        xs, ys, xq, yq = self._as_batch(xs, ys, xq, yq)
        kind = self._algo.kind
        if kind == "scratch":
            loss = self.evaluate(xs, ys, xq, yq)
        elif kind == "erm":
            loss = self.evaluate(xs, ys, xq, yq)
            self._optimizer.zero_grad(set_to_none=True)
            joint = self.model(torch.cat([xs, xq], 1).flatten(0, 1))
            _mse(joint, torch.cat([ys, yq], 1).flatten()).backward()
            self._optimizer.step()
        elif kind == "reptile":
            loss = self._reptile_step(xs, ys, xq, yq)
        elif self.engine == "func":
            loss = self._gradient_step_func(xs, ys, xq, yq)
        else:
            loss = self._gradient_step_higher(xs, ys, xq, yq)
        self.step_count += 1
        return loss

    def _gradient_step_func(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        params = dict(self.model.named_parameters())
        lrs = {n: self._lr(n) for n in self._adapt_names}
        first_order = not self._algo.second_order

        def task_loss(xs_: Tensor, ys_: Tensor, xq_: Tensor, yq_: Tensor) -> Tensor:
            return self._task_loss_func(
                params, lrs, self.inner_steps, first_order, xs_, ys_, xq_, yq_
            )

        losses = torch.func.vmap(task_loss)(xs, ys, xq, yq)
        loss = losses.mean()
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return float(loss.detach())

    def _inner_optimizer(self) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
        params = dict(self.model.named_parameters())
        groups = [{"params": [params[n]]} for n in self._adapt_names]
        override: dict[str, Any] = {}
        if self.inner_lrs:
            override = {"lr": [self.inner_lrs[n] for n in self._adapt_names]}
        return torch.optim.SGD(groups, lr=self.inner_lr), override

    def _gradient_step_higher(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        import higher

        batch = xs.shape[0]
        second_order = self._algo.second_order
        inner_opt, override = self._inner_optimizer()
        theta = list(self.model.parameters())
        self._optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for b in range(batch):
            with higher.innerloop_ctx(
                self.model,
                inner_opt,
                copy_initial_weights=False,
                track_higher_grads=second_order,
                override=override or None,
            ) as (fmodel, diffopt):
                for _ in range(self.inner_steps):
                    diffopt.step(_mse(fmodel(xs[b]), ys[b]))
                query_loss = _mse(fmodel(xq[b]), yq[b])
                if second_order:
                    (query_loss / batch).backward()
                else:
                    grads = torch.autograd.grad(query_loss, list(fmodel.parameters()))
                    for p, g in zip(theta, grads):
                        p.grad = g / batch if p.grad is None else p.grad + g / batch
                total += float(query_loss.detach())
        self._optimizer.step()
        return total / batch

    def _reptile_step(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """Reptile: θ ← θ + ε·mean_b(φ_b − θ), φ_b adapted on task b's support ∪ query.

        The pseudo-gradient θ − mean φ is handed to Adam (Nichol et al. 2018, section 5).
        """
        loss = self.evaluate(xs, ys, xq, yq)
        x_all, y_all = torch.cat([xs, xq], 1), torch.cat([ys, yq], 1)
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            if self.engine == "func":
                theta = {k: v.detach() for k, v in params.items()}
                lrs = {n: self.inner_lr for n in params}

                def adapt_one(x: Tensor, y: Tensor) -> Params:
                    return self._inner_func(
                        theta, self._forward_with, x, y, self.inner_steps, lrs, True
                    )

                phi = torch.func.vmap(adapt_one)(x_all, y_all)
                mean_phi = {k: v.mean(0) for k, v in phi.items()}
            else:
                sums = {k: torch.zeros_like(v) for k, v in params.items()}
                for b in range(x_all.shape[0]):
                    adapted = self.adapt(x_all[b], y_all[b])
                    for k in sums:
                        sums[k] += adapted.params[k]
                mean_phi = {k: v / x_all.shape[0] for k, v in sums.items()}
        self._optimizer.zero_grad(set_to_none=True)
        for k, p in params.items():
            p.grad = (p.detach() - mean_phi[k]).clone()
        self._optimizer.step()
        return loss

    # -------------------------------------------------------------- adaptation
    def adapt(
        self,
        x_support: Tensor | np.ndarray,
        y_support: Tensor | np.ndarray,
        steps: int | None = None,
    ) -> AdaptedModel:
        """Adapt θ to one support set; θ itself is left untouched.

        Plain gradient descent on the support MSE (learned per-parameter rates for metasgd,
        the head only for anil), with no graph kept between steps: this is the test-time
        inner loop that ``MetaStrategy`` runs inside the backtest. It runs on the cheapest
        exact path: the MLP's NumPy backpropagation, a closed-form gradient of the linear
        head for ANIL (the body runs once), else ``torch.autograd`` (e.g. the GRU). The
        paths agree to float64 precision (tested).

        Args:
            x_support: (S, F_in) float inputs (tensor or ndarray).
            y_support: (S,) float labels.
            steps: inner steps; None uses the learner's ``inner_steps``.

        Returns:
            An :class:`AdaptedModel` mapping x (N, F_in) -> predictions (N,), with the
            support loss before and after adaptation.

        Raises:
            ConfigError: on mismatched shapes, an empty support set, non-finite values or
                a negative ``steps``.
        """
        steps = self.inner_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
        np_dtype = self._named_params[0][1].detach().numpy().dtype
        xn = _to_numpy(x_support, np_dtype)
        yn = _to_numpy(y_support, np_dtype)
        if xn.ndim != 2 or yn.ndim != 1 or xn.shape[0] != yn.shape[0] or xn.shape[0] == 0:
            raise ConfigError(
                f"support set must be x (S, F) and y (S,) with S >= 1, got x {xn.shape} "
                f"and y {yn.shape}"
            )
        if not (np.isfinite(xn).all() and np.isfinite(yn).all()):
            raise ConfigError(
                "support set has NaN or infinite values; drop rows whose label "
                "or features are not yet known"
            )
        if hasattr(self.model, "adapt_folded") and not self._algo.head_only:
            return self._adapt_numpy(xn, yn, steps)
        x, y = torch.from_numpy(xn), torch.from_numpy(yn)
        if self._algo.head_only:
            return self._adapt_head(x, y, steps)
        return self._adapt_autograd(x, y, steps)

    def _numpy_lrs(self) -> dict[str, np.ndarray | float]:
        if self.inner_lrs:
            return {n: self.inner_lrs[n].detach().numpy() for n in self._adapt_names}
        return {n: self.inner_lr for n in self._adapt_names}

    def _adapt_numpy(self, xn: np.ndarray, yn: np.ndarray, steps: int) -> AdaptedModel:
        """Inner loop in the model's fused NumPy kernel (MLP): no autograd, no graph."""
        model: Any = self.model
        flat, rate = self._folded_theta()
        loss_before, loss_after, phi = model.adapt_folded(flat, rate, xn, yn, steps)
        return AdaptedModel(
            model.forward_with,
            None,
            loss_before=loss_before,
            loss_after=loss_after,
            steps=steps,
            forward_numpy=model.forward_numpy,
            numpy_params=phi,
        )

    def _folded_theta(self) -> tuple[np.ndarray, np.ndarray | float]:
        """θ and inner rates in the MLP kernel's flat layout, refolded only when they change.

        A backtest adapts from the same θ hundreds of times; the cache key is each
        tensor's identity and in-place version counter, so an optimizer step, a
        ``load_state_dict`` or a replaced parameter all invalidate it.
        """
        tensors = [p for _, p in self._named_params]
        if self.inner_lrs:
            tensors += [self.inner_lrs[n] for n in self._adapt_names]
        key = (self.inner_lr, *((id(t), t._version) for t in tensors))
        if self._fold_cache is None or self._fold_cache[0] != key:
            folded = self.model.fold_numpy(self._numpy_theta(), self._numpy_lrs())  # type: ignore[operator]
            self._fold_cache = (key, folded)
        return self._fold_cache[1]

    def _numpy_theta(self) -> dict[str, np.ndarray]:
        """θ as name -> ndarray views (no copy; read only by the NumPy paths)."""
        return {k: v.detach().numpy() for k, v in self._named_params}

    def _adapt_head(self, x: Tensor, y: Tensor, steps: int) -> AdaptedModel:
        """ANIL: the body runs once; the linear head's MSE gradient is closed-form."""
        model = self.model
        assert isinstance(model, MetaModel)
        theta = {k: v.detach() for k, v in self._named_params}
        with torch.no_grad():
            h = model.body_with(theta, x).numpy()
        weight, bias = theta["head.weight"].numpy(), theta["head.bias"].numpy()
        lrs = self._numpy_lrs()
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
        return AdaptedModel(
            model.forward_with,
            params,
            loss_before=loss_after if steps == 0 else loss_before,
            loss_after=loss_after,
            steps=steps,
            forward_numpy=getattr(model, "forward_numpy", None),
        )

    def _adapt_autograd(self, x: Tensor, y: Tensor, steps: int) -> AdaptedModel:
        """Reference inner loop with torch.autograd (any model; used for the GRU)."""
        theta = {k: v.detach() for k, v in self._named_params}
        names = self._adapt_names
        lrs = {n: (self.inner_lrs[n].detach() if self.inner_lrs else self.inner_lr) for n in names}
        fast = {n: theta[n] for n in names}
        rest = {k: v for k, v in theta.items() if k not in fast}
        loss_before = math.nan
        with torch.enable_grad():
            for i in range(steps):
                leaves = [fast[n].detach().requires_grad_() for n in names]
                loss = _mse(self._forward_with({**rest, **dict(zip(names, leaves))}, x), y)
                if i == 0:
                    loss_before = float(loss.detach())
                grads = torch.autograd.grad(loss, leaves)
                fast = {n: (p - lrs[n] * g).detach() for n, p, g in zip(names, leaves, grads)}
        with torch.no_grad():
            loss_after = float(_mse(self._forward_with({**rest, **fast}, x), y))
        return AdaptedModel(
            self._forward_with,
            {**rest, **fast},
            loss_before=loss_after if steps == 0 else loss_before,
            loss_after=loss_after,
            steps=steps,
        )

    def evaluate(
        self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, steps: int | None = None
    ) -> float:
        """Mean query loss after adapting to each task's support set; θ is not changed.

        Args:
            xs, ys, xq, yq: a task batch, shapes as in :meth:`meta_step`.
            steps: inner steps; None uses the learner's ``inner_steps``.

        Returns:
            Mean over tasks of the query MSE after adaptation.
        """
        xs, ys, xq, yq = self._as_batch(xs, ys, xq, yq)
        steps = self.inner_steps if steps is None else steps
        if self.engine == "func":
            params = {k: v.detach() for k, v in self.model.named_parameters()}
            lrs = {
                n: (self.inner_lrs[n].detach() if self.inner_lrs else self.inner_lr)
                for n in self._adapt_names
            }

            def task_loss(xs_: Tensor, ys_: Tensor, xq_: Tensor, yq_: Tensor) -> Tensor:
                return self._task_loss_func(params, lrs, steps, True, xs_, ys_, xq_, yq_)

            with torch.no_grad():
                return float(torch.func.vmap(task_loss)(xs, ys, xq, yq).mean())
        losses = [
            float(_mse(self.adapt(xs[b], ys[b], steps=steps)(xq[b]), yq[b]))
            for b in range(xs.shape[0])
        ]
        return float(np.mean(losses))

    # --------------------------------------------------------------- training
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
    ) -> FitResult:
        """Meta-train: ``steps`` outer steps, each on ``batch_size`` tasks from ``tasks``.

        Task batches come from ``np.random.default_rng([seed, step])``, so a resumed run
        draws exactly the tasks an uninterrupted run would have drawn.

        Args:
            tasks: task sampler with ``sample(batch_size, rng)`` (a ``TaskSampler``).
            steps: total number of outer steps (a resumed run continues up to it).
            batch_size: tasks per outer step. Default 16.
            val_tasks: validation tasks: a sampler with ``fixed(n, seed)`` or a fixed batch.
                θ with the lowest validation loss is kept. Default None (keep the last θ).
            val_size: validation tasks drawn from a sampler. Default 64.
            val_every: outer steps between validations (and checkpoint writes). Default 50.
            patience: stop after this many validations without improvement. Default None.
            checkpoint: path written atomically every ``val_every`` steps and at the end.
            resume: continue from ``checkpoint`` if it holds an unfinished run. Default True.
            progress: show a tqdm progress bar. Default True.

        Returns:
            A :class:`FitResult`.

        Raises:
            ConfigError: bad arguments. CheckpointError: a checkpoint to resume from is
            corrupt or was written for another configuration.
        """
        from tqdm.auto import tqdm

        for label, value, low in (
            ("steps", steps, 0),
            ("batch_size", batch_size, 1),
            ("val_every", val_every, 1),
            ("val_size", val_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ConfigError(f"patience must be a positive integer or None, got {patience!r}")

        val_batch: Batch | None = None
        if val_tasks is not None:
            fixed = getattr(val_tasks, "fixed", None)
            val_batch = fixed(val_size, self.seed) if callable(fixed) else val_tasks  # type: ignore[assignment]
        date_range = getattr(tasks, "date_range", None)
        if date_range is not None:
            self.train_range = (str(date_range[0])[:10], str(date_range[1])[:10])

        result = FitResult()
        best_state = {k: v.detach().clone() for k, v in self._state().items()}
        bad_evals = 0
        start = 0
        path = Path(checkpoint) if checkpoint is not None else None
        if path is not None and resume and path.exists():
            start, result, best_state, bad_evals = self._restore_fit_state(path)
        if self._algo.kind == "scratch":
            steps = start  # nothing to train: θ stays the random initialisation

        def validate(step: int) -> bool:
            nonlocal best_state, bad_evals
            if val_batch is None:
                return False
            loss = self.evaluate(*val_batch)
            result.val_losses.append((step, loss))
            if not (loss >= result.best_val_loss):  # also true while best is NaN
                result.best_val_loss, result.best_step, bad_evals = loss, step, 0
                best_state = {k: v.detach().clone() for k, v in self._state().items()}
            else:
                bad_evals += 1
            return patience is not None and bad_evals >= patience

        if start == 0 and val_batch is not None and not result.val_losses:
            validate(0)
        bar = tqdm(
            total=steps,
            initial=start,
            disable=None if progress else True,  # None: off when not a terminal
            desc=f"meta-train {self.algorithm}",
            unit="step",
            leave=False,
        )
        step = start
        try:
            while step < steps:
                batch = tasks.sample(batch_size, np.random.default_rng([self.seed, step]))
                loss = self.meta_step(*batch)
                if not math.isfinite(loss):
                    raise ConfigError(
                        f"meta-training diverged at step {step} (query loss {loss}); lower "
                        f"meta_lr ({self.meta_lr}) or inner_lr ({self.inner_lr})"
                    )
                result.train_losses.append(loss)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if step % val_every == 0 or step == steps:
                    stop = validate(step)
                    result.steps = step
                    if path is not None:
                        self._save(
                            path, fit_state=self._fit_state(step, result, best_state, bad_evals)
                        )
                    if stop:
                        result.stopped_early = True
                        break
        finally:
            bar.close()
        result.steps = step
        if val_batch is not None:
            self._load_state(best_state)
        else:
            result.best_step = step
        if path is not None:
            self._save(path, fit_state=self._fit_state(step, result, best_state, bad_evals))
        return result

    def _state(self) -> dict[str, Tensor]:
        state = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        state.update({f"inner_lr.{k}": v for k, v in self.inner_lrs.items()})
        return state

    def _load_state(self, state: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            self.model.load_state_dict(
                {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
            )
            for k, p in self.inner_lrs.items():
                p.copy_(state[f"inner_lr.{k}"])

    def _fit_state(
        self, step: int, result: FitResult, best_state: Mapping[str, Tensor], bad_evals: int
    ) -> dict[str, Any]:
        return {
            "step": step,
            "optimizer": self._optimizer.state_dict(),
            "best_state": dict(best_state),
            "best_step": result.best_step,
            "best_val_loss": result.best_val_loss,
            "bad_evals": bad_evals,
            "train_losses": list(result.train_losses),
            "val_losses": [[s, v] for s, v in result.val_losses],
            "stopped_early": result.stopped_early,
        }

    def _restore_fit_state(self, path: Path) -> tuple[int, FitResult, dict[str, Tensor], int]:
        ckpt = _read_checkpoint(path)
        if ckpt["hparams"] != self._hparams() or ckpt["model_config"] != self._model_config():
            raise CheckpointError(
                f"{path}: the checkpoint to resume from was written for another configuration "
                f"({ckpt['hparams']}, {ckpt['model_config']}); delete it or pass resume=False"
            )
        state = ckpt.get("fit_state")
        if state is None:
            raise CheckpointError(
                f"{path}: holds no training state to resume from; pass resume=False"
            )
        try:
            self._load_state(ckpt["state"])
            self._optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: cannot resume ({exc}); delete it or pass resume=False"
            ) from exc
        result = FitResult(
            steps=int(state["step"]),
            best_step=int(state["best_step"]),
            best_val_loss=float(state["best_val_loss"]),
            train_losses=[float(v) for v in state["train_losses"]],
            val_losses=[(int(s), float(v)) for s, v in state["val_losses"]],
            stopped_early=bool(state["stopped_early"]),
            resumed_from=int(state["step"]),
        )
        self.step_count = result.steps
        return result.steps, result, dict(state["best_state"]), int(state["bad_evals"])

    # ------------------------------------------------------------ checkpoints
    def _model_config(self) -> dict[str, Any]:
        config = getattr(self.model, "config", None)
        if not callable(config):
            raise CheckpointError(
                f"cannot save a {type(self.model).__name__}: only metabt.models models "
                "(MLP, GRU) can be written to a checkpoint"
            )
        return dict(config())

    def _hparams(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "meta_lr": self.meta_lr,
            "engine": self.engine,
            "seed": self.seed,
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint atomically (temporary file in the same folder, then rename).

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
        return self._save(Path(path), fit_state=None)

    def _save(self, path: Path, fit_state: dict[str, Any] | None) -> Path:
        import metabt

        payload = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "model_config": self._model_config(),
            "hparams": self._hparams(),
            "state": {k: v.detach().clone() for k, v in self._state().items()},
            "feature_spec": None if self.feature_spec is None else self.feature_spec.to_dict(),
            "train_range": None if self.train_range is None else list(self.train_range),
            "step_count": self.step_count,
            "versions": {
                "metabt": metabt.__version__,
                "torch": str(torch.__version__),
                "numpy": str(np.__version__),
                "python": platform.python_version(),
            },
            "fit_state": fit_state,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        feature_spec: FeatureSpec | None = None,
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
        from metabt.features import FeatureSpec

        path = Path(path)
        ckpt = _read_checkpoint(path)
        try:
            model = build_model(ckpt["model_config"])
            spec = None
            if ckpt["feature_spec"] is not None:
                spec = FeatureSpec.from_dict(ckpt["feature_spec"])
            hp = dict(ckpt["hparams"])
            dtype = getattr(torch, str(hp.pop("dtype", "float32")))
            model = model.to(dtype)
            learner = cls(
                model,
                algorithm=hp["algorithm"],
                inner_lr=hp["inner_lr"],
                inner_steps=hp["inner_steps"],
                meta_lr=hp["meta_lr"],
                engine=engine or hp["engine"],
                seed=hp["seed"],
                feature_spec=spec,
            )
            learner._load_state(ckpt["state"])
        except CheckpointError:
            raise
        except (ConfigError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(
                f"{path}: the checkpoint does not match this version of metabt ({exc}); "
                "re-create it with `metabt train`"
            ) from exc
        if spec is not None and model.n_features != spec.n_features * model.window:
            raise CheckpointError(
                f"{path}: the model takes {model.n_features} inputs but the feature spec gives "
                f"{spec.n_features} x window {model.window}; re-create it with `metabt train`"
            )
        if feature_spec is not None and spec != feature_spec:
            raise CheckpointError(
                f"{path}: the checkpoint was trained with features {spec}, not {feature_spec}; "
                "use the checkpoint's feature spec or retrain with `metabt train`"
            )
        if ckpt["train_range"] is not None:
            learner.train_range = (str(ckpt["train_range"][0]), str(ckpt["train_range"][1]))
        learner.step_count = int(ckpt.get("step_count", 0))
        return learner

    def __repr__(self) -> str:
        return (
            f"MetaLearner(algorithm={self.algorithm!r}, engine={self.engine!r}, "
            f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
            f"meta_lr={self.meta_lr}, model={type(self.model).__name__})"
        )


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and sanity-check a checkpoint dict, never unpickling arbitrary objects."""
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; train one with `metabt train --out {path}`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        AttributeError,
        TypeError,
        IndexError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({first}); re-create it with `metabt train`"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a metabt checkpoint; train one with `metabt train`")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this metabt reads "
            f"({CHECKPOINT_VERSION}); upgrade metabt"
        )
    missing = {"model_config", "hparams", "state", "feature_spec", "train_range"} - set(ckpt)
    if missing:
        raise CheckpointError(
            f"{path}: checkpoint lacks {sorted(missing)}; re-create it with `metabt train`"
        )
    return ckpt
