"""MetaLearner: configuration checks and the test-time adaptation paths against the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import linear_task_batch as _batch

from metabt.errors import ConfigError
from metabt.learn.algorithms import FAMILIES, GradientFamily
from metabt.learn.learner import ALGORITHMS, MetaLearner
from metabt.learn.models import GRU, MLP

F = 4
#: throwaway modules built without user_model: these learners are never saved
UNSAVED = {"check_saveable": False}


# the gradient-based algorithms (the others adapt on their own models: tests/test_learners.py)
GRADIENT = [a for a in ALGORITHMS if isinstance(FAMILIES[a], GradientFamily)]


@pytest.mark.parametrize("algorithm", GRADIENT)
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


# -------------------------------------------------------------- batched adaptation
def _user_net(dtype):
    from torch import nn

    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(F, 6), nn.Tanh(), nn.Linear(6, 1)).to(dtype)


_CASES = {  # name -> (model factory, algorithm, expected backend)
    "mlp": (lambda: MLP(F, (8, 5), seed=1), "maml", "kernel"),
    "mlp-no-hidden": (lambda: MLP(F, (), seed=1), "fomaml", "kernel"),
    "gru": (lambda: GRU(2, 5, window=2, seed=1), "maml", "kernel"),
    "anil-mlp": (lambda: MLP(F, (8,), seed=1), "anil", "head"),
    "anil-gru": (lambda: GRU(2, 5, window=2, seed=1), "anil", "head"),
    "metasgd-mlp": (lambda: MLP(F, (8,), seed=1), "metasgd", "kernel"),
    "metasgd-gru": (lambda: GRU(2, 5, window=2, seed=1), "metasgd", "kernel"),
    "user": (lambda: _user_net(torch.float32), "maml", "kernel"),  # SequentialKernel
    "user-anil": (lambda: _user_net(torch.float32), "anil", "vmap"),
    "user-metasgd": (lambda: _user_net(torch.float32), "metasgd", "kernel"),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tasks", [1, 5])
@pytest.mark.parametrize("case", sorted(_CASES))
def test_adapt_batch_equals_separate_adapt_calls(case, tasks, dtype):
    make, algorithm, backend = _CASES[case]
    learner = MetaLearner(
        make().to(dtype), algorithm=algorithm, inner_lr=0.1, inner_steps=3, **UNSAVED
    )
    for p in learner.inner_lrs.values():  # per-element rates: the layouts must match
        p.data.uniform_(0.02, 0.2, generator=torch.Generator().manual_seed(0))
    xs, ys, xq, _ = _batch(b=tasks, s=9, dtype=dtype)
    batch = learner.adapt_batch(xs.numpy(), ys.numpy())
    assert batch.backend == (backend if tasks > 1 else "loop")  # B = 1: one adapt call
    assert len(batch) == tasks and batch.steps == 3
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    rows = xq[:, 0].numpy()
    single = [learner.adapt(xs[b], ys[b]) for b in range(tasks)]
    np.testing.assert_allclose(batch.loss_before, [m.loss_before for m in single], **tol)
    np.testing.assert_allclose(batch.loss_after, [m.loss_after for m in single], **tol)
    assert (batch.loss_after < batch.loss_before).all()
    predictions = batch.predict_rows(rows)
    assert predictions.shape == (tasks,) and predictions.dtype == np.float64
    np.testing.assert_allclose(predictions, [m.predict_row(r) for m, r in zip(single, rows)], **tol)
    for b, m in enumerate(single):
        task = batch.model(b)
        assert task.loss_after == pytest.approx(m.loss_after, rel=tol["rtol"])
        for name, value in m.params.items():
            torch.testing.assert_close(task.params[name], value, **tol)
        np.testing.assert_allclose(task.predict(xq[b].numpy()), m.predict(xq[b].numpy()), **tol)


def test_adapt_batch_other_paths_and_errors():
    no_kernel = torch.nn.Sequential(
        torch.nn.Linear(F, 6), torch.nn.Softplus(), torch.nn.Linear(6, 1)
    )
    learner = MetaLearner(no_kernel.double(), engine="higher", inner_steps=2, **UNSAVED)
    xs, ys, _, _ = _batch(b=3, s=7)
    batch = learner.adapt_batch(xs, ys, steps=0)  # higher engine: separate adapt calls
    assert batch.backend == "loop" and (batch.loss_before == batch.loss_after).all()
    reference = MetaLearner(MLP(F, (4,)).double()).adapt_batch(xs, ys, reference=True)
    assert reference.backend == "loop" and reference.model(-1).backend == "autograd"
    with pytest.raises(ConfigError, match=r"x \(B, S, F\) and y \(B, S\)"):
        learner.adapt_batch(xs[0], ys[0])
    with pytest.raises(ConfigError, match=r"support sets \[1\] have NaN"):
        learner.adapt_batch(xs, torch.where(torch.arange(3)[:, None] == 1, np.nan, ys))
    with pytest.raises(ConfigError, match="one row per task"):
        batch.predict_rows(np.zeros((2, F)))
    with pytest.raises(IndexError, match="out of range"):
        batch.model(3)
    with pytest.raises(ConfigError, match="steps"):
        learner.adapt_batch(xs, ys, steps=-1)


def test_user_model_adapts_like_the_autograd_reference():
    from metabt.learn.algorithms import inner_loop

    learner = MetaLearner(
        _user_net(torch.float64), algorithm="maml", inner_lr=0.1, inner_steps=3, **UNSAVED
    )
    xs, ys, _, _ = _batch(b=1, s=9)
    adapted = learner.adapt(xs[0], ys[0])
    assert adapted.backend == "kernel" and adapted.loss_after < adapted.loss_before
    theta = {k: v.detach() for k, v in learner.model.named_parameters()}
    lrs = dict.fromkeys(theta, 0.1)
    phi = inner_loop(theta, learner.forward_with, xs[0], ys[0], 3, lrs, first_order=True)
    for name, value in phi.items():
        torch.testing.assert_close(adapted.params[name], value, rtol=1e-10, atol=1e-12)


def test_a_plain_sequential_meta_learns_sinusoids():
    """Finn et al. 2017, section 5.1, with an nn.Sequential of (N, 1) output (engine func)."""
    import copy

    from torch import nn

    from metabt.experiments.sinusoid import SinusoidTasks

    tasks = SinusoidTasks()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    losses = {}
    for algorithm in ("maml", "erm"):
        learner = MetaLearner(
            copy.deepcopy(net),
            algorithm=algorithm,
            inner_lr=0.02,
            inner_steps=1,
            meta_lr=1e-2,
            **UNSAVED,
        )
        assert learner.engine == "func"
        learner.fit(tasks, 150, batch_size=8, progress=False)
        losses[algorithm] = learner.evaluate(*tasks.fixed(100, 7), steps=10)
    assert losses["maml"] < 0.8 * losses["erm"], losses


def test_a_model_with_batch_norm_is_refused_with_the_fix():
    """Batch norm needs the other rows of the batch; the backtest predicts one bar at a time."""
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
    )
    with pytest.raises(ConfigError, match=r"batch-norm layer \(1: BatchNorm1d\).*nn.LayerNorm"):
        MetaLearner(model, **UNSAVED)
    norm = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
    )
    adapted = MetaLearner(norm, engine="higher", **UNSAVED).adapt(
        np.zeros((5, 4), np.float32), np.zeros(5)
    )
    assert adapted(torch.zeros(1, 4)).shape == (1,)  # one row at a time works
