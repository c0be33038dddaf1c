"""metabt.learn.kernels.compiled: the numba inner loop equals the NumPy one it replaces.

ReLU, leaky ReLU and linear networks run compiled and equal the NumPy kernel bit for bit
(the same BLAS calls, the same elementwise steps in the same dtype); tanh and sigmoid
networks stay on NumPy. Both equal torch.autograd in float64. A process loads the
compiled loop after HOT adaptations (METABT_JIT unset), at once (1) or never (0).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metabt.errors import ConfigError
from metabt.learn.kernels.compiled import (
    JIT_ENV,
    DensePlan,
    compiled_adapt,
    compiled_adapt_many,
    compiled_forward_row,
    warm_up,
)
from metabt.learn.kernels.fused import DenseKernel, FlatParams, kernel_for
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP

EXACT = ("relu", "leaky_relu", "identity")  # compiled; tanh and sigmoid stay on NumPy


def _kernel(widths, activation, slope=0.1):
    names = [(f"l{i}.w", f"l{i}.b") for i in range(len(widths) - 1)]
    return DenseKernel(names, ("h.w", "h.b"), widths, [(activation, slope)] * (len(widths) - 1))


def _params(widths, dtype, rng):
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        params[f"l{i}.w"] = rng.normal(size=(b, a)) / math.sqrt(a)
        params[f"l{i}.b"] = rng.normal(size=b) * 0.1
    params["h.w"] = rng.normal(size=(1, widths[-1])) / math.sqrt(widths[-1])
    params["h.b"] = rng.normal(size=1) * 0.1
    return {k: v.astype(dtype) for k, v in params.items()}


def _folded(widths, activation, dtype, rates, rng):
    """A kernel, its θ (params and folded) and inner rates: one scalar or per parameter."""
    kernel = _kernel(widths, activation)
    params = _params(widths, dtype, rng)
    if rates == "scalar":
        lrs = {k: 0.05 for k in params}
    else:
        lrs = {k: rng.uniform(0.01, 0.1, v.shape).astype(dtype) for k, v in params.items()}
    theta, rate = kernel.fold(params, lrs)
    return kernel, params, theta, rate, lrs


def _both(monkeypatch, run):
    """run() with the NumPy loop (METABT_JIT=0), then compiled."""
    monkeypatch.setenv(JIT_ENV, "0")
    numpy_result = run()
    monkeypatch.setenv(JIT_ENV, "1")
    return numpy_result, run()


def _same(a, b) -> bool:
    return (
        a[0] == b[0]
        and a[1] == b[1]
        and set(a[2]) == set(b[2])
        and all(np.array_equal(a[2][n], b[2][n]) for n in a[2])
    )


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "identity", "tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rates", ["scalar", "per-parameter"])
def test_compiled_adapt_equals_the_numpy_loop(monkeypatch, activation, dtype, rates):
    rng = np.random.default_rng(3)
    kernel, params, theta, rate, lrs = _folded((6, 9, 7), activation, dtype, rates, rng)
    x, y = rng.normal(size=(25, 6)).astype(dtype), rng.normal(size=25).astype(dtype)
    monkeypatch.setenv(JIT_ENV, "1")
    runs = compiled_adapt(kernel._plan, theta, rate, x, y, 4) is not None
    assert runs == (activation in EXACT)  # tanh and sigmoid stay on NumPy
    numpy_result, compiled = _both(monkeypatch, lambda: kernel.adapt(theta, rate, x, y, 4))
    assert isinstance(compiled[2], FlatParams)
    assert _same(numpy_result, compiled)
    assert np.array_equal(theta, kernel.fold(params, lrs)[0])  # θ untouched


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(0, 3),
    width=st.integers(1, 12),
    n_features=st.integers(1, 4),
    n_support=st.integers(1, 40),
    steps=st.integers(0, 4),
    seed=st.integers(0, 2**16),
    double=st.booleans(),
)
def test_compiled_relu_networks_equal_numpy_bit_for_bit(
    depth, width, n_features, n_support, steps, seed, double
):
    """Any depth (0 = the head alone), width, support size and step count."""
    import os

    rng = np.random.default_rng(seed)
    dtype = np.float64 if double else np.float32
    widths = (n_features, *([width] * depth))
    kernel = _kernel(widths, "relu")
    params = _params(widths, dtype, rng)
    theta, rate = kernel.fold(params, {k: 0.1 for k in params})
    x = rng.normal(size=(n_support, n_features)).astype(dtype)
    y = rng.normal(size=n_support).astype(dtype)
    saved = os.environ.get(JIT_ENV)
    try:
        os.environ[JIT_ENV] = "0"
        numpy_result = kernel.adapt(theta, rate, x, y, steps)
        row_numpy = kernel.forward(numpy_result[2], x[0])
        os.environ[JIT_ENV] = "1"
        compiled = kernel.adapt(theta, rate, x, y, steps)
        row_compiled = kernel.forward(compiled[2], x[0])
    finally:
        os.environ.pop(JIT_ENV) if saved is None else os.environ.__setitem__(JIT_ENV, saved)
    assert _same(numpy_result, compiled)
    assert type(row_compiled) is type(row_numpy) and row_compiled == row_numpy


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu", "identity"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_row_prediction_equals_numpy(monkeypatch, activation, dtype):
    rng = np.random.default_rng(5)
    widths = (6, 8, 8)
    kernel = _kernel(widths, activation)
    params = _params(widths, dtype, rng)
    theta, _ = kernel.fold(params, {k: 0.05 for k in params})
    x, y = rng.normal(size=(20, 6)).astype(dtype), rng.normal(size=20).astype(dtype)
    phi = kernel.adapt(theta, 0.05, x, y, 2)[2]
    monkeypatch.setenv(JIT_ENV, "1")
    warm_up((dtype,))
    for row in x:
        runs = compiled_forward_row(kernel._plan, phi.flat, row) is not None
        assert runs == (activation in EXACT)
        numpy_value, compiled = _both(monkeypatch, lambda row=row: kernel.forward(phi, row))
        assert type(compiled) is type(numpy_value)  # the dtype's scalar, as NumPy's
        assert compiled == numpy_value
    # a plain dict of parameters (not an adaptation's FlatParams) takes the NumPy path
    plain = {k: np.array(v) for k, v in phi.items()}
    assert float(kernel.forward(plain, x[0])) == pytest.approx(float(kernel.forward(phi, x[0])))


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "fomaml"])
def test_compiled_adaptation_equals_autograd_in_float64(algorithm):
    learner = MetaLearner(MLP(5, (8, 6), seed=1).double(), algorithm=algorithm, inner_lr=0.1)
    for p in learner.inner_lrs.values():  # per-element rates (metasgd)
        p.data.uniform_(0.01, 0.2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    fast = learner.adapt(x, y, steps=3)
    reference = learner.adapt(x, y, 3, reference=True)
    assert fast.backend == "kernel"
    assert math.isclose(fast.loss_after, reference.loss_after, rel_tol=1e-10)
    for name, value in reference.params.items():
        torch.testing.assert_close(fast.params[name], value, rtol=1e-10, atol=1e-12)
    row = x[0].numpy()
    assert fast.predict_row(row) == pytest.approx(float(reference(x[:1])[0]), rel=1e-10)


def test_the_environment_variable_chooses_the_loop(monkeypatch):
    kernel = kernel_for(MLP(4, (5,), seed=0))
    assert isinstance(kernel, DenseKernel)
    theta = np.zeros(int(kernel._plan.offsets[-1]), dtype=np.float32)
    x, y = np.ones((3, 4), dtype=np.float32), np.ones(3, dtype=np.float32)
    for off in ("0", "false", "No", "off"):
        monkeypatch.setenv(JIT_ENV, off)
        assert compiled_adapt(kernel._plan, theta, 0.1, x, y, 1) is None
        assert compiled_forward_row(kernel._plan, theta, x[0]) is None
        assert warm_up() == 0.0
    monkeypatch.setenv(JIT_ENV, "sometimes")
    with pytest.raises(ConfigError, match=r"METABT_JIT='sometimes'.*set it to 0"):
        compiled_adapt(kernel._plan, theta, 0.1, x, y, 1)
    monkeypatch.setenv(JIT_ENV, "1")
    assert compiled_adapt(kernel._plan, theta, 0.1, x, y, 1) is not None
    # other dtypes and layouts are the NumPy loop's
    assert compiled_adapt(kernel._plan, theta, 0.1, x.astype(np.float64), y, 1) is None
    assert compiled_adapt(kernel._plan, theta, 0.1, np.asfortranarray(x), y, 1) is None
    assert warm_up() >= 0.0


def test_plan_says_which_networks_run_compiled():
    assert DensePlan([(3, 2), (3, 1)], [("relu", 0.0)]).compiles
    assert DensePlan([(4, 5), (6, 5), (6, 1)], [("leaky_relu", 0.1), ("identity", 0.0)]).compiles
    assert DensePlan([(3, 1)], []).compiles  # the head alone
    assert not DensePlan([(3, 2), (3, 1)], [("tanh", 0.0)]).compiles  # NumPy's tanh
    assert not DensePlan([(2, 3), (4, 1)], [("relu", 0.0)]).compiles  # one input
    assert not DensePlan([(3, 1), (2, 1)], [("relu", 0.0)]).compiles  # a width of 1
    with pytest.raises(ValueError, match="head of width 1"):
        DensePlan([(3, 2), (3, 2)], [("relu", 0.0)])


def test_a_process_loads_the_compiled_loop_once_it_has_adapted_enough(monkeypatch):
    """METABT_JIT unset: NumPy for the first HOT support sets, compiled from then on."""
    from metabt.learn.kernels import compiled

    monkeypatch.delenv(JIT_ENV, raising=False)
    monkeypatch.setattr(compiled, "_compiled", None)  # as in a fresh process
    monkeypatch.setattr(compiled, "_adapted", 0)
    monkeypatch.setattr(compiled, "HOT", 5)
    kernel = kernel_for(MLP(4, (5,), seed=0))
    assert isinstance(kernel, DenseKernel)
    theta = np.zeros(int(kernel._plan.offsets[-1]), dtype=np.float32)
    x, y = np.ones((2, 3, 4), dtype=np.float32), np.ones((2, 3), dtype=np.float32)
    for _ in range(2):
        assert compiled_adapt(kernel._plan, theta, 0.1, x[0], y[0], 1) is None
    assert compiled_adapt_many(kernel._plan, theta, 0.1, x, y, 1) is None  # 4 so far
    assert compiled_forward_row(kernel._plan, theta, x[0, 0]) is None  # never loads
    assert not compiled.loaded()
    assert compiled_adapt(kernel._plan, theta, 0.1, x[0], y[0], 1) is None  # 5: not yet
    assert compiled_adapt(kernel._plan, theta, 0.1, x[0], y[0], 1) is not None  # the 6th
    assert compiled.loaded()
    assert compiled_forward_row(kernel._plan, theta, x[0, 0]) is not None


def test_a_backtest_trades_the_same_with_the_compiled_loop(monkeypatch, sample_frames):
    """MetaStrategy's signals, adaptations and final value are the NumPy loop's."""
    import backtrader as bt

    from metabt import MetaStrategy, SignalSizer
    from metabt.data import feed
    from metabt.features import FeatureSpec

    spec = FeatureSpec()
    learner = MetaLearner(MLP(spec.n_features, seed=0), inner_steps=5, feature_spec=spec)
    frames = dict(list(sample_frames.items())[:2])

    def run():
        cerebro = bt.Cerebro(stdstats=False)
        for name, frame in frames.items():
            cerebro.adddata(feed(frame.iloc[-400:], name=name))
        cerebro.addstrategy(MetaStrategy, learner=learner, batch_adapt=False)
        cerebro.addsizer(SignalSizer)
        strategy = cerebro.run()[0]
        signals = [np.asarray(s.lines[0].array) for s in strategy.signals]
        log = strategy.adaptation_log()[["loss_before", "loss_after"]].to_numpy()
        return signals, log, strategy.broker.getvalue()

    numpy_run, compiled = _both(monkeypatch, run)
    assert len(numpy_run[1]) > 50  # adaptations happened
    for a, b in zip(numpy_run[0], compiled[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(numpy_run[1], compiled[1])
    assert numpy_run[2] == compiled[2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rates", ["scalar", "per-parameter"])
def test_compiled_adapt_many_is_one_adapt_per_task_bit_for_bit(monkeypatch, dtype, rates):
    """Batched adaptation (every asset due on a bar): each task's φ and losses are its own
    adapt's exactly. The NumPy batched loop agrees to float precision only: its stacked
    matmul and einsum round differently from one task's BLAS calls for some shapes."""
    rng = np.random.default_rng(9)
    kernel, _, theta, rate, _ = _folded((5, 8, 6), "relu", dtype, rates, rng)
    x, y = rng.normal(size=(7, 20, 5)).astype(dtype), rng.normal(size=(7, 20)).astype(dtype)
    numpy_many, many = _both(monkeypatch, lambda: kernel.adapt_many(theta, rate, x, y, 3))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for name in numpy_many[2]:
        np.testing.assert_allclose(many[2][name], numpy_many[2][name], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(many[1], numpy_many[1], rtol=rtol)
    for b in range(7):
        one = kernel.adapt(theta, rate, x[b], y[b], 3)
        assert (many[0][b], many[1][b]) == (one[0], one[1])
        for name, value in one[2].items():
            np.testing.assert_array_equal(many[2][name][b], value)
