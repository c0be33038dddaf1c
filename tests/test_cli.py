"""The metabt command: the main job on a reduced setting, train, and exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metabt.cli.main import main
from metabt.data.ohlcv import sample_files
from metabt.learn.learner import MetaLearner

FILES = {p.stem: str(p) for p in sample_files()}


def _run_main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_backtest_main_job_reduced(tmp_path, capsys):
    import pandas as pd

    report = tmp_path / "reports" / "run.html"
    code, out, err = _run_main(
        capsys,
        "backtest",
        "--data",
        FILES["AAPL"],
        FILES["MSFT"],
        "--start",
        "2011-01-01",
        "--end",
        "2012-06-30",
        "--steps",
        "15",
        "--quiet",
        "--report",
        str(report),
    )
    assert code == 0, err
    for name in ("MetaStrategy", "BuyAndHold", "SmaCross"):
        assert name in out
    for metric in ("sharpe", "cagr", "max_drawdown"):
        assert metric in out
    assert "commission 5 bps" in out
    assert report.is_file() and report.stat().st_size > 10_000
    assert str(report.resolve()) in out
    assert (report.parent / "run_diagnostics.html").stat().st_size > 20_000
    chart = report.parent / "run_chart.html"  # the interactive Bokeh chart, standalone
    assert "bokeh" in chart.read_text(encoding="utf-8")
    assert f"interactive chart written to {chart.resolve()}" in out
    assets = pd.read_csv(report.parent / "run_assets.csv")
    assert assets["asset"].tolist() == ["AAPL", "MSFT", "portfolio"]
    assert "MetaStrategy per asset" in out and "hit_rate" in out
    assert "findfont" not in err and "Warning" not in err


def test_train_then_backtest_with_model(tmp_path, capsys):
    ckpt = tmp_path / "theta.pt"
    code, out, err = _run_main(
        capsys,
        "train",
        "--data",
        FILES["IBM"],
        "--train-end",
        "2006-01-01",
        "--out",
        str(ckpt),
        "--steps",
        "5",
        "--quiet",
    )
    assert code == 0, err
    assert ckpt.is_file() and "checkpoint written" in out
    # a model trained up to 2006 cannot be backtested from 2005: that would leak
    code, out, err = _run_main(
        capsys,
        "backtest",
        "--data",
        FILES["IBM"],
        "--model",
        str(ckpt),
        "--start",
        "2005-01-01",
        "--report",
        str(tmp_path / "r.html"),
    )
    assert code == 2 and "leak" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["backtest", "--data", "no/such/file.csv"], "file.csv"),
        (["backtest", "--start", "2011-13-45"], "not a date"),
        (["backtest", "--start", "2012-01-01", "--end", "2011-01-01"], "before"),
        (["backtest", "--commission", "-3"], "commission"),
        (["train", "--data", FILES["IBM"], "--out", "x.pt"], "--train-end"),
        (
            ["train", "--data", FILES["IBM"], "--train-end", "1990-01-01", "--out", "x.pt"],
            "before 1990-01-01",
        ),
        (["backtest", "--algorithm", "mamll"], "mamll"),
        (["backtest", "--start", "2030-01-01"], "2030-01-01"),
        (["backtest", "--start", "NaT"], "not a date"),
        (  # the library names parameters, the command line reads its flags
            ["walkforward", "--start", "2012-01-01", "--end", "2011-01-01"],
            "walkforward: error: --end 2011-01-01 is before --start 2012-01-01; swap them",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, needle):
    code, _, err = _run_main(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err


def test_dates_are_checked_as_the_library_checks_them():
    import argparse

    import pandas as pd

    from metabt.cli.parser import _date

    assert _date("2010-01-04") == pd.Timestamp("2010-01-04")
    assert _date("2010-01-04T10:00+05:00") == pd.Timestamp("2010-01-04 10:00")  # tz dropped
    for bad in ("NaT", "nat", "", "2011-13-45", "someday"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a date; use YYYY-MM-DD"):
            _date(bad)


def test_library_parameters_read_as_the_flags_of_the_command():
    from metabt.cli.main import flag_message
    from metabt.cli.parser import _build_parser
    from metabt.config.files import EVERY_SETTING

    commands = _build_parser().parse_args(["config"]).subparsers
    message = "`end` 2011 is before `start` 2012: pass `n_trials` 2, `sampler` tpe or `other`"
    assert flag_message(message, commands["sweep"]) == (
        "--end 2011 is before --start 2012: pass --trials 2, --sampler tpe or `other`"
    )
    assert flag_message(message, commands["backtest"]) == (  # not options of backtest
        "--end 2011 is before --start 2012: pass `n_trials` 2, `sampler` tpe or `other`"
    )
    assert flag_message(f"x.toml: unknown setting 'a'; {EVERY_SETTING}", commands["train"]) == (
        "x.toml: unknown setting 'a'; `metabt config --example` lists every setting"
    )


def test_corrupt_checkpoint_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 100)
    code, _, err = _run_main(capsys, "backtest", "--model", str(bad), "--start", "2011-01-01")
    assert code == 2 and "bad.pt" in err and len(err.strip().splitlines()) == 1


def test_bad_csv_exits_2(tmp_path, capsys):
    csv = tmp_path / "broken.csv"
    csv.write_text(
        "date,open,high,low,close,volume\n2020-01-01,1,2,0.5,1.5,100\n2019-12-31,1,2,0.5,1.5,100\n"
    )
    code, _, err = _run_main(capsys, "backtest", "--data", str(csv))
    assert code == 2 and "broken.csv" in err and len(err.strip().splitlines()) == 1


def test_console_script_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "metabt", "backtest", "--data", "missing.csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "missing.csv" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "metabt", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "backtest" in proc.stdout


def test_train_gru_anil_from_cli_records_choices(tmp_path, capsys):
    from metabt.learn.learner import MetaLearner

    ckpt = tmp_path / "gru.pt"
    code, _, err = _run_main(
        capsys,
        "train",
        "--data",
        FILES["IBM"],
        FILES["MSFT"],
        "--train-end",
        "2004-01-01",
        "--out",
        str(ckpt),
        "--algorithm",
        "anil",
        "--model-type",
        "gru",
        "--steps",
        "3",
        "--quiet",
    )
    assert code == 0, err
    learner = MetaLearner.load(ckpt)
    assert learner.algorithm == "anil" and learner.model.config()["type"] == "gru"
    assert learner.train_range[1] < "2004-01-01"


@pytest.mark.slow
def test_compare_writes_table_tearsheets_and_index(tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "cmp"
    config = tmp_path / "run.toml"  # the period and budget from a config file, data by flag
    config.write_text(
        'start = "2011-06-01"\nsteps = 99\n[compare]\nend = 2012-03-31\nexecutor = "serial"\n'
    )
    code, stdout, err = _run_main(
        capsys,
        "compare",
        "--config",
        str(config),
        "--data",
        FILES["AAPL"],
        FILES["IBM"],
        "--steps",
        "5",
        "--quiet",
        "--ledger",
        str(tmp_path / "ledger.sqlite"),
        "--out",
        str(out),
    )
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    # the run's 13 strategies are the window's first evaluations in a fresh ledger
    trials = record["config"]["trials"]
    assert trials["roster"] == 13 and trials["ledger_evaluations"] == [13]
    assert 1 <= trials["effective_trials"][0] < 13  # correlated strategies count less
    assert "this window has been evaluated 13 times in 1 run(s)" in stdout
    assert not (tmp_path / ".cmp.units").exists()  # the finished units, dropped once written
    # every tearsheet's benchmark is the BuyAndHold row, the equal-weight basket, named so
    sheet = (out / "tearsheets" / "MetaStrategy.html").read_text(encoding="utf-8")
    assert "BuyAndHold (equal-weight basket of 2 assets)" in sheet
    assert "vs buy-and-hold AAPL" not in sheet
    assert record["config"]["steps"] == 5 and record["config"]["executor"] == "serial"
    assert record["config"]["resolved"]["meta_steps"] == 5  # the flag beat the file's 99
    assert [d["sha256"] for d in record["data"]] and record["seeds"] == [0]
    table = pd.read_csv(out / "compare.csv")
    names = [
        "MetaStrategy",
        "MetaDrift",
        "StaticModel",
        "ErmStatic",
        "ErmAdapt",
        "ScratchAdapt",
        "RollingRidge",
        "RecursiveLeastSquares",
        "LightGBM",
        "TimeSeriesMomentum",
        "ConstantLong",
        "BuyAndHold",
        "SmaCross",
    ]
    assert table["strategy"].tolist() == names
    for col in (
        "sharpe",
        "sortino",
        "cagr",
        "max_drawdown",
        "volatility",
        "turnover_one_way",
        "turnover_two_way",
        "psr",
        "dsr",
        "sharpe_vs_best",
        "sharpe_vs_best_lo",
        "sharpe_vs_best_hi",
    ):
        assert table[col].notna().all(), col
    models = table["strategy"].isin(names[:9])  # the forecasters, LightGBM included
    assert table.loc[models, "ic"].notna().all() and table.loc[~models, "ic"].isna().all()
    assert (
        table.loc[models, "ic_t"].notna().all() and table.loc[models, "ic_tradable"].notna().all()
    )
    assert (table["sharpe_vs_best_lo"] <= table["sharpe_vs_best"]).all()
    assert (table["sharpe_vs_best"] <= table["sharpe_vs_best_hi"]).all()
    assert np.allclose(table["turnover_two_way"], 2 * table["turnover_one_way"])
    by_name = table.set_index("strategy")
    # ERM is selected by the meta-learner's rule: when keep-best keeps its initialisation
    # (the same seeded init as scratch, on this short budget), the table says so
    same = by_name.loc["ErmAdapt", "sharpe"] == by_name.loc["ScratchAdapt", "sharpe"]
    assert bool(by_name.loc["ErmAdapt", "untrained"]) == same
    assert "verdict:" in stdout
    page = (out / "index.html").read_text()
    for name in names:
        assert (out / "tearsheets" / f"{name}.html").stat().st_size > 10_000
        assert f'href="tearsheets/{name}.html"' in page
    assert "| MetaStrategy" in (out / "compare.md").read_text()
    chart = out / "MetaStrategy_chart.html"  # the interactive chart, from the detached run
    assert "bokeh" in chart.read_text(encoding="utf-8")
    assert f"MetaStrategy interactive chart: {chart.resolve()}" in stdout
    assert "strictly before 2011-06-01" in stdout
    assert table["hit_rate"].between(0, 1).all()
    assert table.columns.get_loc("hit_rate") == table.columns.get_loc("win_rate") + 1
    assets = pd.read_csv(out / "assets.csv")
    assert len(assets) == len(names) * 3  # AAPL, IBM, portfolio for every strategy
    portfolio = assets[assets["asset"] == "portfolio"].set_index("strategy")
    np.testing.assert_allclose(portfolio.loc[names, "hit_rate"], table["hit_rate"])
    assert "Per asset" in page and "| MetaStrategy" in (out / "assets.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("rolling", [None, "3"])
def test_walkforward_never_trains_on_its_own_or_later_data(tmp_path, capsys, rolling):
    import pandas as pd

    out = tmp_path / "wf"
    argv = [
        "walkforward",
        "--data",
        FILES["IBM"],
        FILES["MSFT"],
        "--start",
        "2011-01-01",
        "--end",
        "2012-06-30",
        "--steps",
        "3",
        "--smooth",  # fixed: this test is about what each fold trains on
        "1",
        "--quiet",
        "--out",
        str(out),
    ]
    if rolling:
        argv += ["--train-years", rolling]
    code, stdout, err = _run_main(capsys, *argv)
    assert code == 0, err
    every = pd.read_csv(
        out / "folds.csv", parse_dates=["train_start", "train_end", "test_start", "test_end"]
    )
    # every fold runs the whole roster, each strategy trained before the fold
    assert (
        every.groupby("fold")["strategy"].nunique() == 13
    ).all()  # the 13 entries of the default roster
    assert (every["train_end"] < every["test_start"]).all()
    assert {"RollingRidge", "RecursiveLeastSquares", "ErmAdapt"} <= set(every["strategy"])
    summary = pd.read_csv(out / "summary.csv").set_index("strategy")
    assert summary["sharpe_vs_best"].notna().all() and summary["dsr"].between(0, 1).all()
    assert "verdict:" in stdout
    folds = every[every["strategy"] == "MetaStrategy"].reset_index(drop=True)
    assert len(folds) == 2
    assert (folds["train_end"] < folds["test_start"]).all()  # no fold sees its own data
    assert (folds["test_start"].iloc[1:].to_numpy() > folds["test_end"].iloc[:-1].to_numpy()).all()
    if rolling:  # the window rolls: nothing older than 3 years before each fold
        assert (folds["train_start"] >= folds["test_start"] - pd.DateOffset(years=3)).all()
    else:
        assert folds["train_start"].nunique() == 1  # expanding: same first date
    assert (out / "walkforward.html").stat().st_size > 10_000
    assert (out / "walkforward_diagnostics.html").stat().st_size > 20_000
    assets = pd.read_csv(out / "assets.csv")
    assets = assets[assets["strategy"] == "MetaStrategy"]
    assert (
        assets.groupby("fold")["asset"].apply(list).tolist() == [["IBM", "MSFT", "portfolio"]] * 2
    )
    assert folds["hit_rate"].between(0, 1).all()


def test_cross_asset_transfer_trains_without_the_traded_asset(tmp_path, capsys):
    code, out, err = _run_main(
        capsys,
        "backtest",
        "--data",
        FILES["IBM"],
        "--train-data",
        FILES["AAPL"],
        FILES["MSFT"],
        "--start",
        "2011-01-01",
        "--end",
        "2011-12-31",
        "--steps",
        "3",
        "--quiet",
        "--report",
        str(tmp_path / "ibm.html"),
    )
    assert code == 0, err
    trained = next(line for line in out.splitlines() if line.startswith("meta-trained"))
    assert "on AAPL, MSFT (daily bars, 252 a year) from" in trained and "IBM" not in trained
    assert "backtest 2011-01-03 to 2011-12-30" in out and "on IBM;" in out


# ---------------------------------------------------------------- fuzz: the exit-code contract
def _malformed_files(tmp: Path) -> dict[str, Path]:
    good = Path(FILES["IBM"]).read_text(encoding="utf-8").splitlines()
    files = {
        "semicolon": "\n".join(line.replace(",", ";") for line in good[:50]),
        "tab": "\n".join(line.replace(",", "\t") for line in good[:50]),
        "empty": "",
        "header-only": good[0],
        "unsorted": "\n".join([good[0], *reversed(good[1:50])]),
        "nan": "\n".join([good[0], *good[1:10], good[10].rsplit(",", 1)[0] + ",", *good[11:50]]),
        "binary": "\x00\x01\x02garbage\xff",
    }
    out = {}
    for name, text in files.items():
        path = tmp / f"{name}.csv"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        out[name] = path
    return out


@pytest.mark.slow
def test_fuzz_malformed_inputs_exit_2_with_one_line_through_the_console_script(tmp_path):
    """A sample of bad files and argument combinations through the real ``metabt`` script:
    exit 2, exactly one line on stderr, no traceback, nothing written."""
    files = _malformed_files(tmp_path)
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x", encoding="utf-8")
    out = tmp_path / "never"
    mine = tmp_path / "mine"  # a user's folder: must survive every case
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("keep", encoding="utf-8")
    (mine / "sub" / "notes.md").write_text("keep", encoding="utf-8")
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)  # reading it would hang: refused before it is opened
    big = tmp_path / "big.toml"
    big.write_text("#" * 1_100_000, encoding="utf-8")
    space5 = tmp_path / "space5.toml"
    space5.write_text("space = 5\n", encoding="utf-8")
    cases = [
        [
            "train",
            "--data",
            str(files["semicolon"]),
            "--train-end",
            "2008-01-01",
            "--out",
            str(out / "t.pt"),
        ],
        [
            "train",
            "--data",
            str(files["tab"]),
            "--train-end",
            "2008-01-01",
            "--out",
            str(out / "t.pt"),
        ],
        ["backtest", "--data", str(files["empty"]), "--report", str(out / "r.html")],
        ["backtest", "--data", str(files["header-only"]), "--report", str(out / "r.html")],
        ["backtest", "--data", str(files["unsorted"]), "--report", str(out / "r.html")],
        ["compare", "--data", str(files["nan"]), "--out", str(out)],
        ["compare", "--data", str(files["binary"]), "--out", str(out)],
        ["backtest", "--data", str(tmp_path), "--report", str(out / "r.html")],
        ["backtest", "--seed", "-1"],
        ["backtest", "--seed", "99999999999999"],
        ["backtest", "--support", "0"],
        ["backtest", "--start", "someday"],
        ["backtest", "--threads", "0"],
        ["compare", "--out", str(a_file)],
        ["backtest", "--report", str(a_file / "r.html")],
        ["backtest", "--report", str(tmp_path)],
        ["walkforward", "--start", "2013-01-01", "--end", "2010-01-01", "--out", str(out)],
        ["backtest", "--model", str(a_file), "--report", str(out / "r.html")],
        ["frobnicate"],
        # folders metabt did not write are never replaced: refused before any work
        ["compare", "--out", str(mine)],
        ["walkforward", "--out", str(mine)],
        ["walkforward", "--out", "."],
        ["compare", "--out", str(tmp_path.parent), "--force"],
        # settings files: never a pipe or a device, never more than 1 MB, a table of values
        ["backtest", "--config", str(fifo)],
        ["backtest", "--config", "/dev/zero"],
        ["backtest", "--config", str(big)],
        ["sweep", "--space", str(fifo), "--out", str(out)],
        ["sweep", "--space", str(space5), "--out", str(out)],
        # a typo in a built-in model's kwargs, a non-finite one
        ["backtest", "--model-kwargs", '{"hiden": [8]}', "--report", str(out / "r.html")],
        # more local processes than cores (21 processes and 6 GB before)
        ["compare", "--workers", "10000", "--out", str(out)],
    ]
    for argv in cases:
        done = subprocess.run(
            [sys.executable, "-m", "metabt", *argv],
            capture_output=True,
            text=True,
            check=False,
            cwd=mine,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (argv, done.returncode, done.stderr[-2000:])
        assert len(lines) == 1 and "Traceback" not in done.stderr, (argv, done.stderr)
        assert not out.exists(), argv  # nothing half-written
        assert sorted(p.name for p in mine.rglob("*")) == ["important.txt", "notes.md", "sub"]


@pytest.mark.slow
def test_train_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    """`metabt train --checkpoint-every N`, kill -9 mid-run, then `--resume`: same final θ."""
    import time

    import torch

    def argv(out: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "metabt", "train", "--data", FILES["IBM"], "--train-end",
            "2006-01-01", "--out", str(out), "--steps", "200", "--checkpoint-every", "10",
            "--quiet", *extra,
        ]  # fmt: skip

    killed = tmp_path / "killed.pt"
    partial = tmp_path / "killed.pt.partial"
    proc = subprocess.Popen(argv(killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    step, deadline = 0, time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if partial.exists():
            try:
                step = torch.load(partial, weights_only=True)["fit_state"]["step"]
            except (RuntimeError, EOFError, KeyError, OSError):
                step = 0  # being replaced: read it again
            if step >= 30:
                proc.kill()  # SIGKILL: no clean-up runs
                break
        time.sleep(0.02)
    proc.wait()
    assert 30 <= step < 200 and proc.returncode == -9, (step, proc.returncode)
    assert partial.exists() and not killed.exists()
    resumed = subprocess.run(argv(killed, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()  # cleaned up once the run is complete
    reference = tmp_path / "reference.pt"
    done = subprocess.run(argv(reference), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a = torch.load(killed, weights_only=True)["state"]
    b = torch.load(reference, weights_only=True)["state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_help_and_usage_errors_never_import_torch():
    """`metabt --help` and a usage error answer at once: no torch, no backtrader."""
    code = (
        "import sys\n"
        "from metabt.cli.main import main\n"
        "codes = [main(['--help']), main(['backtest', '--seed', 'x']), main([])]\n"
        "print(codes, 'torch' in sys.modules, 'backtrader' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[0, 2, 2] False False"


def test_pricing_command_writes_the_table_plot_and_record(tmp_path, capsys):
    pytest.importorskip("linearmodels")
    out = tmp_path / "pricing"
    code, stdout, err = _run_main(
        capsys,
        "pricing",
        "--ks",
        "12",
        "--steps",
        "5",
        "--portfolios",
        "NoDur",
        "S1V1",
        "--quiet",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert "rolling_ols" in stdout and "expanding_ols" in stdout and "maml" in stdout
    for name in ("pricing.csv", "pricing.md", "pricing_rmse_vs_k.png", "run.json"):
        assert (out / name).stat().st_size > 100, name
    code, _, err = _run_main(capsys, "pricing", "--ks", "3", "--out", str(tmp_path / "bad"))
    assert code == 2 and "ks" in err


@pytest.mark.slow
def test_backtest_cross_sectional_portfolio_from_the_cli(tmp_path, capsys):
    report = tmp_path / "xs.html"
    code, out, err = _run_main(
        capsys,
        "backtest",
        "--data",
        FILES["AAPL"],
        FILES["IBM"],
        FILES["MSFT"],
        "--start",
        "2012-01-01",
        "--end",
        "2012-12-31",
        "--steps",
        "5",
        "--portfolio",
        "cross-sectional",
        "--turnover-budget",
        "0.2",
        "--quiet",
        "--report",
        str(report),
    )
    assert code == 0, err
    assert "CrossSectional:" in out and "CrossSectional per asset" in out
    assert "daily bars, 252 a year" in out
    assert report.stat().st_size > 10_000


@pytest.mark.slow
def test_hourly_fx_in_a_to_csv_gz_file_runs_end_to_end_with_hourly_annualisation(tmp_path, capsys):
    """A user's hourly 24/5 file, written by DataFrame.to_csv() and gzipped: 6,240 bars a year."""
    import pandas as pd

    from metabt.data.synthetic import gbm_market

    hours = pd.date_range("2021-01-04", periods=6000, freq="h")
    hours = hours[hours.day_of_week < 5][:3000]
    frame = gbm_market(3000, seed=5, vol=0.002)
    frame.index = hours
    frame.index.name = None  # what to_csv() writes: an unnamed first column
    path = tmp_path / "EURUSD_H1.csv.gz"
    frame.to_csv(path)
    start = hours[2000].normalize() + pd.Timedelta(days=1)
    report = tmp_path / "fx.html"
    code, out, err = _run_main(
        capsys,
        "backtest",
        "--data",
        str(path),
        "--start",
        str(start.date()),
        "--steps",
        "5",
        "--val-years",
        "0.1",
        "--quiet",
        "--report",
        str(report),
    )
    assert code == 0, err
    assert "hourly bars, 6,240 a year" in out and "on EURUSD_H1;" in out
    # the SMA crossover's 200 days are 4,952 hourly bars: left out, and said so
    assert "SmaCross left out: its 50/200-day windows are 1238/4952 bars" in out
    record = json.loads(report.with_name("fx.run.json").read_text())
    assert record["config"]["learner"]["train_config"]["bar_frequency"] == "hourly"


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["cnp", "protonet", "cavia"])
def test_every_learner_family_trains_saves_loads_and_backtests_from_the_cli(
    tmp_path, capsys, algorithm
):
    ckpt = tmp_path / f"{algorithm}.pt"
    code, out, err = _run_main(
        capsys,
        "train",
        "--data",
        FILES["AAPL"],
        FILES["MSFT"],
        "--train-end",
        "2010-01-01",
        "--algorithm",
        algorithm,
        "--steps",
        "5",
        "--quiet",
        "--out",
        str(ckpt),
    )
    assert code == 0, err
    assert f"meta-trained {algorithm} ({algorithm}, " in out
    record = json.loads(ckpt.with_name(ckpt.name + ".run.json").read_text())
    assert record["config"]["model"]["type"] == algorithm  # the model built, not "mlp"
    loaded = MetaLearner.load(ckpt)
    assert loaded.algorithm == algorithm
    assert loaded.inner_lr == (1.0 if algorithm == "cavia" else 0.02)
    report = tmp_path / "r.html"
    code, out, err = _run_main(
        capsys,
        "backtest",
        "--data",
        FILES["IBM"],
        "--model",
        str(ckpt),
        "--start",
        "2010-01-01",
        "--end",
        "2010-12-31",
        "--quiet",
        "--report",
        str(report),
    )
    assert code == 0, err
    adaptations = re.search(r"MetaStrategy: ([0-9,]+) adaptations", out)
    assert adaptations is not None, out
    assert int(adaptations.group(1).replace(",", "")) >= 40  # 252 bars, one every 5
    diagnostics = report.with_name("r_diagnostics.html").read_text()
    assert ("Task embedding" in diagnostics) == (algorithm == "cavia")


@pytest.mark.slow
def test_compare_runs_cavia_and_online_meta_updates_side_by_side(tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "cmp"
    code, _, err = _run_main(
        capsys,
        "compare",
        "--data",
        FILES["AAPL"],
        "--train-data",
        FILES["AAPL"],
        FILES["MSFT"],
        "--start",
        "2011-06-01",
        "--end",
        "2012-03-31",
        "--algorithm",
        "cavia",
        "--online-meta-lr",
        "0.001",
        "--steps",
        "5",
        "--smooth",  # fixed: this test is about CAVIA and online updates
        "1",
        "--executor",
        "serial",
        "--quiet",
        "--out",
        str(out),
    )
    assert code == 0, err
    table = pd.read_csv(out / "compare.csv").set_index("strategy")
    assert {"MetaStrategy", "MetaOnline", "RollingRidge", "ErmAdapt"} <= set(table.index)
    # the two meta rows differ only by the online updates of θ
    assert table.loc["MetaStrategy", "sharpe"] != table.loc["MetaOnline", "sharpe"]


@pytest.mark.slow
def test_the_sharpe_objective_trains_and_backtests_for_every_gradient_algorithm(tmp_path, capsys):
    """`--objective sharpe` from the command line: every gradient algorithm trains on the
    after-cost P&L with the flags' costs and smoothing, saves it, and backtests."""
    for algorithm in ("maml", "fomaml", "metasgd", "anil", "reptile", "erm", "scratch"):
        ckpt = tmp_path / f"{algorithm}.pt"
        code, out, err = _run_main(
            capsys,
            "train",
            "--data",
            FILES["AAPL"],
            FILES["MSFT"],
            "--train-end",
            "2010-01-01",
            "--algorithm",
            algorithm,
            "--objective",
            "sharpe",
            "--commission",
            "10",
            "--smooth",
            "5",
            "--steps",
            "2",
            "--checkpoint-every",
            "1",
            "--hidden",
            "8",
            "--quiet",
            "--out",
            str(ckpt),
        )
        assert code == 0, (algorithm, err)
        assert "after-cost loss (−Sharpe per bar of the sized query paths)" in out, out
        loss = MetaLearner.load(ckpt).loss
        assert (loss.objective, loss.smooth) == ("sharpe", 5)
        assert loss.fill_cost == pytest.approx(12e-4)  # --commission 10 + --slippage 2
        code, out, err = _run_main(
            capsys,
            "backtest",
            "--data",
            FILES["IBM"],
            "--model",
            str(ckpt),
            "--start",
            "2010-01-01",
            "--end",
            "2010-03-31",
            "--quiet",
            "--report",
            str(tmp_path / f"{algorithm}.html"),
        )
        assert code == 0, (algorithm, err)
        assert "MetaStrategy:" in out and "adaptations" in out
