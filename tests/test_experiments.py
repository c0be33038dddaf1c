"""experiments: settings refuse short histories before any work; results equal on every executor.

The roster is declared once (metabt.experiments.roster.ROSTER); the scheduler
(metabt.experiments.scheduler) starts each backtest as soon as the parts it needs are done.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch

import metabt.experiments.scheduler as scheduler
from metabt.config.defaults import DEMO
from metabt.errors import ConfigError, DataError
from metabt.experiments.compare import Comparison, compare, rejection_warnings
from metabt.experiments.executors import Executor, ExecutorSpec, run_unit
from metabt.experiments.parts import ROSTER_PARTS, train_roster
from metabt.experiments.roster import ROSTER, STRATEGY_NEEDS, roster, roster_entries, untrained
from metabt.experiments.settings import RunSettings


def test_run_settings_refuse_a_history_too_short_before_any_work(sample_frames):
    frames = {"AAPL": sample_frames["AAPL"].loc["2010-11-01":"2011-03-31"]}
    settings = RunSettings(frames=frames, train_frames=frames, start=pd.Timestamp("2011-01-03"))
    # the main run needs MetaStrategy's first adaptation (its SmaCross is left out, not
    # refused, when the data are too short for it: tests/test_cli.py's hourly run)
    with pytest.raises(DataError, match=r"AAPL: \d+ bars to feed .* needs at least 126"):
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
    assert models.gbm.learner.booster.model_to_string() == (
        again.gbm.learner.booster.model_to_string()
    )
    for part in ("meta", "erm", "erm_static", "scratch"):
        ours, theirs = getattr(models, part), getattr(again, part)
        assert ours.fit == theirs.fit and ours.val_loss == theirs.val_loss
        for key, value in theirs.learner.model.state_dict().items():
            assert torch.equal(ours.learner.model.state_dict()[key], value), (part, key)
    # the training summaries, then each signal-trading strategy's smoothing choice
    assert _timeless(lines)[: len(logged)] == _timeless(logged)
    smoothing = lines[len(logged) :]
    assert smoothing[0].startswith("smoothing (bars of signals averaged) chosen per strategy")
    chosen = {r.name: r.smoothing for r in comparison.results if r.smoothing is not None}
    assert smoothing[1:] == ["  " + chosen[name].line(name) for name in chosen]
    assert "BuyAndHold" not in chosen and {"MetaStrategy", "SmaCross"} <= set(chosen)
    for name, choice in chosen.items():
        assert comparison.table.loc[name, "smooth"] == choice.smooth
        assert choice.smooth in small_settings.cfg.smooth_grid
    assert list(comparison.table.index)[:2] == ["MetaStrategy", "MetaDrift"]


@pytest.mark.slow
def test_compare_on_local_processes_equals_serial_bit_for_bit(small_settings, serial_run, tmp_path):
    lines: list[str] = []
    processes = compare(
        small_settings, progress=False, log=lines.append, executor=ExecutorSpec("process", 2)
    )
    _assert_identical(serial_run[0], processes)
    assert _timeless(lines) == _timeless(serial_run[1])
    # the results came back through pickle whole: tearsheets and warnings still work
    assert rejection_warnings(processes.results) == rejection_warnings(serial_run[0].results)
    page = processes.results[0].tearsheet(tmp_path / "MetaStrategy.html")
    assert page.stat().st_size > 10_000


@pytest.mark.slow
def test_compare_on_a_local_ray_equals_serial_bit_for_bit(small_settings, serial_run, ray):
    on_ray = compare(small_settings, progress=False, executor=ExecutorSpec("ray", 2))
    _assert_identical(serial_run[0], on_ray)
    assert not ray.is_initialized()  # the Ray it started is shut down


def test_an_executor_spec_refuses_a_bad_choice_before_any_work():
    with pytest.raises(ConfigError, match="did you mean 'serial'"):
        ExecutorSpec("serail")
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        ExecutorSpec("process", 0)
    with pytest.raises(ConfigError, match="only used by executor 'ray'"):
        ExecutorSpec("process", 2, "auto")


# ---- each backtest starts as soon as the training parts it needs are done


def test_every_roster_strategy_declares_exactly_the_training_parts_it_uses():
    for cfg in (DEMO, DEMO.with_(online_meta_lr=0.01)):  # MetaOnline too
        names = [name for name, _, _ in roster(scheduler._partial_models({}), cfg)]
        assert "MetaOnline" in names or cfg.online_meta_lr == 0
        assert names == [entry.name for entry in roster_entries(cfg)]
        for entry in roster_entries(cfg):
            assert set(entry.needs) <= set(ROSTER_PARTS)
            assert STRATEGY_NEEDS[entry.name] == entry.needs  # derived, one declaration
            done: dict[str, Any] = {  # stand-ins of the shape of each part's result
                part: (1.0, 0.99, {}) if part == "linear" else SimpleNamespace(learner=object())
                for part in entry.needs
            }
            scheduler._roster_entry(entry, done, cfg)  # nothing it uses is missing
            for part in entry.needs:  # and it uses every part it declares
                with pytest.raises(RuntimeError, match=f"uses the training part.*{part}"):
                    scheduler._roster_entry(
                        entry, {p: done[p] for p in entry.needs if p != part}, cfg
                    )


def test_the_untrained_column_follows_the_declared_learner():
    def learner(flag: bool) -> SimpleNamespace:
        return SimpleNamespace(untrained=flag, learner=object())

    models = SimpleNamespace(
        meta=learner(True),
        erm=learner(False),
        erm_static=learner(False),
        scratch=learner(True),
        gbm=SimpleNamespace(learner=object()),
    )
    flags = untrained(models)  # type: ignore[arg-type]
    assert set(flags) == {entry.name for entry in ROSTER}
    assert {name for name, flag in flags.items() if flag} == {
        "MetaStrategy",
        "MetaOnline",
        "MetaDrift",
        "StaticModel",
    }  # ScratchAdapt trades a random initialisation on purpose: never "untrained"
    models.erm = learner(True)
    assert flags["ErmAdapt"] is False and untrained(models)["ErmAdapt"] is True  # type: ignore[arg-type]
    assert untrained(models)["ErmStatic"] is False  # type: ignore[arg-type]  # its own part
    models.erm_static = learner(True)
    assert untrained(models)["ErmStatic"] is True  # type: ignore[arg-type]


def test_the_roster_has_the_controls_lightgbm_and_erm_selected_twice():
    names = [entry.name for entry in roster_entries(DEMO)]
    assert names[-5:] == [
        "LightGBM",
        "TimeSeriesMomentum",
        "ConstantLong",
        "BuyAndHold",
        "SmaCross",
    ]
    assert set(ROSTER_PARTS) == {"meta", "erm", "erm_static", "scratch", "linear", "gbm"}
    assert set(scheduler.TRAIN_ORDER) == set(ROSTER_PARTS)
    assert STRATEGY_NEEDS["ErmStatic"] == ("erm_static",) and STRATEGY_NEEDS["ErmAdapt"] == ("erm",)
    assert STRATEGY_NEEDS["LightGBM"] == ("gbm",)
    for control in ("TimeSeriesMomentum", "ConstantLong", "BuyAndHold", "SmaCross"):
        assert STRATEGY_NEEDS[control] == ()  # no training: backtested at once
    every = {part for needs in STRATEGY_NEEDS.values() for part in needs}
    assert every == set(ROSTER_PARTS)  # every part trained is traded by some strategy


def _label(fn: Callable[[Any], Any], unit: Any) -> str:
    """A training job by its part ("meta", ...), a backtest by its strategy's name."""
    return str(unit[3] if fn.__name__ == "_train_part" else unit[1])


class _TwoThreads(Executor):
    """Two workers in threads that run one unit at a time (a lock), recording the order.

    The meta-learner's training waits, before it starts, until BuyAndHold's backtest has
    ended on the other worker (30 s at most): under a barrier between the training and
    the backtests BuyAndHold would only be submitted after it, and it fails.
    """

    name = "threads"

    def __init__(self) -> None:
        super().__init__(2)
        self._threads = ThreadPoolExecutor(2)
        self._lock = threading.Lock()
        self._buy_and_hold = threading.Event()
        self.events: list[tuple[str, str]] = []
        self.cancelled: list[Future[Any]] = []  # the futures not done when cancelled

    def submit(self, fn: Callable[[Any], Any], unit: Any) -> Future[Any]:
        return self._threads.submit(self._run, fn, unit)

    def _run(self, fn: Callable[[Any], Any], unit: Any) -> Any:
        label = _label(fn, unit)
        if label == "meta" and not self._buy_and_hold.wait(30):
            raise AssertionError("BuyAndHold did not run while the meta-learner trained")
        with self._lock:
            self.events.append(("start", label))
            try:
                return run_unit(fn, unit)
            finally:
                self.events.append(("end", label))
                if label == "BuyAndHold":
                    self._buy_and_hold.set()

    def cancel(self, futures: Iterable[Future[Any]]) -> None:
        futures = list(futures)
        self.cancelled += [f for f in futures if not f.done()]
        super().cancel(futures)

    def close(self) -> None:
        self._buy_and_hold.set()
        self._threads.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
def test_compare_backtests_what_needs_no_meta_learner_while_it_trains(small_settings, serial_run):
    lines: list[str] = []
    with _TwoThreads() as ex:
        threaded = compare(small_settings, progress=False, log=lines.append, executor=ex)
    _assert_identical(serial_run[0], threaded)  # whatever the order the units ran in
    assert _timeless(lines) == _timeless(serial_run[1])
    at = {event: k for k, event in enumerate(ex.events)}
    assert at["end", "BuyAndHold"] < at["start", "meta"]
    assert at["start", "SmaCross"] < at["end", "meta"]  # no backtest waited for a barrier
    for name, needs in STRATEGY_NEEDS.items():
        for part in needs:
            if ("start", name) in at:  # each backtest starts after what it needs ends
                assert at["end", part] < at["start", name], (name, part)


@pytest.mark.slow
def test_a_failing_unit_propagates_and_cancels_the_units_not_started(small_settings, monkeypatch):
    backtest = scheduler._backtest

    def failing(job: Any) -> Any:
        if job[1] == "BuyAndHold":
            raise ValueError("BuyAndHold broke")
        return backtest(job)

    monkeypatch.setattr(scheduler, "_backtest", failing)
    with _TwoThreads() as ex, pytest.raises(ValueError, match="BuyAndHold broke"):
        compare(small_settings, progress=False, executor=ex)
    ran = {label for kind, label in ex.events if kind == "start"}
    assert ex.cancelled  # the units not done (the meta-learner's training at least)
    assert not ran & {"MetaStrategy", "MetaDrift", "StaticModel"}  # never submitted
    assert len(ran) < len(ROSTER_PARTS) + len(STRATEGY_NEEDS) - 1  # not all ran

    # the serial executor stops at the failing unit: nothing after it runs
    trained: list[str] = []
    train_part = scheduler._train_part

    def failing_erm(job: Any) -> Any:
        trained.append(job[3])
        if job[3] == "erm":
            raise ValueError("erm broke")
        return train_part(job)

    monkeypatch.setattr(scheduler, "_train_part", failing_erm)
    with pytest.raises(ValueError, match="erm broke"):
        compare(small_settings, progress=False)
    assert trained == ["meta", "erm"]
