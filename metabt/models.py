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


def _flat_rates(
    lrs: Mapping[str, np.ndarray | float], names: Sequence[str], sizes: Sequence[int], dtype: Any
) -> np.ndarray | float:
    """Inner learning rates laid out like a flat parameter vector (a float if all equal)."""
    values = [lrs[n] for n in names]
    if all(isinstance(v, (int, float)) for v in values) and len(set(values)) == 1:
        return float(values[0])
    return np.concatenate(
        [
            np.broadcast_to(np.asarray(v, dtype=dtype), (size,))
            if np.ndim(v) == 0
            else np.ravel(np.asarray(v, dtype=dtype))
            for v, size in zip(values, sizes)
        ]
    )


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
        """``forward_with`` in NumPy. params: name -> ndarray; x: (N, F) -> (N,)."""
        h = x
        for weight, bias in self._layer_names:
            h = h @ params[weight].T
            h += params[bias]
            np.maximum(h, 0.0, out=h)
        return h @ params["head.weight"][0] + params["head.bias"][0]

    def adapt_numpy(
        self,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        lrs: Mapping[str, np.ndarray | float],
        steps: int,
    ) -> tuple[float, float, dict[str, np.ndarray]]:
        """The whole inner loop, fused: ``steps`` gradient-descent steps on the support MSE.

        Each step is ``φ ← φ − α ⊙ ∇_φ mean((f_φ(x) − y)²)`` on every parameter, the update
        of MAML's inner loop (Finn et al. 2017, eq. 1; with per-parameter rates α for
        Meta-SGD, Li et al. 2017). The parameters live in one flat buffer with a flat
        gradient buffer beside it, written in place by the backward pass, so a step is
        about two dozen small NumPy calls whatever the depth's parameter count, and the
        update is one vector operation. Equal to :meth:`mse_grad_numpy` stepped by hand,
        and to ``torch.autograd`` (tested in float64).

        Args:
            params: θ, name -> ndarray as in ``state_dict()`` (not modified).
            x: (S, F) support inputs; y: (S,) support labels, same float dtype as params.
            lrs: name -> inner learning rate, a float or an array of the parameter's shape.
            steps: number of inner steps (>= 0).

        Returns:
            (loss_before, loss_after, φ): support MSE at θ and at φ, and φ as name ->
            ndarray (views into one new buffer).
        """
        names = [n for pair in (*self._layer_names, self.head_names) for n in pair]
        flat = np.concatenate([np.ravel(params[n]) for n in names])
        grad = np.empty_like(flat)
        rate = _flat_rates(lrs, names, [params[n].size for n in names], flat.dtype)
        phi: dict[str, np.ndarray] = {}
        dphi: dict[str, np.ndarray] = {}
        start = 0
        for n in names:
            shape, size = params[n].shape, params[n].size
            phi[n] = flat[start : start + size].reshape(shape)
            dphi[n] = grad[start : start + size].reshape(shape)
            start += size
        layers = [(phi[w], phi[b], dphi[w], dphi[b]) for w, b in self._layer_names]
        w_head, b_head = phi["head.weight"][0], phi["head.bias"]
        dw_head, db_head = dphi["head.weight"][0], dphi["head.bias"]
        scale = 2.0 / len(y)
        ones = np.ones(len(y), dtype=flat.dtype)  # bias gradients as ones @ delta (a GEMV)
        loss_before = math.nan
        for step in range(steps + 1):
            acts = [x]
            for weight, bias, _, _ in layers:
                h = acts[-1] @ weight.T
                h += bias
                np.maximum(h, 0.0, out=h)
                acts.append(h)
            residual = acts[-1] @ w_head
            residual += b_head
            residual -= y
            if step == 0:
                loss_before = float(residual @ residual) / len(y)
            if step == steps:  # forward only: the loss at φ
                return loss_before, float(residual @ residual) / len(y), phi
            residual *= scale  # d loss / d prediction
            np.matmul(residual, acts[-1], out=dw_head)
            db_head[0] = residual.sum()  # the head's bias
            delta = np.multiply.outer(residual, w_head)
            for i in range(len(layers) - 1, -1, -1):
                weight, _, d_weight, d_bias = layers[i]
                delta *= acts[i + 1] > 0
                np.matmul(delta.T, acts[i], out=d_weight)
                np.matmul(ones, delta, out=d_bias)
                if i:
                    delta = delta @ weight
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
