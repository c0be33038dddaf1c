"""metabt.learn.kernels.fused: NumPy inner loops equal torch.autograd; the fold cache follows θ."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import linear_task_batch as _batch
from torch import nn

from metabt.learn.kernels.fused import GRUKernel, MLPKernel, kernel_for
from metabt.learn.learner import MetaLearner
from metabt.learn.models import GRU, MLP

F = 4


def test_kernels_are_looked_up_by_model_class():
    assert isinstance(kernel_for(MLP(F)), MLPKernel)
    assert isinstance(kernel_for(GRU(2, 3, window=2)), GRUKernel)
    assert kernel_for(nn.Linear(F, 1)) is None

    class Custom(MLP):  # may change the forward pass: no kernel
        pass

    assert kernel_for(Custom(F)) is None
    adapted = MetaLearner(Custom(F)).adapt(torch.zeros(3, F), torch.zeros(3))
    assert adapted.backend == "module"  # the module runner, not a kernel


def test_numpy_mlp_gradient_equals_autograd():
    model = MLP(F, (7, 5), seed=4).double()
    xs, ys, _, _ = _batch(b=1, s=20)
    params = {k: v.detach() for k, v in model.named_parameters()}
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss = ((model.forward_with(leaves, xs[0]) - ys[0]) ** 2).mean()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    np_loss, np_grads = MLPKernel(model).mse_grad_numpy(
        {k: v.numpy() for k, v in params.items()}, xs[0].numpy(), ys[0].numpy()
    )
    assert math.isclose(np_loss, float(loss.detach()), rel_tol=1e-12)
    for (name, _), g in zip(leaves.items(), grads):
        np.testing.assert_allclose(np_grads[name], g.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("algorithm", ["maml", "metasgd"])
def test_gru_numpy_backprop_through_time_equals_autograd(algorithm):
    model = GRU(3, 5, window=4, seed=5).double()
    learner = MetaLearner(model, algorithm=algorithm, inner_lr=0.2, inner_steps=3)
    if learner.inner_lrs:
        for p in learner.inner_lrs.values():
            p.data.uniform_(0.05, 0.3, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 12, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    fast = learner.adapt(x, y)
    reference = learner.adapt(x, y, 3, reference=True)
    assert fast.backend == "kernel"  # the NumPy path ran
    assert math.isclose(fast.loss_after, reference.loss_after, rel_tol=1e-10)
    assert fast.loss_after < fast.loss_before
    for name, value in reference.params.items():
        torch.testing.assert_close(fast.params[name], value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.predict(x.numpy()), reference(x).numpy(), rtol=1e-10)


def test_adaptation_follows_theta_when_it_changes_in_place():
    """The folded-θ cache of the NumPy path is refreshed by meta-steps and in-place edits."""
    learner = MetaLearner(MLP(F, (6,), seed=3).double(), algorithm="maml", inner_lr=0.1)
    xs, ys, _, _ = _batch(b=1, s=12)

    def assert_matches_reference(adapted):
        reference = learner.adapt(xs[0], ys[0], learner.inner_steps, reference=True)
        for name, value in reference.params.items():
            torch.testing.assert_close(adapted.params[name], value, rtol=1e-10, atol=1e-12)

    first = learner.adapt(xs[0], ys[0])
    assert_matches_reference(first)
    learner.meta_step(*_batch())  # optimizer step: θ changes in place
    after_step = learner.adapt(xs[0], ys[0])
    assert_matches_reference(after_step)
    assert not torch.equal(after_step.params["head.bias"], first.params["head.bias"])
    with torch.no_grad():
        learner.model.head.bias.add_(1.0)
    assert_matches_reference(learner.adapt(xs[0], ys[0]))
    row = xs[0][0].numpy()
    assert after_step.predict_row(row) == pytest.approx(float(after_step.predict(row)[0]))


@pytest.mark.parametrize("hidden", [(5,), (7, 5, 3)])
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_fused_numpy_inner_loop_equals_autograd_for_any_depth(hidden, steps):
    learner = MetaLearner(MLP(F, hidden, seed=2).double(), algorithm="metasgd", inner_lr=0.1)
    for p in learner.inner_lrs.values():  # per-element rates, so the layout must match
        p.data.uniform_(0.01, 0.2, generator=torch.Generator().manual_seed(1))
    theta = {k: v.detach().clone() for k, v in learner.model.named_parameters()}
    xs, ys, _, _ = _batch(b=1, s=15)
    fast = learner.adapt(xs[0], ys[0], steps=steps)
    reference = learner.adapt(xs[0], ys[0], steps, reference=True)
    assert math.isclose(fast.loss_before, reference.loss_before, rel_tol=1e-10)
    assert math.isclose(fast.loss_after, reference.loss_after, rel_tol=1e-10)
    assert fast.steps == steps
    for name, value in reference.params.items():
        assert fast.params[name].shape == value.shape, name
        torch.testing.assert_close(fast.params[name], value, rtol=1e-10, atol=1e-12)
    for name, value in learner.model.named_parameters():  # θ untouched
        assert torch.equal(value.detach(), theta[name]), name


@pytest.mark.parametrize("model", [MLP(F, (), seed=1), MLP(F, (7, 5), seed=1), GRU(2, 5, window=2)])
@pytest.mark.parametrize("steps", [0, 2])
def test_batched_kernels_equal_one_adapt_per_task(model, steps):
    """adapt_many / forward_many: the same inner loop with a leading task axis."""
    kernel = kernel_for(model.double())
    rng = np.random.default_rng(0)
    params = {k: v.detach().numpy() for k, v in model.named_parameters()}
    lrs = {k: rng.uniform(0.01, 0.2, v.shape) for k, v in params.items()}  # per element
    flat, rate = kernel.fold(params, lrs)
    x, y = rng.normal(size=(4, 6, model.n_features)), rng.normal(size=(4, 6))
    before, after, phi = kernel.adapt_many(flat, rate, x, y, steps)
    rows = kernel.forward_many(phi, x[:, 0])
    for b in range(4):
        one_before, one_after, one_phi = kernel.adapt(flat, rate, x[b], y[b], steps)
        assert before[b] == pytest.approx(one_before, rel=1e-12)
        assert after[b] == pytest.approx(one_after, rel=1e-12)
        for name, value in one_phi.items():
            np.testing.assert_allclose(phi[name][b], value, rtol=1e-12, atol=1e-14)
        assert rows[b] == pytest.approx(float(kernel.forward(one_phi, x[b, 0])), rel=1e-12)
    assert np.array_equal(flat, kernel.fold(params, lrs)[0])  # θ untouched


def test_as_batch_kernel_is_an_isinstance_check_kept_per_class():
    from metabt.learn.kernels.fused import BatchKernel, FastKernel, as_batch_kernel

    kernel = kernel_for(MLP(4, (6,), seed=0))
    assert isinstance(kernel, BatchKernel) and as_batch_kernel(kernel) is kernel
    assert as_batch_kernel(None) is None

    class OneTask:  # a FastKernel without the task axis
        def fold(self, params, lrs): ...
        def adapt(self, theta, rate, x, y, steps): ...
        def forward(self, params, x): ...

    one: FastKernel = OneTask()
    assert not isinstance(one, BatchKernel)
    assert as_batch_kernel(one) is None and as_batch_kernel(one) is None  # cached: same answer
