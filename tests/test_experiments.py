"""experiments: settings refuse short histories before any work; results equal on every executor."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from metabt.config import DEMO
from metabt.errors import ConfigError, DataError
from metabt.experiments import Comparison, RunSettings, compare, rejection_warnings
from metabt.recipe import train_roster


def test_run_settings_refuse_a_history_too_short_before_any_work(sample_frames):
    frames = {"AAPL": sample_frames["AAPL"].loc["2010-11-01":"2011-03-31"]}
    settings = RunSettings(frames=frames, train_frames=frames, start=pd.Timestamp("2011-01-03"))
    with pytest.raises(DataError, match=r"AAPL: \d+ bars to feed .* needs at least 200"):
        settings.check_history(roster=False)
    with pytest.raises(DataError, match="RecursiveLeastSquares"):
        settings.check_history(roster=True)
    long = RunSettings(
        frames=sample_frames, train_frames=sample_frames, start=pd.Timestamp("2010-01-04")
    )
    long.check_history(roster=True)  # 300 bars of warm-up and two years: enough


def test_run_settings_refuse_an_end_before_the_start(sample_frames):
    with pytest.raises(ConfigError, match="swap them"):
        RunSettings(
            frames=sample_frames,
            train_frames=sample_frames,
            start=pd.Timestamp("2011-01-03"),
            end=pd.Timestamp("2010-01-04"),
        )


# ---- the units of a comparison give the same results on every executor

SMALL = {"meta_steps": 3, "batch_size": 4, "val_years": 0.5, "hidden": (8, 8), "inner_steps": 1}


def _timeless(lines: list[str]) -> list[str]:
    """Log lines without their wall times ("in 1.2s"), which differ from run to run."""
    return [re.sub(r"\d+\.\d+s\b", "Ts", line) for line in lines]


@pytest.fixture(scope="module")
def small_settings(sample_frames) -> RunSettings:
    """Two assets, two months of test, learners trained for three steps."""
    return RunSettings(
        frames=sample_frames,
        train_frames=sample_frames,
        start=pd.Timestamp("2011-01-03"),
        end=pd.Timestamp("2011-02-28"),
        cfg=DEMO.with_(**SMALL),
    )


@pytest.fixture(scope="module")
def serial_run(small_settings) -> tuple[Comparison, list[str]]:
    lines: list[str] = []
    return compare(small_settings, progress=False, log=lines.append), lines


def _assert_identical(a: Comparison, b: Comparison) -> None:
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    pd.testing.assert_frame_equal(a.assets, b.assets, check_exact=True)
    assert a.notes == b.notes and a.verdicts == b.verdicts
    for x, y in zip(a.results, b.results, strict=True):
        assert x.name == y.name and x.returns.equals(y.returns), x.name
        assert pd.Series(x.metrics).equals(pd.Series(y.metrics)), x.name  # NaN == NaN


@pytest.mark.slow
def test_compare_trains_the_roster_part_by_part_exactly_as_train_roster(small_settings, serial_run):
    comparison, lines = serial_run
    models = comparison.runs[0].models
    logged: list[str] = []
    again = train_roster(
        small_settings.train_frames,
        small_settings.cfg,
        small_settings.start,
        progress=False,
        log=logged.append,
    )
    assert (models.ridge_alpha, models.rls_forgetting) == (again.ridge_alpha, again.rls_forgetting)
    assert models.selection == again.selection
    for part in ("meta", "erm", "scratch"):
        ours, theirs = getattr(models, part), getattr(again, part)
        assert ours.fit == theirs.fit and ours.val_loss == theirs.val_loss
        for key, value in theirs.learner.model.state_dict().items():
            assert torch.equal(ours.learner.model.state_dict()[key], value), (part, key)
    assert _timeless(lines) == _timeless(logged)
    assert list(comparison.table.index)[:2] == ["MetaStrategy", "MetaDrift"]


@pytest.mark.slow
def test_compare_on_local_processes_equals_serial_bit_for_bit(small_settings, serial_run, tmp_path):
    lines: list[str] = []
    processes = compare(
        small_settings, progress=False, log=lines.append, executor="process", workers=2
    )
    _assert_identical(serial_run[0], processes)
    assert _timeless(lines) == _timeless(serial_run[1])
    # the results came back through pickle whole: tearsheets and warnings still work
    assert rejection_warnings(processes.results) == rejection_warnings(serial_run[0].results)
    page = processes.results[0].tearsheet(tmp_path / "MetaStrategy.html")
    assert page.stat().st_size > 10_000


@pytest.mark.slow
def test_compare_on_a_local_ray_equals_serial_bit_for_bit(small_settings, serial_run):
    ray = pytest.importorskip("ray")
    on_ray = compare(small_settings, progress=False, executor="ray", workers=2)
    _assert_identical(serial_run[0], on_ray)
    assert not ray.is_initialized()  # the Ray it started is shut down


def test_compare_refuses_a_bad_executor_before_any_work(small_settings):
    with pytest.raises(ConfigError, match="did you mean 'serial'"):
        compare(small_settings, progress=False, executor="serail")
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        compare(small_settings, progress=False, executor="process", workers=0)
