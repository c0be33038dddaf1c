"""The dense kernel's inner loop compiled with numba: MetaStrategy's test-time adaptation
without NumPy's per-call overhead.

:meth:`metabt.learn.kernels.fused.DenseKernel.adapt` (metabt's MLP and a user's
``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations) runs here when numba
can be imported. The loop is the NumPy kernel's, operation for operation: the same
``[Wᵀ; b]`` blocks in one flat buffer, the same layer inputs with a column of ones, the
same BLAS calls for the products (numba's ``np.dot`` calls BLAS), and the elementwise steps
in the same dtype with the same constants. For ReLU networks, metabt's default, the
results equal the NumPy kernel's bit for bit in float32 and float64 (tested); for tanh,
sigmoid and leaky ReLU they agree to the last bits of the dtype (the elementwise
transcendental functions are the compiler's, not NumPy's).

Why: a backtest adapts a small model hundreds of times (one asset, 2,500 bars, adapt_every
5: 476 adaptations). Each NumPy call costs about a microsecond whatever its size, and the
NumPy loop makes about a hundred of them per adaptation; compiled, the loop runs about four
times faster (``benchmarks/bench_kernel.py``).

The compiled function is cached on disk by numba (``cache=True``: ``__pycache__`` beside
this file, or numba's user cache directory when that is not writable), so a process pays
numba's import (about 0.3 s) and a cache load, and only the first run on a machine pays
the compilation (a few seconds per float dtype).

Set the environment variable ``METABT_JIT=0`` to use the NumPy kernel instead (the
reference; tests compare the two).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "ACTIVATION_CODES",
    "DensePlan",
    "JIT_ENV",
    "compiled_adapt",
    "compiled_forward_row",
    "jit_enabled",
    "warm_up",
]

#: The environment variable that turns the compiled loop off ("0", "false", "no", "off").
JIT_ENV = "METABT_JIT"

#: The activation names of :class:`metabt.learn.kernels.fused.DenseKernel` and their codes
#: in the compiled loop.
ACTIVATION_CODES = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "leaky_relu": 4}

_compiled: Any = None  # the njit functions (adapt, forward_row), built on first use
_failed: str | None = None  # why numba could not be used, once known


def jit_enabled() -> bool:
    """True unless ``METABT_JIT`` turns the compiled loop off (read at each call)."""
    return os.environ.get(JIT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class DensePlan:
    """A dense network's layout for the compiled loop: layer widths, block offsets in the
    flat θ, and each hidden layer's activation.

    Args:
        shapes: (in + 1, out) of each ``[Wᵀ; b]`` block, hidden layers then the head
            (whose out is 1), as :class:`metabt.learn.kernels.fused.DenseKernel` lays
            them out.
        activations: (name, negative slope) of each hidden layer; names as
            :data:`ACTIVATION_CODES`.

    Raises:
        ValueError: an activation the compiled loop does not know, or a head wider than 1.
    """

    def __init__(self, shapes: Sequence[tuple[int, int]], activations: Sequence[tuple[str, float]]):
        if len(shapes) != len(activations) + 1 or shapes[-1][1] != 1:
            raise ValueError(
                f"DensePlan needs one block per hidden layer and a head of width 1, got "
                f"blocks {list(shapes)} for {len(activations)} activations"
            )
        unknown = [name for name, _ in activations if name not in ACTIVATION_CODES]
        if unknown:
            raise ValueError(f"DensePlan: unknown activations {unknown}")
        sizes = [a * b for a, b in shapes]
        self.rows = np.array([a for a, _ in shapes], dtype=np.int64)  # in + 1 of each block
        self.cols = np.array([b for _, b in shapes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.codes = np.array([ACTIVATION_CODES[name] for name, _ in activations], dtype=np.int64)
        # NumPy's matmul turns a product with a dimension of 1 into a matrix-vector product,
        # whose rounding differs from the matrix product numba's np.dot calls: a network
        # with one input or a hidden layer of width 1 stays on the NumPy loop (so does a
        # support set of one row)
        self.compiles = shapes[0][0] > 2 and all(width > 1 for _, width in shapes[:-1])
        # each hidden layer's negative slope, then 1 (the one constant in θ's dtype)
        self._slopes = np.array([*(slope for _, slope in activations), 1.0], dtype=np.float64)
        self._typed: dict[np.dtype, np.ndarray] = {}

    def slopes(self, dtype: np.dtype) -> np.ndarray:
        """Each hidden layer's leaky-ReLU slope, then 1: (layers,) of ``dtype``, as NumPy
        casts a Python float for an array of that dtype."""
        out = self._typed.get(dtype)
        if out is None:
            out = self._typed[dtype] = self._slopes.astype(dtype)
        return out


def _build() -> Any:
    """Compile (or load from numba's cache) the inner loop; None when numba is missing."""
    global _compiled, _failed
    if _compiled is not None or _failed is not None:
        return _compiled
    try:
        import numba
    except ImportError as exc:  # pragma: no cover - numba is a dependency
        _failed = f"numba could not be imported ({exc})"
        return None

    @numba.njit(cache=True, nogil=True)
    def adapt_dense(
        theta, rates, consts, x, y, steps, rows, cols, offsets, codes, slopes
    ):  # pragma: no cover - compiled; tested through DenseKernel.adapt against NumPy
        n_support, n_layers = y.shape[0], rows.shape[0]
        n_hidden = n_layers - 1
        flat = theta.copy()
        grad = np.empty_like(flat)
        # constants in θ's dtype, as NumPy casts a Python float for an array of it
        scale, one, zero = consts[0], consts[1], consts[2]
        # each layer's input with a trailing column of ones (the bias input)
        inputs = [np.empty((n_support, rows[i]), dtype=flat.dtype) for i in range(n_layers)]
        for i in range(n_layers):
            inputs[i][:, rows[i] - 1] = one
        inputs[0][:, : rows[0] - 1] = x
        blocks = [
            flat[offsets[i] : offsets[i + 1]].reshape(rows[i], cols[i]) for i in range(n_layers)
        ]
        d_blocks = [
            grad[offsets[i] : offsets[i + 1]].reshape(rows[i], cols[i]) for i in range(n_layers)
        ]
        # pre-activations, errors at each hidden output, and W transposed (carry-down)
        pre = [np.empty((n_support, cols[i]), dtype=flat.dtype) for i in range(n_hidden)]
        deltas = [np.empty((n_support, cols[i]), dtype=flat.dtype) for i in range(n_hidden)]
        w_t = [np.empty((cols[i], rows[i] - 1), dtype=flat.dtype) for i in range(n_hidden)]
        head = flat[offsets[n_hidden] : offsets[n_layers]]
        d_head = grad[offsets[n_hidden] : offsets[n_layers]]
        last = inputs[n_hidden]
        residual = np.empty(n_support, dtype=flat.dtype)
        loss_before = np.nan
        loss_after = np.nan
        for step in range(steps + 1):
            for i in range(n_hidden):  # forward: act(A_i [Wᵀ; b]) into the next input
                np.dot(inputs[i], blocks[i], pre[i])
                out, z, code, slope = inputs[i + 1], pre[i], codes[i], slopes[i]
                for s in range(n_support):
                    for j in range(cols[i]):
                        v = z[s, j]
                        if code == 1:  # relu (NumPy's maximum: NaN stays NaN)
                            if v < zero:
                                v = zero
                        elif code == 2:
                            v = np.tanh(v)
                        elif code == 3:
                            v = one / (np.exp(-v) + one)
                        elif code == 4:
                            w = slope * v
                            if w > v:
                                v = w
                        out[s, j] = v
            np.dot(last, head, residual)
            for s in range(n_support):
                residual[s] -= y[s]
            if step == 0:
                loss_before = float(np.dot(residual, residual)) / n_support
            if step == steps:  # forward only: the loss at φ
                loss_after = float(np.dot(residual, residual)) / n_support
                break
            for s in range(n_support):
                residual[s] *= scale
            np.dot(residual, last, d_head)
            if n_hidden:
                top = deltas[n_hidden - 1]
                width = cols[n_hidden - 1]
                for s in range(n_support):
                    for j in range(width):
                        top[s, j] = residual[s] * head[j]
            for i in range(n_hidden - 1, -1, -1):
                delta, out, code, slope = deltas[i], inputs[i + 1], codes[i], slopes[i]
                for s in range(n_support):  # times act' from the layer's output
                    for j in range(cols[i]):
                        o = out[s, j]
                        if code == 1:
                            delta[s, j] *= one if o > zero else zero
                        elif code == 2:
                            delta[s, j] *= one - o * o
                        elif code == 3:
                            delta[s, j] *= o * (one - o)
                        elif code == 4:
                            delta[s, j] *= one if o > zero else slope
                np.dot(inputs[i].T, delta, d_blocks[i])
                if i:
                    block, wt = blocks[i], w_t[i]
                    for r in range(rows[i] - 1):
                        for c in range(cols[i]):
                            wt[c, r] = block[r, c]
                    np.dot(delta, wt, deltas[i - 1])
            if rates.shape[0]:
                for p in range(flat.shape[0]):
                    grad[p] *= rates[p]
            for p in range(flat.shape[0]):
                flat[p] -= grad[p]
        return loss_before, loss_after, flat

    @numba.njit(cache=True, nogil=True)
    def forward_row(
        flat, x, rows, cols, offsets, codes, slopes
    ):  # pragma: no cover - compiled; tested through DenseKernel.forward against NumPy
        n_layers = rows.shape[0]
        h = x
        for i in range(n_layers - 1):
            start, width = offsets[i], cols[i]
            split = start + (rows[i] - 1) * width
            z = np.dot(h, flat[start:split].reshape(rows[i] - 1, width))
            bias = flat[split : offsets[i + 1]]
            code, slope, one = codes[i], slopes[i], slopes[n_layers - 1]
            for j in range(width):
                v = z[j] + bias[j]
                if code == 1:
                    if v < 0:
                        v = v - v  # 0 in the dtype; NaN stays NaN above
                elif code == 2:
                    v = np.tanh(v)
                elif code == 3:
                    v = one / (np.exp(-v) + one)
                elif code == 4:
                    w = slope * v
                    if w > v:
                        v = w
                z[j] = v
            h = z
        start = offsets[n_layers - 1]
        return np.dot(h, flat[start : offsets[n_layers] - 1]) + flat[offsets[n_layers] - 1]

    _compiled = (adapt_dense, forward_row)
    return _compiled


def compiled_adapt(
    plan: DensePlan,
    theta: np.ndarray,
    rate: np.ndarray | float,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
) -> tuple[float, float, np.ndarray] | None:
    """The dense kernel's inner loop, compiled; None when it cannot run here.

    Args:
        plan: the network's layout (:class:`DensePlan`).
        theta: (P,) θ in the kernel's flat layout (not modified).
        rate: the scalar inner rate, or (P,) per-parameter rates laid out like θ.
        x: (S, F) support inputs; y: (S,) labels; θ's float dtype (float32 or float64).
        steps: inner steps (>= 0).

    Returns:
        (loss_before, loss_after, φ (P,)), or None: the compiled loop is turned off
        (``METABT_JIT=0``), numba is missing, the arrays are not of one float dtype,
        C-contiguous, or a support set of one row or a hidden layer of width 1 would
        round differently from NumPy's (the caller then runs the NumPy loop).
    """
    dtype = theta.dtype
    if (
        not plan.compiles
        or len(y) < 2
        or not jit_enabled()
        or dtype not in (np.float32, np.float64)
        or x.dtype != dtype
        or y.dtype != dtype
        or not (x.flags.c_contiguous and y.flags.c_contiguous and theta.flags.c_contiguous)
    ):
        return None
    functions = _build()
    if functions is None:  # pragma: no cover - numba is a dependency
        return None
    if isinstance(rate, float):  # α folded into the scale, as the NumPy loop does
        rates = np.empty(0, dtype=dtype)
        scale = 2.0 / len(y) * rate
    else:
        rates = np.ascontiguousarray(rate, dtype=dtype)
        scale = 2.0 / len(y)
    return functions[0](
        theta,
        rates,
        np.array([scale, 1.0, 0.0], dtype=dtype),
        x,
        y,
        steps,
        plan.rows,
        plan.cols,
        plan.offsets,
        plan.codes,
        plan.slopes(dtype),
    )


def compiled_forward_row(plan: DensePlan, flat: np.ndarray, x: np.ndarray) -> float | None:
    """One prediction of the dense network, compiled; None when it cannot run here.

    The NumPy forward pass, operation for operation (BLAS for the products, the bias add
    and activation in the dtype), for MetaStrategy's per-bar prediction.

    Args:
        plan: the network's layout (:class:`DensePlan`).
        flat: (P,) parameters in the kernel's flat layout (φ as an adaptation returns it).
        x: (F,) one input row, ``flat``'s dtype.

    Returns:
        The prediction, or None (turned off, numba missing, other dtypes or layouts, or a
        network the NumPy loop keeps: see :func:`compiled_adapt`).
    """
    dtype = flat.dtype
    if (
        not plan.compiles
        or not jit_enabled()
        or dtype not in (np.float32, np.float64)
        or x.dtype != dtype
        or x.ndim != 1
        or not (x.flags.c_contiguous and flat.flags.c_contiguous)
    ):
        return None
    functions = _build()
    if functions is None:  # pragma: no cover - numba is a dependency
        return None
    return float(
        functions[1](flat, x, plan.rows, plan.cols, plan.offsets, plan.codes, plan.slopes(dtype))
    )


def warm_up(dtypes: Sequence[type[np.floating[Any]]] = (np.float32,)) -> float:
    """Load (or, the first time on a machine, compile) the compiled loops now, rather than
    at the first adaptation: numba's import, its BLAS binding and the cached machine code
    of :func:`compiled_adapt` and :func:`compiled_forward_row` for each dtype.

    A process pays this once (about 0.8 s here once the cache exists; a few seconds per
    dtype to compile it); benchmarks call it before timing and report it apart.

    Args:
        dtypes: the float dtypes to load, float32 (metabt's models) by default.

    Returns:
        Seconds taken; 0.0 when the compiled loop is off or numba is missing.
    """
    tic = time.perf_counter()
    plan = DensePlan([(3, 2), (3, 1)], [("relu", 0.0)])
    for dtype in dtypes:
        theta = np.zeros(int(plan.offsets[-1]), dtype=dtype)
        x, y = np.zeros((2, 2), dtype=dtype), np.zeros(2, dtype=dtype)
        if compiled_adapt(plan, theta, 0.1, x, y, 1) is None:
            return 0.0
        compiled_forward_row(plan, theta, x[0])
    return time.perf_counter() - tic
