"""Fused NumPy inner loops for metabt's models: the test-time adaptation a backtest runs per bar.

Each kernel adapts one support set (``adapt``) or B support sets of equal length at once
(``adapt_many``: the same loop with a leading task axis, one batched matmul per layer
for all tasks), and predicts with one task's φ (``forward``) or with each task's φ on its
own row (``forward_many``). A user's ``nn.Sequential`` of ``nn.Linear`` layers and
elementwise activations runs on the same dense kernel as metabt's MLP
(:class:`SequentialKernel`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import numpy as np
import torch
from torch import nn

from metabt.learn.kernels.compiled import (
    DensePlan,
    compiled_adapt,
    compiled_adapt_many,
    compiled_forward_row,
)
from metabt.learn.kernels.numpy_models import ArrayParams
from metabt.learn.models import GRU, MLP, MetaModel

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Activation",
    "BatchKernel",
    "DenseKernel",
    "FastKernel",
    "FlatParams",
    "FoldCache",
    "GRUKernel",
    "MLPKernel",
    "SEQUENTIAL_ACTIVATIONS",
    "SequentialKernel",
    "as_batch_kernel",
    "kernel_for",
    "register_kernel",
]

Rates = Mapping[str, np.ndarray | float]
Folded = tuple[np.ndarray, np.ndarray | float]
#: An elementwise activation of a :class:`DenseKernel`: (name, negative slope).
Activation = tuple[str, float]


class FastKernel(Protocol):
    """The NumPy inner loop of one model: MAML's test-time adaptation without autograd.

    Inside a backtest the model is tiny and adapted hundreds of times, so per-operation
    overhead, not arithmetic, dominates the cost: a kernel writes the backward pass out by
    hand, on θ laid out once in a flat buffer. Every kernel equals ``torch.autograd`` on
    the model's ``forward_with`` (tested in float64).
    """

    def fold(self, params: ArrayParams, lrs: Rates) -> Folded:
        """θ and the inner learning rates in :meth:`adapt`'s flat layout.

        Args:
            params: θ as name -> ndarray (``state_dict()`` shapes, float32 or float64).
            lrs: name -> inner rate, a float or an ndarray of the parameter's shape.

        Returns:
            (flat θ (P,), rate): rate is a float when every parameter has the same scalar
            rate, else a (P,) ndarray laid out like flat θ.
        """
        ...

    def adapt(
        self, theta: np.ndarray, rate: np.ndarray | float, x: np.ndarray, y: np.ndarray, steps: int
    ) -> tuple[float, float, dict[str, np.ndarray]]:
        """``steps`` gradient-descent steps on the support MSE, from θ.

        Args:
            theta: (P,) θ from :meth:`fold` (not modified); rate: the rates from the same call.
            x: (S, F_in) support inputs; y: (S,) support labels, θ's float dtype.
            steps: number of inner steps (>= 0).

        Returns:
            (loss_before, loss_after, φ): support MSE at θ and at φ, φ as name -> ndarray.
        """
        ...

    def forward(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """``forward_with`` in NumPy. x: (N, F_in) -> (N,), or (F_in,) -> ()."""
        ...


@runtime_checkable
class BatchKernel(FastKernel, Protocol):
    """A :class:`FastKernel` that also adapts B support sets at once (a leading task axis).

    ``MetaLearner.adapt_batch`` uses it when ``isinstance(kernel, BatchKernel)`` (the
    methods exist; :func:`as_batch_kernel`), else ``torch.func.vmap``. Each task's result
    equals a separate :meth:`FastKernel.adapt`.
    """

    def adapt_many(
        self, theta: np.ndarray, rate: np.ndarray | float, x: np.ndarray, y: np.ndarray, steps: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``steps`` gradient steps on each task's support MSE, from the same θ.

        Args:
            theta: (P,) θ from :meth:`fold` (not modified); rate: the rates from that call.
            x: (B, S, F_in) support inputs; y: (B, S) support labels, θ's float dtype.
            steps: number of inner steps (>= 0).

        Returns:
            (loss_before (B,), loss_after (B,), φ as name -> (B, *shape) ndarray).
        """
        ...

    def forward_many(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """Task b's model on row b. params: name -> (B, *shape); x: (B, F_in) -> (B,)."""
        ...


_BATCH_CLASSES: dict[type, bool] = {}  # kernel class -> isinstance(kernel, BatchKernel)


def as_batch_kernel(kernel: FastKernel | None) -> BatchKernel | None:
    """``kernel`` when it is a :class:`BatchKernel` (``isinstance``), else None.

    The check of a runtime protocol costs tens of microseconds, a test-time budget of its
    own, so its result is kept per kernel class (a kernel's methods are its class's).

    Args:
        kernel: a kernel (:func:`kernel_for`), or None.

    Returns:
        The same object typed as a :class:`BatchKernel`, or None.
    """
    if kernel is None:
        return None
    cls = type(kernel)
    many = _BATCH_CLASSES.get(cls)
    if many is None:
        many = _BATCH_CLASSES[cls] = isinstance(kernel, BatchKernel)
    return cast(BatchKernel, kernel) if many else None


def _fold(
    values: Mapping[str, Any], names: Sequence[tuple[str, str]], like: ArrayParams
) -> np.ndarray:
    """Lay out (weight, bias) pairs as blocks ``[Wᵀ; b]`` (in + 1, out), raveled, concatenated.

    ``values`` maps each name to an array of ``like[name]``'s shape or to a scalar.
    """
    parts = []
    for w_name, b_name in names:
        w_shape, b_shape = like[w_name].shape, like[b_name].shape
        weight = np.broadcast_to(values[w_name], w_shape)
        bias = np.broadcast_to(values[b_name], b_shape)
        parts.append(np.vstack([weight.T, bias[None, :]]).ravel())
    return np.concatenate(parts)


def _common_rate(rates: Sequence[np.ndarray | float]) -> float | None:
    """The one scalar inner rate shared by every parameter, or None (per-element rates)."""
    if all(isinstance(r, float) for r in rates) and len(set(rates)) == 1:
        return float(rates[0])
    return None


def _unfold(flat: np.ndarray, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """The blocks of a :func:`_fold` layout, shapes (in + 1, out), as views into ``flat``."""
    blocks, start = [], 0
    for shape in shapes:
        size = shape[0] * shape[1]
        blocks.append(flat[start : start + size].reshape(shape))
        start += size
    return blocks


def _unfold_many(flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Per-task views (B, *shape) of the consecutive blocks of a (B, P) buffer."""
    blocks, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        block = flat[:, start : start + size].reshape(flat.shape[0], *shape)
        assert np.shares_memory(block, flat)  # a view: updates of flat show through
        blocks.append(block)
        start += size
    return blocks


class FlatParams(dict[str, np.ndarray]):
    """φ by name, ``state_dict()``-shaped views into one flat buffer of a kernel's layout.

    What :meth:`DenseKernel.adapt` returns: a plain mapping to every reader, whose
    :attr:`flat` lets :meth:`DenseKernel.forward` predict a row in one compiled call.

    Attributes:
        flat: (P,) the buffer the views are into, laid out by :meth:`DenseKernel.fold`.
    """

    flat: np.ndarray


def _named(
    blocks: Sequence[np.ndarray], names: Sequence[tuple[str, str]], flat: np.ndarray
) -> FlatParams:
    """``state_dict()``-shaped views of :func:`_unfold` blocks of ``flat``: W = block[:-1]ᵀ,
    b = block[-1]."""
    out = FlatParams()
    for block, (w_name, b_name) in zip(blocks, names):
        out[w_name] = block[:-1].T
        out[b_name] = block[-1]
    out.flat = flat
    return out


def _activate(kind: Activation, h: np.ndarray) -> None:
    """Apply an elementwise activation to ``h`` in place."""
    name, slope = kind
    if name == "relu":
        np.maximum(h, 0.0, out=h)
    elif name == "tanh":
        np.tanh(h, out=h)
    elif name == "sigmoid":
        np.negative(h, out=h)
        np.exp(h, out=h)
        h += 1.0
        np.reciprocal(h, out=h)
    elif name == "leaky_relu":
        np.maximum(h, slope * h, out=h)  # 0 <= slope <= 1


def _derivative(kind: Activation, out: np.ndarray) -> np.ndarray | None:
    """The activation's derivative from its output ``out`` (None: identity, 1 everywhere).

    The formulas of torch's backward functions (``threshold_backward``,
    ``tanh_backward``, ``sigmoid_backward``, ``leaky_relu_backward``), so that the kernel
    equals autograd to rounding.
    """
    name, slope = kind
    if name == "relu":
        return out > 0
    if name == "tanh":
        return 1.0 - out * out
    if name == "sigmoid":
        return out * (1.0 - out)
    if name == "leaky_relu":
        return np.where(out > 0, 1.0, slope).astype(out.dtype, copy=False)
    return None


class DenseKernel:
    """A stack of dense layers, each ``act(h Wᵀ + b)``, and a scalar linear head, fused:
    each layer one matmul each way (the inner loop of :class:`MLPKernel` and
    :class:`SequentialKernel`).

    Args:
        layer_names: (weight, bias) names of each hidden layer, in order.
        head_names: (weight, bias) names of the head, a (1, H) weight and a (1,) bias.
        widths: input width, then each hidden layer's width.
        activations: one ``(name, slope)`` per hidden layer: name "relu", "tanh",
            "sigmoid", "leaky_relu" (with its negative slope in [0, 1]) or "identity".
    """

    def __init__(
        self,
        layer_names: Sequence[tuple[str, str]],
        head_names: tuple[str, str],
        widths: Sequence[int],
        activations: Sequence[Activation],
    ) -> None:
        self._layer_names = list(layer_names)
        self._head_names = head_names
        self._activations = list(activations)
        # ReLU maps the ones column to itself, so it runs on a layer's whole input buffer
        self._all_relu = all(a[0] == "relu" for a in self._activations)
        # (in + 1, out) of each [Wᵀ; b] block of the fused inner loop, head last
        self._shapes = [(a + 1, b) for a, b in itertools.pairwise((*widths, 1))]
        self._block_names: list[tuple[str, str]] = [*self._layer_names, head_names]
        self._plan = DensePlan(self._shapes, self._activations)  # the compiled loop's

    def _acts(self, params: ArrayParams, x: np.ndarray) -> list[np.ndarray]:
        acts = [x]
        for (weight, bias), kind in zip(self._layer_names, self._activations):
            z = acts[-1] @ params[weight].T + params[bias]
            _activate(kind, z)
            acts.append(z)
        return acts

    def forward(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """``forward_with`` in NumPy. params: name -> ndarray; x: (N, F) -> (N,), (F,) -> ().

        One row of a φ that :meth:`adapt` returned (a :class:`FlatParams`) is predicted
        by the compiled loop when it can run (:mod:`metabt.learn.kernels.compiled`), with
        the same operations.
        """
        if x.ndim == 1 and isinstance(params, FlatParams):
            value = compiled_forward_row(self._plan, params.flat, x)
            if value is not None:
                return params.flat.dtype.type(value)
        h = x
        for (weight, bias), kind in zip(self._layer_names, self._activations):
            h = h @ params[weight].T
            h += params[bias]
            _activate(kind, h)
        head_weight, head_bias = self._head_names
        return h @ params[head_weight][0] + params[head_bias][0]

    def fold(self, params: ArrayParams, lrs: Rates) -> Folded:
        """θ and the inner learning rates in :meth:`adapt`'s layout: ``[Wᵀ; b]`` blocks.

        Args:
            params: θ as name -> ndarray in ``state_dict()`` shapes.
            lrs: name -> inner rate (float, or ndarray of the parameter's shape).

        Returns:
            (flat θ (P,), rate): rate is a float when every parameter has the same scalar
            rate, else a (P,) ndarray like flat θ.
        """
        names = self._block_names
        flat = _fold(params, names, params)
        common = _common_rate([lrs[n] for pair in names for n in pair])
        if common is not None:
            return flat, common
        return flat, _fold(lrs, names, params).astype(flat.dtype, copy=False)

    def adapt(
        self,
        theta: np.ndarray,
        rate: np.ndarray | float,
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
    ) -> tuple[float, float, dict[str, np.ndarray]]:
        """The whole inner loop, fused: ``steps`` gradient-descent steps on the support MSE.

        Each step is ``φ ← φ − α ⊙ ∇_φ mean((f_φ(x) − y)²)`` on every parameter, the update
        of MAML's inner loop (Finn et al. 2017, eq. 1; with per-parameter rates α for
        Meta-SGD, Li et al. 2017). Each layer's weight and bias are one block
        ``[Wᵀ; b]`` of shape (in + 1, out), all blocks views into one flat buffer, and each
        layer's input carries a column of ones, so a layer is one matmul forward and one
        backward (bias included), the backward pass writes the gradient in place into a
        flat buffer beside the parameters, and the update is one vector operation: 17
        small NumPy calls per step for two hidden layers. Equal to stepping
        :meth:`mse_grad_numpy` by hand and to ``torch.autograd`` (tested in float64).

        The same loop runs compiled by numba, equal to this one bit for bit, for the
        networks where that holds (ReLU, leaky ReLU, linear) once the process has adapted
        enough to pay for loading it (:mod:`metabt.learn.kernels.compiled`: about three
        times faster); ``METABT_JIT`` chooses otherwise.

        Args:
            theta: (P,) θ laid out by :meth:`fold` (not modified: a backtest folds θ once
                and adapts from it many times); rate: the rates from the same call.
            x: (S, F) support inputs; y: (S,) support labels, θ's float dtype.
            steps: number of inner steps (>= 0).

        Returns:
            (loss_before, loss_after, φ): support MSE at θ and at φ, and φ as name ->
            ndarray in ``state_dict()`` shapes (views into one new buffer).

        References:
            Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation
            of Deep Networks"; Li et al. 2017, "Meta-SGD".
        """
        done = compiled_adapt(self._plan, theta, rate, x, y, steps)
        if done is not None:
            before, after, phi = done
            return before, after, _named(_unfold(phi, self._shapes), self._block_names, phi)
        flat = theta.copy()
        grad = np.empty_like(flat)
        blocks, d_blocks = _unfold(flat, self._shapes), _unfold(grad, self._shapes)
        n_support, dtype = len(y), flat.dtype
        # layer inputs, each with a trailing column of ones (the bias input); hidden ones
        # stay ones through ReLU, so they are set once
        inputs = [np.empty((n_support, b.shape[0]), dtype=dtype) for b in blocks]
        for a in inputs:
            a[:, -1] = 1.0
        inputs[0][:, :-1] = x
        hidden = blocks[:-1]
        relu, kinds = self._all_relu, self._activations
        # per hidden layer: its input, [Wᵀ; b], where it writes, its whole output buffer
        forward = [
            (inputs[i], b, inputs[i + 1][:, :-1], inputs[i + 1], kinds[i])
            for i, b in enumerate(hidden)
        ]
        # every buffer of the backward pass is allocated once: the error at each hidden
        # layer's output (delta), ReLU's mask, and per layer the views the pass reads
        deltas = [np.empty((n_support, b.shape[1]), dtype=dtype) for b in hidden]
        masks = [np.empty(d.shape, dtype=bool) for d in deltas]
        backward = [
            (
                kinds[i],
                inputs[i + 1][:, :-1],  # the layer's output (activation' from it)
                masks[i],
                deltas[i],
                inputs[i].T,
                d_blocks[i],
                hidden[i][:-1].T if i else None,  # W, to carry delta to the layer below
                deltas[i - 1] if i else None,
            )
            for i in range(len(hidden) - 1, -1, -1)
        ]
        last = inputs[-1]
        head, d_head = blocks[-1][:, 0], d_blocks[-1][:, 0]
        head_weight = head[:-1]
        residual = np.empty(n_support, dtype=dtype)
        residual_column = residual[:, None]
        top = deltas[-1] if deltas else None
        # d loss / d prediction is (2 / S) * residual; with one scalar rate, α is folded in
        # too, so the backward pass writes α∇ directly and the update is one subtraction
        scalar_rate = isinstance(rate, float)
        scale = 2.0 / n_support * (rate if isinstance(rate, float) else 1.0)
        matmul, multiply, maximum, greater = np.matmul, np.multiply, np.maximum, np.greater
        loss_before = math.nan
        for step in range(steps + 1):
            for a, block, out, whole, kind in forward:
                matmul(a, block, out=out)
                if relu:  # on the whole buffer: the ones column stays one
                    maximum(whole, 0.0, out=whole)
                else:
                    _activate(kind, out)
            matmul(last, head, out=residual)
            residual -= y
            if step == 0:
                loss_before = float(residual @ residual) / n_support
            if step == steps:  # forward only: the loss at φ
                loss_after = float(residual @ residual) / n_support
                return loss_before, loss_after, _named(blocks, self._block_names, flat)
            residual *= scale
            matmul(residual, last, out=d_head)
            if top is not None:
                multiply(residual_column, head_weight, out=top)
            for kind, out, mask, delta, a_t, d_block, weight, below in backward:
                if relu:
                    greater(out, 0.0, out=mask)
                    multiply(delta, mask, out=delta)
                else:
                    slope = _derivative(kind, out)  # act' from the layer's output
                    if slope is not None:
                        delta *= slope
                matmul(a_t, delta, out=d_block)
                if weight is not None:
                    matmul(delta, weight, out=below)
            if not scalar_rate:
                grad *= rate
            flat -= grad
        raise AssertionError("unreachable")  # pragma: no cover

    def adapt_many(
        self,
        theta: np.ndarray,
        rate: np.ndarray | float,
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """:meth:`adapt` for B support sets of equal length at once, from the same θ.

        The same fused loop with a leading task axis: θ is copied into a (B, P) buffer,
        each layer is one batched matmul forward and one backward for all tasks, and the
        update is one vector operation on the buffer. Compiled (as :meth:`adapt`), it is
        :meth:`adapt`'s loop once per task in one call, equal to it bit for bit.

        Args:
            theta: (P,) θ laid out by :meth:`fold` (not modified); rate: its rates.
            x: (B, S, F) support inputs; y: (B, S) support labels, θ's float dtype.
            steps: number of inner steps (>= 0).

        Returns:
            (loss_before (B,), loss_after (B,), φ as name -> (B, *shape) ndarray, views
            into one new (B, P) buffer).

        References:
            Finn, Abbeel, Levine 2017 (MAML, eq. 1); Li et al. 2017 (Meta-SGD).
        """
        done = compiled_adapt_many(self._plan, theta, rate, x, y, steps)
        if done is not None:
            before, after, phi = done
            return before, after, self._named_many(_unfold_many(phi, self._shapes))
        n_tasks, n_support = y.shape
        flat = np.repeat(theta[None, :], n_tasks, axis=0)
        grad = np.empty_like(flat)
        blocks, d_blocks = _unfold_many(flat, self._shapes), _unfold_many(grad, self._shapes)
        inputs = [np.empty((n_tasks, n_support, b.shape[1]), dtype=flat.dtype) for b in blocks]
        for a in inputs:
            a[..., -1] = 1.0
        inputs[0][..., :-1] = x
        outputs = [a[..., :-1] for a in inputs[1:]]
        hidden = blocks[:-1]
        back = [block[:, :-1].transpose(0, 2, 1) for block in hidden]  # (B, out, in)
        head, d_head = blocks[-1][..., 0], d_blocks[-1][..., 0]  # (B, H + 1)
        head_weight = head[:, :-1]
        scalar_rate = isinstance(rate, float)
        scale = 2.0 / n_support * (rate if isinstance(rate, float) else 1.0)
        loss_before = np.full(n_tasks, np.nan)
        relu, kinds = self._all_relu, self._activations
        for step in range(steps + 1):
            for i, block in enumerate(hidden):
                np.matmul(inputs[i], block, out=outputs[i])
                if relu:
                    np.maximum(inputs[i + 1], 0.0, out=inputs[i + 1])
                else:
                    _activate(kinds[i], outputs[i])
            residual = np.matmul(inputs[-1], head[:, :, None])[..., 0]
            residual -= y
            if step == 0:
                loss_before = np.einsum("bs,bs->b", residual, residual) / n_support
            if step == steps:
                loss_after = np.einsum("bs,bs->b", residual, residual) / n_support
                return loss_before, loss_after, self._named_many(blocks)
            residual *= scale
            np.matmul(residual[:, None, :], inputs[-1], out=d_head[:, None, :])
            delta = residual[:, :, None] * head_weight[:, None, :]
            for i in range(len(hidden) - 1, -1, -1):
                slope = _derivative(kinds[i], outputs[i])
                if slope is not None:
                    delta *= slope
                np.matmul(inputs[i].transpose(0, 2, 1), delta, out=d_blocks[i])
                if i:
                    delta = delta @ back[i]
            if not scalar_rate:
                grad *= rate
            flat -= grad
        raise AssertionError("unreachable")  # pragma: no cover

    def _named_many(self, blocks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for block, (w_name, b_name) in zip(blocks, self._block_names):
            out[w_name] = block[:, :-1].transpose(0, 2, 1)
            out[b_name] = block[:, -1]
        return out

    def forward_many(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """Task b's model on row b. params: name -> (B, *shape) ndarray; x: (B, F) -> (B,)."""
        h = x
        for (weight, bias), kind in zip(self._layer_names, self._activations):
            h = np.matmul(params[weight], h[:, :, None])[..., 0]
            h += params[bias]
            _activate(kind, h)
        head_weight, head_bias = self._head_names
        return np.einsum("bh,bh->b", h, params[head_weight][:, 0]) + params[head_bias][:, 0]

    def mse_grad_numpy(
        self, params: ArrayParams, x: np.ndarray, y: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean squared error on (x, y) and its exact gradient by backpropagation.

        The unfused reference of :meth:`adapt` (one dict of gradients per call).

        Args:
            params: name -> ndarray, shapes as in ``state_dict()``.
            x: (N, F) inputs; y: (N,) targets (same float dtype).

        Returns:
            (loss, gradients name -> ndarray). Equal to ``torch.autograd.grad`` of
            ``mean((forward_with(params, x) - y) ** 2)`` (tested in float64).
        """
        acts = self._acts(params, x)
        head_weight, head_bias = self._head_names
        w_head = params[head_weight]
        residual = acts[-1] @ w_head[0] + params[head_bias][0] - y
        d_out = (2.0 / len(y)) * residual
        grads = {
            head_weight: (d_out @ acts[-1])[None, :],
            head_bias: np.atleast_1d(d_out.sum()),
        }
        delta = np.outer(d_out, w_head[0])
        for i in reversed(range(len(self._layer_names))):
            slope = _derivative(self._activations[i], acts[i + 1])
            if slope is not None:
                delta = delta * slope
            weight, bias = self._layer_names[i]
            grads[weight] = delta.T @ acts[i]
            grads[bias] = delta.sum(axis=0)
            if i:
                delta = delta @ params[weight]
        return float(residual @ residual) / len(y), grads


class MLPKernel(DenseKernel):
    """The :class:`metabt.learn.models.MLP` inner loop, fused: each layer one matmul each way.

    Args:
        model: the MLP (only its sizes are read; θ is passed to each call).
    """

    def __init__(self, model: MLP) -> None:
        n_layers = len(model.layers)
        names = [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(n_layers)]
        head_weight, head_bias = model.head_names
        widths = (model.n_features, *model.hidden)
        super().__init__(names, (head_weight, head_bias), widths, [("relu", 0.0)] * n_layers)


#: The elementwise activations a :class:`SequentialKernel` runs: module class -> name.
SEQUENTIAL_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.LeakyReLU: "leaky_relu",
    nn.Identity: "identity",
}


def _has_hooks(module: nn.Module) -> bool:
    """True when a forward hook (of the module or global) could change its forward pass."""
    hooks = (
        module._forward_hooks,
        module._forward_pre_hooks,
        getattr(nn.modules.module, "_global_forward_hooks", {}),
        getattr(nn.modules.module, "_global_forward_pre_hooks", {}),
    )
    return any(len(h) for h in hooks)


class SequentialKernel(DenseKernel):
    """The fused inner loop of a user's ``nn.Sequential`` of dense layers (:class:`DenseKernel`).

    A user model made only of ``nn.Linear`` layers (with biases), each followed by at most
    one elementwise activation of :data:`SEQUENTIAL_ACTIVATIONS`, and ending in an
    ``nn.Linear(H, 1)``, is the same function as metabt's MLP with other activations, so
    it adapts and predicts on the same NumPy kernel instead of ``torch.autograd``
    (:meth:`from_module` decides; any other module keeps the ``torch`` paths). Parameter
    names are the module's own (``"0.weight"``, ...).

    Args:
        layer_names, head_names, widths, activations: as :class:`DenseKernel` takes them.
    """

    @classmethod
    def from_module(cls, model: object) -> SequentialKernel | None:
        """The kernel of ``model`` when it is such a stack, else None.

        Args:
            model: any object; a kernel is built for an ``nn.Sequential`` (or a subclass
                that keeps ``nn.Sequential.forward``) whose children are exactly
                ``nn.Linear`` (with bias) and activations of :data:`SEQUENTIAL_ACTIVATIONS`
                (exact classes: a subclass may change the forward pass), alternating
                linear then at most one activation, the last an ``nn.Linear(H, 1)``;
                no buffers, no forward hooks; θ float32 or float64. A ``LeakyReLU`` must
                have a slope in [0, 1].

        Returns:
            A :class:`SequentialKernel`, or None.
        """
        if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
            return None
        if any(True for _ in model.buffers()) or any(_has_hooks(m) for m in model.modules()):
            return None
        children = list(model.named_children())
        if not children or any(
            p.dtype not in (torch.float32, torch.float64) for p in model.parameters()
        ):
            return None
        layers: list[tuple[str, str]] = []
        widths: list[int] = []
        acts: list[Activation] = []
        expect_linear = True
        for name, child in children:
            kind = type(child)
            if kind is nn.Linear:
                assert isinstance(child, nn.Linear)
                if child.bias is None or (widths and child.in_features != widths[-1]):
                    return None
                if not expect_linear:  # a linear layer straight after another one
                    acts.append(("identity", 0.0))
                if not widths:
                    widths.append(child.in_features)
                layers.append((f"{name}.weight", f"{name}.bias"))
                widths.append(child.out_features)
                expect_linear = False
            elif kind in SEQUENTIAL_ACTIVATIONS and not expect_linear:
                slope = float(getattr(child, "negative_slope", 0.0))
                if not 0.0 <= slope <= 1.0:
                    return None
                acts.append((SEQUENTIAL_ACTIVATIONS[kind], slope))
                expect_linear = True
            else:
                return None
        if expect_linear or widths[-1] != 1:  # must end in nn.Linear(H, 1)
            return None
        params = {n for n, _ in model.named_parameters()}
        if params != {n for pair in layers for n in pair}:
            return None
        return cls(layers[:-1], layers[-1], widths[:-1], acts)


class GRUKernel:
    """The :class:`metabt.learn.models.GRU` inner loop: backpropagation through time written out.

    No autograd graph; the gradients go into one flat buffer beside θ.

    Args:
        model: the GRU (only its sizes are read; θ is passed to each call).

    Attributes:
        window: bars W per input; step_features: features F per bar; hidden_size: H.

    References:
        Werbos 1990, "Backpropagation Through Time: What It Does and How to Do It".
    """

    _names = ("x2h.weight", "x2h.bias", "h2h.weight", "h2h.bias", "head.weight", "head.bias")

    def __init__(self, model: GRU) -> None:
        self.window = model.window
        self.step_features = model.step_features
        self.hidden_size = model.hidden_size
        self._shapes: list[tuple[int, ...]] = [
            tuple(model.get_parameter(n).shape) for n in self._names
        ]

    def _states(
        self, p: ArrayParams, x: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
        """Forward through the window. x: (N, W * F) -> last h (N, H), per-step caches."""
        n_rows, hidden = x.shape[0], self.hidden_size
        steps = x.reshape(n_rows, self.window, self.step_features)
        gx = steps @ p["x2h.weight"].T
        gx += p["x2h.bias"]
        w_hh_t, b_hh = p["h2h.weight"].T, p["h2h.bias"]
        h = np.zeros((n_rows, hidden), dtype=gx.dtype)
        cache: list[tuple[np.ndarray, ...]] = []
        for t in range(self.window):
            gh = h @ w_hh_t
            gh += b_hh
            g = gx[:, t]
            rz = g[:, : 2 * hidden] + gh[:, : 2 * hidden]
            rz = 1.0 / (1.0 + np.exp(-rz))  # sigmoid of the reset and update gates
            r, z = rz[:, :hidden], rz[:, hidden:]
            hn = gh[:, 2 * hidden :]
            n = np.tanh(g[:, 2 * hidden :] + r * hn)
            cache.append((h, r, z, n, hn))
            h = n + z * (h - n)  # (1 - z) * n + z * h
        return h, cache

    def forward(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """``GRU.forward_with`` in NumPy. x: (N, W * F) -> (N,), or (W * F,) -> ()."""
        if x.ndim == 1:
            return self.forward(params, x[None, :])[0]
        h, _ = self._states(params, x)
        return h @ params["head.weight"][0] + params["head.bias"][0]

    def fold(self, params: ArrayParams, lrs: Rates) -> Folded:
        """θ raveled into one (P,) vector and the inner rates alike (a float if all equal).

        Args:
            params: θ as name -> ndarray in ``state_dict()`` shapes.
            lrs: name -> inner rate (float, or ndarray of the parameter's shape).

        Returns:
            (flat θ (P,), rate float or (P,) ndarray).
        """
        flat = np.concatenate([np.ravel(params[n]) for n in self._names])
        common = _common_rate([lrs[n] for n in self._names])
        if common is not None:
            return flat, common
        parts = [
            np.broadcast_to(np.asarray(lrs[n], flat.dtype), params[n].shape) for n in self._names
        ]
        return flat, np.concatenate([np.ravel(a) for a in parts])

    def adapt(
        self,
        theta: np.ndarray,
        rate: np.ndarray | float,
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
    ) -> tuple[float, float, dict[str, np.ndarray]]:
        """The inner loop in NumPy: ``steps`` gradient steps on the support MSE.

        Same update as the MLP's kernel (MAML's inner loop, per-parameter rates for
        Meta-SGD), with the gradient by backpropagation through time over the window
        (Werbos 1990). Equal to ``torch.autograd`` on ``forward_with`` (tested in float64).

        Args:
            theta: (P,) θ from :meth:`fold` (not modified); rate: its rates.
            x: (S, W * F) support inputs; y: (S,) labels, θ's dtype.
            steps: inner steps (>= 0).

        Returns:
            (loss_before, loss_after, φ as name -> ndarray in ``state_dict()`` shapes).

        References:
            Finn, Abbeel, Levine 2017 (MAML); Li et al. 2017 (Meta-SGD); Werbos 1990.
        """
        flat = theta.copy()
        grad = np.empty_like(flat)
        p, d = {}, {}
        start = 0
        for name, shape in zip(self._names, self._shapes):
            size = math.prod(shape)
            p[name] = flat[start : start + size].reshape(shape)
            d[name] = grad[start : start + size].reshape(shape)
            start += size
        n_rows, hidden = len(y), self.hidden_size
        steps_x = x.reshape(n_rows * self.window, self.step_features)
        scale = 2.0 / n_rows
        d_gx = np.empty((n_rows, self.window, 3 * hidden), dtype=flat.dtype)
        d_gh = np.empty_like(d_gx)
        h_seen = np.empty((n_rows, self.window, hidden), dtype=flat.dtype)
        ones = np.ones(n_rows * self.window, dtype=flat.dtype)
        loss_before = math.nan
        for step in range(steps + 1):
            h, cache = self._states(p, x)
            residual = h @ p["head.weight"][0]
            residual += p["head.bias"][0]
            residual -= y
            if step == 0:
                loss_before = float(residual @ residual) / n_rows
            if step == steps:
                return loss_before, float(residual @ residual) / n_rows, p
            residual *= scale
            np.matmul(residual, h, out=d["head.weight"][0])
            d["head.bias"][0] = residual.sum()
            dh = np.multiply.outer(residual, p["head.weight"][0])
            w_hh = p["h2h.weight"]
            for t in range(self.window - 1, -1, -1):
                h_prev, r, z, n, hn = cache[t]
                h_seen[:, t] = h_prev
                dn_pre = dh * (1.0 - z) * (1.0 - n * n)  # through n = tanh(.)
                dg = d_gx[:, t]  # gate pre-activations: reset, update, candidate
                dg[:, :hidden] = dn_pre * hn * r * (1.0 - r)
                dg[:, hidden : 2 * hidden] = dh * (h_prev - n) * z * (1.0 - z)
                dg[:, 2 * hidden :] = dn_pre
                dgh = d_gh[:, t]  # the same through h2h, where r gates the candidate
                dgh[:, : 2 * hidden] = dg[:, : 2 * hidden]
                np.multiply(dn_pre, r, out=dgh[:, 2 * hidden :])
                dh = dh * z + dgh @ w_hh
            # the weight gradients summed over rows and steps: one matmul each
            flat_dg = d_gx.reshape(n_rows * self.window, 3 * hidden)
            flat_dgh = d_gh.reshape(n_rows * self.window, 3 * hidden)
            np.matmul(flat_dg.T, steps_x, out=d["x2h.weight"])
            np.matmul(ones, flat_dg, out=d["x2h.bias"])
            np.matmul(flat_dgh.T, h_seen.reshape(n_rows * self.window, hidden), out=d["h2h.weight"])
            np.matmul(ones, flat_dgh, out=d["h2h.bias"])
            grad *= rate
            flat -= grad
        raise AssertionError("unreachable")  # pragma: no cover

    def _states_many(
        self, p: ArrayParams, x: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
        """:meth:`_states` per task. p: name -> (B, *shape); x: (B, S, W * F) -> (B, S, H)."""
        n_tasks, n_rows, hidden = x.shape[0], x.shape[1], self.hidden_size
        steps = x.reshape(n_tasks, n_rows * self.window, self.step_features)
        gx = np.matmul(steps, p["x2h.weight"].transpose(0, 2, 1))
        gx = gx.reshape(n_tasks, n_rows, self.window, 3 * hidden)
        gx += p["x2h.bias"][:, None, None, :]
        w_hh_t, b_hh = p["h2h.weight"].transpose(0, 2, 1), p["h2h.bias"][:, None, :]
        h = np.zeros((n_tasks, n_rows, hidden), dtype=gx.dtype)
        cache: list[tuple[np.ndarray, ...]] = []
        for t in range(self.window):
            gh = h @ w_hh_t
            gh += b_hh
            g = gx[:, :, t]
            rz = g[..., : 2 * hidden] + gh[..., : 2 * hidden]
            rz = 1.0 / (1.0 + np.exp(-rz))
            r, z = rz[..., :hidden], rz[..., hidden:]
            hn = gh[..., 2 * hidden :]
            n = np.tanh(g[..., 2 * hidden :] + r * hn)
            cache.append((h, r, z, n, hn))
            h = n + z * (h - n)
        return h, cache

    def forward_many(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """Task b's GRU on row b. params: name -> (B, *shape); x: (B, W * F) -> (B,)."""
        h, _ = self._states_many(params, x[:, None, :])
        return (
            np.einsum("bh,bh->b", h[:, 0], params["head.weight"][:, 0]) + params["head.bias"][:, 0]
        )

    def adapt_many(
        self,
        theta: np.ndarray,
        rate: np.ndarray | float,
        x: np.ndarray,
        y: np.ndarray,
        steps: int,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """:meth:`adapt` for B support sets of equal length at once, from the same θ.

        Backpropagation through time with a leading task axis (batched matmuls).

        Args:
            theta: (P,) θ from :meth:`fold` (not modified); rate: its rates.
            x: (B, S, W * F) support inputs; y: (B, S) labels, θ's dtype.
            steps: inner steps (>= 0).

        Returns:
            (loss_before (B,), loss_after (B,), φ as name -> (B, *shape) ndarray).

        References:
            Finn, Abbeel, Levine 2017 (MAML); Li et al. 2017 (Meta-SGD); Werbos 1990.
        """
        n_tasks, n_rows = y.shape
        flat = np.repeat(theta[None, :], n_tasks, axis=0)
        grad = np.empty_like(flat)
        p = dict(zip(self._names, _unfold_many(flat, self._shapes)))
        d = dict(zip(self._names, _unfold_many(grad, self._shapes)))
        hidden, window = self.hidden_size, self.window
        steps_x = x.reshape(n_tasks, n_rows * window, self.step_features)
        scale = 2.0 / n_rows
        d_gx = np.empty((n_tasks, n_rows, window, 3 * hidden), dtype=flat.dtype)
        d_gh = np.empty_like(d_gx)
        h_seen = np.empty((n_tasks, n_rows, window, hidden), dtype=flat.dtype)
        loss_before = np.full(n_tasks, np.nan)
        for step in range(steps + 1):
            h, cache = self._states_many(p, x)
            head_weight = p["head.weight"][:, 0]  # (B, H)
            residual = np.einsum("bsh,bh->bs", h, head_weight)
            residual += p["head.bias"]  # (B, 1)
            residual -= y
            if step == 0:
                loss_before = np.einsum("bs,bs->b", residual, residual) / n_rows
            if step == steps:
                loss_after = np.einsum("bs,bs->b", residual, residual) / n_rows
                return loss_before, loss_after, p
            residual *= scale
            d["head.weight"][:, 0] = np.einsum("bs,bsh->bh", residual, h)
            d["head.bias"][:, 0] = residual.sum(1)
            dh = residual[..., None] * head_weight[:, None, :]
            w_hh = p["h2h.weight"]
            for t in range(window - 1, -1, -1):
                h_prev, r, z, n, hn = cache[t]
                h_seen[:, :, t] = h_prev
                dn_pre = dh * (1.0 - z) * (1.0 - n * n)
                dg = d_gx[:, :, t]
                dg[..., :hidden] = dn_pre * hn * r * (1.0 - r)
                dg[..., hidden : 2 * hidden] = dh * (h_prev - n) * z * (1.0 - z)
                dg[..., 2 * hidden :] = dn_pre
                dgh = d_gh[:, :, t]
                dgh[..., : 2 * hidden] = dg[..., : 2 * hidden]
                np.multiply(dn_pre, r, out=dgh[..., 2 * hidden :])
                dh = dh * z + dgh @ w_hh
            flat_dg = d_gx.reshape(n_tasks, n_rows * window, 3 * hidden)
            flat_dgh = d_gh.reshape(n_tasks, n_rows * window, 3 * hidden)
            np.matmul(flat_dg.transpose(0, 2, 1), steps_x, out=d["x2h.weight"])
            d["x2h.bias"][...] = flat_dg.sum(1)
            seen = h_seen.reshape(n_tasks, n_rows * window, hidden)
            np.matmul(flat_dgh.transpose(0, 2, 1), seen, out=d["h2h.weight"])
            d["h2h.bias"][...] = flat_dgh.sum(1)
            grad *= rate
            flat -= grad
        raise AssertionError("unreachable")  # pragma: no cover


_KERNELS: dict[type[MetaModel], Callable[[Any], FastKernel]] = {MLP: MLPKernel, GRU: GRUKernel}


def register_kernel(model_type: type[MetaModel], factory: Callable[[Any], FastKernel]) -> None:
    """Register the fast inner loop of a model class (the extension point of :func:`kernel_for`).

    Args:
        model_type: a :class:`metabt.learn.models.MetaModel` subclass; only models of exactly this
            class use the kernel (a subclass may change the forward pass).
        factory: called with the model, returns its :class:`FastKernel`.
    """
    _KERNELS[model_type] = factory


def kernel_for(model: object) -> FastKernel | None:
    """The NumPy inner loop of ``model``, or None when it has none (then autograd runs).

    Looked up by the model's exact class in a registry (:class:`MLPKernel` for
    :class:`metabt.learn.models.MLP`, :class:`GRUKernel` for :class:`metabt.learn.models.GRU`, more
    via :func:`register_kernel`); else a user's ``nn.Sequential`` of ``nn.Linear`` layers
    and elementwise activations gets a :class:`SequentialKernel`
    (:meth:`SequentialKernel.from_module`).

    Args:
        model: any module.

    Returns:
        A kernel built for this model's sizes, or None.
    """
    factory = _KERNELS.get(type(model))  # type: ignore[arg-type]
    if factory is not None:
        return factory(model)
    return SequentialKernel.from_module(model)


class FoldCache:
    """θ and the inner rates in a kernel's flat layout, refolded only when they change.

    A backtest adapts from the same θ hundreds of times. The cache key is the inner rate
    and each tensor's identity and in-place version counter (``Tensor._version``), so an
    optimizer step, a ``load_state_dict``, an in-place edit or a replaced parameter all
    invalidate it.

    Args:
        kernel: the kernel whose :meth:`FastKernel.fold` lays θ out.

    Attributes:
        kernel: that kernel (its ``adapt`` and ``forward`` run on the folded θ).
    """

    def __init__(self, kernel: FastKernel) -> None:
        self.kernel = kernel
        self._entry: tuple[tuple[Any, ...], Folded] | None = None

    def get(
        self,
        tensors: Sequence[Tensor],
        inner_lr: float,
        params: Callable[[], ArrayParams],
        lrs: Callable[[], Rates],
    ) -> Folded:
        """The folded (θ, rate), from the cache or refolded.

        Args:
            tensors: every tensor θ and the rates are read from (the cache key).
            inner_lr: the scalar inner rate (part of the key: it is a plain float).
            params: returns θ as name -> ndarray (called on a miss only).
            lrs: returns name -> inner rate (called on a miss only).

        Returns:
            (flat θ (P,), rate) as :meth:`FastKernel.fold` returns them.
        """
        key = (inner_lr, *((id(t), t._version) for t in tensors))
        if self._entry is None or self._entry[0] != key:
            self._entry = (key, self.kernel.fold(params(), lrs()))
        return self._entry[1]
