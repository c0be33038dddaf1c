"""The inner loops of the gradient families, as pure functions of explicit parameters.

The meta-training inner loop (:func:`inner_loop`, written with ``torch.func.grad`` so that
it runs under ``vmap`` and is differentiable through), the query losses after it (one task:
:func:`query_loss`, :func:`head_query_loss`, :func:`partial_query_loss`; all tasks:
:func:`query_losses`), and the test-time inner loops (:func:`adapt_autograd`, the reference;
:class:`ModuleRunner`, the fast path of any module; :func:`adapt_head`, ANIL's closed form;
:func:`adapt_vmap` and :func:`vmap_batch`, B tasks at once). Every inner loop descends the
support MSE (:func:`metabt.learn.losses.mse`), except the meta-training inner loops of a
P&L loss with ``inner_objective="same"``, which descend that loss on the support path
(:func:`support_objective`); the query loss is the family's
:class:`metabt.learn.losses.TaskLoss`.

Every function runs on any ``torch.nn.Module`` mapping (N, F_in) to (N,) or (N, 1), through
its ``forward_with`` (``torch.func.functional_call``; PyTorch docs, "torch.func"), or, for
:class:`ModuleRunner`, through the forward pass of a private copy of the module.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from metabt.errors import ConfigError
from metabt.learn.adapted import AdaptedModel, Forward, Params
from metabt.learn.kernels.batched import BatchAdapted
from metabt.learn.losses import MSE, SUPPORT_EXTRAS, PnLLoss, TaskLoss, mse
from metabt.learn.models import MetaModel

__all__ = [
    "Forward",
    "ModuleRunner",
    "Params",
    "SupportLoss",
    "TaskFn",
    "adapt_autograd",
    "adapt_head",
    "adapt_vmap",
    "head_query_loss",
    "inner_loop",
    "module_runner",
    "one_thread",
    "partial_query_loss",
    "prediction",
    "query_loss",
    "query_losses",
    "support_objective",
    "vmap_batch",
]

#: One task's query loss: (xs (S, F_in), ys (S,), xq (Q, F_in), yq (Q,), *support extras
#: ((S,) each, for a P&L inner loop)) -> ().
TaskFn = Callable[..., Tensor]
#: The loss an inner loop descends: (predictions (S,), labels (S,)) -> ().
SupportLoss = Callable[[Tensor, Tensor], Tensor]


def support_objective(inner: PnLLoss | None, extra: tuple[Tensor, ...]) -> SupportLoss:
    """The inner loop's loss of one task: the support MSE, or a P&L loss on its path.

    Args:
        inner: the P&L loss of a ``inner_objective="same"`` family
            (``LearnerFamily.inner_loss``), or None for the MSE.
        extra: the task's support extras, (S,) each in
            :data:`metabt.learn.losses.SUPPORT_EXTRAS` order (empty for the MSE).

    Returns:
        (pred (S,), y (S,)) -> (): :func:`metabt.learn.losses.mse`, or
        ``inner.support_loss`` of the path (the labels are not read: the path earns the
        rows' realised returns).
    """
    if inner is None:
        return mse
    rows = dict(zip(SUPPORT_EXTRAS, extra))

    def path_loss(pred: Tensor, y: Tensor) -> Tensor:
        return inner.support_loss(pred, rows)

    return path_loss


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


def inner_loop(
    fast: Params,
    predict: Forward,
    x: Tensor,
    y: Tensor,
    steps: int,
    lrs: Mapping[str, Tensor | float],
    first_order: bool,
    loss: SupportLoss = mse,
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
        loss: the support loss, (pred, y) -> () (:func:`support_objective`). Default the
            MSE.

    Returns:
        The adapted parameters φ, name -> tensor.
    """

    def support_loss(p: Params) -> Tensor:
        return loss(predict(p, x), y)

    grad_fn = torch.func.grad(support_loss)
    for _ in range(steps):
        grads = grad_fn(fast)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        fast = {k: fast[k] - lrs[k] * grads[k] for k in fast}
    return fast


def query_loss(
    predict: Forward,
    params: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor | float],
    steps: int,
    task: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    first_order: bool,
    loss: TaskLoss = MSE,
    inner: SupportLoss = mse,
) -> Tensor:
    """One task's query loss after :func:`inner_loop` adapts every parameter (MAML, Meta-SGD).

    Args:
        predict: (params, x) -> predictions (N,), the learner's ``forward_with``.
        params: θ, name -> tensor (with autograd history for a meta-gradient).
        lrs: inner rate of every parameter of ``params``.
        steps: inner steps (>= 0).
        task: xs (S, F_in), ys (S,), xq (Q, F_in), yq (Q,), θ's dtype.
        first_order: treat the inner gradients as constants (FOMAML).
        loss: the query loss. Default MSE.
        inner: the support loss of the inner loop (:func:`support_objective`). Default MSE.

    Returns:
        () tensor.

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks"; Li et al. 2017, "Meta-SGD".
    """
    xs, ys, xq, yq = task
    fast = inner_loop(dict(params), predict, xs, ys, steps, lrs, first_order, inner)
    return loss(predict(fast, xq), yq)


def head_query_loss(
    model: MetaModel,
    params: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor | float],
    steps: int,
    task: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    first_order: bool,
    loss: TaskLoss = MSE,
    inner: SupportLoss = mse,
) -> Tensor:
    """One task's query loss after adapting only the head of a metabt model (ANIL).

    The body runs once on the support and query inputs; the inner loop adapts
    ``model.head_names`` on the body features.

    Args:
        model: a :class:`metabt.learn.models.MetaModel`.
        params: θ, name -> tensor; lrs: inner rate of each head parameter.
        steps, task, first_order, loss, inner: as :func:`query_loss` takes them.

    Returns:
        () tensor.

    References:
        Raghu, Raghu, Bengio, Vinyals 2020, "Rapid Learning or Feature Reuse? Towards
        Understanding the Effectiveness of MAML".
    """
    xs, ys, xq, yq = task
    head = {k: params[k] for k in model.head_names}
    hs, hq = model.body_with(params, xs), model.body_with(params, xq)  # body once
    head = inner_loop(head, model.head_with, hs, ys, steps, lrs, first_order, inner)
    return loss(model.head_with(head, hq), yq)


def partial_query_loss(
    predict: Forward,
    params: Mapping[str, Tensor],
    names: tuple[str, ...],
    lrs: Mapping[str, Tensor | float],
    steps: int,
    task: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    first_order: bool,
    loss: TaskLoss = MSE,
    inner: SupportLoss = mse,
) -> Tensor:
    """One task's query loss after adapting only ``names`` through the whole forward pass
    (ANIL on a module that is not a metabt model).

    Args:
        predict: (params, x) -> predictions (N,), the learner's ``forward_with``.
        params: θ, name -> tensor; names: the parameters adapted; lrs: their rates.
        steps, task, first_order, loss, inner: as :func:`query_loss` takes them.

    Returns:
        () tensor.
    """
    xs, ys, xq, yq = task
    head = {k: params[k] for k in names}
    rest = {k: v for k, v in params.items() if k not in head}

    def predict_head(p: Mapping[str, Tensor], x: Tensor) -> Tensor:
        return predict({**rest, **p}, x)

    head = inner_loop(head, predict_head, xs, ys, steps, lrs, first_order, inner)
    return loss(predict_head(head, xq), yq)


def query_losses(task_loss: TaskFn, batch: tuple[Tensor, ...]) -> Tensor:
    """One task's query loss for every task of a batch at once (``torch.func.vmap``).

    Args:
        task_loss: (xs, ys, xq, yq, *support extras) of one task -> () (e.g.
            :func:`query_loss` with its other arguments bound).
        batch: xs (B, S, F_in), ys (B, S), xq (B, Q, F_in), yq (B, Q), θ's dtype, then
            any support extras (B, S) of a P&L inner loop.

    Returns:
        (B,) tensor of query losses.
    """
    return torch.func.vmap(task_loss)(*batch)


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


def adapt_vmap(
    forward: Forward,
    theta: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor | float],
    x: Tensor,
    y: Tensor,
    steps: int,
) -> tuple[Tensor, Tensor, Params]:
    """:func:`adapt_autograd` for B support sets at once: ``torch.func.vmap`` of the inner loop.

    The batched test-time inner loop of any module (``MetaLearner.adapt_batch``): each
    task gets its own φ_b from the same θ; no graph is kept.

    Args:
        forward: (params, x) -> predictions (N,) (vmappable: ``functional_call`` of a module).
        theta: θ, name -> tensor without autograd history.
        lrs: name -> inner rate; its keys are the parameters adapted.
        x: (B, S, F_in) support inputs; y: (B, S) support labels, θ's dtype.
        steps: inner steps (>= 0).

    Returns:
        (loss_before (B,), loss_after (B,), φ name -> (B, *shape) tensor for every
        parameter of θ; the ones not adapted are θ expanded, without a copy).

    References:
        Finn et al. 2017, eq. 1; PyTorch docs, "torch.func.vmap" and "torch.func.grad".
    """
    names = list(lrs)
    start = {n: theta[n] for n in names}
    rest = {k: v for k, v in theta.items() if k not in start}

    def predict(p: Mapping[str, Tensor], xb: Tensor) -> Tensor:
        return forward({**rest, **p}, xb)

    def one(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor, Params]:
        phi = inner_loop(start, predict, xb, yb, steps, lrs, first_order=True)
        return mse(predict(start, xb), yb), mse(predict(phi, xb), yb), phi

    with torch.no_grad():
        before, after, phi = torch.func.vmap(one)(x, y)
    batch = x.shape[0]
    return (
        before,
        after,
        {
            **{k: v.expand(batch, *v.shape) for k, v in rest.items()},
            **phi,
        },
    )


def vmap_batch(
    forward: Forward,
    theta: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor | float],
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    task_rows: Callable[[Params, np.ndarray], np.ndarray] | None = None,
) -> BatchAdapted:
    """Adapt any module on B tasks with :func:`adapt_vmap`; backend "vmap".

    Runs with one torch thread (:func:`one_thread`), as do the batch's predictions.

    Args:
        forward: the learner's ``forward_with`` (``functional_call`` of the module).
        theta, lrs, steps: as :func:`adapt_vmap` takes them; x (B, S, F_in), y (B, S)
            ndarrays of θ's dtype.
        task_rows: the fast prediction path of one task's model
            (:meth:`ModuleRunner.forward_rows`), given to each task's
            :class:`AdaptedModel`; None: ``forward`` under ``torch.no_grad``.

    Returns:
        A :class:`BatchAdapted` (predictions of all tasks at once through ``vmap`` of
        ``forward``).
    """
    with one_thread():
        before_t, after_t, phi = adapt_vmap(
            forward, theta, lrs, torch.from_numpy(x), torch.from_numpy(y), steps
        )
    before, after = before_t.numpy(), after_t.numpy()

    def one_row(p: Params, row: Tensor) -> Tensor:
        return forward(p, row[None])[0]

    def forward_rows(rows: np.ndarray) -> np.ndarray:
        with one_thread(), torch.no_grad():
            return torch.func.vmap(one_row)(phi, torch.from_numpy(rows)).numpy()

    def make_model(i: int) -> AdaptedModel:
        return AdaptedModel(
            forward,
            {k: v[i] for k, v in phi.items()},
            loss_before=float(before[i]),
            loss_after=float(after[i]),
            steps=steps,
            backend="vmap",
            forward_rows=task_rows,
        )

    return BatchAdapted(
        forward_rows,
        make_model,
        loss_before=before,
        loss_after=after,
        steps=steps,
        backend="vmap",
        dtype=x.dtype,
    )


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread, then restore the thread count.

    A test-time inner loop runs hundreds of tiny operations (a few thousand numbers
    each) per adaptation; splitting them over threads costs more than it saves, and on a
    busy machine every operation waits for the slowest thread (measured: a user MLP's
    adaptation 1.7 ms at one thread, 4 to 130 ms at two threads on a loaded 2-core machine;
    ``benchmarks/bench_user_model.py``). ``torch.set_num_threads`` is process-wide: the
    count is restored on exit, also after an error.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class ModuleRunner:
    """The fast test-time path of any ``nn.Module``: a private copy of it, adapted in place.

    :func:`adapt_autograd` (the reference) rebuilds the module's parameters through
    ``torch.func.functional_call`` on every forward pass; here a copy of the module (the
    worker, made once per learner's model) holds φ as its own parameters: each
    adaptation copies θ into it, takes ``steps`` steps of ``torch.autograd.grad`` with
    respect to its parameters and updates them in place (no graph kept between steps),
    with one torch thread (:func:`one_thread`). Predictions run the worker's forward
    pass under ``torch.inference_mode``, reloading φ only when another adaptation's φ
    was loaded since. The same update as :func:`adapt_autograd`, so equal to it to
    rounding (tested in float64); ``torch.func.grad`` was measured 2x slower than
    ``torch.autograd.grad`` at these sizes.

    Not thread-safe: one runner serves one learner's backtest at a time.

    Args:
        model: the learner's module (not modified; copied with ``copy.deepcopy``).

    Raises:
        Exception: whatever ``copy.deepcopy`` raises for a module that cannot be copied
            (:func:`module_runner` then returns None and the reference path runs).

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks", eq. 1; Li et al. 2017, "Meta-SGD"; PyTorch docs,
        "torch.inference_mode".
    """

    def __init__(self, model: nn.Module) -> None:
        # a weak reference: module_runner's cache must not keep the learner's model alive
        self._model = weakref.ref(model)
        self._worker = copy.deepcopy(model)
        self._worker_params = dict(self._worker.named_parameters())
        self._worker_buffers = dict(self._worker.named_buffers())
        self._loaded: Mapping[str, Tensor] | None = None  # the φ the worker holds
        self.dtype = next(iter(self._worker_params.values())).dtype

    def _load(self, params: Mapping[str, Tensor]) -> None:
        """Copy ``params`` (name -> tensor, every parameter) into the worker."""
        with torch.no_grad():
            for name, p in self._worker_params.items():
                p.copy_(params[name])
            model = self._model()
            for name, b in () if model is None else model.named_buffers():
                self._worker_buffers[name].copy_(b)
        self._loaded = params

    def adapt(
        self,
        theta: Mapping[str, Tensor],
        lrs: Mapping[str, Tensor | float],
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
    ) -> tuple[float, float, Params]:
        """:func:`adapt_autograd` on the worker: ``steps`` steps on the support MSE from θ.

        Args:
            theta: θ, name -> tensor without autograd history (every parameter).
            lrs: name -> inner rate (float or tensor of the parameter's shape); its keys
                are the parameters adapted.
            x: (S, F_in) support inputs; y: (S,) labels, ndarrays of θ's dtype.
            steps: inner steps (>= 0).

        Returns:
            (loss_before, loss_after, φ) as :func:`adapt_autograd` returns them.
        """
        self._loaded = None
        self._load(theta)
        model = self._model()
        if model is not None:  # train/eval as the model is now (dropout, as the reference)
            for mine, theirs in zip(self._worker.modules(), model.modules()):
                mine.training = theirs.training
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        worker, params = self._worker, self._worker_params
        names = list(lrs)
        leaves = [params[n] for n in names]
        fixed = [p for n, p in params.items() if n not in lrs]
        loss_before = math.nan
        with one_thread():
            for p in fixed:
                p.requires_grad_(False)
            for p in leaves:
                p.requires_grad_(True)
            with torch.enable_grad():
                for i in range(steps):
                    loss = mse(prediction(worker(xt), xt, worker), yt)
                    if i == 0:
                        loss_before = float(loss.detach())
                    grads = torch.autograd.grad(loss, leaves)
                    with torch.no_grad():
                        for n, p, g in zip(names, leaves, grads):
                            p.sub_(lrs[n] * g)
            with torch.inference_mode():
                loss_after = float(mse(prediction(worker(xt), xt, worker), yt))
        phi: Params = {**theta, **{n: p.detach().clone() for n, p in zip(names, leaves)}}
        self._loaded = phi
        return (loss_after if steps == 0 else loss_before), loss_after, phi

    def forward_rows(self, params: Mapping[str, Tensor], x: np.ndarray) -> np.ndarray:
        """Predictions of the module with ``params``: x (N, F_in) ndarray -> (N,) float64.

        Args:
            params: φ, name -> tensor (every parameter), e.g. from :meth:`adapt`.
            x: input rows (cast to θ's dtype).

        Returns:
            (N,) float64 ndarray.
        """
        if self._loaded is not params:
            self._load(params)
        rows = torch.from_numpy(np.ascontiguousarray(x, dtype=_NUMPY_DTYPES[self.dtype]))
        with one_thread(), torch.inference_mode():
            out = prediction(self._worker(rows), rows, self._worker)
            return out.double().numpy()


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_RUNNERS: weakref.WeakKeyDictionary[nn.Module, ModuleRunner | None] = weakref.WeakKeyDictionary()


def module_runner(model: nn.Module) -> ModuleRunner | None:
    """The :class:`ModuleRunner` of ``model`` (made on first use, kept while the model lives),
    or None when the module cannot be copied (then the reference path runs).

    A runner is remade when θ's dtype changed since (``model.double()``).

    Args:
        model: a learner's module.

    Returns:
        Its runner, or None.
    """
    dtype = next(model.parameters()).dtype
    if model in _RUNNERS:
        runner = _RUNNERS[model]
        if runner is None or runner.dtype == dtype:
            return runner
    try:
        runner = ModuleRunner(model)
    except Exception:  # a module deepcopy refuses: the reference path runs
        runner = None
    _RUNNERS[model] = runner
    return runner
