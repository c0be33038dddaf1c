"""metabt.learn.checkpoint: round trips; corrupt, foreign or mismatched files are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metabt.errors import CheckpointError, ConfigError
from metabt.features.spec import FeatureSpec
from metabt.learn.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP


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
    ckpt = read_checkpoint(path)  # the file layout old checkpoints share
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["format_version"] == CHECKPOINT_VERSION
    assert set(ckpt) == {
        "format",
        "format_version",
        "model_config",
        "hparams",
        "state",
        "feature_spec",
        "train_range",
        "step_count",
        "train_config",
        "versions",
        "fit_state",
    }


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


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda c: c["state"].__setitem__(
                next(iter(c["state"])), torch.full((2,), float("nan"))
            ),
            "NaN or infinite",
        ),
        (lambda c: c["hparams"].__setitem__("dtype", "int8"), "dtype"),
        (lambda c: c.__setitem__("train_range", ["garbage", 7]), "training range"),
        (lambda c: c.__setitem__("train_range", ["2008-01-01", "2001-01-01"]), "training range"),
        (lambda c: c.__setitem__("train_config", "oops"), "train_config"),
    ],
)
def test_malformed_or_non_finite_checkpoints_are_refused(tmp_path, edit, match):
    from metabt.errors import CheckpointError
    from metabt.learn.learner import MetaLearner

    _, path = _trained(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    if "NaN" in match:  # a same-shaped tensor full of NaN
        key = next(iter(ckpt["state"]))
        ckpt["state"][key] = torch.full_like(ckpt["state"][key], float("nan"))
    else:
        edit(ckpt)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match=match):
        MetaLearner.load(bad)


def test_a_pickle_is_refused_without_suggesting_an_unsafe_load(tmp_path):
    """torch's own message advises weights_only=False, which would run the file's code."""
    path = tmp_path / "evil.pt"
    torch.save({"format": "metabt-checkpoint", "obj": ConfigError("x")}, path)
    with pytest.raises(CheckpointError) as info:
        MetaLearner.load(path)
    assert "weights_only=False" not in str(info.value) and "unsafe" in str(info.value)


# ------------------------------------------------------------------ user models
try:  # the repository root is on sys.path under `python -m pytest` (the Makefile's way)
    import tests.nets as nets
except ImportError:  # pragma: no cover - plain `pytest`: tests/ itself is on sys.path
    import nets  # type: ignore[no-redef]

NETS = nets.__name__


@pytest.mark.parametrize(("algorithm", "dtype"), [("maml", "float32"), ("anil", "float64")])
def test_a_user_model_round_trips_through_its_import_path(tmp_path, algorithm, dtype):
    from metabt.learn.models import user_model

    model = user_model(f"{NETS}:TwoLayer", n_features=4, hidden=8, seed=3)
    head = "body" if algorithm == "anil" else None  # a named head is stored too
    learner = MetaLearner(model.to(getattr(torch, dtype)), algorithm=algorithm, head=head)
    g = torch.Generator().manual_seed(0)
    b = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    learner.meta_step(b(2, 6, 4), b(2, 6), b(2, 4, 4), b(2, 4))
    path = learner.save(tmp_path / "user.pt")
    ckpt = read_checkpoint(path)
    assert ckpt["model_config"] == {
        "type": f"{NETS}:TwoLayer",
        "n_features": 4,
        "hidden": 8,
        "seed": 3,
    }
    loaded = MetaLearner.load(path)
    assert type(loaded.model) is nets.TwoLayer and loaded.head == head
    assert loaded.adapt_names == learner.adapt_names and loaded.dtype == learner.dtype
    x = torch.randn(5, 4, generator=g, dtype=learner.dtype)
    torch.testing.assert_close(loaded.model(x), learner.model(x), rtol=0, atol=0)
    xs, ys = x, torch.randn(5, generator=g, dtype=learner.dtype)
    assert loaded.adapt(xs, ys).predict(x.numpy()).tolist() == (
        learner.adapt(xs, ys).predict(x.numpy()).tolist()
    )


def test_models_that_cannot_be_rebuilt_by_name_are_not_saved(tmp_path):
    # learners built with check_saveable=False (refused at construction by default)
    from torch import nn

    class Local(nn.Module):
        def __init__(self, n_features=4):
            super().__init__()
            self.out = nn.Linear(n_features, 1)

        def forward(self, x):
            return self.out(x)

    with pytest.raises(CheckpointError, match=r"inside a function.*move it to an importable"):
        MetaLearner(Local(), check_saveable=False).save(tmp_path / "local.pt")
    Main = type("Main", (Local,), {"__module__": "__main__", "__qualname__": "Main"})
    with pytest.raises(CheckpointError, match=r"__main__:Main is defined in __main__"):
        MetaLearner(Main(), check_saveable=False).save(tmp_path / "main.pt")
    plain = nn.Sequential(nn.Linear(4, 1))
    fix = r"class Net\(nn.Sequential\).*user_model\('mypkg.nets:Net'"
    with pytest.raises(CheckpointError, match=fix):
        MetaLearner(plain, check_saveable=False).save(tmp_path / "plain.pt")
    unrecorded = nets.TwoLayer(4)  # importable, but built without user_model
    with pytest.raises(CheckpointError, match="constructor arguments"):
        MetaLearner(unrecorded, check_saveable=False).save(tmp_path / "unrecorded.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"type": "no_such_pkg.nets:TwoLayer"}, r"no_such_pkg.*PYTHONPATH"),
        ({"type": f"{NETS}:TwoLayr"}, r"did you mean 'TwoLayer'"),
        ({"type": "os:system"}, "not a torch.nn.Module subclass"),
        ({"hidden": torch.tensor(8)}, "JSON primitives"),
        ({"hidden": 9}, r"weights do not fit the user model .*size mismatch"),
        ({"outputs": 2}, r"returned shape \(2, 2\)"),
    ],
)
def test_a_user_model_checkpoint_that_cannot_be_rebuilt_raises(tmp_path, edit, match, trusting):
    from metabt.learn.models import user_model

    learner = MetaLearner(user_model(f"{NETS}:TwoLayer", n_features=4, hidden=8))
    path = learner.save(tmp_path / "user.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"].update(edit)
    trusting(str(ckpt["model_config"]["type"]).partition(":")[0])  # the user's word
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match=match) as info:
        MetaLearner.load(bad)
    assert "bad.pt" in str(info.value)


def test_a_checkpoint_whose_feature_code_is_missing_or_changed_names_it(tmp_path, trusting):
    """User features are loaded by import path; a missing module or changed code is refused."""
    import torch

    from metabt.errors import CheckpointError
    from metabt.features.spec import FeatureSpec
    from metabt.learn.learner import MetaLearner
    from metabt.learn.models import MLP

    trusting("examples")
    spec = FeatureSpec().with_features('examples.rsi_feature:rsi{"window": 14}')
    path = MetaLearner(MLP(spec.n_features, (8,)), feature_spec=spec).save(tmp_path / "m.pt")
    assert MetaLearner.load(path).feature_spec == spec
    ckpt = torch.load(path, weights_only=True)
    ckpt["feature_spec"]["custom"][0]["import_path"] = "no_such_module_xyz:rsi"
    torch.save(ckpt, tmp_path / "missing.pt")
    trusting("no_such_module_xyz")
    with pytest.raises(CheckpointError, match="no_such_module_xyz"):
        MetaLearner.load(tmp_path / "missing.pt")
    ckpt["feature_spec"]["custom"][0]["import_path"] = "examples.rsi_feature:rsi"
    ckpt["feature_spec"]["custom"][0]["sha256"] = "0" * 64
    torch.save(ckpt, tmp_path / "changed.pt")
    with pytest.raises(CheckpointError, match="changed"):
        MetaLearner.load(tmp_path / "changed.pt")


def test_a_checkpoint_that_would_unpack_past_the_limit_is_refused_before_torch_load(tmp_path):
    """A deflated zip of 50 MB of zeros is 50 KB on disk: its declared sizes are checked
    before torch.load unpacks anything (here against a 10 MB limit, and the real 1 GB
    limit passes an ordinary checkpoint)."""
    import zipfile

    from metabt.errors import CheckpointError
    from metabt.learn import checkpoint

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w") as entry:
            chunk = bytes(1 << 20)
            for _ in range(50):
                entry.write(chunk)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match=r"would unpack to 52,428,800 bytes"):
        checkpoint._check_archive(bomb, limit=10 << 20)
    checkpoint._check_archive(bomb)  # under the real limit: left to torch.load
    with pytest.raises(CheckpointError):
        checkpoint.read_checkpoint(bomb)  # not a checkpoint: one clear error
