"""The numba functions of :mod:`metabt.learn.kernels.compiled` (imported by it on first use,
so that ``import metabt`` does not import numba).

Each is the NumPy loop of :class:`metabt.learn.kernels.fused.DenseKernel`, operation for
operation; see :mod:`metabt.learn.kernels.compiled` for the arguments.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["adapt_dense", "adapt_dense_many", "forward_row"]


@numba.njit(cache=True, nogil=True)
def adapt_dense(
    theta, rates, consts, x, y, steps, rows, cols, offsets, codes, slopes
):  # pragma: no cover - compiled; tested through DenseKernel.adapt against NumPy
    """``steps`` inner steps from θ on one support set: (loss_before, loss_after, φ (P,))."""
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
    blocks = [flat[offsets[i] : offsets[i + 1]].reshape(rows[i], cols[i]) for i in range(n_layers)]
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
                    elif code == 4:  # leaky relu: maximum(v, slope * v)
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
    """The network's prediction for one row x (F,) with parameters ``flat`` (P,)."""
    n_layers = rows.shape[0]
    h = x
    for i in range(n_layers - 1):
        start, width = offsets[i], cols[i]
        split = start + (rows[i] - 1) * width
        z = np.dot(h, flat[start:split].reshape(rows[i] - 1, width))
        bias = flat[split : offsets[i + 1]]
        code, slope = codes[i], slopes[i]
        for j in range(width):
            v = z[j] + bias[j]
            if code == 1:
                if v < 0:
                    v = v - v  # 0 in the dtype; NaN stays NaN above
            elif code == 4:
                w = slope * v
                if w > v:
                    v = w
            z[j] = v
        h = z
    start = offsets[n_layers - 1]
    return np.dot(h, flat[start : offsets[n_layers] - 1]) + flat[offsets[n_layers] - 1]


@numba.njit(cache=True, nogil=True)
def adapt_dense_many(
    theta, rates, consts, xs, ys, steps, rows, cols, offsets, codes, slopes
):  # pragma: no cover - compiled; tested through DenseKernel.adapt_many against NumPy
    """:func:`adapt_dense` for each of B support sets: (B,) losses and (B, P) φ."""
    n_tasks = ys.shape[0]
    before = np.empty(n_tasks)
    after = np.empty(n_tasks)
    phi = np.empty((n_tasks, theta.shape[0]), dtype=theta.dtype)
    for b in range(n_tasks):
        before[b], after[b], phi[b] = adapt_dense(
            theta, rates, consts, xs[b], ys[b], steps, rows, cols, offsets, codes, slopes
        )
    return before, after, phi
