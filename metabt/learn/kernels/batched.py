"""Batched test-time adaptation: B support sets adapted at once, one model per task.

``MetaLearner.adapt_batch`` adapts the same θ to B support sets of equal length S (a
multi-asset strategy groups its assets by support length) on the cheapest exact path:
the fused NumPy kernels with a leading task axis (``metabt.learn.kernels.fused``, metabt's
MLP and GRU), ANIL's closed-form head over batched body features, else ``torch.func.vmap``
of the inner loop (any module: ``metabt.learn.algorithms.inner.vmap_batch``). Each task's
result equals a separate ``MetaLearner.adapt`` to float precision (tested). The result is
a :class:`BatchAdapted`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from metabt.errors import ConfigError
from metabt.learn.adapted import AdaptedModel, Forward
from metabt.learn.kernels.fused import BatchKernel, FastKernel, as_batch_kernel
from metabt.learn.models import MetaModel

__all__ = [
    "BatchAdapted",
    "adapt_head_many",
    "batch_support_arrays",
    "head_batch",
    "kernel_batch",
    "stack_adapted",
]


def batch_support_arrays(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, like: Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """B support sets checked and converted for the batched inner loop.

    Args:
        x: (B, S, F_in) float inputs (tensor or ndarray); y: (B, S) float labels.
        like: a tensor of θ, whose dtype the arrays take.

    Returns:
        (x, y) as C-contiguous ndarrays of θ's dtype.

    Raises:
        ConfigError: wrong dimensions, shapes that do not fit, B or S of 0, non-finite values.
    """
    dtype = like.detach().numpy().dtype
    arrays = []
    for value in (x, y):
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        arrays.append(np.ascontiguousarray(value, dtype=dtype))
    xn, yn = arrays
    if xn.ndim != 3 or yn.ndim != 2 or xn.shape[:2] != yn.shape or 0 in xn.shape[:2]:
        raise ConfigError(
            f"batched support sets must be x (B, S, F) and y (B, S) with B, S >= 1, got x "
            f"{xn.shape} and y {yn.shape}; group support sets of equal length S into one call"
        )
    if not (np.isfinite(xn).all() and np.isfinite(yn).all()):
        bad = sorted(
            {int(i) for i in np.nonzero(~np.isfinite(yn).all(1) | ~np.isfinite(xn).all((1, 2)))[0]}
        )
        raise ConfigError(
            f"support sets {bad[:5]} have NaN or infinite values; drop rows whose label or "
            "features are not yet known"
        )
    return xn, yn


class BatchAdapted:
    """B models, each θ adapted to its own support set (``MetaLearner.adapt_batch``).

    Args:
        forward_rows: x (B, F_in) ndarray of θ's dtype -> (B,) predictions, task b's model
            on row b.
        make_model: i -> task i's :class:`metabt.learn.adapted.AdaptedModel`.
        loss_before, loss_after: (B,) support MSE at θ and at each φ_b.
        steps: inner-loop steps taken.
        backend: "kernel", "head", "vmap" or "loop" (separate ``adapt`` calls, each on its
            own fast path).
        dtype: θ's NumPy dtype (inputs are cast to it).

    Attributes:
        loss_before: (B,) float64 support MSE at θ.
        loss_after: (B,) float64 support MSE at φ_b.
        steps: inner-loop steps taken. backend: the batched inner loop that ran.
    """

    def __init__(
        self,
        forward_rows: Callable[[np.ndarray], np.ndarray],
        make_model: Callable[[int], AdaptedModel],
        *,
        loss_before: np.ndarray,
        loss_after: np.ndarray,
        steps: int,
        backend: str,
        dtype: np.dtype,
    ) -> None:
        self._forward_rows = forward_rows
        self._make_model = make_model
        self.loss_before = np.asarray(loss_before, dtype=np.float64)
        self.loss_after = np.asarray(loss_after, dtype=np.float64)
        self.steps = steps
        self.backend = backend
        self._dtype = dtype

    def __len__(self) -> int:
        """B, the number of tasks."""
        return len(self.loss_after)

    def predict_rows(self, x: np.ndarray | Tensor) -> np.ndarray:
        """Task b's prediction for row b, all tasks in one call: x (B, F_in) -> (B,) float64.

        The per-bar path of a multi-asset strategy: row b is asset b's current input.

        Raises:
            ConfigError: x is not (B, F_in) with this batch's B.
        """
        if isinstance(x, Tensor):
            x = x.detach().cpu().numpy()
        arr = np.ascontiguousarray(x, dtype=self._dtype)
        if arr.ndim != 2 or arr.shape[0] != len(self):
            raise ConfigError(
                f"predict_rows needs one row per task, x ({len(self)}, F_in); got {arr.shape}"
            )
        return np.asarray(self._forward_rows(arr), dtype=np.float64)

    def model(self, i: int) -> AdaptedModel:
        """Task i's adapted model, as ``MetaLearner.adapt`` returns it.

        Raises:
            IndexError: i is not in range(B).
        """
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"task {i} is out of range for a batch of {n}")
        return self._make_model(i % n)

    def __repr__(self) -> str:
        return f"BatchAdapted(tasks={len(self)}, steps={self.steps}, backend={self.backend!r})"


def _task(params: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in params.items()}


def kernel_batch(
    kernel: BatchKernel,
    forward: Forward,
    folded: tuple[np.ndarray, np.ndarray | float],
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
) -> BatchAdapted:
    """Adapt with a kernel's ``adapt_many`` (metabt's MLP and GRU; not ANIL).

    Args:
        kernel: the model's NumPy kernel; forward: the model's ``forward_with``.
        folded: (flat θ (P,), rate) from the kernel's ``fold`` (the learner's fold cache).
        x: (B, S, F_in); y: (B, S), θ's dtype. steps: inner steps (>= 0).

    Returns:
        A :class:`BatchAdapted` with backend "kernel".
    """
    before, after, phi = kernel.adapt_many(*folded, x, y, steps)

    def make_model(i: int) -> AdaptedModel:
        return AdaptedModel(
            forward,
            None,
            loss_before=float(before[i]),
            loss_after=float(after[i]),
            steps=steps,
            forward_numpy=kernel.forward,
            numpy_params=_task(phi, i),
            backend="kernel",
        )

    return BatchAdapted(
        lambda rows: kernel.forward_many(phi, rows),
        make_model,
        loss_before=before,
        loss_after=after,
        steps=steps,
        backend="kernel",
        dtype=x.dtype,
    )


def adapt_head_many(
    model: MetaModel,
    theta: Mapping[str, Tensor],
    lrs: Mapping[str, np.ndarray | float],
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ANIL's closed-form head inner loop (``metabt.learn.algorithms.inner.adapt_head``), B tasks.

    The body runs once on all B support sets; each task's linear head then takes
    ``steps`` gradient steps, ``2/S hᵀr`` (weight) and ``2/S Σr`` (bias) for residuals r.

    Args:
        model: a :class:`metabt.learn.models.MetaModel`; theta: θ, name -> tensor.
        lrs: inner rate of ``head.weight`` and ``head.bias`` (float or ndarray).
        x: (B, S, F_in) support inputs; y: (B, S) labels, θ's dtype. steps: inner steps.

    Returns:
        (loss_before (B,), loss_after (B,), head weights (B, 1, H), head biases (B, 1)).

    References:
        Raghu, Raghu, Bengio, Vinyals 2020, "Rapid Learning or Feature Reuse?".
    """
    with torch.no_grad():
        h = model.body_with(theta, torch.from_numpy(x)).numpy()  # (B, S, H)
    n_tasks, n_support = y.shape
    weight = np.repeat(theta["head.weight"].numpy()[None], n_tasks, axis=0)
    bias = np.repeat(theta["head.bias"].numpy()[None], n_tasks, axis=0)
    loss_before = np.full(n_tasks, np.nan)
    for i in range(steps + 1):
        residual = np.einsum("bsh,bh->bs", h, weight[:, 0]) + bias - y
        loss = np.einsum("bs,bs->b", residual, residual) / n_support
        if i == 0:
            loss_before = loss
        if i == steps:
            return loss_before, loss, weight, bias
        d_out = (2.0 / n_support) * residual
        weight = weight - lrs["head.weight"] * np.einsum("bs,bsh->bh", d_out, h)[:, None, :]
        bias = bias - lrs["head.bias"] * d_out.sum(1, keepdims=True)
    raise AssertionError("unreachable")  # pragma: no cover


def head_batch(
    model: MetaModel,
    theta: Mapping[str, Tensor],
    lrs: Mapping[str, np.ndarray | float],
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    kernel: FastKernel | None,
) -> BatchAdapted:
    """Adapt ANIL's head on B tasks (:func:`adapt_head_many`); backend "head".

    Args:
        model, theta, lrs, x, y, steps: as :func:`adapt_head_many` takes them.
        kernel: the model's NumPy kernel (a :class:`BatchKernel`'s ``forward_many``
            predicts), or None (torch).

    Returns:
        A :class:`BatchAdapted`.
    """
    before, after, weight, bias = adapt_head_many(model, theta, lrs, x, y, steps)
    n_tasks = len(before)
    many = as_batch_kernel(kernel)  # checked once, not per row
    body = {k: v.numpy() for k, v in theta.items() if k not in model.head_names}

    def make_model(i: int) -> AdaptedModel:
        params = {
            **theta,
            "head.weight": torch.from_numpy(weight[i]),
            "head.bias": torch.from_numpy(bias[i]),
        }
        forward_numpy = None if kernel is None else kernel.forward
        return AdaptedModel(
            model.forward_with,
            params,
            loss_before=float(before[i]),
            loss_after=float(after[i]),
            steps=steps,
            forward_numpy=forward_numpy,
            backend="head",
        )

    def forward_rows(rows: np.ndarray) -> np.ndarray:
        if many is not None:
            shared = {k: np.broadcast_to(v, (n_tasks, *v.shape)) for k, v in body.items()}
            return many.forward_many({**shared, "head.weight": weight, "head.bias": bias}, rows)
        with torch.no_grad():
            h = model.body_with(theta, torch.from_numpy(rows)).numpy()  # θ's body, (B, H)
        return np.einsum("bh,bh->b", h, weight[:, 0]) + bias[:, 0]

    return BatchAdapted(
        forward_rows,
        make_model,
        loss_before=before,
        loss_after=after,
        steps=steps,
        backend="head",
        dtype=x.dtype,
    )


def stack_adapted(models: Sequence[AdaptedModel], dtype: np.dtype) -> BatchAdapted:
    """B separately adapted models as one :class:`BatchAdapted` (backend "loop").

    For modules ``torch.func.vmap`` cannot batch (the ``higher`` engine) and for the
    reference path; ``predict_rows`` calls each model on its row.
    """
    models = list(models)

    def forward_rows(rows: np.ndarray) -> np.ndarray:
        return np.array([m.predict(row[None])[0] for m, row in zip(models, rows)])

    return BatchAdapted(
        forward_rows,
        models.__getitem__,
        loss_before=np.array([m.loss_before for m in models]),
        loss_after=np.array([m.loss_after for m in models]),
        steps=models[0].steps,
        backend="loop",
        dtype=dtype,
    )
