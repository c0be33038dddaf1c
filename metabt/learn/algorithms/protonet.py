"""Prototypical Networks for market states: down/flat/up prototypes of each support window.

Forward returns are binned into down/flat/up at the support's own terciles
(:func:`label_classes`); the signal is the expected return under the class probabilities
softmax(−‖e(x) − c_k‖²) (:class:`ProtoNetFamily`). Also here: the prototypes in torch
(:func:`prototypes`) and NumPy (:func:`prototypes_numpy`, :func:`terciles_numpy`), and two
accuracies of the regime classification (:func:`prototype_accuracy`, and the per-task least
squares baseline :func:`ols_accuracy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metabt.learn.adapted import AdaptedModel, Params, support_arrays
from metabt.learn.algorithms.base import Extra, Learner, PairedFamily, theta_of, update_theta

# TaskLoss: Learner's loss field, named in this module's dataclass __init__ (get_type_hints)
from metabt.learn.losses import TaskLoss  # noqa: F401
from metabt.learn.models import ProtoNet

__all__ = [
    "CLASSES",
    "ProtoNetFamily",
    "label_classes",
    "ols_accuracy",
    "prototype_accuracy",
    "prototypes",
    "prototypes_numpy",
    "terciles_numpy",
]

#: Market-state classes of ProtoNet, lowest forward return first.
CLASSES = ("down", "flat", "up")


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
    model = PairedFamily._model(learner, ProtoNet)
    theta = theta_of(model)
    dtype = next(iter(theta.values())).dtype
    xs, ys, xq, yq = (t.to(dtype) for t in (xs, ys, xq, yq))
    with torch.no_grad():
        logits = model.logits_with(theta, xq, prototypes(model, theta, xs, ys))
        _, _, cq = label_classes(ys, yq)
    assert cq is not None
    return float((logits.argmax(-1) == cq).double().mean())


@dataclass(frozen=True, kw_only=True)
class ProtoNetFamily(PairedFamily):
    """Prototypical Networks for market states (``protonet``).

    Forward returns are binned into down/flat/up at the support window's own terciles
    (:func:`label_classes`); the prototype c_k of a class is the mean embedding of its
    support rows, a query's class probabilities are softmax(−‖e(x) − c_k‖²) and the signal
    is the expected return Σ_k p_k·v_k, v_k the mean support label of class k. Meta-training
    minimises the cross-entropy of the query classes (binned at the same task's support
    terciles); the loss returned, and ``evaluate``, is the query loss (MSE by default) of
    the signal, so that curves and keep-best validation compare with the other algorithms.
    No inner loop: any engine name is accepted. At test time ``steps`` is 0,
    ``loss_before`` is the support MSE of the zero signal (no prototypes), ``loss_after``
    that of the signal.

    References:
        Snell, Swersky, Zemel 2017, "Prototypical Networks for Few-shot Learning".
    """

    model_type: ClassVar[str | None] = "protonet"
    learns_adjust_rate: ClassVar[bool] = False  # trains on cross-entropy, not the P&L

    def meta_step(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> float:
        """Update θ on the query cross-entropy; returns the query loss of the signal."""
        model = self._model(learner, ProtoNet)
        params = dict(model.named_parameters())
        protos = prototypes(model, params, xs, ys)
        _, _, cq = label_classes(ys, yq)
        assert cq is not None
        logits = model.logits_with(params, xq, protos)
        signal = (torch.softmax(logits, -1) * protos[ProtoNet.PROTOTYPE_KEYS[1]].unsqueeze(-2)).sum(
            -1
        )
        update_theta(learner, F.cross_entropy(logits.flatten(0, -2), cq.flatten()))
        return float(self.loss.batch_mean(signal.detach(), yq, extra))

    def adapt(
        self,
        learner: Learner,
        x: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        steps: int,
        *,
        reference: bool = False,
    ) -> AdaptedModel:
        """Prototypes of one support set (x (S, F), y (S,)); ``steps`` is ignored (0 taken).

        Runs in NumPy (:func:`prototypes_numpy`, ``ProtoNet.forward_numpy``: the per-bar
        ``predict_row`` of ``MetaStrategy`` too), from a copy of θ refreshed only when θ
        changes; the support is embedded once, for the prototypes and ``loss_after``.
        Equal to the torch path (:func:`prototypes`, ``ProtoNet.forward_with``) to float
        precision, tested in float64; ``params`` and calling the model use the torch path.
        ``reference`` changes nothing.
        """
        model = self._model(learner, ProtoNet)
        theta = model.numpy_theta()
        xn, yn = support_arrays(x, y, next(iter(theta.values())))
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
