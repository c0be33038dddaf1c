"""Small PyTorch models for meta-learning and user models built from import paths.

metabt's own models are ``MODEL_TYPES``: "mlp" and "gru" for the gradient-based family
(MAML, ...), and one model per other family, each run by its own algorithm only
(``MetaModel.paired_algorithm``): "cnp" (a conditional neural process with attention over
the support set), "protonet" (an embedding MLP for Prototypical Networks) and "cavia" (an
MLP with a task-context input). Any ``torch.nn.Module`` mapping
(N, F_in) to (N,) or (N, 1) is a first-class model too; to be saved in a checkpoint it is
built by metabt from an import path and JSON constructor arguments, so that loading
re-creates it without unpickling code:

    model = user_model("mypkg.nets:MyNet", n_features=12, hidden=64)
    # the same as build_model({"type": "mypkg.nets:MyNet", "n_features": 12, "hidden": 64})

calls ``MyNet(n_features=12, hidden=64)`` and records that config on the instance
(:func:`model_config_of`), which is what a checkpoint stores next to the state dict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabt._checks import did_you_mean
from metabt._trust import import_object, trust
from metabt.errors import ConfigError
from metabt.learn.kernels.numpy_models import CnpNumpy, ProtoNetNumpy
from metabt.learn.names import MODEL_TYPES

__all__ = [
    "CNP",
    "CaviaMLP",
    "GRU",
    "MLP",
    "MODEL_TYPES",
    "MetaModel",
    "ProtoNet",
    "build_model",
    "check_output",
    "check_row_independent",
    "check_saveable",
    "class_path",
    "find_head",
    "import_model_class",
    "input_width",
    "model_config_of",
    "user_model",
]

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
    models live in ``metabt.learn.kernels.fused``.

    Attributes:
        n_features: width F_in of one input row (``window * features`` for the GRU).
        window: number of consecutive feature rows one input holds (1 for the MLP).
        head_names: names of the head's parameters, the only ones ANIL adapts.
        paired_algorithm: the one algorithm a model of another family runs with ("cnp",
            "protonet", "cavia"); None (MLP, GRU): any gradient-based algorithm.
    """

    n_features: int
    window: int
    head: nn.Linear
    paired_algorithm: ClassVar[str | None] = None

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
    ``metabt.features.spec.stack_window``), so tasks and the strategy keep the (N, F_in) shape.
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


def _linear(params: Params, name: str, x: Tensor) -> Tensor:
    return F.linear(x, params[f"{name}.weight"], params[f"{name}.bias"])


class CNP(CnpNumpy, MetaModel):
    """Conditional neural process with a cross-attention encoder of the support set.

    The model-based learner: it reads the support pairs (x_s, y_s) and the query rows and
    predicts the query labels in one forward pass, with no gradient step at test time. Each
    pair is encoded as r_s = MLP([x_s, y_s]) (the values); a query row attends to the
    support rows through one dot-product head, with keys and queries k = MLP_k(x) shared
    between both sides (Attentive NPs, Kim et al. 2019), and the decoder reads
    ``[x, Σ_s a_s r_s, mean_s r_s]``: the attended and the mean-pooled context (Garnelo et
    al. 2018). With no support set both contexts are zero: :meth:`forward_with` without
    ``support.*`` entries is that unconditional prediction.

    Args:
        n_features: input width F.
        hidden: width H of every layer and of the context. Default 32.
        seed: seed of the generator that draws the initial weights.

    Shapes:
        support x (..., S, F), y (..., S); queries x (..., N, F) -> (..., N), any leading
        batch dims (one per task in meta-training), float32 or float64.

    Raises:
        ConfigError: if a size is not a positive integer.

    References:
        Garnelo et al. 2018, "Conditional Neural Processes"; Kim et al. 2019, "Attentive
        Neural Processes"; Mishra et al. 2018, "A Simple Neural Attentive Meta-Learner".
    """

    paired_algorithm: ClassVar[str | None] = "cnp"
    #: keys of the encoded support set in a parameter dict (``MetaLearner.adapt``)
    CONTEXT_KEYS = ("support.keys", "support.values", "support.mean")

    def __init__(self, n_features: int, hidden: int = 32, *, seed: int = 0):
        super().__init__()
        self.n_features = _check_positive("n_features", n_features)
        self.hidden = _check_positive("hidden", int(hidden))
        self.window = 1
        self.seed = int(seed)
        f, h = self.n_features, self.hidden
        self.encoder = nn.ModuleList([nn.Linear(f + 1, h), nn.Linear(h, h)])
        self.attention = nn.ModuleList([nn.Linear(f, h), nn.Linear(h, h)])
        self.decoder = nn.ModuleList([nn.Linear(f + 2 * h, h), nn.Linear(h, h)])
        self.head = nn.Linear(h, 1)
        g = torch.Generator().manual_seed(self.seed)
        for layer in [*self.encoder, *self.attention, *self.decoder, self.head]:
            _init_linear(layer, g)

    def _keys(self, params: Params, x: Tensor) -> Tensor:
        return _linear(params, "attention.1", torch.relu(_linear(params, "attention.0", x)))

    def encode_with(self, params: Params, xs: Tensor, ys: Tensor) -> dict[str, Tensor]:
        """The encoded support set. xs (..., S, F), ys (..., S) -> ``CONTEXT_KEYS`` entries:
        keys (..., S, H), values (..., S, H) and their mean (..., H)."""
        pairs = torch.cat([xs, ys.unsqueeze(-1)], -1)
        values = _linear(params, "encoder.1", torch.relu(_linear(params, "encoder.0", pairs)))
        keys, mean = self._keys(params, xs), values.mean(-2)
        return dict(zip(self.CONTEXT_KEYS, (keys, values, mean), strict=True))

    def decode_with(self, params: Params, x: Tensor, context: Params | None) -> Tensor:
        """Predictions given an encoded support set (None: the zero context).

        x: (..., N, F) -> (..., N)."""
        if context is None:
            attended = x.new_zeros((*x.shape[:-1], self.hidden))
            mean = attended
        else:
            keys, values, pooled = (context[k] for k in self.CONTEXT_KEYS)
            scores = self._keys(params, x) @ keys.transpose(-1, -2) / math.sqrt(self.hidden)
            attended = torch.softmax(scores, -1) @ values
            mean = pooled.unsqueeze(-2).expand(attended.shape)
        h = torch.relu(_linear(params, "decoder.0", torch.cat([x, attended, mean], -1)))
        h = torch.relu(_linear(params, "decoder.1", h))
        return self.head_with(params, h)

    def predict_with(self, params: Params, xs: Tensor, ys: Tensor, xq: Tensor) -> Tensor:
        """One forward pass: support (..., S, F), (..., S) and queries (..., Q, F) -> (..., Q)."""
        return self.decode_with(params, xq, self.encode_with(params, xs, ys))

    def forward_with(self, params: Params, x: Tensor) -> Tensor:
        """Prediction given the ``support.*`` entries of ``params`` (else the zero context).

        x: (N, F) -> (N,)."""
        has_context = self.CONTEXT_KEYS[0] in params
        return self.decode_with(params, x, params if has_context else None)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON primitives (stored in checkpoints)."""
        return {
            "type": "cnp",
            "n_features": self.n_features,
            "hidden": self.hidden,
            "seed": self.seed,
        }


class ProtoNet(ProtoNetNumpy, MetaModel):
    """Embedding MLP of Prototypical Networks for market states (Snell et al. 2017).

    ReLU hidden layers and a linear ``head`` of width ``embed`` (the embedding, not a
    scalar). The class prototypes of a support set and the expected-return signal are in
    ``metabt.learn.algorithms.protonet`` (``ProtoNetFamily``); :meth:`forward_with` reads
    them from the ``prototypes.*`` entries of the parameter dict, and predicts 0 without
    them.

    Args:
        n_features: input width F.
        hidden: widths of the hidden layers. Default (32, 32).
        embed: embedding width E. Default 16.
        seed: seed of the generator that draws the initial weights.

    Shapes:
        x (..., N, F) -> embeddings (..., N, E); predictions (N,).

    Raises:
        ConfigError: if a width is not a positive integer.

    References:
        Snell, Swersky, Zemel 2017, "Prototypical Networks for Few-shot Learning".
    """

    paired_algorithm: ClassVar[str | None] = "protonet"
    #: keys of the prototypes in a parameter dict: centres (K, E), values (K,), mask (K,)
    PROTOTYPE_KEYS = ("prototypes.centres", "prototypes.values", "prototypes.mask")

    def __init__(
        self, n_features: int, hidden: Sequence[int] = (32, 32), embed: int = 16, *, seed: int = 0
    ):
        super().__init__()
        self.n_features = _check_positive("n_features", n_features)
        self.hidden = tuple(_check_positive("hidden width", int(h)) for h in hidden)
        self.embed = _check_positive("embed", int(embed))
        self.window = 1
        self.seed = int(seed)
        widths = (self.n_features, *self.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.head = nn.Linear(widths[-1], self.embed)
        g = torch.Generator().manual_seed(self.seed)
        for layer in [*self.layers, self.head]:
            _init_linear(layer, g)

    def embed_with(self, params: Params, x: Tensor) -> Tensor:
        """Embeddings. x: (..., N, F) -> (..., N, E)."""
        h = x
        for i in range(len(self.layers)):
            h = torch.relu(_linear(params, f"layers.{i}", h))
        return _linear(params, "head", h)

    def logits_with(self, params: Params, x: Tensor, prototypes: Params) -> Tensor:
        """Class logits −‖e(x) − c_k‖² (empty classes at the dtype's minimum). -> (..., N, K)."""
        centres, mask = prototypes[self.PROTOTYPE_KEYS[0]], prototypes[self.PROTOTYPE_KEYS[2]]
        emb = self.embed_with(params, x)
        dist = ((emb.unsqueeze(-2) - centres.unsqueeze(-3)) ** 2).sum(-1)
        floor = torch.finfo(dist.dtype).min
        return torch.where(mask.unsqueeze(-2) > 0, -dist, torch.full_like(dist, floor))

    def forward_with(self, params: Params, x: Tensor) -> Tensor:
        """Expected return Σ_k p_k·v_k given ``prototypes.*`` entries, else 0: (N, F) -> (N,)."""
        if self.PROTOTYPE_KEYS[0] not in params:
            return x.new_zeros(x.shape[:-1])
        probs = torch.softmax(self.logits_with(params, x, params), -1)
        return (probs * params[self.PROTOTYPE_KEYS[1]].unsqueeze(-2)).sum(-1)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON primitives (stored in checkpoints)."""
        return {
            "type": "protonet",
            "n_features": self.n_features,
            "hidden": list(self.hidden),
            "embed": self.embed,
            "seed": self.seed,
        }


class CaviaMLP(MLP):
    """MLP whose input is a feature row concatenated with a task context φ (CAVIA).

    θ (the weights) is shared by every task; φ (``context`` dims) is not a parameter: it is
    0 at the start of every task and only it is adapted in the inner loop
    (``metabt.learn.algorithms.cavia.CaviaFamily``). :meth:`forward_with` reads φ from the
    ``"context"`` entry of the parameter dict, else uses φ = 0.

    Args:
        n_features: input width F (without the context).
        hidden: widths of the hidden layers. Default (32, 32).
        context: width C of the context vector. Default 4.
        seed: seed of the generator that draws the initial weights.

    Shapes:
        x: (N, F) float -> (N,); context: (C,).

    Raises:
        ConfigError: if a width is not a positive integer.

    References:
        Zintgraf et al. 2019, "Fast Context Adaptation via Meta-Learning".
    """

    paired_algorithm: ClassVar[str | None] = "cavia"
    #: the key of φ in a parameter dict
    CONTEXT_KEY = "context"

    def __init__(
        self, n_features: int, hidden: Sequence[int] = (32, 32), context: int = 4, *, seed: int = 0
    ):
        width = _check_positive("n_features", n_features)
        self.context_size = _check_positive("context", int(context))
        super().__init__(width + self.context_size, hidden, seed=seed)
        self.n_features = width

    def body_with(self, params: Params, x: Tensor) -> Tensor:
        """Hidden representation of [x, φ]. x: (N, F) -> (N, H_last)."""
        context = params.get(self.CONTEXT_KEY)
        if context is None:
            context = x.new_zeros(self.context_size)
        inputs = torch.cat([x, context.expand(*x.shape[:-1], self.context_size)], -1)
        return super().body_with(params, inputs)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON primitives (stored in checkpoints)."""
        return {
            "type": "cavia",
            "n_features": self.n_features,
            "hidden": list(self.hidden),
            "context": self.context_size,
            "seed": self.seed,
        }


_CLASSES: dict[str, type[MetaModel]] = dict(
    zip(MODEL_TYPES, (MLP, GRU, CNP, ProtoNet, CaviaMLP), strict=True)
)

#: Attribute on a user model holding the config it was built from (:func:`user_model`).
CONFIG_ATTR = "_metabt_config"


def class_path(cls: type) -> str:
    """The import path ``"module:QualName"`` of a class (what a checkpoint stores).

    Args:
        cls: a class.

    Returns:
        ``f"{cls.__module__}:{cls.__qualname__}"``.

    Raises:
        ConfigError: the class cannot be imported again by name: it is defined in
            ``__main__`` (a script or notebook) or inside a function (``<locals>``).
    """
    path = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        where = "in __main__" if cls.__module__ == "__main__" else "inside a function"
        raise ConfigError(
            f"model class {path} is defined {where}, so it cannot be imported again by name "
            "to rebuild a saved model; move it to an importable module (e.g. mypkg/nets.py) "
            "and build it with metabt.learn.models.user_model('mypkg.nets:"
            f"{cls.__name__}', n_features=..., **kwargs)"
        )
    return path


def import_model_class(path: str) -> type[nn.Module]:
    """Import the ``torch.nn.Module`` subclass named by ``"package.module:QualName"``.

    Args:
        path: import path, module and qualified class name separated by ":".

    Returns:
        The class.

    Raises:
        UntrustedModuleError: the module is not trusted (:func:`metabt.trust`); nothing
            was imported.
        ConfigError: a malformed path, a module that cannot be imported, a missing name,
            or an object that is not an ``nn.Module`` subclass (never called then).
    """
    if ":" not in str(path):
        raise ConfigError(
            f"model type {path!r} is neither one of {list(MODEL_TYPES)} nor an import path "
            "'package.module:ClassName'"
        )
    obj = import_object(str(path), "model type")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ConfigError(
            f"model type {path!r} names {type(obj).__name__} {obj!r}, not a torch.nn.Module "
            "subclass"
        )
    return obj


def _check_json(label: str, value: Any) -> None:
    """ConfigError unless ``value`` is made of JSON primitives (str, int, float, bool, None)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_json(label, item)
        return
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        for item in value.values():
            _check_json(label, item)
        return
    raise ConfigError(
        f"model argument {label}={value!r} is a {type(value).__name__}; constructor "
        "arguments of a user model must be JSON primitives (str, int, float, bool, None, "
        "lists and dicts of them) so that a checkpoint can store them"
    )


def input_width(model: nn.Module) -> int | None:
    """Width F_in of one model input row, or None when it cannot be told.

    Read from the model's ``n_features`` attribute (metabt's models: ``window * features``
    for the GRU), else from the config it was built from (``n_features * window``, with
    ``window`` the model's attribute, default 1).
    """
    width = getattr(model, "n_features", None)
    if isinstance(width, int) and not isinstance(width, bool):
        return width
    config = getattr(model, CONFIG_ATTR, None)
    if isinstance(config, Mapping) and isinstance(config.get("n_features"), int):
        return int(config["n_features"]) * int(getattr(model, "window", 1))
    return None


def check_output(model: nn.Module, width: int) -> None:
    """Run ``model`` once on a (2, width) zero input; its output must be (2,) or (2, 1).

    Args:
        model: the module (in θ's dtype).
        width: input width F_in.

    Raises:
        ConfigError: the forward pass fails on that input, or returns another shape.
    """
    name = type(model).__name__
    dtype = next(model.parameters(), torch.zeros(())).dtype
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, width, dtype=dtype))
    except Exception as exc:  # the user's forward pass: any error is a config error
        raise ConfigError(
            f"model {name} fails on a (2, {width}) input ({type(exc).__name__}: {exc}); a "
            "metabt model maps (N, n_features) to (N,) or (N, 1)"
        ) from exc
    if not isinstance(out, Tensor) or tuple(out.shape) not in ((2,), (2, 1)):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(
            f"model {name} returned shape {shape} for a (2, {width}) input; a metabt model "
            "must map (N, F) to (N,) or (N, 1): end it with nn.Linear(hidden, 1)"
        )


def check_row_independent(model: nn.Module) -> None:
    """Refuse a model whose prediction for a row depends on the other rows of its batch.

    Inside a backtest a model predicts one bar at a time; a batch-norm layer in training
    mode needs the batch's statistics for that (and the inner loop never updates its
    running statistics), so it cannot be meta-learned and deployed the same way.

    Raises:
        ConfigError: the model has a batch-norm layer, naming it and ``nn.LayerNorm``
            (which normalises each row on its own) as the fix.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"model {type(model).__name__} has a batch-norm layer "
                f"({name or 'the model'}: {type(module).__name__}); its output depends "
                "on the other rows of the batch, and inside a backtest the model predicts "
                "one bar at a time (and the inner loop never updates running statistics); "
                "use nn.LayerNorm, which normalises each row on its own"
            )


def user_model(target: str | type[nn.Module], /, **kwargs: Any) -> nn.Module:
    """Build a user model that metabt can save: ``target(**kwargs)``, its config recorded.

    The protocol: metabt constructs user models itself from an import path and JSON
    constructor arguments (``n_features`` among them), records them on the instance
    (attribute ``_metabt_config``, see :func:`model_config_of`), and a checkpoint stores
    them next to the state dict; loading imports the class, calls it with the same
    arguments and loads the state dict strictly. Equal to
    ``build_model({"type": path, **kwargs})``.

    Args:
        target: ``"package.module:ClassName"`` or the class itself (then it must be
            importable by that path: not from ``__main__``, not a local class).
        **kwargs: constructor arguments, JSON primitives; ``n_features`` (the input width
            per bar) is required.

    Returns:
        The freshly initialised module (checked once: a (2, F_in) input gives (2,) or
        (2, 1)).

    Raises:
        ConfigError: an unimportable class, a missing ``n_features``, arguments that are
            not JSON primitives or do not fit the constructor, or a wrong output shape.

    Naming the class here trusts its module (:func:`metabt.trust`), so a checkpoint of the
    model loads again in this process.

    Example:
        >>> model = user_model("mypkg.nets:MyNet", n_features=12, hidden=64)  # doctest: +SKIP
    """
    path = target if isinstance(target, str) else class_path(target)
    if ":" in path:  # the user names this class here: its module is trusted (metabt.trust)
        trust(path.partition(":")[0])
    return build_model({"type": path, **kwargs})


def model_config_of(model: nn.Module) -> dict[str, Any] | None:
    """The config a model is rebuilt from: ``config()`` of metabt's models, the recorded
    config of a :func:`user_model`, else None (metabt does not know how to rebuild it)."""
    if isinstance(model, MetaModel):
        return dict(model.config())
    config = getattr(model, CONFIG_ATTR, None)
    return None if config is None else dict(config)


def check_saveable(model: nn.Module) -> dict[str, Any]:
    """The config a checkpoint rebuilds ``model`` from, or a ConfigError saying why there is none.

    metabt's models are saveable (``config()``); a user model is when it was built by
    :func:`user_model` from an importable class: the class can be imported again by its
    path ``"module:QualName"`` (:func:`class_path`) and its constructor arguments were
    recorded (:func:`model_config_of`) under that same path. ``MetaLearner`` runs this
    check at construction, so that an unsaveable model fails before a long ``fit``, not
    at ``save`` after it; ``metabt.learn.checkpoint.model_config`` runs it again at save
    time. Nothing is imported.

    Args:
        model: the module.

    Returns:
        The config, ``{"type": ..., **constructor arguments}`` (a copy).

    Raises:
        ConfigError: naming the class, the problem and the fix: the class is defined in
            ``__main__`` (a script or notebook) or inside a function, the model was not
            built by :func:`user_model` (its constructor arguments are unknown), or it was
            built under another class path.
    """
    if isinstance(model, MetaModel):
        return dict(model.config())
    name = type(model).__name__
    path = class_path(type(model))  # ConfigError for __main__ and local classes
    config = model_config_of(model)
    if config is None:
        if type(model).__module__.partition(".")[0] == "torch":  # nn.Sequential, nn.Linear...
            fix = (
                "define a class of your own in an importable module whose constructor takes "
                f"n_features and builds the layers (e.g. mypkg/nets.py: class Net(nn.{name})), "
                "and build it with metabt.learn.models.user_model('mypkg.nets:Net', "
                "n_features=..., **kwargs)"
            )
        else:
            fix = (
                f"build it with metabt.learn.models.user_model({path!r}, n_features=..., "
                "**kwargs) (an importable nn.Module class and JSON arguments)"
            )
        raise ConfigError(
            f"model {name} ({path}) was not built by metabt.learn.models.user_model, so metabt "
            "does not know its constructor arguments and cannot rebuild it from a checkpoint; "
            f"{fix} to make it saveable"
        )
    if config.get("type") != path:
        raise ConfigError(
            f"model {name} was built as {config.get('type')!r} but its class is {path}, so a "
            f"checkpoint would rebuild another class; build it with "
            f"metabt.learn.models.user_model({path!r}, ...)"
        )
    return config


def _build_user(config: dict[str, Any]) -> nn.Module:
    path = str(config.pop("type"))
    cls = import_model_class(path)
    if "n_features" not in config:
        raise ConfigError(
            f"model config of {path!r} lacks 'n_features' (the input width per bar); add it"
        )
    for key, value in config.items():
        _check_json(key, value)
    try:
        model = cls(**config)
    except TypeError as exc:
        raise ConfigError(
            f"model config {config!r} does not fit {path}: {exc}; its constructor must accept "
            "n_features and these keyword arguments"
        ) from exc
    setattr(model, CONFIG_ATTR, {"type": path, **config})
    width = input_width(model)
    assert width is not None  # n_features is in the recorded config
    check_output(model, width)
    return model


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """Build a model from its config dict (as stored in a checkpoint).

    Args:
        config: ``{"type": "mlp"|"gru"|"cnp"|"protonet"|"cavia", ...constructor
            arguments}`` for metabt's models (``MODEL_TYPES``), or ``{"type":
            "package.module:ClassName", "n_features": F, ...}`` for a user model (see
            :func:`user_model`): a ``type`` containing ":" is an import path.

    Returns:
        A freshly initialised model; load a state dict into it for trained weights.

    Raises:
        ConfigError: unknown type, unimportable class, bad arguments, or a user model
            whose output is not (N,) or (N, 1).
    """
    cfg = dict(config)
    kind = cfg.get("type")
    if isinstance(kind, str) and ":" in kind:
        return _build_user(cfg)
    cfg.pop("type", None)
    if kind not in _CLASSES:
        raise ConfigError(
            f"model type {kind!r} is unknown{did_you_mean(str(kind), MODEL_TYPES)}; use one "
            f"of {sorted(MODEL_TYPES)} or an import path 'package.module:ClassName' "
            "(model_type)"
        )
    try:
        return _CLASSES[kind](**cfg)
    except TypeError as exc:
        raise ConfigError(f"model config {dict(config)!r} does not fit {kind!r}: {exc}") from exc


def find_head(model: nn.Module, head: str | None = None) -> str:
    """The name of the submodule ANIL adapts: ``head``, or the model's last ``nn.Linear``.

    metabt's models have a linear ``head``; for any other module the last ``nn.Linear``
    in ``named_modules()`` order is taken (the output layer of an ``nn.Sequential``).

    Args:
        model: the module.
        head: a submodule name (as in ``named_modules()``, e.g. "2" or "out"), or None.

    Returns:
        The submodule's name; its parameters are the ``f"{name}."`` ones.

    Raises:
        ConfigError: an unknown name (with the closest one), a submodule without
            parameters, or no ``nn.Linear`` at all.

    References:
        Raghu, Raghu, Bengio, Vinyals 2020, "Rapid Learning or Feature Reuse?".
    """
    modules = dict(model.named_modules())
    name = type(model).__name__
    if head is None:
        if isinstance(model, MetaModel):
            return "head"
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear) and n]
        if not linears:
            raise ConfigError(
                f"algorithm 'anil' adapts the model's last nn.Linear, but {name} has none; "
                "pass head='<submodule name>' or use another algorithm"
            )
        return linears[-1]
    named = [n for n, m in modules.items() if n and any(True for _ in m.parameters())]
    if head not in named:
        raise ConfigError(
            f"head {head!r} is not a submodule of {name} with parameters"
            f"{did_you_mean(str(head), named)}; use one of {named}"
        )
    return head
