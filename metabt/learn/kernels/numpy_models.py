"""NumPy test-time paths of CNP and ProtoNet: adaptation and prediction without torch.

MetaStrategy adapts from the same θ hundreds of times per backtest and predicts one row
per bar, where torch's per-call overhead dominates on these tiny networks. These mixins
give :class:`metabt.learn.models.CNP` and :class:`metabt.learn.models.ProtoNet` their forward pass
in NumPy, on a copy of θ refreshed only when θ changes (:func:`numpy_theta`); each is
equal to the model's torch forward to float precision (``tests/test_learners.py``,
float64). Sources: Garnelo et al. 2018 and Kim et al. 2019 (the CNP and its attention);
Snell, Swersky, Zemel 2017 (prototypes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, cast

import numpy as np
from torch import nn

__all__ = ["ArrayParams", "CnpFold", "CnpNumpy", "ProtoFold", "ProtoNetNumpy", "numpy_theta"]

#: θ (or an adapted φ) as name -> ndarray.
ArrayParams = Mapping[str, np.ndarray]
#: A CNP support set folded for its decoder (``CNP._fold``): scaled keys, projected
#: values, first-layer bias with the projected mean.
CnpFold = tuple[np.ndarray, np.ndarray, np.ndarray]
#: ProtoNet prototypes folded for the signal (``ProtoNet.fold_numpy``): 2·centres (K, E),
#: −‖centre‖² (−inf for an empty class) (K,), values (K,).
ProtoFold = tuple[np.ndarray, np.ndarray, np.ndarray]


def numpy_theta(model: nn.Module) -> dict[str, np.ndarray]:
    """θ as NumPy arrays, copied once per change of θ (the NumPy test-time paths of CNP and
    ProtoNet, which adapt from the same θ hundreds of times in a backtest).

    The parameter list is read on the first call (as ``MetaLearner`` reads it once); the
    copies are refreshed when a parameter's in-place version counter or storage changes (an
    optimizer step, ``load_state_dict``, ``.to(dtype)``, a ``.data`` swap). Copies, not
    views: a model adapted from θ keeps that θ when θ is later updated in place.
    """
    entry = model.__dict__.get("_numpy_theta_cache")
    named = list(model.named_parameters()) if entry is None else entry[0]
    key = tuple((p._version, p.data_ptr()) for _, p in named)
    if entry is None or entry[1] != key:
        # Fortran order: a weight (out, in) keeps its shape and its transpose, which every
        # product x @ W.T reads, is C-contiguous (the fast BLAS path, no copy per call)
        theta = {n: np.array(p.detach().cpu().numpy(), order="F") for n, p in named}
        entry = (named, key, theta)
        model.__dict__["_numpy_theta_cache"] = entry
    return entry[2]


def _dense(params: ArrayParams, name: str, x: np.ndarray) -> np.ndarray:
    """``F.linear`` in NumPy: x (..., in) -> (..., out)."""
    out = np.dot(x, params[f"{name}.weight"].T)
    out += params[f"{name}.bias"]
    return out


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x)


class CnpNumpy:
    """The NumPy test-time path of :class:`metabt.learn.models.CNP` (a mixin of it)."""

    n_features: int
    hidden: int
    CONTEXT_KEYS: ClassVar[tuple[str, str, str]]

    def numpy_theta(self) -> dict[str, np.ndarray]:
        """θ as name -> ndarray of θ's dtype, a copy refreshed only when θ changes."""
        return numpy_theta(cast(nn.Module, self))

    def _first_layers(self, params: ArrayParams) -> tuple[np.ndarray, np.ndarray]:
        """The attention's first layer and the decoder's first layer on x, stacked (every
        row x feeds both, so one product computes them): weight (2H, F), bias (2H,).
        Cached for the arrays of one θ copy (:meth:`numpy_theta`)."""
        names = ("attention.0.weight", "attention.0.bias", "decoder.0.weight", "decoder.0.bias")
        arrays = tuple(params[n] for n in names)
        cached = self.__dict__.get("_numpy_first_layers")
        if cached is None or any(a is not b for a, b in zip(cached[0], arrays, strict=True)):
            decoder = arrays[2][:, : self.n_features]
            weight = np.asfortranarray(np.concatenate([arrays[0], decoder]))
            cached = (arrays, weight, np.concatenate([arrays[1], arrays[3]]))
            self.__dict__["_numpy_first_layers"] = cached
        return cached[1], cached[2]

    def _first_numpy(
        self, params: ArrayParams, x: np.ndarray, bias: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows x (..., F) -> (the decoder's first layer before its ReLU, from x and the
        bias (..., H); the rows' attention keys (..., H)). ``bias``: the stacked bias
        (2H,), θ's by default (the zero context) or a fold's (the mean-pooled block in)."""
        h = self.hidden
        weight, theta_bias = self._first_layers(params)
        z = np.dot(x, weight.T)
        z += theta_bias if bias is None else bias
        return z[..., h:], _dense(params, "attention.1", _relu(z[..., :h]))

    def _fold(self, params: ArrayParams, context: ArrayParams) -> CnpFold:
        """What the decoder's first layer needs of an encoded support set, whatever the
        query row: the keys scaled by 1/√H (S, H), the values through the attended block
        of the layer's weight (S, H), and the stacked first-layer bias (2H,) with the
        mean-pooled block's product added to the decoder's half."""
        f, h = self.n_features, self.hidden
        keys, values, pooled = (context[k] for k in self.CONTEXT_KEYS)
        weight = params["decoder.0.weight"]
        scaled = keys * keys.dtype.type(1.0 / math.sqrt(h))
        bias = self._first_layers(params)[1].copy()
        bias[h:] += np.dot(pooled, weight[:, f + h :].T)
        return scaled, np.dot(values, weight[:, f : f + h].T), bias

    @staticmethod
    def _attend_numpy(pre: np.ndarray, keys: np.ndarray, fold: CnpFold) -> np.ndarray:
        """Adds the attended block to ``pre`` (..., H), in place, for rows with attention
        keys (..., H): softmax(k·K/√H) through the projected values."""
        scaled, values_out, _ = fold
        scores = np.dot(keys, scaled.T)
        scores -= scores.max(-1, keepdims=True)  # softmax, normalised after the product
        np.exp(scores, out=scores)
        attended = np.dot(scores, values_out)
        attended /= scores.sum(-1, keepdims=True)
        pre += attended
        return pre

    def _decode_tail_numpy(self, params: ArrayParams, pre: np.ndarray) -> np.ndarray:
        """The decoder after its first layer: ReLU, layer 1, ReLU, head. (..., H) -> (...)."""
        h = _relu(_dense(params, "decoder.1", _relu(pre)))
        return np.dot(h, params["head.weight"][0]) + params["head.bias"][0]

    def forward_folded_numpy(
        self, params: ArrayParams, x: np.ndarray, fold: CnpFold | None
    ) -> np.ndarray:
        """:meth:`forward_numpy` with the support set already folded (:meth:`encode_numpy`
        returns the fold; None: the zero context). x (N, F) -> (N,), or (F,) -> a scalar."""
        x = np.asarray(x, dtype=params["head.bias"].dtype)
        if fold is None:
            return self._decode_tail_numpy(params, self._first_numpy(params, x)[0].copy())
        pre, keys = self._first_numpy(params, x, fold[2])
        return self._decode_tail_numpy(params, self._attend_numpy(pre, keys, fold))

    def forward_numpy(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """:meth:`forward_with` in NumPy (θ and ``support.*`` as ndarrays, as
        :meth:`encode_numpy` returns them): x (N, F) -> (N,), or (F,) -> a scalar, in θ's
        dtype; equal to the torch forward to float precision (tested in float64)."""
        fold = self._fold(params, params) if self.CONTEXT_KEYS[0] in params else None
        return self.forward_folded_numpy(params, x, fold)

    def encode_numpy(
        self, params: ArrayParams, xs: np.ndarray, ys: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, float, CnpFold]:
        """Encode one support set in NumPy, with its support MSEs.

        The work is shared: the support rows' attention keys are the encoded keys, one
        first-layer product on them serves both losses (both decodes run as one), and
        what does not depend on the query row (the fold) is computed once, for the support
        loss and for every later prediction (:meth:`forward_folded_numpy`).

        Args:
            params: θ as ndarrays (:meth:`numpy_theta`). xs: (S, F), ys: (S,), θ's dtype.

        Returns:
            (the ``CONTEXT_KEYS`` entries as :meth:`encode_with` gives them; the support
            MSE with the zero context; the support MSE given the encoded support set; the
            fold of the encoded support set).
        """
        n, h = len(ys), self.hidden
        pairs = np.concatenate([xs, ys[:, None]], axis=1)
        values = _dense(params, "encoder.1", _relu(_dense(params, "encoder.0", pairs)))
        weight, bias = self._first_layers(params)
        z = np.dot(xs, weight.T)  # one product for the keys and both decodes
        keys = _dense(params, "attention.1", _relu(z[:, :h] + bias[:h]))
        context = dict(zip(self.CONTEXT_KEYS, (keys, values, values.sum(0) / n), strict=True))
        fold = self._fold(params, context)
        zero = z[:, h:] + bias[h:]
        given = self._attend_numpy(z[:, h:] + fold[2][h:], keys, fold)
        errors = self._decode_tail_numpy(params, np.concatenate([zero, given]))
        errors[:n] -= ys
        errors[n:] -= ys
        before, after = errors[:n], errors[n:]
        loss_zero, loss_given = float(np.dot(before, before)) / n, float(np.dot(after, after)) / n
        return context, loss_zero, loss_given, fold


class ProtoNetNumpy:
    """The NumPy test-time path of :class:`metabt.learn.models.ProtoNet` (a mixin of it)."""

    layers: nn.ModuleList
    PROTOTYPE_KEYS: ClassVar[tuple[str, str, str]]

    def numpy_theta(self) -> dict[str, np.ndarray]:
        """θ as name -> ndarray of θ's dtype, a copy refreshed only when θ changes."""
        return numpy_theta(cast(nn.Module, self))

    def embed_numpy(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """:meth:`embed_with` in NumPy. x: (..., N, F) -> (..., N, E), θ's dtype."""
        h = x
        for i in range(len(self.layers)):
            h = _relu(_dense(params, f"layers.{i}", h))
        return _dense(params, "head", h)

    @classmethod
    def fold_numpy(cls, prototypes: ArrayParams) -> ProtoFold:
        """Prototypes (``PROTOTYPE_KEYS`` entries, ndarrays) folded for the signal.

        −‖e − c_k‖² = −‖e‖² + 2 e·c_k − ‖c_k‖², and −‖e‖² is the same for every class, so
        the class probabilities are softmax(2 e·c_k − ‖c_k‖²): one product per row instead
        of K differences (equal up to rounding; an empty class gets −inf, p = 0, as the
        torch path's dtype-minimum logit)."""
        centres, values, mask = (prototypes[k] for k in cls.PROTOTYPE_KEYS)
        offset = np.where(mask > 0, -(centres * centres).sum(-1), -np.inf).astype(values.dtype)
        return np.asfortranarray(centres + centres), offset, values

    @staticmethod
    def signal_numpy(fold: ProtoFold, emb: np.ndarray) -> np.ndarray:
        """Σ_k p_k·v_k of embeddings (..., E) -> (...,), p = softmax(−‖e − c_k‖²) over the
        non-empty classes, from the fold (:meth:`fold_numpy`)."""
        twice, offset, values = fold
        logits = np.dot(emb, twice.T)
        logits += offset
        logits -= logits.max(-1, keepdims=True)
        np.exp(logits, out=logits)
        return np.dot(logits, values) / logits.sum(-1)

    def forward_folded_numpy(
        self, params: ArrayParams, x: np.ndarray, fold: ProtoFold | None
    ) -> np.ndarray:
        """:meth:`forward_numpy` with the prototypes already folded (None: no prototypes,
        the zero signal). x (N, F) -> (N,), or (F,) -> a scalar."""
        x = np.asarray(x, dtype=params["head.bias"].dtype)
        if fold is None:
            return np.zeros(x.shape[:-1], dtype=x.dtype)
        return self.signal_numpy(fold, self.embed_numpy(params, x))

    def forward_numpy(self, params: ArrayParams, x: np.ndarray) -> np.ndarray:
        """:meth:`forward_with` in NumPy (θ and ``prototypes.*`` as ndarrays): x (N, F) ->
        (N,), or (F,) -> a scalar, in θ's dtype; equal to the torch forward to float
        precision (tested in float64)."""
        fold = self.fold_numpy(params) if self.PROTOTYPE_KEYS[0] in params else None
        return self.forward_folded_numpy(params, x, fold)
