"""Shared fixtures: short slices of the real sample data and a small trained learner."""

from __future__ import annotations

import os
import shutil
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
# its own --ledger. Both folders are removed when the test process ends (pytest_unconfigure).
_TEMP_DIRS = [Path(tempfile.mkdtemp(prefix="metabt-ledger-"))]
os.environ["METABT_LEDGER"] = str(_TEMP_DIRS[-1] / "l.sqlite")
# and the HMAC key of resumable runs' unit files: never the user's ~/.metabt/resume.key
_TEMP_DIRS.append(Path(tempfile.mkdtemp(prefix="metabt-key-")))
os.environ["METABT_RESUME_KEY"] = str(_TEMP_DIRS[-1] / "key")
# no training cache: every backtest trains (tests/test_training_cache.py turns it on)
os.environ["METABT_CACHE"] = "off"


def pytest_unconfigure(config):
    """Remove this process's ledger and key folders (each xdist worker made its own)."""
    for folder in _TEMP_DIRS:
        shutil.rmtree(folder, ignore_errors=True)


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


# The longest tests (measured on 2 workers, 20-130 s each), longest first: each starts at
# the beginning of the run instead of last on one worker while the other idles. `-n 2`
# distributes by work stealing (`--dist worksteal` in pyproject.toml): an idle worker takes
# the end of the other's queue, so the rest balances as it goes. Only whole groups that
# share a module-scoped fixture move (test_experiments' serial_run users together).
LONGEST_FIRST = (
    "tests/test_readme.py::test_readme_results_match_the_commands",
    "tests/test_cli.py::test_compare_writes_table_tearsheets_and_index",
    "tests/test_walkforward.py::test_walkforward_on_local_processes_equals_serial_bit_for_bit",
    "tests/test_docs.py::test_readme_bring_your_own_commands_run",
    "tests/test_cli.py::test_compare_runs_cavia_and_online_meta_updates_side_by_side",
    "tests/test_cli.py::test_walkforward_never_trains_on_its_own_or_later_data",
    "tests/test_experiments.py::test_compare_trains_the_roster_part_by_part_exactly_as_train_roster",
    "tests/test_experiments.py::test_compare_on_local_processes_equals_serial_bit_for_bit",
    "tests/test_experiments.py::test_compare_on_a_local_ray_equals_serial_bit_for_bit",
    "tests/test_experiments.py::test_compare_backtests_what_needs_no_meta_learner_while_it_trains",
    "tests/test_cli.py::test_the_sharpe_objective_trains_and_backtests_for_every_gradient_algorithm",
    "tests/test_resume.py::test_a_compare_killed_with_sigkill_resumes_to_the_uninterrupted_results",
    "tests/test_cli.py::test_train_killed_with_sigkill_resumes_to_the_uninterrupted_result",
    "tests/test_resume.py::test_a_walkforward_resumes_from_its_finished_units",
    "tests/test_cli.py::test_fuzz_malformed_inputs_exit_2_with_one_line_through_the_console_script",
)


def pytest_collection_modifyitems(config, items):
    """Run the LONGEST_FIRST tests first, in that order; the rest keep their order."""
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("[")[0], len(rank)))
