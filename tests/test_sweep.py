"""metabt.experiments.sweep: grid and TPE searches on validation folds before a held-out period.

Small configurations (10 meta steps, one hidden layer of 8, one asset, one validation
fold of a year) so that a trial takes about a second once the imports are warm.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil

import optuna
import pandas as pd
import pytest

import metabt.experiments.sweep as sweep_module
from metabt.config.defaults import DEMO
from metabt.config.files import load_config, options_for
from metabt.data.ohlcv import load_ohlcv, sample_files
from metabt.errors import ConfigError
from metabt.evaluate.overfitting import pbo
from metabt.evaluate.significance import deflated_sharpe_ratio
from metabt.experiments.executors import ExecutorSpec
from metabt.experiments.settings import RunSettings
from metabt.experiments.space import apply_params, parse_space
from metabt.experiments.sweep import DB_NAME, RETURNS_ATTR, sweep, validation_folds

TEST_START = pd.Timestamp("2010-01-01")
CFG = DEMO.with_(
    meta_steps=10,
    batch_size=4,
    hidden=(8,),
    support=40,
    query=10,
    val_years=1.0,
    warmup_bars=120,
    inner_steps=1,
    adapt_every=21,
)
GRID = {"inner_lr": [0.01, 0.05], "support": [30, 40]}
TPE = {"inner_lr": {"low": 0.005, "high": 0.1, "log": True}, "inner_steps": {"low": 1, "high": 2}}


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    """AAPL 2006-2010: the held-out year 2010 is in the data a sweep is given."""
    files = {p.stem: p for p in sample_files()}
    return {"AAPL": load_ohlcv(files["AAPL"]).loc["2006-01-01":"2010-12-31"]}


def run(frames, out, *, test_start=TEST_START, **kwargs):
    settings = RunSettings(
        frames=frames, train_frames=frames, start=pd.Timestamp(test_start), cfg=CFG
    )
    options = {"space": GRID, "sampler": "grid", "val_folds": 1, "out": out, "progress": False}
    return sweep(settings, **{**options, **kwargs})


def trials(result) -> set[tuple]:
    done = result.table[result.table["state"] == "COMPLETE"]
    return {(r.inner_lr, getattr(r, "support", CFG.support), r.score) for r in done.itertuples()}


@pytest.fixture(scope="module")
def grid_run(frames, tmp_path_factory):
    """A serial grid sweep, recording the last date of every frame a trial received."""
    seen: list[pd.Timestamp] = []
    train, backtest = sweep_module.train_learner, sweep_module.run_backtest

    def spy_train(f, cfg, *, end, **kwargs):
        seen.append(max(x.index[-1] for x in f.values()))
        assert pd.Timestamp(end) < TEST_START
        return train(f, cfg, end=end, **kwargs)

    def spy_backtest(strategy, f, *, end, **kwargs):
        seen.append(max(x.index[-1] for x in f.values()))
        assert pd.Timestamp(end) < TEST_START
        return backtest(strategy, f, end=end, **kwargs)

    out = tmp_path_factory.mktemp("grid") / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_module, "train_learner", spy_train)
        mp.setattr(sweep_module, "run_backtest", spy_backtest)
        result = run(frames, out)
    return result, out, seen


def test_grid_runs_every_combination_exactly_once(grid_run):
    result, _, _ = grid_run
    table = result.table
    assert len(table) == 4 and (table["state"] == "COMPLETE").all()
    combos = sorted(zip(table["inner_lr"], table["support"], strict=True))
    assert combos == sorted(itertools.product(GRID["inner_lr"], GRID["support"]))
    assert result.n_trials == result.n_complete == 4 and result.n_failed == 0
    best = table.loc[table["score"].idxmax()]
    assert result.best_value == best["score"]
    assert result.best_params == {"inner_lr": best["inner_lr"], "support": best["support"]}
    assert result.cfg.support == best["support"] and result.cfg.inner_lr == best["inner_lr"]


def test_no_trial_reads_the_held_out_period(grid_run, frames):
    result, _, seen = grid_run
    assert max(f.index[-1] for f in frames.values()) >= pd.Timestamp("2010-12-01")
    assert len(seen) == 2 * 4  # one training and one backtest per trial and fold
    assert max(seen) < TEST_START
    assert result.folds == [(pd.Timestamp("2009-01-01"), pd.Timestamp("2009-12-31"))]


def test_outputs_and_best_toml_load_as_a_config_file(grid_run):
    result, out, _ = grid_run
    assert {"sweep.db", "trials.csv", "trials.md", "best.toml", "sweep.json"} <= {
        p.name for p in out.iterdir()
    }
    assert len(pd.read_csv(out / "trials.csv")) == 4
    assert "| number |" in (out / "trials.md").read_text().replace("  ", " ").replace("  ", " ")
    config = load_config(out / "best.toml")
    backtest = options_for(config, "backtest")
    for name, value in result.best_params.items():
        assert backtest[name] == value
    assert backtest["steps"] == CFG.meta_steps and backtest["hidden"] == list(CFG.hidden)
    assert str(backtest["start"]) == "2010-01-01"
    assert str(options_for(config, "train")["train_end"]) == "2010-01-01"
    assert "adapt_every" not in options_for(config, "train")  # `metabt train` has no such flag
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["n_trials"] == 4 and summary["n_complete"] == 4 and summary["n_failed"] == 0
    assert summary["best_value"] == pytest.approx(result.best_value)
    assert summary["test_start"] == "2010-01-01" and "never" in summary["held_out"]
    assert summary["sharpe_variance_per_bar"] == pytest.approx(result.sharpe_variance)
    assert result.sharpe_variance > 0 and result.expected_max_sharpe() > 0


def test_validation_dsr_of_the_best_trial_over_the_complete_trials(grid_run):
    result, out, _ = grid_run
    study = optuna.load_study(study_name="metabt-sweep", storage=f"sqlite:///{out / DB_NAME}")
    stored = {t.number: t.user_attrs[RETURNS_ATTR] for t in study.get_trials()}
    fold = result.folds[0]
    for attr in stored.values():  # one return a validation bar, dates in the fold
        dates = pd.to_datetime(attr["index"])
        assert len(attr["values"]) == len(dates) > 200
        assert dates[0] >= fold[0] and dates[-1] <= fold[1]
    # the DSR formula by hand: the best trial's moments, N = 4, V = the variance of the
    # per-bar Sharpes each trial recorded when scored (not read from the stored series)
    best = pd.Series(stored[result.best_number]["values"])
    sharpe = best.mean() / best.std(ddof=1)
    variance = result.table["sharpe_per_bar"].var(ddof=1)
    expected = deflated_sharpe_ratio(sharpe, len(best), best.skew(), best.kurt() + 3, 4, variance)
    dsr, reason = result.validation_dsr()
    assert reason == "" and dsr == pytest.approx(expected, rel=1e-9)
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["validation_dsr"] == pytest.approx(expected, rel=1e-9)
    assert (
        f"trial {result.best_number} on validation, over 4 complete"
        in (summary["validation_dsr_note"])
    )
    # 4 trials: below the 16 the PBO needs, said so
    assert summary["pbo"] is None and "4 trials, fewer than the 16" in summary["pbo_note"]


def test_pbo_of_the_sweep_is_cscv_on_the_trials_validation_returns(grid_run, monkeypatch):
    result, _, _ = grid_run
    calls = []

    def small_pbo(matrix, **kwargs):  # the sweep's call, with a minimum the 4 trials meet
        calls.append(matrix)
        return pbo(matrix, **kwargs, min_trials=4)

    monkeypatch.setattr(sweep_module, "pbo", small_pbo)
    fresh = dataclasses.replace(result)  # the PBO is computed once per result
    summary = fresh.summary()
    (matrix,) = calls
    assert list(matrix.columns) == sorted(result.returns) and matrix.shape[0] > 200
    expected = pbo(matrix, n_blocks=16, min_trials=4)
    assert summary["pbo"] == pytest.approx(expected.pbo)
    assert (
        summary["pbo_note"].startswith("PBO ")
        and "16 blocks, 12870 combinations" in (summary["pbo_note"])
    )
    # a complete trial without stored returns (an older sweep.db): n/a, with the reason
    old = dataclasses.replace(result, returns={}, unstored=[0, 1, 2, 3])
    dsr, reason = old.validation_dsr()
    assert math.isnan(dsr) and "trial(s) 0, 1, 2, 3 have no stored" in reason
    assert "no stored validation returns" in old.summary()["pbo_note"]


def test_a_rerun_of_a_finished_sweep_runs_nothing(grid_run, frames):
    result, out, _ = grid_run
    again = run(frames, out)
    pd.testing.assert_frame_equal(again.table, result.table)


def test_a_folder_with_other_settings_is_refused(grid_run, frames):
    _, out, _ = grid_run
    with pytest.raises(ConfigError, match="other space"):
        run(frames, out, space={"inner_lr": [0.01, 0.02]})
    with pytest.raises(ConfigError, match="other data"):
        run({"AAPL": frames["AAPL"].iloc[1:]}, out)


def test_resume_runs_only_missing_trials_and_redoes_a_killed_one(frames, tmp_path):
    out = tmp_path / "tpe"
    first = run(frames, out, space=TPE, sampler="tpe", n_trials=2, seed=3)
    second = run(frames, out, space=TPE, sampler="tpe", n_trials=4, seed=3)
    assert second.n_complete == 4 and len(second.table) == 4
    pd.testing.assert_frame_equal(
        second.table.iloc[:2].drop(columns="duration_s"), first.table.drop(columns="duration_s")
    )
    # a kill: a trial left RUNNING in the storage, with its parameters drawn
    study = optuna.load_study(study_name="metabt-sweep", storage=f"sqlite:///{out / DB_NAME}")
    killed = study.ask()
    dims = parse_space(TPE, "tpe")
    params = {dim.name: dim.suggest(killed) for dim in dims}
    assert _complete(study) == 4  # the running trial is not counted
    third = run(frames, out, space=TPE, sampler="tpe", n_trials=5, seed=3)
    table = third.table.set_index("number")
    assert table.loc[killed.number, "state"] == "FAIL"
    assert third.n_complete == 5 and third.n_interrupted == 1 and third.n_trials == 5
    redo = table[table["state"] == "COMPLETE"].iloc[-1]
    assert {name: redo[name] for name in params} == params  # the same configuration again
    # every complete trial's validation returns survive the resumes; the killed one has none
    assert sorted(third.returns) == sorted(table.index[table["state"] == "COMPLETE"])
    assert third.unstored == [] and killed.number not in third.returns
    assert math.isfinite(third.validation_dsr()[0])


def _complete(study) -> int:
    return sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


@pytest.mark.slow
def test_process_workers_give_the_serial_results(grid_run, frames, tmp_path):
    serial, _, _ = grid_run
    parallel = run(frames, tmp_path / "proc", executor=ExecutorSpec("process", 2))
    assert parallel.n_complete == 4
    assert trials(parallel) == trials(serial)


@pytest.mark.slow
def test_a_local_ray_gives_the_serial_results(grid_run, frames, tmp_path, ray):
    serial, _, _ = grid_run  # two trials, one per worker: the support of the base config
    space = {"inner_lr": GRID["inner_lr"]}
    parallel = run(frames, tmp_path / "ray", space=space, executor=ExecutorSpec("ray", 2))
    assert parallel.n_complete == 2
    expected = {t for t in trials(serial) if t[1] == CFG.support}
    assert trials(parallel) == expected


def test_space_is_checked_with_the_closest_name():
    with pytest.raises(ConfigError, match=r"'inner_l'.*did you mean 'inner_lr'"):
        parse_space({"inner_l": [0.1]}, "grid")
    with pytest.raises(ConfigError, match="no config file sets"):
        parse_space({"gru_window": [5]}, "grid")
    with pytest.raises(ConfigError, match="ranges are for `sampler` tpe"):
        parse_space({"inner_lr": {"low": 0.01, "high": 0.1}}, "grid")
    with pytest.raises(ConfigError, match=r"inner_lr: -0\.1 is not valid"):
        parse_space({"inner_lr": [-0.1]}, "grid")
    with pytest.raises(ConfigError, match=r"'mam' is not one of .*did you mean 'maml'"):
        parse_space({"algorithm": ["mam"]}, "tpe")
    with pytest.raises(ConfigError, match="lists a value twice"):
        parse_space({"support": [40, 40]}, "grid")
    with pytest.raises(ConfigError, match="low 8 is above high 1"):
        parse_space({"inner_steps": {"low": 8, "high": 1}}, "tpe")
    with pytest.raises(ConfigError, match=r"unknown key 'hihg'.*'high'"):
        parse_space({"inner_steps": {"low": 1, "hihg": 8}}, "tpe")
    with pytest.raises(ConfigError, match="not a whole number"):
        parse_space({"support": [40.5]}, "grid")
    with pytest.raises(ConfigError, match=r"unknown sampler 'grd'.*'grid'"):
        parse_space(GRID, "grd")


def test_space_names_values_and_config_changes():
    dims = parse_space(
        {"meta_steps": [5, 10], "hidden": [[8], [16, 16]], "algorithm": ["maml", "fomaml"]},
        "grid",
    )
    assert [d.name for d in dims] == ["algorithm", "hidden", "steps"]
    assert dims[1].choices == ("[8]", "[16, 16]")
    cfg = apply_params(DEMO, {"hidden": [16, 16], "steps": 7, "horizon": 3, "inner_lr": 0.05})
    assert cfg.hidden == (16, 16) and cfg.meta_steps == 7 and cfg.spec.horizon == 3
    assert cfg.inner_lr == 0.05 and cfg.support == DEMO.support
    # the sizer's settings are searchable: they change the run's sizer, nothing else
    cfg = apply_params(DEMO, {"deadband": 0.1, "rebalance_band": 0.25, "signal_scale": 0.5})
    assert cfg.sizer == {**DEMO.sizer, "deadband": 0.1, "rebalance_band": 0.25, "signal_scale": 0.5}
    assert [d.name for d in parse_space({"rebalance_band": [0.0, 0.5]}, "grid")] == [
        "rebalance_band"
    ]
    with pytest.raises(ConfigError, match="rebalance_band"):
        parse_space({"rebalance_band": [0.0, 1.5]}, "grid")


def test_validation_folds_end_the_day_before_the_test():
    folds = validation_folds(TEST_START, 2)
    assert folds == [
        (pd.Timestamp("2008-01-01"), pd.Timestamp("2008-12-31")),
        (pd.Timestamp("2009-01-01"), pd.Timestamp("2009-12-31")),
    ]
    with pytest.raises(ConfigError, match="val_folds"):
        validation_folds(TEST_START, 0)


def test_bad_requests_fail_before_any_work(frames, tmp_path):
    with pytest.raises(ConfigError, match="grid has 4 combinations"):
        run(frames, tmp_path / "a", n_trials=5)
    with pytest.raises(ConfigError, match="n_trials must be a positive integer"):
        run(frames, tmp_path / "a", space=TPE, sampler="tpe", n_trials=0)
    with pytest.raises(ConfigError, match=r"ends on 2010-12-31.*2011-01-01 to 2011-12-31"):
        run(frames, tmp_path / "a", test_start="2012-01-01")  # a fold after the data
    with pytest.raises(ConfigError, match="does not reach back"):
        run(frames, tmp_path / "a", test_start="2006-06-01")
    with pytest.raises(ConfigError, match="unknown executor"):
        run(frames, tmp_path / "a", executor=ExecutorSpec("threads"))
    assert not (tmp_path / "a").exists()


def test_a_configuration_that_cannot_run_is_a_failed_trial(frames, tmp_path):
    out = tmp_path / "fail"
    with pytest.raises(ConfigError, match="every trial of the sweep failed"):
        run(frames, out, space={"val_years": [5.0]})  # nothing left to train on
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["n_failed"] == 1 and summary["n_complete"] == 0
    shutil.rmtree(out)


def test_one_sweep_at_a_time_per_folder(frames, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / sweep_module.LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep holds it
        with pytest.raises(ConfigError, match="another sweep is running"):
            run(frames, out)


# --------------------------------------------------------------------------- CPCV


def test_cpcv_sweep_trains_before_each_split_and_tests_every_group(frames, tmp_path):
    """4 groups of the validation year, 2 tested per split: 6 splits, 3 paths."""
    trainings, backtests = [], []
    train, backtest = sweep_module.train_learner, sweep_module.run_backtest

    def spy_train(f, cfg, *, end, **kwargs):
        trainings.append(pd.Timestamp(end))
        return train(f, cfg, end=end, **kwargs)

    def spy_backtest(strategy, f, *, start, end, **kwargs):
        learner = kwargs["strategy_kwargs"]["learner"]
        backtests.append((pd.Timestamp(start), pd.Timestamp(end), learner.train_range))
        return backtest(strategy, f, start=start, end=end, **kwargs)

    out = tmp_path / "cpcv"
    space = {"inner_lr": [0.01]}  # one trial: the scoring is what is tested
    options = {"space": space, "cv": "cpcv", "cv_groups": 4, "cv_test_groups": 2}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_module, "train_learner", spy_train)
        mp.setattr(sweep_module, "run_backtest", spy_backtest)
        result = run(frames, out, **options)
    assert result.n_complete == 1
    groups = result.folds  # the CPCV groups: the validation year in 4 contiguous parts
    assert len(groups) == 4 and groups[0][0] >= pd.Timestamp("2009-01-01")
    assert groups[-1][1] < TEST_START
    assert all(a[1] < b[0] for a, b in itertools.pairwise(groups))
    # one training per possible first test group (0, 1, 2), ending at its start
    assert trainings == [g[0] for g in groups[:3]]
    # group g is backtested with the learners trained before groups j <= g
    # that start a split testing g: (j, j) for j < 3 and (j, g) for j < g
    windows = sorted((a, b) for a, b, _ in backtests)
    expected = [groups[g] for j in range(3) for g in range(j, 4)]
    assert windows == sorted(expected)
    for start, _, (_, trained_to) in backtests:  # no learner saw its test bars
        assert pd.Timestamp(trained_to) < start
    table = result.table
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["cv"] == "cpcv" and summary["cv_groups"] == 4
    # the score: the mean over the 3 paths of their annualised Sharpe
    study = optuna.load_study(study_name="metabt-sweep", storage=f"sqlite:///{out / DB_NAME}")
    for trial in study.get_trials():
        assert len(trial.user_attrs["fold_sharpes"]) == 3
        assert trial.value == pytest.approx(sum(trial.user_attrs["fold_sharpes"]) / 3)
        stored = trial.user_attrs[RETURNS_ATTR]  # the paths' mean: every validation bar
        assert pd.Timestamp(stored["index"][0]) == groups[0][0]
        assert pd.Timestamp(stored["index"][-1]) == groups[-1][1]
    assert math.isfinite(summary["validation_dsr"]) and len(table) == 1
    # the scoring is part of the sweep's settings: a resume with the other one is refused
    with pytest.raises(ConfigError, match="other cv"):
        run(frames, out, space=space)


def test_cpcv_settings_are_checked_before_any_work(frames, tmp_path):
    with pytest.raises(ConfigError, match="`cv` must be one of walkforward, cpcv"):
        run(frames, tmp_path / "a", cv="kfold")
    with pytest.raises(ConfigError, match="n_test_groups 4 must be below n_groups 4"):
        run(frames, tmp_path / "a", cv="cpcv", cv_groups=4, cv_test_groups=4)
    with pytest.raises(ConfigError, match="validation bars make groups of under 2 bars"):
        run(frames, tmp_path / "a", cv="cpcv", cv_groups=200)
    assert not (tmp_path / "a").exists()
