"""The pieces every learner family shares, and the families beyond MAML: CNP, ProtoNet, CAVIA.

Shared: the loss (:func:`mse`), the support-set check (:func:`support_arrays`), the adapted
model (:class:`AdaptedModel`) and the base of the outer-step registry (:class:`OuterStep`),
all re-exported by ``metabt.learn.algorithms``, which registers every step in ``OUTER_STEPS``.

The other families run where MAML runs (``MetaLearner(model, algorithm=...)``, ``fit``,
``evaluate``, ``adapt``, ``adapt_batch``, checkpoints, the CLI), each on its own model
(``metabt.learn.models``) and through the :class:`OuterStep` hooks ``adapt`` and ``adapts_itself``:

* ``cnp`` (:class:`CnpStep`), model-based: a conditional neural process reads the support
  pairs and predicts the queries in one forward pass; no gradient step at test time.
* ``protonet`` (:class:`ProtoStep`), metric-based: forward returns binned into down/flat/up
  at the support's own terciles; the signal is the expected return under the class
  probabilities softmax(−‖e(x) − c_k‖²).
* ``cavia`` (:class:`CaviaStep`), context adaptation: only a task context φ (0 at the start
  of every task) is adapted by gradient steps; θ is shared; second order through them.

Every ``evaluate`` returns the query MSE of the signal, so curves and keep-best validation
compare across families. CNP and ProtoNet have no inner loop: any engine name is accepted
and ignored; CAVIA's ``func`` (``torch.func``, all tasks at once) and ``higher`` (one task at
a time with ``torch.autograd``, the reference) compute the same meta-gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabt._checks import check_support
from metabt.errors import ConfigError
from metabt.learn.models import CNP, CaviaMLP, MetaModel, ProtoNet

if TYPE_CHECKING:
    from metabt.learn.algorithms import Learner

__all__ = [
    "AdaptedModel",
    "CLASSES",
    "CaviaStep",
    "CnpStep",
    "OuterStep",
    "ProtoStep",
    "context_loop",
    "label_classes",
    "mse",
    "ols_accuracy",
    "prototype_accuracy",
    "prototypes",
    "prototypes_numpy",
    "support_arrays",
    "terciles_numpy",
]

Params = dict[str, Tensor]
#: Market-state classes of ProtoNet, lowest forward return first.
CLASSES = ("down", "flat", "up")


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error, the loss of every inner and outer loop. (N,), (N,) -> ()."""
    return ((pred - target) ** 2).mean()


def _to_numpy(values: Tensor | np.ndarray, dtype: np.dtype) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=dtype)


def support_arrays(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, like: Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """A support set checked and converted for the test-time inner loop.

    Args:
        x: (S, F_in) float inputs (tensor or ndarray); y: (S,) float labels.
        like: a tensor of θ, whose dtype the arrays take.

    Returns:
        (x, y) as C-contiguous ndarrays of θ's dtype.

    Raises:
        ConfigError: mismatched shapes, an empty support set or non-finite values.
    """
    np_dtype = like.detach().numpy().dtype
    xn, yn = _to_numpy(x, np_dtype), _to_numpy(y, np_dtype)
    check_support(xn, yn)
    return xn, yn


class AdaptedModel:
    """A model adapted to one support set: φ = θ after a few inner-loop steps.

    The thin class over the pure update functions (:func:`adapt_autograd`,
    :func:`adapt_head`, the ``metabt.learn.kernels.fused`` kernels), as ``MetaLearner.adapt``
    returns it (importable as ``metabt.learn.learner.AdaptedModel``). Holds its own copy φ of the
    parameters; θ of the learner is untouched.

    Args:
        forward: (params, x) -> predictions, the model's ``forward_with``.
        params: φ as name -> tensor, or None when only ``numpy_params`` are given.
        loss_before: support MSE at θ. loss_after: support MSE at φ.
        steps: inner-loop steps taken.
        forward_numpy: the NumPy forward pass of a ``metabt.learn.kernels.fused`` kernel, or None.
        numpy_params: φ as name -> ndarray (what a kernel returns), or None.
        backend: which inner loop produced φ: "kernel" (a fused NumPy kernel of
            ``metabt.learn.kernels.fused``), "head" (ANIL's closed-form head), "autograd" (the
            ``torch.autograd`` reference, ``metabt.learn.algorithms.adapt_autograd``), and for
            the other families "encoder" (CNP), "prototypes" (ProtoNet), "context" (CAVIA).

    Attributes:
        params: the adapted parameters φ, name -> tensor (no autograd history).
        loss_before: mean squared error on the support set at θ (before adaptation).
        loss_after: mean squared error on the support set at φ (after adaptation).
        steps: number of inner-loop gradient steps taken.
        backend: the inner loop that ran ("kernel", "head", "autograd", "encoder",
            "prototypes" or "context").
        context: CAVIA's adapted context φ, (C,) float64 ndarray; None for the others.

    For CNP and ProtoNet ``params`` is θ plus the encoded support set (``support.*``) or
    the prototypes (``prototypes.*``), for CAVIA θ plus ``"context"``; ``steps`` is 0 for
    CNP and ProtoNet (no gradient step).

    Raises:
        ValueError: neither ``params`` nor ``numpy_params`` is given.
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
        backend: str = "autograd",
    ) -> None:
        if params is None and numpy_params is None:
            raise ValueError("AdaptedModel needs params or numpy_params")
        self._forward = forward
        self._params = params
        self.loss_before = loss_before
        self.loss_after = loss_after
        self.steps = steps
        self.backend = backend
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
    def context(self) -> np.ndarray | None:
        """CAVIA's adapted task context φ as a (C,) float64 ndarray (a task embedding, to log
        per adaptation); None for every other algorithm."""
        store = self._params if self._params is not None else self._numpy_params
        value = None if store is None else store.get(CaviaMLP.CONTEXT_KEY)
        if value is None:
            return None
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        return np.array(value, dtype=np.float64)

    @property
    def dtype(self) -> torch.dtype:
        """φ's dtype (the learner's θ dtype: torch.float32 or torch.float64)."""
        return next(iter(self.params.values())).dtype

    def __call__(self, x: Tensor) -> Tensor:
        """Predictions. x: (N, F_in) float tensor -> (N,) tensor of the model's dtype."""
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


class OuterStep:
    """One outer-loop update of θ on a batch of tasks (the base of the registry entries).

    Calling a step with a learner and a batch xs (B, S, F_in), ys (B, S), xq (B, Q, F_in),
    yq (B, Q) (θ's dtype) updates θ with ``learner.optimizer`` and returns the mean query
    MSE after inner-loop adaptation, measured before the update.

    Attributes:
        head_only: the inner loop adapts only the head (ANIL).
        learned_lr: the inner rates are per-parameter and meta-learned (Meta-SGD).
        updates_theta: False when θ never changes (scratch): ``fit`` then runs no step.
        adapts_itself: the step adapts to a support set itself (:meth:`adapt`, the other
            families): ``MetaLearner.adapt`` returns that, ``adapt_batch`` and ``evaluate``
            loop over it.
        model_type: the model type the step needs (its own family's, ``"cnp"``, ...), or
            None: any model whose ``paired_algorithm`` is None (the MAML family).
    """

    head_only: bool = False
    learned_lr: bool = False
    updates_theta: bool = True
    adapts_itself: ClassVar[bool] = False
    model_type: ClassVar[str | None] = None

    def __call__(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """Update θ on one batch; returns the mean query loss before the update."""
        raise NotImplementedError  # pragma: no cover - abstract

    def check_model(self, model: nn.Module) -> None:
        """Refuse a model of another family: each of "cnp", "protonet", "cavia" runs only on
        the model type of its name, and those models only with it.

        Raises:
            ConfigError: the model does not fit the algorithm (with the fix).
        """
        paired = getattr(model, "paired_algorithm", None) if isinstance(model, MetaModel) else None
        name = type(model).__name__
        if self.model_type is None and paired is not None:
            raise ConfigError(
                f"model {name} is meta-trained only by algorithm {paired!r}; pass "
                f"algorithm={paired!r} (--algorithm {paired}), or an 'mlp' or 'gru' model "
                "for a gradient-based algorithm"
            )
        if self.model_type is not None and paired != self.model_type:
            kind = self.model_type
            raise ConfigError(
                f"algorithm {kind!r} needs the {kind!r} model, got {name}; build it with "
                f"build_model({{'type': {kind!r}, 'n_features': F}}) (--model-type {kind}, or "
                "the default --model-type mlp, which it replaces)"
            )

    def adapt(
        self, learner: Learner, x: Tensor | np.ndarray, y: Tensor | np.ndarray, steps: int
    ) -> AdaptedModel | None:
        """Test-time adaptation of the step's own family; None: MetaLearner's inner loop.

        Args:
            learner: the learner. x: (S, F_in) support inputs; y: (S,) labels. steps: checked
                inner steps.

        Returns:
            An :class:`AdaptedModel` when ``adapts_itself``, else None.
        """
        return None


# ------------------------------------------------------------------- shared helpers
def _family_model(learner: Learner, cls: type[MetaModel]) -> MetaModel:
    model = learner.model
    if not isinstance(model, cls):
        raise ConfigError(
            f"this algorithm needs a {cls.__name__} model, got {type(model).__name__}"
        )
    return model


def _theta(model: nn.Module) -> Params:
    return {k: v.detach() for k, v in model.named_parameters()}


def _support(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, theta: Params
) -> tuple[Tensor, Tensor]:
    xn, yn = support_arrays(x, y, next(iter(theta.values())))
    return torch.from_numpy(xn), torch.from_numpy(yn)


def _numpy_support(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, theta: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """``support_arrays`` for θ given as ndarrays: checked, C-contiguous, θ's dtype."""
    dtype = next(iter(theta.values())).dtype
    xn, yn = _to_numpy(x, dtype), _to_numpy(y, dtype)
    check_support(xn, yn)
    return xn, yn


def _update(learner: Learner, loss: Tensor) -> float:
    """One optimizer step of θ on ``loss``; returns its value."""
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    learner.optimizer.step()
    return float(loss.detach())


# ----------------------------------------------------------------------------- CNP
@dataclass(frozen=True)
class CnpStep(OuterStep):
    """Conditional neural process (``cnp``): one forward pass from support to query labels.

    Meta-training minimises the query MSE of ``CNP.predict_with(θ, xs, ys, xq)`` by
    ordinary backpropagation (no inner loop: any engine name is accepted). At test time
    "adaptation" is encoding the support set (``steps`` is always 0, θ is untouched):
    ``loss_before`` is the support MSE with the zero context (the unconditional
    prediction), ``loss_after`` the support MSE given the encoded support set.

    References:
        Garnelo et al. 2018, "Conditional Neural Processes"; Kim et al. 2019, "Attentive
        Neural Processes".
    """

    adapts_itself: ClassVar[bool] = True
    model_type: ClassVar[str | None] = "cnp"

    def __call__(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """Update θ on the query MSE; returns it (before the update)."""
        model = _family_model(learner, CNP)
        assert isinstance(model, CNP)
        return _update(
            learner, mse(model.predict_with(dict(model.named_parameters()), xs, ys, xq), yq)
        )

    def adapt(
        self, learner: Learner, x: Tensor | np.ndarray, y: Tensor | np.ndarray, steps: int
    ) -> AdaptedModel:
        """Encode one support set (x (S, F), y (S,)); ``steps`` is ignored (0 taken).

        Runs in NumPy (``CNP.encode_numpy``, ``CNP.forward_numpy``: the per-bar
        ``predict_row`` of ``MetaStrategy`` too), from a copy of θ refreshed only when θ
        changes; equal to the torch forward (``CNP.encode_with``, ``decode_with``) to float
        precision, tested in float64. ``params`` and calling the model (``evaluate``) use
        the torch forward on the same arrays.
        """
        model = _family_model(learner, CNP)
        assert isinstance(model, CNP)
        theta = model.numpy_theta()
        xn, yn = _numpy_support(x, y, theta)
        context, before, after, fold = model.encode_numpy(theta, xn, yn)
        return AdaptedModel(
            model.forward_with,
            None,
            loss_before=before,
            loss_after=after,
            steps=0,
            forward_numpy=partial(model.forward_folded_numpy, fold=fold),
            numpy_params={**theta, **context},
            backend="encoder",
        )


# ------------------------------------------------------------------------- ProtoNet
def label_classes(ys: Tensor, yq: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Market-state classes (``CLASSES``: down/flat/up) of labels, at the support's terciles.

    With q₁, q₂ the 1/3 and 2/3 quantiles of the support labels (linear interpolation, as
    ``numpy.quantile``): down is y < q₁, up is y > q₂, flat the rest. A degenerate support
    (ties, fewer than 3 distinct labels) leaves classes empty: all equal labels give one
    class (flat), never an error or a NaN. A query label falling in an empty class is
    assigned to the nearest non-empty class (the lower one on a tie).

    Args:
        ys: (..., S) support labels, float. yq: (..., Q) query labels, or None.

    Returns:
        (support classes (..., S) int64 in {0, 1, 2}, non-empty mask (..., 3) bool,
        query classes (..., Q) int64 or None).
    """
    lo, hi = torch.quantile(ys, ys.new_tensor([1 / 3, 2 / 3]), dim=-1, keepdim=True)

    def classify(y: Tensor) -> Tensor:
        return 1 + (y > hi).long() - (y < lo).long()

    cs = classify(ys)
    mask = F.one_hot(cs, 3).sum(-2) > 0
    if yq is None:
        return cs, mask, None
    k = torch.arange(3)
    cost = (k[:, None] - k[None, :]).abs().to(ys.dtype) + 10.0 * (~mask).unsqueeze(-2).to(ys.dtype)
    nearest = cost.argmin(-1)  # (..., 3): class -> nearest non-empty class
    return cs, mask, torch.gather(nearest, -1, classify(yq))


def prototypes(model: ProtoNet, params: Mapping[str, Tensor], xs: Tensor, ys: Tensor) -> Params:
    """Class prototypes of support sets: mean embedding and mean label per class.

    Args:
        model: the embedding. params: θ. xs: (..., S, F) support inputs; ys: (..., S) labels.

    Returns:
        ``ProtoNet.PROTOTYPE_KEYS`` -> centres (..., 3, E), values (..., 3) (mean support
        label per class, 0 when empty) and mask (..., 3) (1.0 for a non-empty class).
    """
    cs, mask, _ = label_classes(ys)
    onehot = F.one_hot(cs, 3).to(xs.dtype).transpose(-1, -2)  # (..., 3, S)
    counts = onehot.sum(-1).clamp(min=1.0)
    centres = onehot @ model.embed_with(params, xs) / counts.unsqueeze(-1)
    values = (onehot @ ys.unsqueeze(-1)).squeeze(-1) / counts
    return dict(zip(ProtoNet.PROTOTYPE_KEYS, (centres, values, mask.to(xs.dtype)), strict=True))


def terciles_numpy(ys: np.ndarray) -> np.ndarray:
    """The 1/3 and 2/3 quantiles of one support set's labels, bit for bit as
    ``label_classes`` takes them with ``torch.quantile`` (linear interpolation): the same
    ranks and weights in the labels' dtype, and torch's own ``lerp`` kernel for the
    interpolation (it may fuse a multiply-add, which NumPy does not), at a tenth of the
    cost of ``torch.quantile`` on one short support set.

    Args:
        ys: (S,) float ndarray, S >= 1.

    Returns:
        (2,) ndarray of ys's dtype: [q₁, q₂].
    """
    ranks = np.array([1 / 3, 2 / 3], dtype=ys.dtype) * ys.dtype.type(len(ys) - 1)
    below = ranks.astype(np.int64)
    ordered = np.sort(ys)
    return torch.lerp(
        torch.from_numpy(ordered[below]),
        torch.from_numpy(ordered[np.ceil(ranks).astype(np.int64)]),
        torch.from_numpy(ranks - below.astype(ys.dtype)),
    ).numpy()


def prototypes_numpy(emb: np.ndarray, ys: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`prototypes` of one support set in NumPy, from its embeddings.

    Args:
        emb: (S, E) support embeddings (``ProtoNet.embed_numpy``); ys: (S,) labels.

    Returns:
        ``ProtoNet.PROTOTYPE_KEYS`` -> centres (3, E), values (3,), mask (3,), ys's dtype.
    """
    lo, hi = terciles_numpy(ys)
    classes = 1 + (ys > hi).astype(np.int64) - (ys < lo).astype(np.int64)
    onehot = (classes == np.arange(3)[:, None]).astype(ys.dtype)  # (3, S)
    sizes = onehot.sum(-1)
    counts = np.maximum(sizes, 1)
    centres = np.dot(onehot, emb) / counts[:, None]
    values = np.dot(onehot, ys) / counts
    mask = (sizes > 0).astype(ys.dtype)
    return dict(zip(ProtoNet.PROTOTYPE_KEYS, (centres, values, mask), strict=True))


def ols_accuracy(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
    """Accuracy of per-task least squares, binned into ``label_classes`` (a non-learned
    baseline of ProtoNet's regime classification).

    Each task's OLS fit (intercept and all F inputs, closed form: ``torch.linalg.lstsq``
    in float64, minimum-norm when S <= F) on its support pairs predicts the query labels;
    the predictions are binned into down/flat/up at the support labels' terciles, exactly
    as the true query labels are (:func:`label_classes`, empty classes mapped to the
    nearest non-empty one). No meta-learning: each task is fitted on its own.

    Args:
        xs (B, S, F), ys (B, S), xq (B, Q, F), yq (B, Q): a task batch.

    Returns:
        Share of the B·Q query rows whose predicted class is their class.
    """
    xs, ys, xq, yq = (t.double() for t in (xs, ys, xq, yq))

    def design(x: Tensor) -> Tensor:
        return torch.cat([torch.ones_like(x[..., :1]), x], -1)

    beta = torch.linalg.lstsq(design(xs), ys.unsqueeze(-1), driver="gelsd").solution
    predicted = (design(xq) @ beta).squeeze(-1)
    _, _, cq = label_classes(ys, yq)
    _, _, cp = label_classes(ys, predicted)
    assert cq is not None and cp is not None
    return float((cp == cq).double().mean())


def prototype_accuracy(learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
    """Share of query rows whose most probable class is their class (``label_classes``).

    Args:
        learner: a ``protonet`` learner. xs (B, S, F), ys (B, S), xq (B, Q, F), yq (B, Q).

    Returns:
        Accuracy in [0, 1] over all B·Q query rows.
    """
    model = _family_model(learner, ProtoNet)
    assert isinstance(model, ProtoNet)
    theta = _theta(model)
    dtype = next(iter(theta.values())).dtype
    xs, ys, xq, yq = (t.to(dtype) for t in (xs, ys, xq, yq))
    with torch.no_grad():
        logits = model.logits_with(theta, xq, prototypes(model, theta, xs, ys))
        _, _, cq = label_classes(ys, yq)
    assert cq is not None
    return float((logits.argmax(-1) == cq).double().mean())


@dataclass(frozen=True)
class ProtoStep(OuterStep):
    """Prototypical Networks for market states (``protonet``).

    Forward returns are binned into down/flat/up at the support window's own terciles
    (:func:`label_classes`); the prototype c_k of a class is the mean embedding of its
    support rows, a query's class probabilities are softmax(−‖e(x) − c_k‖²) and the signal
    is the expected return Σ_k p_k·v_k, v_k the mean support label of class k. Meta-training
    minimises the cross-entropy of the query classes (binned at the same task's support
    terciles); the loss returned, and ``evaluate``, is the query MSE of the signal, so that
    curves and keep-best validation compare with the other algorithms. No inner loop: any
    engine name is accepted. At test time ``steps`` is 0, ``loss_before`` is the support
    MSE of the zero signal (no prototypes), ``loss_after`` that of the signal.

    References:
        Snell, Swersky, Zemel 2017, "Prototypical Networks for Few-shot Learning".
    """

    adapts_itself: ClassVar[bool] = True
    model_type: ClassVar[str | None] = "protonet"

    def __call__(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """Update θ on the query cross-entropy; returns the query MSE of the signal."""
        model = _family_model(learner, ProtoNet)
        assert isinstance(model, ProtoNet)
        params = dict(model.named_parameters())
        protos = prototypes(model, params, xs, ys)
        _, _, cq = label_classes(ys, yq)
        assert cq is not None
        logits = model.logits_with(params, xq, protos)
        signal = (torch.softmax(logits, -1) * protos[ProtoNet.PROTOTYPE_KEYS[1]].unsqueeze(-2)).sum(
            -1
        )
        _update(learner, F.cross_entropy(logits.flatten(0, -2), cq.flatten()))
        return float(mse(signal.detach(), yq))

    def adapt(
        self, learner: Learner, x: Tensor | np.ndarray, y: Tensor | np.ndarray, steps: int
    ) -> AdaptedModel:
        """Prototypes of one support set (x (S, F), y (S,)); ``steps`` is ignored (0 taken).

        Runs in NumPy (:func:`prototypes_numpy`, ``ProtoNet.forward_numpy``: the per-bar
        ``predict_row`` of ``MetaStrategy`` too), from a copy of θ refreshed only when θ
        changes; the support is embedded once, for the prototypes and ``loss_after``.
        Equal to the torch path (:func:`prototypes`, ``ProtoNet.forward_with``) to float
        precision, tested in float64; ``params`` and calling the model use the torch path.
        """
        model = _family_model(learner, ProtoNet)
        assert isinstance(model, ProtoNet)
        theta = model.numpy_theta()
        xn, yn = _numpy_support(x, y, theta)
        emb = model.embed_numpy(theta, xn)
        protos = prototypes_numpy(emb, yn)
        fold = model.fold_numpy(protos)
        errors = model.signal_numpy(fold, emb) - yn
        n = len(yn)
        return AdaptedModel(
            model.forward_with,
            None,
            loss_before=float(np.dot(yn, yn)) / n,
            loss_after=float(np.dot(errors, errors)) / n,
            steps=0,
            forward_numpy=partial(model.forward_folded_numpy, fold=fold),
            numpy_params={**theta, **protos},
            backend="prototypes",
        )


# ---------------------------------------------------------------------------- CAVIA
def context_loop(
    model: CaviaMLP,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float,
    *,
    first_order: bool = False,
) -> Tensor:
    """CAVIA's inner loop: φ ← φ − α ∇_φ mse(f_θ(x, φ), y), ``steps`` times from φ = 0.

    Written with ``torch.func.grad``, so it runs under ``vmap`` (one task per call) and is
    differentiable with respect to θ (second order) unless ``first_order``.

    Args:
        model: the CAVIA MLP. params: θ (with autograd history for a meta-gradient).
        x: (S, F) support inputs; y: (S,) labels. steps: inner steps (>= 0). lr: α.
        first_order: treat the inner gradients as constants.

    Returns:
        φ, (C,) tensor of θ's dtype.

    References:
        Zintgraf et al. 2019, "Fast Context Adaptation via Meta-Learning", algorithm 1.
    """
    key = CaviaMLP.CONTEXT_KEY

    def support_loss(context: Tensor) -> Tensor:
        return mse(model.forward_with({**params, key: context}, x), y)

    grad_fn = torch.func.grad(support_loss)
    context = x.new_zeros(model.context_size)
    for _ in range(steps):
        grad = grad_fn(context)
        context = context - lr * (grad.detach() if first_order else grad)
    return context


@dataclass(frozen=True)
class CaviaStep(OuterStep):
    """CAVIA (``cavia``): only a task context φ is adapted in the inner loop; θ is shared.

    φ (``CaviaMLP.context_size`` dims, concatenated to the input) starts at 0 for every
    task and is not meta-learned; ``inner_steps`` steps of gradient descent at ``inner_lr``
    adapt it to the support set (the paper uses a large rate, ~1, since only φ moves), and
    θ is updated by the meta-gradient of the query MSE at the adapted φ. Engines: ``func``
    (:func:`context_loop` inside ``vmap``, all tasks at once) and ``higher`` (one task at a
    time with ``torch.autograd.grad(create_graph=...)``, the reference) compute the same
    meta-gradient. At test time φ is adapted by ``torch.autograd`` (no graph kept) and is
    exposed as ``AdaptedModel.context``, a task embedding.

    Args:
        second_order: differentiate through the inner loop (default); False treats the
            inner gradients as constants (first-order CAVIA).

    References:
        Zintgraf, Shiarlis, Kurin, Hofmann, Whiteson 2019, "Fast Context Adaptation via
        Meta-Learning".
    """

    second_order: bool = True
    adapts_itself: ClassVar[bool] = True
    model_type: ClassVar[str | None] = "cavia"

    def __call__(self, learner: Learner, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
        """Update θ by the meta-gradient; returns the mean query loss (before the update)."""
        model = _family_model(learner, CaviaMLP)
        assert isinstance(model, CaviaMLP)
        params = dict(model.named_parameters())
        if learner.engine == "func":

            def task_loss(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> Tensor:
                context = context_loop(
                    model,
                    params,
                    xs,
                    ys,
                    learner.inner_steps,
                    learner.inner_lr,
                    first_order=not self.second_order,
                )
                return mse(model.forward_with({**params, CaviaMLP.CONTEXT_KEY: context}, xq), yq)

            return _update(learner, torch.func.vmap(task_loss)(xs, ys, xq, yq).mean())
        learner.optimizer.zero_grad(set_to_none=True)
        total, batch = 0.0, xs.shape[0]
        for b in range(batch):
            loss = self._task_loss(learner, model, params, xs[b], ys[b], xq[b], yq[b])
            (loss / batch).backward()
            total += float(loss.detach())
        learner.optimizer.step()
        return total / batch

    def _task_loss(
        self,
        learner: Learner,
        model: CaviaMLP,
        params: Mapping[str, Tensor],
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
    ) -> Tensor:
        """One task's query loss, inner loop by ``torch.autograd`` (the reference engine)."""
        key = CaviaMLP.CONTEXT_KEY
        context = xs.new_zeros(model.context_size, requires_grad=True)
        for _ in range(learner.inner_steps):
            loss = mse(model.forward_with({**params, key: context}, xs), ys)
            (grad,) = torch.autograd.grad(loss, context, create_graph=self.second_order)
            context = context - learner.inner_lr * grad
            if not self.second_order:
                context = context.detach().requires_grad_()
        return mse(model.forward_with({**params, key: context}, xq), yq)

    def adapt(
        self, learner: Learner, x: Tensor | np.ndarray, y: Tensor | np.ndarray, steps: int
    ) -> AdaptedModel:
        """Adapt φ to one support set (x (S, F), y (S,)) with ``steps`` gradient steps."""
        model = _family_model(learner, CaviaMLP)
        assert isinstance(model, CaviaMLP)
        theta = _theta(model)
        xt, yt = _support(x, y, theta)
        key, context = CaviaMLP.CONTEXT_KEY, xt.new_zeros(model.context_size)
        before = math.nan
        with torch.enable_grad():
            for i in range(steps):
                leaf = context.detach().requires_grad_()
                loss = mse(model.forward_with({**theta, key: leaf}, xt), yt)
                before = float(loss.detach()) if i == 0 else before
                (grad,) = torch.autograd.grad(loss, leaf)
                context = (leaf - learner.inner_lr * grad).detach()
        with torch.no_grad():
            after = float(mse(model.forward_with({**theta, key: context}, xt), yt))
        return AdaptedModel(
            model.forward_with,
            {**theta, key: context},
            loss_before=after if steps == 0 else before,
            loss_after=after,
            steps=steps,
            backend="context",
        )
