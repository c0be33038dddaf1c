"""metabt.checkpoint: round trips; corrupt, foreign or mismatched files raise CheckpointError."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metabt.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint
from metabt.errors import CheckpointError, ConfigError
from metabt.features import FeatureSpec
from metabt.meta import MetaLearner
from metabt.models import MLP


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
    from metabt.meta import MetaLearner

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
