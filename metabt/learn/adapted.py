"""The adapted model: θ adapted to one support set (what ``MetaLearner.adapt`` returns).

:class:`AdaptedModel` wraps the φ of every family's test-time adaptation (the pure update
functions of :mod:`metabt.learn.algorithms.inner`, the fused NumPy kernels of
:mod:`metabt.learn.kernels.fused`, CNP's encoder, ProtoNet's prototypes, CAVIA's context);
:func:`support_arrays` checks and converts a support set for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from metabt._checks import check_support
from metabt.learn.models import CaviaMLP

__all__ = ["AdaptedModel", "Forward", "Params", "support_arrays"]

#: Parameters by name, as ``named_parameters()`` lists them.
Params = dict[str, Tensor]
#: A model's prediction with explicit parameters: (params, x (N, F_in)) -> (N,).
Forward = Callable[[Mapping[str, Tensor], Tensor], Tensor]


#: NumPy's dtype of each float tensor dtype (what ``tensor.numpy().dtype`` gives, without the
#: tensor round trip on the per-adaptation path)
_NUMPY_DTYPES: dict[object, np.dtype] = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}


def _to_numpy(values: Tensor | np.ndarray, dtype: np.dtype) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=dtype)


def support_arrays(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, like: Tensor | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A support set checked and converted for the test-time inner loop.

    Args:
        x: (S, F_in) float inputs (tensor or ndarray); y: (S,) float labels.
        like: a parameter of θ (tensor or ndarray), whose dtype the arrays take.

    Returns:
        (x, y) as C-contiguous ndarrays of θ's dtype.

    Raises:
        ConfigError: mismatched shapes, an empty support set or non-finite values.
    """
    if isinstance(like, Tensor):
        np_dtype = _NUMPY_DTYPES.get(like.dtype)
        if np_dtype is None:  # a dtype the table lacks: ask torch
            np_dtype = like.detach().numpy().dtype
    else:
        np_dtype = like.dtype
    xn, yn = _to_numpy(x, np_dtype), _to_numpy(y, np_dtype)
    check_support(xn, yn)
    return xn, yn


class AdaptedModel:
    """A model adapted to one support set: φ = θ after a few inner-loop steps.

    The thin class over the pure update functions (``metabt.learn.algorithms.inner``:
    ``adapt_autograd``, ``adapt_head``; the ``metabt.learn.kernels.fused`` kernels), as
    ``MetaLearner.adapt`` returns it (importable as ``metabt.learn.learner.AdaptedModel``).
    Holds its own copy φ of the parameters; θ of the learner is untouched.

    Args:
        forward: (params, x) -> predictions, the model's ``forward_with``.
        params: φ as name -> tensor, or None when only ``numpy_params`` are given.
        loss_before: support MSE at θ. loss_after: support MSE at φ.
        steps: inner-loop steps taken.
        forward_numpy: the NumPy forward pass of a ``metabt.learn.kernels.fused`` kernel, or None.
        numpy_params: φ as name -> ndarray (what a kernel returns), or None.
        forward_rows: the fast prediction path of a module without a kernel,
            (params, x (N, F_in) ndarray) -> (N,) float64 ndarray
            (``metabt.learn.algorithms.inner.ModuleRunner.forward_rows``), or None (then
            ``forward`` runs under ``torch.no_grad``).
        backend: which inner loop produced φ: "kernel" (a fused NumPy kernel of
            ``metabt.learn.kernels.fused``), "head" (ANIL's closed-form head), "autograd" (the
            ``torch.autograd`` reference, ``metabt.learn.algorithms.inner.adapt_autograd``),
            "module" (the same update on a private copy of the module,
            ``metabt.learn.algorithms.inner.ModuleRunner``), and for
            the other families "encoder" (CNP), "prototypes" (ProtoNet), "context" (CAVIA);
            "vmap" for a task of a batched ``torch.func.vmap`` adaptation.

    Attributes:
        params: the adapted parameters φ, name -> tensor (no autograd history).
        loss_before: mean squared error on the support set at θ (before adaptation).
        loss_after: mean squared error on the support set at φ (after adaptation).
        steps: number of inner-loop gradient steps taken.
        backend: the inner loop that ran ("kernel", "head", "autograd", "module",
            "encoder", "prototypes", "context" or "vmap").
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
        forward_rows: Callable[[Params, np.ndarray], np.ndarray] | None = None,
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
        self._forward_rows = forward_rows
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
        if self._forward_rows is not None:
            return float(self._forward_rows(self.params, x[None, :])[0])
        return float(self.predict(x)[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for a NumPy array. x: (N, F_in) or (F_in,) -> (N,) float64 ndarray."""
        arr = np.asarray(x)
        if arr.ndim == 1:
            arr = arr[None, :]
        if self._forward_numpy is not None and self._numpy_params is not None:
            x_np = arr.astype(self._numpy_dtype, copy=False)
            return self._forward_numpy(self._numpy_params, x_np).astype(np.float64)
        if self._forward_rows is not None:
            return self._forward_rows(self.params, arr)
        return self(torch.from_numpy(np.ascontiguousarray(arr))).double().numpy()
