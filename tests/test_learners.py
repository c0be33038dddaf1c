"""The other meta-learner families (metabt.learn.algorithms.cnp, .protonet, .cavia), end to end.

Numbers of the benchmark tests below (seed 0, 100 held-out tasks): sinusoid query MSE,
ERM (300 steps) 3.72 after 10 fine-tuning steps, CNP (500 steps) 0.93 with no gradient
step, CAVIA (500 steps) 0.69 after 5 context steps; regime classification accuracy,
ProtoNet (400 steps) 0.756 vs nearest class mean on raw features 0.376 (chance 1/3) and
per-task OLS 0.809 (which ProtoNet does not beat; the benchmark table says so too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import linear_task_batch as _batch

from metabt.config.defaults import RunConfig
from metabt.errors import ConfigError
from metabt.experiments.sinusoid import (
    RegimeTasks,
    SinusoidTasks,
    nearest_mean_accuracy,
    sinusoid_model,
)
from metabt.learn.algorithms import ALGORITHMS, OUTER_STEPS, CaviaFamily, PairedFamily
from metabt.learn.algorithms.cavia import context_loop
from metabt.learn.algorithms.protonet import (
    label_classes,
    ols_accuracy,
    prototype_accuracy,
    prototypes,
    prototypes_numpy,
    terciles_numpy,
)
from metabt.learn.learner import MetaLearner
from metabt.learn.models import CNP, GRU, MLP, CaviaMLP, ProtoNet, build_model

F = 4
FAMILIES = ("cnp", "protonet", "cavia")
MODELS = {  # algorithm -> a small model of its family
    "cnp": lambda: CNP(F, 8, seed=1),
    "protonet": lambda: ProtoNet(F, (8,), embed=4, seed=1),
    "cavia": lambda: CaviaMLP(F, (8, 6), context=3, seed=1),
}


def _learner(algorithm, dtype=torch.float64, **kwargs):
    kwargs = {"inner_lr": 0.5, "inner_steps": 3, **kwargs}
    return MetaLearner(MODELS[algorithm]().to(dtype), algorithm=algorithm, **kwargs)


def test_registry_and_config_pair_each_family_with_its_model():
    assert ALGORITHMS[-3:] == FAMILIES
    paired = [isinstance(OUTER_STEPS[a], PairedFamily) for a in ALGORITHMS]
    assert all(OUTER_STEPS[a].model_type == a for a in FAMILIES)
    assert paired == [a in FAMILIES for a in ALGORITHMS]
    for algorithm in FAMILIES:  # the algorithm implies its model with the default "mlp"
        config = RunConfig(algorithm=algorithm).model_config()
        model = build_model(config)
        assert model.config()["type"] == algorithm and model.paired_algorithm == algorithm
        explicit = RunConfig(algorithm=algorithm, model_type=algorithm).model_config()
        assert explicit == config
    assert RunConfig(algorithm="cnp", model_type="gru").model_config()["type"] == "gru"
    assert RunConfig().model_config()["type"] == "mlp"


def test_bad_pairings_raise_config_error():
    with pytest.raises(ConfigError, match="algorithm 'cnp' needs the 'cnp' model, got GRU"):
        MetaLearner(GRU(2, 4, window=2), algorithm="cnp")
    with pytest.raises(ConfigError, match="algorithm 'cavia' needs the 'cavia' model, got MLP"):
        MetaLearner(MLP(F), algorithm="cavia")
    with pytest.raises(ConfigError, match="'protonet' model, got CNP"):
        MetaLearner(CNP(F), algorithm="protonet")
    with pytest.raises(ConfigError, match="only by algorithm 'cnp'; pass algorithm='cnp'"):
        MetaLearner(CNP(F), algorithm="maml")
    with pytest.raises(ConfigError, match="only by algorithm 'cavia'"):
        MetaLearner(CaviaMLP(F), algorithm="anil")
    config = RunConfig(algorithm="cnp", model_type="gru").model_config()
    with pytest.raises(ConfigError, match="needs the 'cnp' model"):
        MetaLearner(build_model(config), algorithm="cnp")
    with pytest.raises(ConfigError, match="engine"):
        MetaLearner(CNP(F), algorithm="cnp", engine="jax")
    with pytest.raises(ConfigError, match="support set"):
        _learner("cnp").adapt(torch.zeros(3, F), torch.zeros(4))
    with pytest.raises(ConfigError, match="NaN"):
        _learner("protonet").adapt(torch.full((3, F), float("nan")), torch.zeros(3))
    with pytest.raises(ConfigError, match="context"):
        CaviaMLP(F, context=0)


@pytest.mark.parametrize("engine", ["higher", "func"])
@pytest.mark.parametrize("algorithm", FAMILIES)
def test_meta_step_fit_and_evaluate_run_with_any_engine(algorithm, engine, tmp_path):
    learner = _learner(algorithm, dtype=torch.float32, engine=engine)
    assert learner.engine == engine
    batch = _batch(b=4, s=12, q=6, dtype=torch.float32)
    before = {k: v.detach().clone() for k, v in learner.model.state_dict().items()}
    loss = learner.meta_step(*batch)
    assert np.isfinite(loss) and learner.step_count == 1
    assert any(not torch.equal(v, before[k]) for k, v in learner.model.state_dict().items())
    # evaluate: the query MSE of the signal, the same as adapt-then-predict per task
    value = learner.evaluate(*batch)
    per_task = [
        float(((learner.adapt(batch[0][b], batch[1][b])(batch[2][b]) - batch[3][b]) ** 2).mean())
        for b in range(4)
    ]
    assert value == pytest.approx(np.mean(per_task), rel=1e-6)

    class Tasks:
        def sample(self, n, rng):
            seed = int(rng.integers(1 << 30))
            return _batch(b=n, s=12, q=6, seed=seed, dtype=torch.float32)

    result = learner.fit(
        Tasks(),
        6,
        batch_size=3,
        val_tasks=batch,
        val_every=2,
        progress=False,
        checkpoint=tmp_path / "run.pt",
    )
    assert result.best_val_loss == pytest.approx(learner.evaluate(*batch), rel=1e-6)


@pytest.mark.parametrize("algorithm", FAMILIES)
def test_save_load_round_trip_gives_identical_predictions(algorithm, tmp_path):
    learner = _learner(algorithm, dtype=torch.float32)
    batch = _batch(b=3, s=10, dtype=torch.float32)
    learner.meta_step(*batch)
    path = learner.save(tmp_path / f"{algorithm}.pt")
    payload = torch.load(path, weights_only=True)  # plain tensors and values only
    assert payload["hparams"]["algorithm"] == algorithm
    loaded = MetaLearner.load(path)
    assert loaded.algorithm == algorithm and type(loaded.model) is type(learner.model)
    assert loaded.model.config() == learner.model.config()
    xs, ys, xq, _ = batch
    a, b = learner.adapt(xs[0], ys[0]), loaded.adapt(xs[0], ys[0])
    np.testing.assert_array_equal(a.predict(xq[0].numpy()), b.predict(xq[0].numpy()))
    assert a.predict_row(xq[0, 0].numpy()) == b.predict_row(xq[0, 0].numpy())
    assert (a.loss_before, a.loss_after) == (b.loss_before, b.loss_after)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("algorithm", FAMILIES)
def test_adapt_batch_equals_separate_adapt_calls(algorithm, dtype):
    learner = _learner(algorithm, dtype=dtype)
    xs, ys, xq, _ = _batch(b=4, s=9, dtype=dtype)
    batch = learner.adapt_batch(xs.numpy(), ys.numpy())
    single = [learner.adapt(xs[b], ys[b]) for b in range(4)]
    assert batch.backend == "loop" and len(batch) == 4
    assert batch.steps == (3 if algorithm == "cavia" else 0)
    np.testing.assert_array_equal(batch.loss_after, [m.loss_after for m in single])
    rows = xq[:, 0].numpy()
    np.testing.assert_array_equal(
        batch.predict_rows(rows), [m.predict_row(r) for m, r in zip(single, rows)]
    )
    for b, m in enumerate(single):
        np.testing.assert_array_equal(batch.model(b).predict(xq[b].numpy()), m.predict(xq[b]))
        if algorithm == "cavia":
            np.testing.assert_array_equal(batch.model(b).context, m.context)


def test_cavia_adapts_only_the_context_a_task_embedding():
    learner = _learner("cavia", inner_steps=5, inner_lr=0.3)
    before = {k: v.detach().clone() for k, v in learner.model.state_dict().items()}
    xs, ys, _, _ = _batch(b=2, s=30)
    zero = learner.adapt(xs[0], ys[0], steps=0)
    np.testing.assert_array_equal(zero.context, np.zeros(3))  # φ starts at 0 for every task
    adapted = learner.adapt(xs[0], ys[0])
    other = learner.adapt(xs[1], ys[1])
    assert adapted.backend == "context" and adapted.steps == 5
    assert adapted.context.shape == (3,) and adapted.context.dtype == np.float64
    assert np.abs(adapted.context).max() > 1e-3
    assert not np.allclose(adapted.context, other.context)  # one embedding per task
    assert adapted.loss_after < adapted.loss_before
    for name, value in learner.model.state_dict().items():  # θ untouched, shared
        assert torch.equal(value, before[name]) and torch.equal(adapted.params[name], value)
    assert all(p.grad is None for p in learner.model.parameters())
    # the other families and MAML expose no context
    assert _learner("cnp").adapt(xs[0], ys[0]).context is None
    assert MetaLearner(MLP(F)).adapt(xs[0], ys[0]).context is None


def test_cavia_adapt_equals_the_functional_inner_loop_in_float64():
    learner = _learner("cavia", inner_steps=4, inner_lr=0.4)
    xs, ys, _, _ = _batch(b=1, s=20)
    theta = {k: v.detach() for k, v in learner.model.named_parameters()}
    reference = context_loop(learner.model, theta, xs[0], ys[0], 4, 0.4)
    torch.testing.assert_close(
        torch.from_numpy(learner.adapt(xs[0], ys[0]).context), reference, rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("second_order", [True, False])
def test_cavia_func_and_higher_meta_gradients_agree_in_float64(second_order):
    batch = _batch(b=3, s=10, q=6)
    grads = {}
    for engine in ("func", "higher"):
        learner = _learner("cavia", engine=engine, inner_steps=2, inner_lr=0.5)
        learner.optimizer.step = lambda *a, **k: None  # keep the gradient, skip the update
        loss = CaviaFamily(second_order=second_order).meta_step(learner, *batch)
        grads[engine] = (loss, {n: p.grad.clone() for n, p in learner.model.named_parameters()})
    assert grads["func"][0] == pytest.approx(grads["higher"][0], rel=1e-12)
    for name, value in grads["higher"][1].items():
        torch.testing.assert_close(grads["func"][1][name], value, rtol=1e-10, atol=1e-12)
    # second order differs from first order: the inner loop is differentiated through
    if second_order:
        learner = _learner("cavia", engine="func", inner_steps=2, inner_lr=0.5)
        learner.optimizer.step = lambda *a, **k: None
        CaviaFamily(second_order=False).meta_step(learner, *batch)
        first = learner.model.layers[0].weight.grad
        assert not torch.allclose(first, grads["func"][1]["layers.0.weight"])


def test_cnp_adapts_without_gradients_and_reads_the_support_set():
    learner = _learner("cnp")
    before = {k: v.detach().clone() for k, v in learner.model.state_dict().items()}
    xs, ys, xq, _ = _batch(b=2, s=15)
    adapted = learner.adapt(xs[0], ys[0], steps=7)  # steps are ignored: no gradient step
    assert adapted.steps == 0 and adapted.backend == "encoder"
    for name, value in learner.model.state_dict().items():
        assert torch.equal(value, before[name])
    assert all(p.grad is None for p in learner.model.parameters())
    assert adapted.params["support.keys"].shape == (15, 8)
    row = xq[0, 0].numpy()
    other = learner.adapt(xs[1], ys[1])  # another support set, the same query row
    assert adapted.predict_row(row) != pytest.approx(other.predict_row(row), abs=1e-9)
    shifted = learner.adapt(xs[0], ys[0] + 1.0)  # only the labels change
    assert adapted.predict_row(row) != pytest.approx(shifted.predict_row(row), abs=1e-9)
    # loss_before: the zero context (the unconditional prediction); loss_after: given it
    with torch.no_grad():
        zero = learner.model(xs[0])
    assert adapted.loss_before == pytest.approx(float(((zero - ys[0]) ** 2).mean()), rel=1e-12)


def test_protonet_classes_prototypes_and_degenerate_supports():
    ys = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    yq = torch.tensor([[-1.0, 2.5, 9.0], [0.0, 1.0, 2.0]])
    cs, mask, cq = label_classes(ys, yq)
    assert cs.tolist()[0] == [0, 0, 1, 1, 2, 2] and cs.tolist()[1] == [1] * 6
    assert mask.tolist() == [[True, True, True], [False, True, False]]
    assert cq.tolist() == [[0, 1, 2], [1, 1, 1]]  # empty classes map to the nearest one
    _, mask, cq = label_classes(torch.tensor([0.0, 1.0, 1.0, 1.0]), torch.tensor([5.0, -5.0]))
    assert mask.tolist() == [True, True, False] and cq.tolist() == [1, 0]
    learner = _learner("protonet")
    x = torch.randn(6, F, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for labels in (torch.full((6,), 0.02), torch.tensor([0.0, 0, 0, 0, 0, 1.0])):
        adapted = learner.adapt(x, labels)
        out = adapted.predict(x.numpy())
        assert np.isfinite(out).all() and np.isfinite(adapted.loss_after)
    assert learner.adapt(x, torch.full((6,), 0.02)).predict_row(x[0].numpy()) == pytest.approx(0.02)
    batch = (x[None], torch.full((1, 6), 0.3, dtype=torch.float64), x[None], torch.zeros(1, 6))
    assert np.isfinite(learner.meta_step(*batch))
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())
    # the signal is the expected return: Σ p_k v_k, within the class means' range
    ys = torch.linspace(-1, 1, 6, dtype=torch.float64)
    adapted = learner.adapt(x, ys)
    values = adapted.params["prototypes.values"]
    assert adapted.steps == 0 and adapted.backend == "prototypes"
    assert values.tolist() == pytest.approx([-0.8, 0.0, 0.8])
    assert (np.abs(adapted.predict(x.numpy())) <= 0.8 + 1e-12).all()


def _torch_reference(learner, x, y, rows):
    """The torch forward of the CNP / ProtoNet adaptation (the path before the NumPy one):
    (predictions on rows, loss_before, loss_after)."""
    model = learner.model
    theta = {k: v.detach() for k, v in model.named_parameters()}
    x, y, rows = (torch.as_tensor(a, dtype=learner.dtype) for a in (x, y, rows))
    with torch.no_grad():
        if learner.algorithm == "cnp":
            context = model.encode_with(theta, x, y)
            pred = model.decode_with(theta, rows, context)
            before = float(((model.forward_with(theta, x) - y) ** 2).mean())
            after = float(((model.decode_with(theta, x, context) - y) ** 2).mean())
        else:
            params = {**theta, **prototypes(model, theta, x, y)}
            pred = model.forward_with(params, rows)
            before = float((y**2).mean())
            after = float(((model.forward_with(params, x) - y) ** 2).mean())
    return pred.double().numpy(), before, after


def _supports(n, s=40, seed=0):
    """Support sets with ties and degenerate labels among them: (x (S, F), y (S,)) pairs."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        x, y = rng.standard_normal((s, F)), rng.standard_normal(s)
        if i % 3 == 1:
            y = np.round(y, 1)  # many ties at the terciles
        if i % 5 == 4:
            y[: s // 2] = 0.0
        yield x, y


@pytest.mark.parametrize("algorithm", ["cnp", "protonet"])
def test_numpy_adaptation_equals_the_torch_forward(algorithm):
    rows = np.random.default_rng(9).standard_normal((7, F))
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        learner = _learner(algorithm, dtype=dtype)
        for x, y in _supports(12):
            adapted = learner.adapt(x, y)
            pred, before, after = _torch_reference(learner, x, y, rows)
            scale = np.abs(pred).max()
            np.testing.assert_allclose(adapted.predict(rows), pred, rtol=0, atol=rtol * scale)
            assert adapted.predict_row(rows[0]) == pytest.approx(pred[0], abs=rtol * scale)
            assert adapted.predict_row(rows[0].astype(np.float32)) == pytest.approx(
                pred[0], abs=max(rtol, 1e-4) * scale
            )
            # the torch path on the adapted arrays (params, calling the model) agrees too
            torch_pred = adapted(torch.from_numpy(rows)).double().numpy()
            np.testing.assert_allclose(torch_pred, pred, rtol=0, atol=rtol * scale)
            assert adapted.loss_before == pytest.approx(before, rel=rtol)
            assert adapted.loss_after == pytest.approx(after, rel=rtol)
            assert adapted.dtype == dtype


def test_tercile_classes_equal_label_classes_bit_for_bit():
    rng = np.random.default_rng(3)
    for i in range(400):
        dtype = np.dtype(np.float32 if i % 2 else np.float64)
        y = rng.standard_normal(int(rng.integers(1, 90))) * 10.0 ** rng.integers(-4, 2)
        if i % 3 == 0:
            y = np.round(y, 1)
        y = y.astype(dtype)
        if i % 7 == 0:
            y[: len(y) // 2] = y[0]
        yt = torch.from_numpy(y)
        expected = torch.quantile(yt, yt.new_tensor([1 / 3, 2 / 3]), dim=-1, keepdim=True)
        np.testing.assert_array_equal(terciles_numpy(y), expected.squeeze(-1).numpy())
        emb = rng.standard_normal((len(y), 3)).astype(dtype)
        classes, mask, _ = label_classes(yt)
        ours = prototypes_numpy(emb, y)
        np.testing.assert_array_equal(ours["prototypes.mask"] > 0, mask.numpy())
        onehot = torch.nn.functional.one_hot(classes, 3).to(yt.dtype).T
        counts = onehot.sum(-1).clamp(min=1.0)
        centres = (onehot @ torch.from_numpy(emb) / counts[:, None]).numpy()
        np.testing.assert_allclose(ours["prototypes.centres"], centres, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["cnp", "protonet"])
def test_numpy_theta_follows_updates_and_adapted_models_keep_their_theta(algorithm):
    learner = _learner(algorithm)
    batch = _batch(b=3, s=10)
    x, y, rows = batch[0][0], batch[1][0], batch[2][0].numpy()
    old = learner.adapt(x, y)
    old_pred = old.predict(rows)
    np.testing.assert_array_equal(learner.adapt(x, y).predict(rows), old_pred)  # cached θ
    learner.meta_step(*batch)  # θ changes in place: the copy is refreshed
    new = learner.adapt(x, y)
    np.testing.assert_allclose(new.predict(rows), _torch_reference(learner, x, y, rows)[0])
    assert not np.allclose(new.predict(rows), old_pred)
    np.testing.assert_array_equal(old.predict(rows), old_pred)  # adapted from its own θ
    state = {k: torch.zeros_like(v) for k, v in learner.model.state_dict().items()}
    learner.model.load_state_dict(state)
    np.testing.assert_allclose(
        learner.adapt(x, y).predict(rows), _torch_reference(learner, x, y, rows)[0]
    )


def test_ols_baseline_is_exact_on_noiseless_linear_tasks_and_matches_numpy_lstsq():
    noiseless = RegimeTasks(noise=0.0).fixed(50, 3)
    assert ols_accuracy(*noiseless) == 1.0
    xs, ys, xq, yq = RegimeTasks().fixed(20, 4)
    correct = 0
    for b in range(20):  # an independent per-task fit and binning
        design = np.column_stack([np.ones(len(ys[b])), xs[b].double().numpy()])
        beta = np.linalg.lstsq(design, ys[b].double().numpy(), rcond=None)[0]
        pred = np.column_stack([np.ones(len(yq[b])), xq[b].double().numpy()]) @ beta
        lo, hi = np.quantile(ys[b].double().numpy(), [1 / 3, 2 / 3])
        true = 1 + (yq[b].double().numpy() > hi).astype(int) - (yq[b].double().numpy() < lo)
        correct += int((1 + (pred > hi).astype(int) - (pred < lo) == true).sum())
    assert ols_accuracy(xs, ys, xq, yq) == pytest.approx(correct / yq.numel(), abs=1e-12)
    assert 0.6 < correct / yq.numel() < 1.0  # label noise: informative, not perfect


# ------------------------------------------------------------------- benchmarks
@pytest.fixture(scope="module")
def sinusoid_erm():
    tasks = SinusoidTasks()
    learner = MetaLearner(sinusoid_model("erm", seed=0), algorithm="erm", inner_lr=0.01)
    learner.fit(tasks, 300, batch_size=25, progress=False)
    evaluation = tasks.fixed(100, 1_000_003)
    return evaluation, learner.evaluate(*evaluation, steps=10)


@pytest.mark.parametrize(("algorithm", "inner_lr"), [("cnp", 0.01), ("cavia", 1.0)])
def test_sinusoid_cnp_and_cavia_beat_erm_after_adaptation(algorithm, inner_lr, sinusoid_erm):
    evaluation, erm = sinusoid_erm
    learner = MetaLearner(
        sinusoid_model(algorithm, seed=0), algorithm=algorithm, inner_lr=inner_lr, inner_steps=1
    )
    learner.fit(SinusoidTasks(), 500, batch_size=25, progress=False)
    mse = learner.evaluate(*evaluation, steps=5)
    assert erm > 1.5  # ERM learns the mean function (~0): about the task's variance
    assert mse < 0.5 * erm, (algorithm, mse, erm)


def test_protonet_beats_nearest_class_mean_on_regime_tasks():
    tasks = RegimeTasks()
    evaluation = tasks.fixed(100, 7)
    baseline = nearest_mean_accuracy(*evaluation)
    learner = MetaLearner(ProtoNet(tasks.features, seed=0), algorithm="protonet")
    learner.fit(tasks, 400, batch_size=16, progress=False)
    accuracy = prototype_accuracy(learner, *evaluation)
    assert 0.3 < baseline < 0.5  # chance is 1/3: the nuisance dims drown the raw means
    assert accuracy > baseline + 0.2, (accuracy, baseline)


def test_the_python_default_inner_rate_is_the_command_line_s():
    """MetaLearner(...) without inner_lr takes the algorithm's default, as the CLI does."""
    from metabt.config.defaults import DEMO
    from metabt.learn import MetaLearner
    from metabt.learn.models import MLP, build_model
    from metabt.learn.names import INNER_LR, default_inner_lr

    assert MetaLearner(MLP(4, (8,))).inner_lr == INNER_LR == DEMO.inner_rate == 0.02
    cavia = MetaLearner(build_model({"type": "cavia", "n_features": 4}), algorithm="cavia")
    assert cavia.inner_lr == default_inner_lr("cavia") == DEMO.with_(algorithm="cavia").inner_rate
