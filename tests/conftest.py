"""Shared fixtures: short slices of the real sample data and a small trained learner."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from metabt.data.ohlcv import load_ohlcv, sample_files
from metabt.features.spec import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP

# Tests run on one thread: small models gain nothing from more, and results stay comparable.
torch.set_num_threads(1)

# The trial ledger of the commands the tests run (and of their subprocesses): a fresh file
# per test process, never the user's ~/.metabt/ledger.sqlite. A test that counts passes
# its own --ledger.
os.environ["METABT_LEDGER"] = str(Path(tempfile.mkdtemp(prefix="metabt-ledger-")) / "l.sqlite")
# and the HMAC key of resumable runs' unit files: never the user's ~/.metabt/resume.key
os.environ["METABT_RESUME_KEY"] = str(Path(tempfile.mkdtemp(prefix="metabt-key-")) / "key")
# no training cache: every backtest trains (tests/test_training_cache.py turns it on)
os.environ["METABT_CACHE"] = "off"

TRAIN_END = pd.Timestamp("2010-01-01")


@pytest.fixture
def trusting(monkeypatch):
    """``metabt.trust`` for one test: the trusted set and METABT_TRUST are restored after."""
    import os

    from metabt import _trust

    monkeypatch.setattr(_trust, "_trusted", set(_trust._trusted))
    monkeypatch.setenv(_trust.ENV_VAR, os.environ.get(_trust.ENV_VAR, ""))
    return _trust.trust


@pytest.fixture(scope="session")
def sample_frames() -> dict[str, pd.DataFrame]:
    """Two real sample assets, 2008-2011 (about 1,000 bars each)."""
    files = {p.stem: p for p in sample_files()}
    return {
        name: load_ohlcv(files[name]).loc["2008-01-01":"2011-12-31"] for name in ("AAPL", "IBM")
    }


@pytest.fixture(scope="session")
def small_learner(sample_frames) -> MetaLearner:
    """A MAML MLP meta-trained for a few steps on data strictly before TRAIN_END."""
    spec = FeatureSpec()
    tasks = TaskSampler.from_frames(sample_frames, spec, support=40, query=10, end=TRAIN_END)
    learner = MetaLearner(
        MLP(spec.n_features, (16, 16), seed=0), inner_steps=3, seed=0, feature_spec=spec
    )
    learner.fit(tasks, 20, batch_size=8, progress=False)
    return learner


@pytest.fixture
def ray():
    """The ``ray`` module, which ``make test`` installs (the ``ray`` extra).

    Missing, the test fails rather than skips: CI must run the real local Ray runs.
    """
    try:
        import ray
    except ImportError:
        pytest.fail("ray is not installed: `make test` installs it (pip install -e '.[dev,ray]')")
    return ray
