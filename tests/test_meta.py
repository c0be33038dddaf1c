"""MetaLearner: MAML gradients vs a hand-computed reference, engines, adapt, fit, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metabt.errors import CheckpointError, ConfigError
from metabt.features import FeatureSpec
from metabt.meta import ALGORITHMS, MetaLearner
from metabt.models import GRU, MLP

F = 4


def _batch(b=3, s=8, q=5, f=F, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(b, f, generator=g, dtype=dtype)  # each task has its own linear rule
    xs = torch.randn(b, s, f, generator=g, dtype=dtype)
    xq = torch.randn(b, q, f, generator=g, dtype=dtype)
    ys = torch.einsum("bsf,bf->bs", xs, w) + 0.1 * torch.randn(b, s, generator=g, dtype=dtype)
    yq = torch.einsum("bqf,bf->bq", xq, w) + 0.1 * torch.randn(b, q, generator=g, dtype=dtype)
    return xs, ys, xq, yq


class LinearTasks:
    """Task source: linear regression tasks with random weights (float32)."""

    date_range = (np.datetime64("2001-01-01"), np.datetime64("2004-12-31"))

    def sample(self, batch_size, rng):
        seed = int(rng.integers(0, 2**31))
        return tuple(t.float() for t in _batch(b=batch_size, seed=seed))

    def fixed(self, n, seed):
        return tuple(t.float() for t in _batch(b=n, seed=10_000 + seed))


def _meta_grads(learner, batch):
    """Meta-gradient of one meta_step, without applying the update."""
    learner._optimizer.step = lambda *a, **k: None
    loss = learner.meta_step(*batch)
    grads = {n: p.grad.detach().clone() for n, p in learner.model.named_parameters()}
    grads.update({f"lr.{n}": p.grad.detach().clone() for n, p in learner.inner_lrs.items()})
    return loss, grads


def test_one_step_maml_meta_gradient_equals_hand_computed_reference():
    # A linear model f(x) = w.x + b (an MLP without hidden layers), one inner step, float64.
    # With z = [x, 1] and θ = [w, b]: L_s(θ) = mean((Zθ - y)^2), ∇L_s = 2/S Zᵀ(Zθ - y),
    # H_s = 2/S ZᵀZ, θ' = θ - α∇L_s(θ), and the MAML meta-gradient is (I - α H_s) ∇L_q(θ').
    alpha = 0.1
    model = MLP(F, hidden=(), seed=3).double()
    learner = MetaLearner(model, algorithm="maml", inner_lr=alpha, inner_steps=1, engine="higher")
    xs, ys, xq, yq = _batch()
    theta = torch.cat([model.head.weight.detach().reshape(-1), model.head.bias.detach()])
    expected = torch.zeros_like(theta)
    for b in range(xs.shape[0]):
        zs = torch.cat([xs[b], torch.ones(xs.shape[1], 1, dtype=torch.float64)], 1)
        zq = torch.cat([xq[b], torch.ones(xq.shape[1], 1, dtype=torch.float64)], 1)
        grad_s = 2 / len(zs) * zs.T @ (zs @ theta - ys[b])
        hess_s = 2 / len(zs) * zs.T @ zs
        adapted = theta - alpha * grad_s
        grad_q = 2 / len(zq) * zq.T @ (zq @ adapted - yq[b])
        expected += (torch.eye(F + 1, dtype=torch.float64) - alpha * hess_s) @ grad_q / xs.shape[0]
    for engine in ("higher", "func"):
        learner = MetaLearner(
            MLP(F, hidden=(), seed=3).double(),
            algorithm="maml",
            inner_lr=alpha,
            inner_steps=1,
            engine=engine,
        )
        _, grads = _meta_grads(learner, (xs, ys, xq, yq))
        got = torch.cat([grads["head.weight"].reshape(-1), grads["head.bias"]])
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_first_order_differs_from_second_order_by_the_hessian_term():
    alpha = 0.1
    xs, ys, xq, yq = _batch()
    _, so = _meta_grads(
        MetaLearner(
            MLP(F, hidden=(), seed=3).double(), algorithm="maml", inner_lr=alpha, inner_steps=1
        ),
        (xs, ys, xq, yq),
    )
    _, fo = _meta_grads(
        MetaLearner(
            MLP(F, hidden=(), seed=3).double(), algorithm="fomaml", inner_lr=alpha, inner_steps=1
        ),
        (xs, ys, xq, yq),
    )
    # for a linear model the difference is exactly -α H_s ∇L_q(θ'), which is not zero
    assert not torch.allclose(so["head.weight"], fo["head.weight"], atol=1e-6)
    # with zero inner steps there is nothing to differentiate through: they agree
    _, so0 = _meta_grads(
        MetaLearner(MLP(F, (6,), seed=3).double(), algorithm="maml", inner_steps=0),
        (xs, ys, xq, yq),
    )
    _, fo0 = _meta_grads(
        MetaLearner(MLP(F, (6,), seed=3).double(), algorithm="fomaml", inner_steps=0),
        (xs, ys, xq, yq),
    )
    for name in so0:
        torch.testing.assert_close(so0[name], fo0[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil"])
@pytest.mark.parametrize("model_type", ["mlp", "gru"])
def test_func_engine_meta_gradient_equals_higher_reference(algorithm, model_type):
    def make():
        if model_type == "mlp":
            return MLP(F, (8, 8), seed=1).double()
        return GRU(2, hidden=6, window=2, seed=1).double()

    batch = _batch()
    loss_h, grads_h = _meta_grads(
        MetaLearner(make(), algorithm=algorithm, inner_lr=0.1, inner_steps=3, engine="higher"),
        batch,
    )
    loss_f, grads_f = _meta_grads(
        MetaLearner(make(), algorithm=algorithm, inner_lr=0.1, inner_steps=3, engine="func"), batch
    )
    assert math.isclose(loss_h, loss_f, rel_tol=1e-12)
    assert grads_h.keys() == grads_f.keys()
    for name in grads_h:
        torch.testing.assert_close(grads_f[name], grads_h[name], rtol=1e-9, atol=1e-12)


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


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil", "reptile", "erm"])
def test_meta_step_moves_every_parameter(algorithm):
    learner = MetaLearner(MLP(F, (8,), seed=0), algorithm=algorithm, meta_lr=1e-2)
    before = [p.detach().clone() for p in learner.model.parameters()]
    lrs_before = [p.detach().clone() for p in learner.inner_lrs.values()]
    loss = learner.meta_step(*(t.float() for t in _batch()))
    assert math.isfinite(loss)
    for p, b in zip(learner.model.parameters(), before):
        assert not torch.equal(p.detach(), b)  # the meta-gradient reached every part of θ
    for p, b in zip(learner.inner_lrs.values(), lrs_before):
        assert not torch.equal(p.detach(), b)  # metasgd learns its inner rates


def test_scratch_never_changes_theta():
    learner = MetaLearner(MLP(F, (8,), seed=0), algorithm="scratch")
    before = [p.detach().clone() for p in learner.model.parameters()]
    learner.meta_step(*(t.float() for t in _batch()))
    learner.fit(LinearTasks(), 5, progress=False)
    assert all(torch.equal(p.detach(), b) for p, b in zip(learner.model.parameters(), before))


def test_maml_meta_training_lowers_query_loss_after_adaptation():
    learner = MetaLearner(MLP(F, (16,), seed=0), inner_lr=0.1, inner_steps=3, meta_lr=3e-3)
    val = LinearTasks().fixed(32, 0)
    start = learner.evaluate(*val)
    result = learner.fit(
        LinearTasks(), 150, batch_size=8, val_tasks=val, val_every=50, progress=False
    )
    assert result.best_val_loss < 0.8 * start
    assert math.isclose(learner.evaluate(*val), result.best_val_loss, rel_tol=1e-6)


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


# ------------------------------------------------------------------ checkpoints
def _trained(tmp_path, algorithm="metasgd"):
    spec = FeatureSpec()
    learner = MetaLearner(
        MLP(spec.n_features, (8,), seed=2), algorithm=algorithm, feature_spec=spec
    )
    g = torch.Generator().manual_seed(0)
    b = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    learner.meta_step(b(2, 6, spec.n_features), b(2, 6), b(2, 4, spec.n_features), b(2, 4))
    learner.train_range = ("2001-01-02", "2007-12-31")
    return learner, learner.save(tmp_path / "model.pt")


def test_checkpoint_round_trip(tmp_path):
    learner, path = _trained(tmp_path)
    loaded = MetaLearner.load(path)
    x = torch.randn(5, learner.model.n_features)
    torch.testing.assert_close(loaded.model(x), learner.model(x), rtol=0, atol=0)
    for name, p in learner.inner_lrs.items():
        assert torch.equal(loaded.inner_lrs[name], p)
    assert loaded.feature_spec == learner.feature_spec
    assert loaded.train_range == ("2001-01-02", "2007-12-31")
    assert loaded.algorithm == "metasgd" and loaded.horizon == learner.horizon
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_corrupt_truncated_and_foreign_checkpoints_raise(tmp_path):
    _, path = _trained(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for bad in (truncated, garbage, foreign, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError, match=bad.name):
            MetaLearner.load(bad)


def test_checkpoint_never_unpickles_code(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save(
        {"format": "metabt-checkpoint", "payload": np.dtype("float64"), "obj": ConfigError("x")},
        evil,
    )
    with pytest.raises(CheckpointError, match="corrupt"):
        MetaLearner.load(evil)


def test_checkpoint_version_and_feature_spec_checks(tmp_path):
    _, path = _trained(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(ckpt, newer)
    with pytest.raises(CheckpointError, match="newer"):
        MetaLearner.load(newer)
    with pytest.raises(CheckpointError, match="trained with features"):
        MetaLearner.load(path, feature_spec=FeatureSpec(horizon=10))
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["n_features"] = 3
    mismatched = tmp_path / "mismatched.pt"
    torch.save(ckpt, mismatched)
    with pytest.raises(CheckpointError, match=r"mismatched\.pt"):
        MetaLearner.load(mismatched)


def test_fit_resumes_exactly_where_it_stopped(tmp_path):
    def make():
        return MetaLearner(MLP(F, (8,), seed=0), algorithm="maml", meta_lr=1e-2)

    full = make()
    full.fit(
        LinearTasks(),
        40,
        batch_size=4,
        val_tasks=LinearTasks(),
        val_size=8,
        val_every=10,
        progress=False,
    )
    ckpt = tmp_path / "run.pt"
    first = make()
    first.fit(
        LinearTasks(),
        20,
        batch_size=4,
        val_tasks=LinearTasks(),
        val_size=8,
        val_every=10,
        checkpoint=ckpt,
        progress=False,
    )
    resumed = make()
    result = resumed.fit(
        LinearTasks(),
        40,
        batch_size=4,
        val_tasks=LinearTasks(),
        val_size=8,
        val_every=10,
        checkpoint=ckpt,
        progress=False,
    )
    assert result.resumed_from == 20 and result.steps == 40
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = MetaLearner(MLP(F, (8,), seed=0), algorithm="fomaml")
    with pytest.raises(CheckpointError, match="another configuration"):
        other.fit(LinearTasks(), 40, checkpoint=ckpt, progress=False)


def test_fit_stops_early_and_keeps_the_best_theta():
    # a meta learning rate far too high makes validation worse after the first evaluations
    learner = MetaLearner(MLP(F, (8,), seed=0), meta_lr=0.5)
    result = learner.fit(
        LinearTasks(),
        200,
        batch_size=4,
        val_tasks=LinearTasks(),
        val_size=16,
        val_every=5,
        patience=3,
        progress=False,
    )
    assert result.stopped_early and result.steps < 200
    best = min(v for _, v in result.val_losses)
    assert result.best_val_loss == best
    assert math.isclose(learner.evaluate(*LinearTasks().fixed(16, 0)), best, rel_tol=1e-6)


def test_numpy_mlp_gradient_equals_autograd():
    model = MLP(F, (7, 5), seed=4).double()
    xs, ys, _, _ = _batch(b=1, s=20)
    params = {k: v.detach() for k, v in model.named_parameters()}
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss = ((model.forward_with(leaves, xs[0]) - ys[0]) ** 2).mean()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    np_loss, np_grads = model.mse_grad_numpy(
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
    reference = learner._adapt_autograd(x, y, 3)
    assert fast._params is None  # the NumPy path ran
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
        reference = learner._adapt_autograd(xs[0], ys[0], learner.inner_steps)
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
    reference = learner._adapt_autograd(xs[0], ys[0], steps)
    assert math.isclose(fast.loss_before, reference.loss_before, rel_tol=1e-10)
    assert math.isclose(fast.loss_after, reference.loss_after, rel_tol=1e-10)
    assert fast.steps == steps
    for name, value in reference.params.items():
        assert fast.params[name].shape == value.shape, name
        torch.testing.assert_close(fast.params[name], value, rtol=1e-10, atol=1e-12)
    for name, value in learner.model.named_parameters():  # θ untouched
        assert torch.equal(value.detach(), theta[name]), name


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
    reference = learner._adapt_autograd(xs[0], ys[0], 4)
    assert math.isclose(fast.loss_before, reference.loss_before, rel_tol=1e-10)
    assert math.isclose(fast.loss_after, reference.loss_after, rel_tol=1e-10)
    for name, value in reference.params.items():
        torch.testing.assert_close(fast.params[name], value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.predict(xq[0].numpy()), reference(xq[0]).numpy(), rtol=1e-10)
