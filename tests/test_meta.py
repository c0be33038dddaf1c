"""MetaLearner: configuration checks and the test-time adaptation paths against the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import linear_task_batch as _batch

from metabt.errors import ConfigError
from metabt.meta import ALGORITHMS, MetaLearner
from metabt.models import GRU, MLP

F = 4


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_adaptation_lowers_support_loss_and_leaves_theta_untouched(algorithm):
    learner = MetaLearner(MLP(F, (16,), seed=0), algorithm=algorithm, inner_lr=0.05, inner_steps=5)
    before = {k: v.detach().clone() for k, v in learner.model.state_dict().items()}
    xs, ys, _, _ = _batch(b=1, s=30, dtype=torch.float32)
    adapted = learner.adapt(xs[0], ys[0])
    assert adapted.loss_after < adapted.loss_before
    assert adapted.steps == 5
    for k, v in learner.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in learner.model.parameters())
    # the adapted model predicts differently from θ
    x = xs[0, :3]
    assert not torch.allclose(adapted(x), learner.model(x).detach())


def test_anil_adapts_only_the_head():
    learner = MetaLearner(MLP(F, (16,), seed=0), algorithm="anil")
    xs, ys, _, _ = _batch(b=1, s=30, dtype=torch.float32)
    adapted = learner.adapt(xs[0], ys[0])
    for name, p in learner.model.named_parameters():
        same = torch.equal(adapted.params[name], p.detach())
        assert same == (not name.startswith("head.")), name


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="did you mean 'maml'"):
        MetaLearner(MLP(F), algorithm="mamll")
    with pytest.raises(ConfigError, match="engine"):
        MetaLearner(MLP(F), engine="jax")
    with pytest.raises(ConfigError, match="inner_lr"):
        MetaLearner(MLP(F), inner_lr=-1.0)
    with pytest.raises(ConfigError, match="support set"):
        MetaLearner(MLP(F)).adapt(torch.zeros(3, F), torch.zeros(4))
    with pytest.raises(ConfigError, match="NaN"):
        MetaLearner(MLP(F)).adapt(torch.full((3, F), float("nan")), torch.zeros(3))
    with pytest.raises(ConfigError, match="xs"):
        MetaLearner(MLP(F)).meta_step(
            torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, F), torch.zeros(2, 3)
        )


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "anil"])
@pytest.mark.parametrize("model_type", ["mlp", "gru"])
def test_fast_adaptation_paths_equal_the_autograd_reference(algorithm, model_type):
    model = MLP(F, (8, 8), seed=1) if model_type == "mlp" else GRU(2, 6, window=2, seed=1)
    learner = MetaLearner(model.double(), algorithm=algorithm, inner_lr=0.1, inner_steps=4)
    if learner.inner_lrs:  # make the learned rates differ per element
        for p in learner.inner_lrs.values():
            p.data.uniform_(0.01, 0.2, generator=torch.Generator().manual_seed(0))
    xs, ys, xq, _ = _batch(b=1, s=25)
    fast = learner.adapt(xs[0], ys[0])
    reference = learner.adapt(xs[0], ys[0], 4, reference=True)
    assert fast.backend == ("head" if algorithm == "anil" else "kernel")
    assert reference.backend == "autograd"
    assert math.isclose(fast.loss_before, reference.loss_before, rel_tol=1e-10)
    assert math.isclose(fast.loss_after, reference.loss_after, rel_tol=1e-10)
    for name, value in reference.params.items():
        torch.testing.assert_close(fast.params[name], value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.predict(xq[0].numpy()), reference(xq[0]).numpy(), rtol=1e-10)
