"""The `metabt sweep` command: a grid from the command line, bad input, and a real SIGKILL.

The small configuration of tests/test_sweep.py (10 meta steps, one hidden layer of 8,
one asset, one validation fold of a year), given as a config file: a trial takes about
a third of a second once the imports are warm.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from metabt.cli.main import main
from metabt.config.files import load_config, options_for
from metabt.data.ohlcv import sample_files
from metabt.experiments.sweep import DB_NAME, ERROR_ATTR

AAPL = str(next(p for p in sample_files() if p.stem == "AAPL"))
STUDY = "metabt-sweep"
OUTPUTS = ("trials.csv", "trials.md", "best.toml", "sweep.json", "run.json")
GRID: dict[str, list[float]] = {"inner_lr": [0.01, 0.05], "support": [30, 40]}


def _config(tmp_path: Path) -> Path:
    """The small configuration as a config file (the [sweep] table: period and executor)."""
    path = tmp_path / "small.toml"
    path.write_text(
        "steps = 10\nbatch_size = 4\nhidden = [8]\nsupport = 40\nquery = 10\n"
        "val_years = 1.0\ninner_steps = 1\nadapt_every = 21\nquiet = true\n"
        f"[sweep]\ndata = [{json.dumps(AAPL)}]\nstart = 2010-01-01\nval_folds = 1\n"
        'executor = "serial"\n',
        encoding="utf-8",
    )
    return path


def _space(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _grid_sweep(capsys, tmp_path: Path, space: Path, out: Path, *extra: str):
    """``metabt sweep --sampler grid`` of the small config on ``space`` into ``out``."""
    config = str(_config(tmp_path))
    argv = ["--config", config, "--space", str(space), "--sampler", "grid", "--out", str(out)]
    return _run_main(capsys, "sweep", *argv, *extra)


def test_grid_sweep_prints_the_trials_and_writes_a_loadable_best_config(tmp_path, capsys):
    out = tmp_path / "sweep"
    space = _space(tmp_path, "inner_lr = [0.01, 0.05]\nsupport = [30, 40]\n")
    code, stdout, err = _grid_sweep(capsys, tmp_path, space, out)
    assert code == 0, err
    assert "Traceback" not in err
    # the printed table: one COMPLETE row per grid point, and the count deflation needs
    assert stdout.count("COMPLETE") == 4
    header = next(line for line in stdout.splitlines() if "inner_lr" in line)
    assert header.split()[:3] == ["inner_lr", "support", "score"]
    assert "4 trials (4 complete, 0 failed)" in stdout
    assert "deflate its Sharpe for 4 trials" in stdout
    # the chosen trial's deflated Sharpe on validation, and the PBO (n/a below 16 trials)
    dsr_line = next(line for line in stdout.splitlines() if line.startswith("validation DSR"))
    assert "over 4 complete trials" in dsr_line
    assert "PBO n/a (4 trials, fewer than the 16 PBO needs)" in dsr_line
    assert {p.name for p in out.iterdir()} >= {DB_NAME, *OUTPUTS}

    table = pd.read_csv(out / "trials.csv")
    assert (table["state"] == "COMPLETE").all() and len(table) == 4
    combos = sorted(zip(table["inner_lr"], table["support"], strict=True))
    assert combos == sorted(itertools.product(GRID["inner_lr"], GRID["support"]))
    best = table.loc[table["score"].idxmax()]
    assert f"(trial {best['number']})" in stdout
    assert f"best validation Sharpe {best['score']:.3f}" in stdout
    assert "| number |" in re.sub(" +", " ", (out / "trials.md").read_text(encoding="utf-8"))
    # what score and sharpe_per_bar are, under the printed table and in trials.md
    for text in (stdout, (out / "trials.md").read_text(encoding="utf-8")):
        assert "score: what the search maximises" in text
        assert "sharpe_per_bar: one Sharpe of all folds' validation returns pooled" in text

    summary = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert summary["n_trials"] == summary["n_complete"] == 4
    assert summary["n_failed"] == summary["n_interrupted"] == 0
    assert summary["best_number"] == best["number"]
    assert summary["best_params"] == {"inner_lr": best["inner_lr"], "support": best["support"]}
    assert 0 <= summary["validation_dsr"] <= 1 and summary["pbo"] is None
    assert f"DSR {summary['validation_dsr']:.3f} (deflated Sharpe of trial" in dsr_line

    # best.toml is a metabt config file holding the best trial's values and the base ones
    config = load_config(out / "best.toml")
    backtest = options_for(config, "backtest")
    assert backtest["inner_lr"] == best["inner_lr"] and backtest["support"] == best["support"]
    assert backtest["steps"] == 10 and backtest["hidden"] == [8] and backtest["query"] == 10
    assert str(backtest["start"]) == "2010-01-01"
    assert str(options_for(config, "train")["train_end"]) == "2010-01-01"
    text = (out / "best.toml").read_text(encoding="utf-8")
    assert "4 trials" in text.splitlines()[0]
    # the data (absolute paths, with their SHA-256) and the costs are recorded, so the
    # printed next command runs as printed, from any folder
    from metabt.experiments.record import file_sha256

    assert backtest["data"] == [str(Path(AAPL).resolve())]
    assert f"# data file {Path(AAPL).resolve()}: SHA-256 {file_sha256(AAPL)}" in text
    assert (backtest["commission"], backtest["slippage"], backtest["borrow"]) == (5.0, 2.0, 25.0)
    next_line = next(line for line in stdout.splitlines() if line.startswith("next: "))
    command = next_line.removeprefix("next: metabt ").split(" (the held-out")[0].split()
    report = tmp_path / "elsewhere" / "best.html"
    code, bt_out, err = _run_main(capsys, *command, "--quiet", "--report", str(report))
    assert code == 0, err
    assert "on AAPL" in bt_out and "2010-01" in bt_out and report.stat().st_size > 10_000
    code, _, err = _run_main(
        capsys, "train", "--config", str(out / "best.toml"), "--out", str(tmp_path / "m.pt")
    )
    assert code == 0, err  # every top-level setting is one train has


@pytest.mark.parametrize(
    ("space", "extra", "needles"),
    [
        pytest.param("inner_l = [0.01]\n", [], ["'inner_l'", "'inner_lr'"], id="unknown-setting"),
        pytest.param(
            "inner_lr = {low = 0.01, high = 0.1}\n",
            [],
            ["inner_lr", "--sampler tpe"],
            id="range-in-a-grid",
        ),
        pytest.param(
            "support = [30, 40]\n",
            ["--start", "2001-01-01"],
            ["2001-01-01", "does not reach back"],
            id="test-start-before-enough-history",
        ),
        pytest.param(
            "support = [30, 40]\n",
            ["--trials", "3"],
            ["2 combinations", "--trials 2"],
            id="more-trials-than-the-grid",
        ),
        pytest.param(None, [], ["no such file", "missing.toml"], id="missing-space-file"),
        pytest.param(
            "support = [30, 40]\n",
            ["--start", "2030-01-01"],
            ["2030-01-01", "the data ends on 2013-03-01", "hold no bar"],
            id="test-start-after-the-data",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path, capsys, space, extra, needles
):
    out = tmp_path / "sweep"
    path = tmp_path / "missing.toml" if space is None else _space(tmp_path, space)
    code, _, err = _grid_sweep(capsys, tmp_path, path, out, *extra)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("metabt sweep: error:")
    for needle in needles:
        assert needle in lines[0]
    assert not out.exists()  # checked before any work: nothing written


def test_no_space_at_all_exits_2(tmp_path, capsys):
    code, _, err = _run_main(
        capsys, "sweep", "--config", str(_config(tmp_path)), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "needs a search space" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cv_flag_and_config_key_are_checked(tmp_path, capsys):
    space = str(_space(tmp_path, "inner_lr = [0.01]\n"))
    out = str(tmp_path / "o")
    code, _, err = _run_main(capsys, "sweep", "--space", space, "--cv", "kfold", "--out", out)
    assert code == 2 and "invalid choice: 'kfold'" in err and len(err.strip().splitlines()) == 1
    config = tmp_path / "bad.toml"
    config.write_text('[sweep]\ncv = "kfold"\n', encoding="utf-8")
    code, _, err = _run_main(
        capsys, "sweep", "--config", str(config), "--space", space, "--out", out
    )
    assert code == 2 and "cv: 'kfold' is not one of walkforward, cpcv" in err
    config.write_text('[sweep]\ncv = "cpcv"\n', encoding="utf-8")
    assert options_for(load_config(config), "sweep")["cv"] == "cpcv"
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- SIGKILL

TRIALS = 12
TPE = "inner_lr = {low = 0.005, high = 0.1, log = true}\ninner_steps = {low = 1, high = 2}\n"
N_PARAMS = 2


def _progress(db: Path) -> tuple[int, int]:
    """COMPLETE trials, and RUNNING ones with every parameter drawn, in the storage.

    Read-only through sqlite3 (Optuna's tables ``trials`` and ``trial_params``): the test
    must not write, or create the tables of, the DB the sweep is writing.
    """
    if not db.exists():
        return 0, 0
    query = (
        "SELECT (SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'), (SELECT COUNT(*) "
        "FROM trials t WHERE t.state = 'RUNNING' AND (SELECT COUNT(*) FROM trial_params p "
        "WHERE p.trial_id = t.trial_id) = ?)"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            complete, running = con.execute(query, (N_PARAMS,)).fetchone()
    except sqlite3.Error:  # tables not created yet, or a writer holds the lock
        return 0, 0
    return int(complete), int(running)


def _trials(out: Path) -> dict[int, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / DB_NAME}")
    return {t.number: t for t in study.get_trials(deepcopy=True)}


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sweep_killed_with_sigkill_resumes_keeping_finished_trials(tmp_path):
    """kill -9 mid-sweep, then the same command: the trials done are kept as they were,
    the one the kill interrupted (if the kill landed inside one) is failed and its
    configuration redone, and the sweep ends with exactly the trials asked."""
    out = tmp_path / "sweep"
    db = out / DB_NAME
    argv = [
        sys.executable, "-m", "metabt", "sweep", "--config", str(_config(tmp_path)),
        "--space", str(_space(tmp_path, TPE)), "--sampler", "tpe", "--trials", str(TRIALS),
        "--seed", "3", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "killed.err", "w+", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            done, sent, deadline = 0, False, time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                done, drawn = _progress(db)
                # kill inside a trial, its parameters drawn (or, late, wherever it lands)
                if done >= 2 and (drawn or done >= 4):
                    os.kill(proc.pid, signal.SIGKILL)  # no clean-up runs
                    sent = True
                    break
                time.sleep(0.02)
        finally:
            if not sent and proc.poll() is None:
                proc.kill()  # timed out: never leave the sweep running
            proc.wait()
        stderr.seek(0)
        assert sent and proc.returncode == -signal.SIGKILL, (done, stderr.read()[-2000:])

    before = _trials(out)
    kept = {n: t for n, t in before.items() if t.state.name == "COMPLETE"}
    running = [t for t in before.values() if t.state.name == "RUNNING"]
    assert 2 <= len(kept) < TRIALS and len(running) <= 1  # serial: one trial at a time
    assert not (out / "best.toml").exists()  # the outputs are written at the end only

    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]

    after = _trials(out)
    complete = [t for t in after.values() if t.state.name == "COMPLETE"]
    assert len(complete) == TRIALS  # exactly the trials asked: the kept ones were not rerun
    assert {t.state.name for t in after.values()} <= {"COMPLETE", "FAIL"}
    for number, trial in kept.items():  # kept as they were, not run again
        now = after[number]
        assert now.state.name == "COMPLETE" and now.params == trial.params
        assert now.value == trial.value and now.user_attrs == trial.user_attrs
        # a rerun would give the same parameters and scores (fixed seeds): the times tell
        assert (now.datetime_start, now.datetime_complete) == (
            trial.datetime_start,
            trial.datetime_complete,
        )
    failed = [t for t in after.values() if t.state.name == "FAIL"]
    if running:  # the kill landed inside a trial: failed as interrupted, configuration redone
        killed = running[0]
        assert [t.number for t in failed] == [killed.number]
        assert ERROR_ATTR not in after[killed.number].user_attrs  # interrupted, not bad config
        redo = [t for t in after.values() if t.system_attrs.get("failed_trial") == killed.number]
        assert len(redo) == 1 and redo[0].state.name == "COMPLETE"
        assert {k: redo[0].params[k] for k in killed.params} == killed.params
    else:  # the kill landed between two trials: nothing to redo
        assert failed == []

    # the count reported (and stored for the deflated Sharpe) is the trials asked
    assert f"{TRIALS} trials ({TRIALS} complete, 0 failed)" in again.stdout
    assert f"deflate its Sharpe for {TRIALS} trials" in again.stdout
    assert f"over {TRIALS} complete trials" in again.stdout  # the validation DSR's N
    summary = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert summary["n_trials"] == summary["n_complete"] == TRIALS
    assert summary["n_interrupted"] == len(running) and summary["n_failed"] == 0
    table = pd.read_csv(out / "trials.csv")
    assert sorted(table["number"]) == sorted(after)
    assert (table["state"] == "COMPLETE").sum() == TRIALS
