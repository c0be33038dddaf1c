"""User models (issue 24): refused at construction when unsaveable; fast paths equal the reference.

The fast paths of a user's ``nn.Module`` (the dense kernel of an ``nn.Sequential``, the
module runner, ``vmap`` over tasks, the loop fallback) against the ``torch.autograd``
reference (``reference=True``), in float64.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from metabt.errors import ConfigError
from metabt.learn.algorithms.gradient import VMAP_MIN_TASKS
from metabt.learn.algorithms.inner import one_thread
from metabt.learn.kernels.fused import SequentialKernel, kernel_for
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP, check_saveable, user_model

try:  # the repository root is on sys.path under `python -m pytest`
    import tests.nets as nets
except ImportError:  # pragma: no cover - plain `pytest`
    import nets  # type: ignore[no-redef]

NETS = nets.__name__
F, W = 3, 3  # features per bar, window of the sequence models
TOL = {"rtol": 1e-10, "atol": 1e-12}


# ------------------------------------------------------------ save-ability at construction
def test_unsaveable_models_are_refused_at_construction_with_the_fix():
    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = nn.Linear(F, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(x)

    Main = type("Main", (Local,), {"__module__": "__main__", "__qualname__": "Main"})
    cases = [
        (Local(), r"Local is defined inside a function.*user_model\('mypkg.nets:Local'"),
        (Main(), r"__main__:Main is defined in __main__.*importable module"),
        (nn.Sequential(nn.Linear(F, 1)), r"not built by .*class Net\(nn.Sequential\)"),
        (nets.TwoLayer(F), r"TwoLayer .*constructor arguments.*user_model\('tests?\.?nets"),
    ]
    for model, match in cases:
        with pytest.raises(ConfigError, match=match) as info:
            MetaLearner(model)  # before any fit: the construction fails
        assert "check_saveable=False" in str(info.value)
        learner = MetaLearner(model, check_saveable=False)  # the explicit opt-out works
        assert learner.adapt(np.zeros((4, F)), np.zeros(4)).steps == learner.inner_steps
    renamed = user_model(f"{NETS}:TwoLayer", n_features=F)
    renamed._metabt_config["type"] = f"{NETS}:Dropper"  # recorded under another class
    with pytest.raises(ConfigError, match=r"built as .*Dropper.* but its class is"):
        MetaLearner(renamed)


def test_saveable_models_pass_the_construction_check():
    model = user_model(f"{NETS}:ReluMLP", n_features=F, hidden=[4])
    assert check_saveable(model) == {"type": f"{NETS}:ReluMLP", "n_features": F, "hidden": [4]}
    assert check_saveable(MLP(F))["type"] == "mlp"
    MetaLearner(model)
    MetaLearner(MLP(F))


# ---------------------------------------------------------------- fast path == reference
def _learner(path: str, algorithm: str = "maml", **kwargs: object) -> MetaLearner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # engine fallback, vmap perf notes
        model = user_model(path, n_features=F, **kwargs).double()
        learner = MetaLearner(model, algorithm=algorithm, inner_lr=0.1, inner_steps=3)
    for p in learner.inner_lrs.values():  # Meta-SGD: per-element rates, not all equal
        p.data.uniform_(0.05, 0.2, generator=torch.Generator().manual_seed(0))
    return learner


def _assert_same(fast: Any, reference: Any, rows: np.ndarray) -> None:
    """Losses, φ and predictions of two adapted models agree to ~1e-10."""
    assert fast.loss_before == pytest.approx(reference.loss_before, rel=1e-10)
    assert fast.loss_after == pytest.approx(reference.loss_after, rel=1e-10)
    assert fast.loss_after < fast.loss_before
    for name, value in reference.params.items():
        torch.testing.assert_close(fast.params[name], value, **TOL)
    np.testing.assert_allclose(fast.predict(rows), reference.predict(rows), **TOL)
    assert fast.predict_row(rows[1]) == pytest.approx(reference.predict_row(rows[1]), rel=1e-10)


CASES = {  # name -> (path, kwargs, algorithm, single backend, batch backend)
    "mlp-relu": ("ReluMLP", {"hidden": [5, 4]}, "maml", "kernel", "kernel"),
    "mlp-tanh-metasgd": (
        "ReluMLP",
        {"hidden": [5], "activation": "tanh"},
        "metasgd",
        "kernel",
        "kernel",
    ),
    "gru": ("CellGRU", {"hidden": 4, "window": W}, "maml", "module", "vmap"),
    "gru-metasgd": ("CellGRU", {"hidden": 4, "window": W}, "metasgd", "module", "vmap"),
    "conv": ("WindowConv", {"channels": 4, "kernel": 2, "window": W}, "maml", "module", "vmap"),
    "conv-anil": (
        "WindowConv",
        {"channels": 4, "kernel": 2, "window": W},
        "anil",
        "module",
        "vmap",
    ),
    # nn.GRU: vmap cannot batch it, so engine "higher" and the loop over tasks
    "vmap-refused": ("TorchGRU", {"hidden": 4, "window": W}, "maml", "module", "loop"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_paths_equal_the_autograd_reference(case):
    path, kwargs, algorithm, single, batched = CASES[case]
    assert isinstance(kwargs, dict) and VMAP_MIN_TASKS == 4
    learner = _learner(f"{NETS}:{path}", algorithm, **kwargs)
    width = F * int(kwargs.get("window", 1))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 8, width)), rng.normal(size=(4, 8))  # B = VMAP_MIN_TASKS
    rows = rng.normal(size=(4, width))
    fast, reference = learner.adapt(x[0], y[0]), learner.adapt(x[0], y[0], reference=True)
    assert (fast.backend, reference.backend) == (single, "autograd")
    _assert_same(fast, reference, rows)
    again = learner.adapt(x[1], y[1])  # the runner reloads θ: the first φ is not touched
    _assert_same(fast, reference, rows)
    assert again.loss_before != fast.loss_before
    batch = learner.adapt_batch(x, y)
    ref_batch = learner.adapt_batch(x, y, reference=True)
    assert (batch.backend, ref_batch.backend) == (batched, "loop")
    np.testing.assert_allclose(batch.loss_before, ref_batch.loss_before, **TOL)
    np.testing.assert_allclose(batch.loss_after, ref_batch.loss_after, **TOL)
    np.testing.assert_allclose(batch.predict_rows(rows), ref_batch.predict_rows(rows), **TOL)
    for b in range(4):
        _assert_same(batch.model(b), ref_batch.model(b), rows)
    few = learner.adapt_batch(x[:2], y[:2])  # below VMAP_MIN_TASKS: one fast adapt per task
    assert few.backend == ("kernel" if batched == "kernel" else "loop")
    np.testing.assert_allclose(few.predict_rows(rows[:2]), batch.predict_rows(rows)[:2], **TOL)
    if case == "vmap-refused":
        assert learner.engine == "higher"


def test_the_runner_follows_theta_and_its_dtype():
    learner = _learner(f"{NETS}:WindowConv", channels=3, kernel=2, window=W)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, F * W)), rng.normal(size=6)
    before = learner.adapt(x, y)
    with torch.no_grad():  # an outer step moves θ in place
        for p in learner.model.parameters():
            p.add_(0.05)
    moved, reference = learner.adapt(x, y), learner.adapt(x, y, reference=True)
    assert moved.loss_before != before.loss_before
    assert moved.loss_after == pytest.approx(reference.loss_after, rel=1e-10)
    learner.model.float()  # θ converted: the runner is rebuilt in the new dtype
    single = learner.adapt(x.astype(np.float32), y.astype(np.float32))
    assert single.backend == "module" and single.params["head.weight"].dtype == torch.float32
    assert isinstance(single.predict_row(x[0].astype(np.float32)), float)


def test_the_runner_follows_train_and_eval_mode():
    with pytest.warns(UserWarning, match="cannot batch Dropper"):  # dropout: engine higher
        learner = MetaLearner(user_model(f"{NETS}:Dropper", n_features=F, hidden=8).double())
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, F)), rng.normal(size=6)

    def both() -> tuple[float, float]:
        torch.manual_seed(5)  # the same dropout masks on both paths
        fast = learner.adapt(x, y)
        torch.manual_seed(5)
        return fast.loss_after, learner.adapt(x, y, reference=True).loss_after

    trained = both()
    assert trained[0] == pytest.approx(trained[1], rel=1e-10)
    learner.model.eval()  # no dropout now, on the runner's copy too
    evaluated = both()
    assert evaluated[0] == pytest.approx(evaluated[1], rel=1e-10)
    assert evaluated[0] != pytest.approx(trained[0], rel=1e-6)


def test_the_runner_cache_does_not_keep_models_alive():
    import gc
    import weakref

    from metabt.learn.algorithms import inner

    model = user_model(f"{NETS}:WindowConv", n_features=F, channels=2, kernel=2, window=W)
    learner = MetaLearner(model)
    learner.adapt(np.zeros((5, F * W)), np.zeros(5)).predict_row(np.zeros(F * W))
    assert model in inner._RUNNERS
    alive = weakref.ref(model)
    del model, learner
    gc.collect()
    assert alive() is None


def test_one_thread_restores_the_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError), one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        learner = _learner(f"{NETS}:CellGRU", hidden=3, window=W)
        learner.adapt(np.ones((5, F * W)), np.ones(5)).predict_row(np.ones(F * W))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------- which modules get the kernel
def test_only_plain_dense_stacks_get_the_sequential_kernel():
    torch.manual_seed(0)
    ok = nn.Sequential(
        nn.Linear(F, 4),
        nn.LeakyReLU(0.1),
        nn.Linear(4, 4),  # linear after linear: an identity activation between
        nn.Linear(4, 3),
        nn.Sigmoid(),
        nn.Linear(3, 1),
    )
    assert isinstance(kernel_for(ok), SequentialKernel)

    class Scaled(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    hooked = nn.Sequential(nn.Linear(F, 1))
    hooked.register_forward_hook(lambda m, i, o: o * 2)
    refused = [
        Scaled(nn.Linear(F, 1)),  # its own forward pass
        hooked,  # a hook changes the output
        nn.Sequential(nn.Linear(F, 4, bias=False), nn.ReLU(), nn.Linear(4, 1)),
        nn.Sequential(nn.Linear(F, 4), nn.Softplus(), nn.Linear(4, 1)),  # no kernel for it
        nn.Sequential(nn.Linear(F, 1), nn.Tanh()),  # not a linear head
        nn.Sequential(nn.Linear(F, 2)),  # not a scalar output
        nn.Sequential(nn.Linear(F, 4), nn.LeakyReLU(2.0), nn.Linear(4, 1)),
        nn.Sequential(nn.Linear(F, 4), nn.LayerNorm(4), nn.Linear(4, 1)),
    ]
    assert [kernel_for(m) for m in refused] == [None] * len(refused)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, F)), rng.normal(size=7)
    learner = MetaLearner(ok.double(), inner_lr=0.1, check_saveable=False)
    fast, reference = learner.adapt(x, y), learner.adapt(x, y, reference=True)
    assert fast.backend == "kernel"
    _assert_same(fast, reference, x)
    xb, yb = np.stack([x, x[::-1]]), np.stack([y, y[::-1] + 1])
    batch, ref_batch = learner.adapt_batch(xb, yb), learner.adapt_batch(xb, yb, reference=True)
    assert batch.backend == "kernel"
    np.testing.assert_allclose(batch.loss_after, ref_batch.loss_after, **TOL)
    np.testing.assert_allclose(batch.predict_rows(x[:2]), ref_batch.predict_rows(x[:2]), **TOL)
