"""Small PyTorch models for meta-learning: an MLP and a GRU over a window of feature rows."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabt.errors import ConfigError

__all__ = ["GRU", "MLP", "MetaModel", "build_model"]

Params = Mapping[str, Tensor]


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` initialisation, drawn from an explicit generator."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _fold(
    values: Mapping[str, Any], names: Sequence[tuple[str, str]], like: Mapping[str, np.ndarray]
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


def _named(blocks: Sequence[np.ndarray], names: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
    """``state_dict()``-shaped views of :func:`_unfold` blocks: W = block[:-1]ᵀ, b = block[-1]."""
    out = {}
    for block, (w_name, b_name) in zip(blocks, names):
        out[w_name] = block[:-1].T
        out[b_name] = block[-1]
    return out


class MetaModel(nn.Module):
    """Base class of metabt models: a body (feature extractor) and a linear ``head``.

    Subclasses implement :meth:`body_with` and :meth:`config`. Every forward pass can also
    be run with an explicit parameter dict (``forward_with``), which is what the batched
    ``torch.func`` engine and the fast in-backtest adaptation use; ``forward`` is the same
    computation with the module's own parameters (what ``higher`` patches).

    Attributes:
        n_features: width F_in of one input row (``window * features`` for the GRU).
        window: number of consecutive feature rows one input holds (1 for the MLP).
        head_names: names of the head's parameters, the only ones ANIL adapts.
    """

    n_features: int
    window: int
    head: nn.Linear

    @property
    def head_names(self) -> tuple[str, ...]:
        return ("head.weight", "head.bias")

    def body_with(self, params: Params, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head_with(self, params: Params, h: Tensor) -> Tensor:
        """Head on body features. h: (N, H) -> (N,)."""
        return F.linear(h, params["head.weight"], params["head.bias"]).squeeze(-1)

    def forward_with(self, params: Params, x: Tensor) -> Tensor:
        """Prediction with the given parameters. x: (N, F_in) float -> (N,) float."""
        return self.head_with(params, self.body_with(params, x))

    def forward(self, x: Tensor) -> Tensor:
        """Prediction with the module's own parameters. x: (N, F_in) float -> (N,) float."""
        return self.forward_with(dict(self.named_parameters()), x)

    def config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


class MLP(MetaModel):
    """Multi-layer perceptron with ReLU hidden layers and a scalar linear head.

    Args:
        n_features: input width F (features per bar).
        hidden: widths of the hidden layers. Default (32, 32).
        seed: seed of the ``torch.Generator`` that draws the initial weights.

    Shapes:
        x: (N, F) float32 or float64 -> (N,) of the same dtype.

    Raises:
        ConfigError: if a width is not a positive integer.
    """

    def __init__(self, n_features: int, hidden: Sequence[int] = (32, 32), *, seed: int = 0):
        super().__init__()
        self.n_features = _check_positive("n_features", n_features)
        self.window = 1
        self.hidden = tuple(_check_positive("hidden width", int(h)) for h in hidden)
        self.seed = int(seed)
        widths = (self.n_features, *self.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.head = nn.Linear(widths[-1], 1)
        self._layer_names = [
            (f"layers.{i}.weight", f"layers.{i}.bias") for i in range(len(self.layers))
        ]
        # (in + 1, out) of each [Wᵀ; b] block of the fused NumPy inner loop, head last
        self._shapes = [(a + 1, b) for a, b in itertools.pairwise((*widths, 1))]
        head_weight, head_bias = self.head_names
        self._block_names: list[tuple[str, str]] = [*self._layer_names, (head_weight, head_bias)]
        g = torch.Generator().manual_seed(self.seed)
        for layer in [*self.layers, self.head]:
            _init_linear(layer, g)

    def body_with(self, params: Params, x: Tensor) -> Tensor:
        """Hidden representation. x: (N, F) -> (N, H_last)."""
        h = x
        for i in range(len(self.layers)):
            h = torch.relu(F.linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
        return h

    # ---- NumPy fast path: the test-time inner loop inside a backtest runs here, without
    # autograd (tiny matrices: per-op overhead, not arithmetic, dominates the cost).
    def _acts_numpy(self, params: Mapping[str, np.ndarray], x: np.ndarray) -> list[np.ndarray]:
        acts = [x]
        for i in range(len(self.layers)):
            z = acts[-1] @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
            acts.append(np.maximum(z, 0.0))
        return acts

    def forward_numpy(self, params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """``forward_with`` in NumPy. params: name -> ndarray; x: (N, F) -> (N,), or (F,) -> ()."""
        h = x
        for weight, bias in self._layer_names:
            h = h @ params[weight].T
            h += params[bias]
            np.maximum(h, 0.0, out=h)
        return h @ params["head.weight"][0] + params["head.bias"][0]

    def fold_numpy(
        self, params: Mapping[str, np.ndarray], lrs: Mapping[str, np.ndarray | float]
    ) -> tuple[np.ndarray, np.ndarray | float]:
        """θ and the inner learning rates in :meth:`adapt_folded`'s flat layout.

        Returns:
            (flat θ, rate): rate is a float when every parameter has the same scalar rate,
            else an array like flat θ.
        """
        names = self._block_names
        flat = _fold(params, names, params)
        common = _common_rate([lrs[n] for pair in names for n in pair])
        if common is not None:
            return flat, common
        return flat, _fold(lrs, names, params).astype(flat.dtype, copy=False)

    def adapt_folded(
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

        Args:
            theta: θ laid out by :meth:`fold_numpy` (not modified: a backtest folds θ once
                and adapts from it many times); rate: the rates from the same call.
            x: (S, F) support inputs; y: (S,) support labels, θ's float dtype.
            steps: number of inner steps (>= 0).

        Returns:
            (loss_before, loss_after, φ): support MSE at θ and at φ, and φ as name ->
            ndarray in ``state_dict()`` shapes (views into one new buffer).
        """
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
        outputs = [a[:, :-1] for a in inputs[1:]]  # where each hidden layer writes
        hidden = blocks[:-1]
        back = [block[:-1].T for block in hidden]  # W of each layer, for the backward pass
        head, d_head = blocks[-1][:, 0], d_blocks[-1][:, 0]
        head_weight = head[:-1]
        # d loss / d prediction is (2 / S) * residual; with one scalar rate, α is folded in
        # too, so the backward pass writes α∇ directly and the update is one subtraction
        scalar_rate = isinstance(rate, float)
        scale = 2.0 / n_support * (rate if isinstance(rate, float) else 1.0)
        loss_before = math.nan
        for step in range(steps + 1):
            for i, block in enumerate(hidden):
                np.matmul(inputs[i], block, out=outputs[i])
                np.maximum(inputs[i + 1], 0.0, out=inputs[i + 1])
            residual = inputs[-1] @ head
            residual -= y
            if step == 0:
                loss_before = float(residual @ residual) / n_support
            if step == steps:  # forward only: the loss at φ
                loss_after = float(residual @ residual) / n_support
                return loss_before, loss_after, _named(blocks, self._block_names)
            residual *= scale
            np.matmul(residual, inputs[-1], out=d_head)
            delta = np.multiply.outer(residual, head_weight)
            for i in range(len(hidden) - 1, -1, -1):
                delta *= outputs[i] > 0  # ReLU'
                np.matmul(inputs[i].T, delta, out=d_blocks[i])
                if i:
                    delta = delta @ back[i]
            if not scalar_rate:
                grad *= rate
            flat -= grad
        raise AssertionError("unreachable")  # pragma: no cover

    def mse_grad_numpy(
        self, params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean squared error on (x, y) and its exact gradient by backpropagation.

        Args:
            params: name -> ndarray, shapes as in ``state_dict()``.
            x: (N, F) inputs; y: (N,) targets (same float dtype).

        Returns:
            (loss, gradients name -> ndarray). Equal to ``torch.autograd.grad`` of
            ``mean((forward_with(params, x) - y) ** 2)`` (tested in float64).
        """
        acts = self._acts_numpy(params, x)
        w_head = params["head.weight"]
        residual = acts[-1] @ w_head[0] + params["head.bias"][0] - y
        d_out = (2.0 / len(y)) * residual
        grads = {
            "head.weight": (d_out @ acts[-1])[None, :],
            "head.bias": np.atleast_1d(d_out.sum()),
        }
        delta = np.outer(d_out, w_head[0])
        for i in reversed(range(len(self.layers))):
            delta = delta * (acts[i + 1] > 0)
            grads[f"layers.{i}.weight"] = delta.T @ acts[i]
            grads[f"layers.{i}.bias"] = delta.sum(axis=0)
            if i:
                delta = delta @ params[f"layers.{i}.weight"]
        return float(residual @ residual) / len(y), grads

    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON primitives (stored in checkpoints)."""
        return {
            "type": "mlp",
            "n_features": self.n_features,
            "hidden": list(self.hidden),
            "seed": self.seed,
        }


class GRU(MetaModel):
    """Gated recurrent unit over a window of past feature rows, with a linear head.

    The recurrent, "model-based" learner of the meta-learning-for-trading literature: the
    input of one bar is its last ``window`` feature rows, flattened oldest first (see
    ``metabt.features.stack_window``), so tasks and the strategy keep the (N, F_in) shape.
    The cell is written out (Cho et al. 2014, same gate equations as ``torch.nn.GRUCell``)
    so that ``higher`` can patch it and ``torch.func.vmap`` can batch it.

    Args:
        n_features: features per bar F; the input width is ``window * n_features``.
        hidden: width H of the hidden state. Default 32.
        window: number of bars W the GRU reads. Default 10.
        seed: seed of the generator that draws the initial weights.

    Shapes:
        x: (N, W * F) float -> (N,).

    Raises:
        ConfigError: if a size is not a positive integer.

    References:
        Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder".
    """

    def __init__(self, n_features: int, hidden: int = 32, window: int = 10, *, seed: int = 0):
        super().__init__()
        self.step_features = _check_positive("n_features", n_features)
        self.hidden_size = _check_positive("hidden", hidden)
        self.window = _check_positive("window", window)
        self.n_features = self.step_features * self.window
        self.seed = int(seed)
        self.x2h = nn.Linear(self.step_features, 3 * self.hidden_size)
        self.h2h = nn.Linear(self.hidden_size, 3 * self.hidden_size)
        self.head = nn.Linear(self.hidden_size, 1)
        g = torch.Generator().manual_seed(self.seed)
        for layer in (self.x2h, self.h2h, self.head):
            _init_linear(layer, g)

    def body_with(self, params: Params, x: Tensor) -> Tensor:
        """Last hidden state. x: (N, W * F) -> (N, H)."""
        steps = x.reshape(*x.shape[:-1], self.window, self.step_features)
        gx = F.linear(steps, params["x2h.weight"], params["x2h.bias"])  # (N, W, 3H)
        h = x.new_zeros((*x.shape[:-1], self.hidden_size))
        w_hh, b_hh = params["h2h.weight"], params["h2h.bias"]
        for t in range(self.window):
            gh = F.linear(h, w_hh, b_hh)
            xr, xz, xn = gx[..., t, :].chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1.0 - z) * n + z * h
        return h

    # ---- NumPy fast path (test-time inner loop inside a backtest): backpropagation
    # through time written out, no autograd graph, gradients into one flat buffer.
    _names = ("x2h.weight", "x2h.bias", "h2h.weight", "h2h.bias", "head.weight", "head.bias")

    def _states_numpy(
        self, p: Mapping[str, np.ndarray], x: np.ndarray
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

    def forward_numpy(self, params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """``forward_with`` in NumPy. x: (N, W * F) -> (N,), or (W * F,) -> ()."""
        if x.ndim == 1:
            return self.forward_numpy(params, x[None, :])[0]
        h, _ = self._states_numpy(params, x)
        return h @ params["head.weight"][0] + params["head.bias"][0]

    def fold_numpy(
        self, params: Mapping[str, np.ndarray], lrs: Mapping[str, np.ndarray | float]
    ) -> tuple[np.ndarray, np.ndarray | float]:
        """θ raveled into one flat vector and the inner rates alike (a float if all equal)."""
        flat = np.concatenate([np.ravel(params[n]) for n in self._names])
        common = _common_rate([lrs[n] for n in self._names])
        if common is not None:
            return flat, common
        parts = [
            np.broadcast_to(np.asarray(lrs[n], flat.dtype), params[n].shape) for n in self._names
        ]
        return flat, np.concatenate([np.ravel(a) for a in parts])

    def adapt_folded(
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
            theta: θ from :meth:`fold_numpy` (not modified); rate: its rates.
            x: (S, W * F) support inputs; y: (S,) labels, θ's dtype.
            steps: inner steps (>= 0).

        Returns:
            (loss_before, loss_after, φ as name -> ndarray in ``state_dict()`` shapes).
        """
        flat = theta.copy()
        grad = np.empty_like(flat)
        p, d = {}, {}
        start = 0
        for name, shape in zip(self._names, self._shapes_numpy()):
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
            h, cache = self._states_numpy(p, x)
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

    def _shapes_numpy(self) -> list[tuple[int, ...]]:
        return [tuple(self.get_parameter(n).shape) for n in self._names]

    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON primitives (stored in checkpoints)."""
        return {
            "type": "gru",
            "n_features": self.step_features,
            "hidden": self.hidden_size,
            "window": self.window,
            "seed": self.seed,
        }


_MODEL_TYPES: dict[str, type[MetaModel]] = {"mlp": MLP, "gru": GRU}


def build_model(config: Mapping[str, Any]) -> MetaModel:
    """Build a model from its ``config()`` dict (as stored in a checkpoint).

    Args:
        config: ``{"type": "mlp"|"gru", ...constructor arguments}``.

    Returns:
        A freshly initialised model; load a state dict into it for trained weights.

    Raises:
        ConfigError: unknown type or bad arguments.
    """
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind not in _MODEL_TYPES:
        raise ConfigError(
            f"model type {kind!r} is unknown; use one of {sorted(_MODEL_TYPES)} (--model-type)"
        )
    try:
        return _MODEL_TYPES[kind](**cfg)
    except TypeError as exc:
        raise ConfigError(f"model config {dict(config)!r} does not fit {kind!r}: {exc}") from exc
