"""Small PyTorch models for meta-learning: an MLP and a GRU over a window of feature rows."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabt.config import MODEL_TYPES
from metabt.errors import ConfigError

__all__ = ["GRU", "MLP", "MODEL_TYPES", "MetaModel", "build_model"]

#: The model types metabt builds (``config()["type"]``, the CLI's ``--model-type``).

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


class MetaModel(nn.Module):
    """Base class of metabt models: a body (feature extractor) and a linear ``head``.

    Subclasses implement :meth:`body_with` and :meth:`config`. Every forward pass can also
    be run with an explicit parameter dict (``forward_with``), which is what the batched
    ``torch.func`` engine uses; ``forward`` is the same computation with the module's own
    parameters (what ``higher`` patches). The test-time NumPy inner loops of metabt's own
    models live in ``metabt._kernels``.

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
        """Names of the linear head's parameters: ``("head.weight", "head.bias")``."""
        return ("head.weight", "head.bias")

    def body_with(self, params: Params, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Body features with the given parameters. x: (N, F_in) float -> (N, H) float."""
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
        """Constructor arguments and ``"type"`` (one of ``MODEL_TYPES``) as JSON primitives."""
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
        g = torch.Generator().manual_seed(self.seed)
        for layer in [*self.layers, self.head]:
            _init_linear(layer, g)

    def body_with(self, params: Params, x: Tensor) -> Tensor:
        """Hidden representation. x: (N, F) -> (N, H_last)."""
        h = x
        for i in range(len(self.layers)):
            h = torch.relu(F.linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
        return h

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


_CLASSES: dict[str, type[MetaModel]] = dict(zip(MODEL_TYPES, (MLP, GRU), strict=True))


def build_model(config: Mapping[str, Any]) -> MetaModel:
    """Build a model from its ``config()`` dict (as stored in a checkpoint).

    Args:
        config: ``{"type": "mlp"|"gru", ...constructor arguments}`` (a type of
            ``MODEL_TYPES``).

    Returns:
        A freshly initialised model; load a state dict into it for trained weights.

    Raises:
        ConfigError: unknown type or bad arguments.
    """
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind not in _CLASSES:
        raise ConfigError(
            f"model type {kind!r} is unknown; use one of {sorted(MODEL_TYPES)} (--model-type)"
        )
    try:
        return _CLASSES[kind](**cfg)
    except TypeError as exc:
        raise ConfigError(f"model config {dict(config)!r} does not fit {kind!r}: {exc}") from exc
