"""The dense kernel's inner loop compiled with numba: MetaStrategy's test-time adaptation
without NumPy's per-call overhead, once a process adapts enough to pay for loading it.

:meth:`metabt.learn.kernels.fused.DenseKernel.adapt` (metabt's MLP and a user's
``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations), its batched
``adapt_many`` and the per-bar prediction of an adapted φ run here. The loop is the NumPy
kernel's, operation for operation: the same ``[Wᵀ; b]`` blocks in one flat buffer, the
same layer inputs with a column of ones, the same BLAS calls for the products (numba's
``np.dot`` calls BLAS), and the elementwise steps in the same dtype with the same
constants, so its results equal the NumPy kernel's bit for bit (tested, float32 and
float64). Only the networks for which that holds run compiled: ReLU (metabt's default),
leaky ReLU and linear layers of two inputs or more and hidden widths of two or more, on
support sets of two rows or more. Tanh and sigmoid networks stay on NumPy (numba's
transcendental functions round differently from NumPy's in the last bit), and so do the
shapes for which NumPy's matmul turns a product into a matrix-vector one.

Because the two paths agree bit for bit, which one runs is a matter of speed only, and
metabt chooses it like a tiered JIT: a process adapts with NumPy until it has adapted
:data:`HOT` support sets (3,000), then loads the compiled loop and keeps it. Loading costs
about 0.6 s here (numba's import, its BLAS binding, the machine code cached on disk by
numba beside this file, or in its user cache directory when that is not writable; the
first load on a machine compiles, a few seconds per float dtype), and each adaptation
then saves about 0.11 ms (a 2x32 MLP, 60 rows, 5 steps: 0.053 ms against 0.167 ms in
``benchmarks/bench_adapt.py``): a small backtest (one asset, 2,500 daily bars: 476
adaptations) is faster without it, a universe, a walk-forward or a sweep much faster with
it. The rule is the ski-rental one: switch once the NumPy time spent would have paid for
the load.

``METABT_JIT``: ``0`` (or ``off``) keeps NumPy, ``1`` (or ``on``) compiles from the first
adaptation; unset (``auto``), the rule above. :func:`warm_up` loads it now (benchmarks
call it before timing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from metabt.errors import ConfigError

__all__ = [
    "ACTIVATION_CODES",
    "DensePlan",
    "HOT",
    "JIT_ENV",
    "compiled_adapt",
    "compiled_adapt_many",
    "compiled_forward_row",
    "jit_mode",
    "loaded",
    "warm_up",
]

#: The environment variable that chooses the inner loop: "0"/"off", "1"/"on", "auto".
JIT_ENV = "METABT_JIT"

#: Support sets a process adapts with NumPy before it loads the compiled loop ("auto").
HOT = 3000

#: The activations the compiled loop runs (bit for bit NumPy's) and their codes in it.
ACTIVATION_CODES = {"identity": 0, "relu": 1, "leaky_relu": 4}

_compiled: Any = None  # the njit functions (adapt, forward_row, adapt_many), once loaded
_failed: str | None = None  # why numba could not be used, once known
_adapted = 0  # support sets adapted with NumPy in this process ("auto")


def jit_mode() -> str:
    """The inner loop ``METABT_JIT`` asks for: "off", "on" or "auto" (read at each call).

    Raises:
        ConfigError: another value, naming the ones accepted.
    """
    value = os.environ.get(JIT_ENV, "auto").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    if value in ("1", "on", "true", "yes"):
        return "on"
    if value in ("", "auto"):
        return "auto"
    raise ConfigError(
        f"{JIT_ENV}={value!r} is not understood; set it to 0 (NumPy), 1 (compiled) or auto "
        "(compiled once the process has adapted enough), or unset it"
    )


def loaded() -> bool:
    """True once this process has loaded the compiled loop (then every eligible adaptation
    and prediction runs compiled, unless ``METABT_JIT=0``)."""
    return _compiled is not None


def _ready(tasks: int) -> bool:
    """Whether ``tasks`` adaptations now run compiled; counts them towards :data:`HOT`."""
    global _adapted
    mode = jit_mode()
    if mode == "off" or _failed is not None:
        return False
    if _compiled is None:
        if mode == "auto":
            _adapted += tasks
            if _adapted <= HOT:
                return False
        return _build() is not None
    return True


class DensePlan:
    """A dense network's layout for the compiled loop: layer widths, block offsets in the
    flat θ, and each hidden layer's activation.

    Args:
        shapes: (in + 1, out) of each ``[Wᵀ; b]`` block, hidden layers then the head
            (whose out is 1), as :class:`metabt.learn.kernels.fused.DenseKernel` lays
            them out.
        activations: (name, negative slope) of each hidden layer; a network with a name
            outside :data:`ACTIVATION_CODES` does not run compiled.

    Attributes:
        compiles (bool): whether the compiled loop runs this network (it equals NumPy's on
            it: see the module).

    Raises:
        ValueError: a head wider than 1, or not one block per hidden layer plus the head.
    """

    def __init__(self, shapes: Sequence[tuple[int, int]], activations: Sequence[tuple[str, float]]):
        if len(shapes) != len(activations) + 1 or shapes[-1][1] != 1:
            raise ValueError(
                f"DensePlan needs one block per hidden layer and a head of width 1, got "
                f"blocks {list(shapes)} for {len(activations)} activations"
            )
        sizes = [a * b for a, b in shapes]
        self.rows = np.array([a for a, _ in shapes], dtype=np.int64)  # in + 1 of each block
        self.cols = np.array([b for _, b in shapes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.codes = np.array(
            [ACTIVATION_CODES.get(name, -1) for name, _ in activations], dtype=np.int64
        )
        # whether it runs compiled: activations it computes as NumPy does, and no product
        # that NumPy's matmul turns into a matrix-vector one (one input, a hidden width of
        # 1; a support set of one row is checked per call), which rounds otherwise
        self.compiles = (
            all(code >= 0 for code in self.codes)
            and shapes[0][0] > 2
            and all(width > 1 for _, width in shapes[:-1])
        )
        self._slopes = np.array([slope for _, slope in activations], dtype=np.float64)
        self._typed: dict[np.dtype, np.ndarray] = {}

    def slopes(self, dtype: np.dtype) -> np.ndarray:
        """Each hidden layer's leaky-ReLU slope, (hidden layers,) of ``dtype``, as NumPy
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
        from metabt.learn.kernels import _jit
    except ImportError as exc:  # pragma: no cover - numba is a dependency
        _failed = f"numba could not be imported ({exc})"
        return None
    _compiled = (_jit.adapt_dense, _jit.forward_row, _jit.adapt_dense_many)
    return _compiled


def compiled_adapt(
    plan: DensePlan,
    theta: np.ndarray,
    rate: np.ndarray | float,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
) -> tuple[float, float, np.ndarray] | None:
    """The dense kernel's inner loop, compiled; None when the NumPy loop is to run.

    Args:
        plan: the network's layout (:class:`DensePlan`).
        theta: (P,) θ in the kernel's flat layout (not modified).
        rate: the scalar inner rate, or (P,) per-parameter rates laid out like θ.
        x: (S, F) support inputs; y: (S,) labels; θ's float dtype (float32 or float64).
        steps: inner steps (>= 0).

    Returns:
        (loss_before, loss_after, φ (P,)), or None: the network or support set is not one
        the compiled loop equals NumPy on (see the module), the arrays are not of one float
        dtype or not C-contiguous, ``METABT_JIT=0``, the process has not adapted
        :data:`HOT` support sets yet (``auto``), or numba is missing.
    """
    arguments = _arguments(plan, theta, rate, x, y, 1)
    if arguments is None:
        return None
    return _compiled[0](theta, arguments[0], arguments[1], x, y, steps, *arguments[2:])


def compiled_adapt_many(
    plan: DensePlan,
    theta: np.ndarray,
    rate: np.ndarray | float,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`compiled_adapt` for B support sets of equal length, from the same θ, in one
    call (each task's result is :func:`compiled_adapt`'s for it, bit for bit).

    Args:
        plan, theta, rate, steps: as :func:`compiled_adapt`.
        x: (B, S, F) support inputs; y: (B, S) labels; θ's float dtype.

    Returns:
        (loss_before (B,) float64, loss_after (B,) float64, φ (B, P)), or None when
        :func:`compiled_adapt` would return None (B support sets count towards
        :data:`HOT`).
    """
    arguments = _arguments(plan, theta, rate, x, y, len(y))
    if arguments is None:
        return None
    return _compiled[2](theta, arguments[0], arguments[1], x, y, steps, *arguments[2:])


def _arguments(
    plan: DensePlan,
    theta: np.ndarray,
    rate: np.ndarray | float,
    x: np.ndarray,
    y: np.ndarray,
    tasks: int,
) -> tuple[Any, ...] | None:
    """The compiled loop's arguments beside θ, x, y and steps (rates, constants, then the
    plan's arrays), or None when the NumPy loop is to run: see :func:`compiled_adapt`."""
    dtype = theta.dtype
    n_support = y.shape[-1]
    if (
        not plan.compiles
        or n_support < 2
        or dtype not in (np.float32, np.float64)
        or x.dtype != dtype
        or y.dtype != dtype
        or not (x.flags.c_contiguous and y.flags.c_contiguous and theta.flags.c_contiguous)
        or not _ready(tasks)
    ):
        return None
    if isinstance(rate, float):  # α folded into the scale, as the NumPy loop does
        rates = np.empty(0, dtype=dtype)
        scale = 2.0 / n_support * rate
    else:
        rates = np.ascontiguousarray(rate, dtype=dtype)
        scale = 2.0 / n_support
    constants = np.array([scale, 1.0, 0.0], dtype=dtype)
    return (rates, constants, plan.rows, plan.cols, plan.offsets, plan.codes, plan.slopes(dtype))


def compiled_forward_row(plan: DensePlan, flat: np.ndarray, x: np.ndarray) -> float | None:
    """One prediction of the dense network, compiled; None when the NumPy forward is to run.

    The NumPy forward pass, operation for operation (BLAS for the products, the bias add
    and activation in the dtype), for MetaStrategy's per-bar prediction. It runs once the
    process has loaded the compiled loop (predictions never load it).

    Args:
        plan: the network's layout (:class:`DensePlan`).
        flat: (P,) parameters in the kernel's flat layout (φ as an adaptation returns it).
        x: (F,) one input row, ``flat``'s dtype.

    Returns:
        The prediction, or None (not loaded, ``METABT_JIT=0``, other dtypes or layouts, or
        a network the NumPy loop keeps: see :func:`compiled_adapt`).
    """
    dtype = flat.dtype
    if (
        _compiled is None
        or not plan.compiles
        or dtype not in (np.float32, np.float64)
        or x.dtype != dtype
        or x.ndim != 1
        or not (x.flags.c_contiguous and flat.flags.c_contiguous)
        or jit_mode() == "off"
    ):
        return None
    return float(
        _compiled[1](flat, x, plan.rows, plan.cols, plan.offsets, plan.codes, plan.slopes(dtype))
    )


def warm_up(dtypes: Sequence[type[np.floating[Any]]] = (np.float32,)) -> float:
    """Load the compiled loop now (unless ``METABT_JIT=0``), whatever the process has
    adapted so far: numba's import, its BLAS binding and the machine code of each dtype
    (compiled the first time on a machine, a few seconds per dtype; cached on disk after).

    Benchmarks call it before timing and report its time apart.

    Args:
        dtypes: the float dtypes to load, float32 (metabt's models) by default.

    Returns:
        Seconds taken; 0.0 when the compiled loop is off or numba is missing.
    """
    tic = time.perf_counter()
    if jit_mode() == "off" or _build() is None:
        return 0.0
    plan = DensePlan([(3, 2), (3, 1)], [("relu", 0.0)])
    for dtype in dtypes:
        theta = np.zeros(int(plan.offsets[-1]), dtype=dtype)
        x, y = np.zeros((2, 2), dtype=dtype), np.zeros(2, dtype=dtype)
        compiled_adapt(plan, theta, 0.1, x, y, 1)
        compiled_adapt_many(plan, theta, 0.1, x[None], y[None], 1)
        compiled_forward_row(plan, theta, x[0])
    return time.perf_counter() - tic
