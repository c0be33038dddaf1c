"""Paper trading on followed files (metabt.experiments.paper, `metabt paper`)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metabt.errors import DataError
from metabt.experiments.backtest import run_backtest
from metabt.experiments.paper import PaperError, PaperSettings, run_paper
from metabt.strategies.meta import MetaStrategy
from metabt.strategies.state import differences, load_state

START = pd.Timestamp("2010-06-01")
END = pd.Timestamp("2011-03-31")
HISTORY = pd.Timestamp("2010-05-28")  # in the files before the run starts
KW = {"support": 40, "smooth": 3}


def _csv_lines(frame: pd.DataFrame) -> list[str]:
    text = frame.to_csv(index_label="date", float_format="%.10g")
    return text.splitlines(keepends=True)


@pytest.fixture(scope="module")
def setup(sample_frames, small_learner, tmp_path_factory):
    """Two assets' bars to END, their CSV lines, and the backtest of those bars."""
    root = tmp_path_factory.mktemp("paper")
    frames, lines = {}, {}
    for name, frame in sample_frames.items():
        lines[name] = _csv_lines(frame.loc[:END])
        (root / f"{name}_full.csv").write_text("".join(lines[name]))
        from metabt.data.ohlcv import load_ohlcv

        frames[name] = load_ohlcv(root / f"{name}_full.csv")
    backtest = run_backtest(
        MetaStrategy,
        frames,
        start=START,
        warmup_bars=120,
        strategy_kwargs={"learner": small_learner, **KW},
    )
    return root, frames, lines, backtest


def _settings(root, files, learner, state, until=END, **kw):
    return PaperSettings(
        data=tuple(files),
        strategy=MetaStrategy,
        strategy_kwargs={"learner": learner, **KW},
        state=state,
        start=START,
        until=until,
        warmup_bars=120,
        poll=0.005,
        reports=False,
        **kw,
    )


def _start_files(root, lines, tag):
    """Followed files holding the header and the bars up to HISTORY."""
    files = []
    for name, text in lines.items():
        path = root / tag / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        head = [ln for ln in text[1:] if pd.Timestamp(ln.split(",")[0]) <= HISTORY]
        path.write_text(text[0] + "".join(head))
        files.append(path)
    return files


def _full_files(root, lines, tag):
    """Followed files already holding every bar to END (the runs stop at their `until`)."""
    files = []
    for name, text in lines.items():
        path = root / tag / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(text))
        files.append(path)
    return files


def _append_in_chunks(files, lines, seed):
    """Append each file's later bars in random chunks, half lines included, the files
    staggered (each its own thread)."""

    def writer(path: Path, text: list[str], rng: random.Random) -> None:
        rest = "".join(ln for ln in text[1:] if pd.Timestamp(ln.split(",")[0]) > HISTORY)
        i = 0
        while i < len(rest):
            j = min(len(rest), i + rng.randint(1, 900))
            with open(path, "a") as fh:
                fh.write(rest[i:j])
            i = j
            time.sleep(rng.random() * 0.004)

    threads = [
        threading.Thread(target=writer, args=(p, lines[p.stem], random.Random(seed + k)))
        for k, p in enumerate(files)
    ]
    for t in threads:
        t.start()
    return threads


def test_paper_on_files_appended_in_chunks_equals_the_backtest(setup, small_learner, tmp_path):
    root, _frames, lines, backtest = setup
    files = _start_files(tmp_path, lines, "live")
    threads = _append_in_chunks(files, lines, seed=1)
    run = run_paper(_settings(root, files, small_learner, tmp_path / "state"))
    for t in threads:
        t.join()
    assert run.last_bar == END and not run.refused and not run.restart
    assert run.result is not None
    pd.testing.assert_series_equal(run.result.returns, backtest.returns)
    assert run.result.metrics == backtest.metrics
    saved = load_state(tmp_path / "state" / "state.npz")
    rebuilt = {k: v for k, v in saved.meta.items() if k != "paper"}
    from metabt.strategies.state import StrategyState, capture

    assert differences(StrategyState(rebuilt, saved.arrays), capture(backtest.strategy)) == []
    events = [
        json.loads(x) for x in (tmp_path / "state" / "orders.jsonl").read_text().split("\n") if x
    ]
    fills = [e for e in events if e["status"] == "Completed"]
    assert len(fills) == sum(1 for o in backtest.strategy._orders if o.status == o.Completed) > 10


def test_restarts_at_several_bars_end_in_the_same_state_and_order_log(
    setup, small_learner, tmp_path
):
    root, _frames, lines, _backtest = setup
    files = _full_files(tmp_path, lines, "whole")
    once = run_paper(_settings(root, files, small_learner, tmp_path / "once"))
    stops = [pd.Timestamp("2010-07-15"), pd.Timestamp("2010-07-16"), pd.Timestamp("2010-11-30")]
    for until in [*stops, END]:
        run = run_paper(_settings(root, files, small_learner, tmp_path / "split", until=until))
    assert run.restart and run.replayed > 0
    pd.testing.assert_series_equal(run.result.returns, once.result.returns)
    a = (tmp_path / "once" / "orders.jsonl").read_text()
    b = (tmp_path / "split" / "orders.jsonl").read_text()
    assert a == b and a.count("\n") > 10
    assert (
        differences(
            load_state(tmp_path / "once" / "state.npz"),
            load_state(tmp_path / "split" / "state.npz"),
        )
        == []
    )


def test_bad_rows_are_refused_and_the_run_goes_on(setup, small_learner, tmp_path):
    root, _frames, lines, backtest = setup
    files = _start_files(tmp_path, lines, "bad")
    text = lines["AAPL"]
    later = [ln for ln in text[1:] if pd.Timestamp(ln.split(",")[0]) > HISTORY]
    aapl = next(p for p in files if p.stem == "AAPL")
    with open(aapl, "a") as fh:
        fh.write(later[0])
        fh.write(later[0])  # a duplicate: ignored
        fh.write("2010-06-02,abc,1,1,1,1\n")  # malformed: refused, one line
        fh.write("2010-05-01,1,1,1,1,1\n")  # late: refused
        fh.write("".join(later[1:]))
    ibm = next(p for p in files if p.stem == "IBM")
    with open(ibm, "a") as fh:
        fh.write("".join(ln for ln in lines["IBM"][1:] if pd.Timestamp(ln[:10]) > HISTORY))
    said: list[str] = []
    run = run_paper(_settings(root, files, small_learner, tmp_path / "state"), log=said.append)
    assert len(run.refused) == 2 and all("AAPL" in line for line in run.refused)
    assert all("\n" not in line for line in run.refused)
    pd.testing.assert_series_equal(run.result.returns, backtest.returns)


def test_a_rewritten_history_is_refused_on_restart(setup, small_learner, tmp_path):
    root, _frames, lines, _ = setup
    files = _full_files(tmp_path, lines, "adj")
    state = tmp_path / "state"
    run_paper(_settings(root, files, small_learner, state, until=pd.Timestamp("2010-08-31")))
    aapl = next(p for p in files if p.stem == "AAPL")
    frame = pd.read_csv(aapl)
    frame.iloc[:, 1:5] *= 0.5  # adjusted for a split
    frame.to_csv(aapl, index=False)
    with pytest.raises(DataError, match="AAPL"):
        run_paper(_settings(root, files, small_learner, state))


def test_the_state_folder_is_metabt_s_own(setup, small_learner, tmp_path):
    root, _frames, lines, _ = setup
    files = _full_files(tmp_path, lines, "own")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(PaperError, match="metabt did not write it"):
        run_paper(_settings(root, files, small_learner, theirs))
    assert (theirs / "notes.txt").read_text() == "mine"
    state = tmp_path / "state"
    run_paper(_settings(root, files, small_learner, state, until=pd.Timestamp("2010-07-30")))
    other = _settings(root, files, small_learner, state)
    other = PaperSettings(**{**other.__dict__, "cash": 50_000.0})
    with pytest.raises(PaperError, match=r"other settings.*cash"):
        run_paper(other)


CLI = [sys.executable, "-m", "metabt", "paper"]


@pytest.fixture(scope="module")
def cli_setup(setup, small_learner, tmp_path_factory):
    _root, _frames, lines, _ = setup
    where = tmp_path_factory.mktemp("cli")
    model = where / "model.pt"
    small_learner.save(model)
    files = []
    for name, text in lines.items():
        path = where / f"{name}.csv"
        path.write_text("".join(text))
        files.append(str(path))
    args = [
        "--data", *files, "--model", str(model), "--start", str(START.date()),
        "--until", str(END.date()), "--support", "40", "--smooth", "3", "--poll", "0.01",
        "--report-every", "0",
    ]  # fmt: skip
    return where, args


@pytest.fixture(scope="module")
def uninterrupted(cli_setup):
    """One uninterrupted `metabt paper` run to --until (its state folder and output);
    each xdist worker that needs it runs it once."""
    where, args = cli_setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    paper = subprocess.run(
        [*CLI, *args, "--state", str(where / "state")],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert paper.returncode == 0, paper.stderr[-2000:]
    return where / "state", paper


def test_cli_paper_prints_the_backtest_summary_of_the_same_bars(cli_setup, uninterrupted):
    where, args = cli_setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _, paper = uninterrupted
    backtest_args = [a if a != "--until" else "--end" for a in args]
    backtest_args = [a for a in backtest_args if a not in ("--poll", "0.01")]
    i = backtest_args.index("--report-every")
    del backtest_args[i : i + 2]
    backtest = subprocess.run(
        [sys.executable, "-m", "metabt", "backtest", *backtest_args,
         "--report", str(where / "bt.html"), "--ledger", "off", "--quiet"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert backtest.returncode == 0, backtest.stderr[-2000:]

    def table(out: str) -> list[str]:
        lines = out.splitlines()
        first = next(i for i, line in enumerate(lines) if line.lstrip().startswith("sharpe"))
        return lines[first : lines.index("", first)]

    assert any(line.startswith("MetaStrategy") for line in table(paper.stdout))
    assert table(paper.stdout) == table(backtest.stdout)
    for name in ("tearsheet.html", "chart.html", "orders.jsonl", "state.npz", "paper.json"):
        assert (where / "state" / name).is_file(), name


def test_sigkill_then_restart_gives_the_uninterrupted_final_state(
    cli_setup, uninterrupted, tmp_path
):
    _, args = cli_setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    once, _ = uninterrupted
    rng = np.random.default_rng(7)  # the kill points: order-log lines written before
    killed = tmp_path / "killed"
    # Ctrl-C first (a clean stop after the bar in progress), then SIGKILL twice
    points = zip((signal.SIGINT, signal.SIGKILL, signal.SIGKILL), sorted(rng.integers(20, 250, 3)))
    for how, kill_at in points:
        proc = subprocess.Popen(
            [*CLI, *args, "--state", str(killed)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            orders = killed / "orders.jsonl"
            if orders.is_file() and orders.read_text().count("\n") >= kill_at:
                break
            time.sleep(0.01)
        proc.send_signal(how)
        out, err = proc.communicate(timeout=120)
        if how == signal.SIGINT:
            assert proc.returncode == 0, err[-2000:]
            assert "stopped on request" in out
    done = subprocess.run(
        [*CLI, *args, "--state", str(killed)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed after" in done.stdout
    assert (killed / "orders.jsonl").read_text() == (once / "orders.jsonl").read_text()
    assert differences(load_state(once / "state.npz"), load_state(killed / "state.npz")) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--end", "2011-01-01"], "use --until DATE instead of --end"),
        (["--benchmark", "x.csv"], "--benchmark is not followed"),
        (["--train-data", "x.csv"], "--train-data is for training"),
        ([], "no such checkpoint"),
    ],
)
def test_cli_paper_refuses_what_it_cannot_do(extra, message, tmp_path, capsys):
    from metabt.cli.main import main

    code = main(
        ["paper", "--data", "a.csv", "--model", str(tmp_path / "none.pt"),
         "--state", str(tmp_path / "s"), *extra]
    )  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_paper_follows_parquet_files_as_the_backtest_reads_them(setup, small_learner, tmp_path):
    root, frames, _lines, backtest = setup
    files = []
    for name, frame in frames.items():
        path = tmp_path / f"{name}.parquet"
        frame.loc[:HISTORY].to_parquet(path)
        files.append(path)

    def rewrite_later() -> None:  # a downloader rewrites a Parquet file whole
        time.sleep(0.2)
        for frame, path in zip(frames.values(), files):
            tmp = path.with_suffix(".tmp")
            frame.to_parquet(tmp)
            os.replace(tmp, path)

    writer = threading.Thread(target=rewrite_later)
    writer.start()
    run = run_paper(_settings(root, files, small_learner, tmp_path / "state"))
    writer.join()
    assert run.last_bar == END and not run.refused
    pd.testing.assert_series_equal(run.result.returns, backtest.returns)


def test_a_file_that_stops_is_released_after_the_timeout_and_never_closed_early(
    setup, small_learner, tmp_path
):
    """IBM's downloader stops at STOP: with a stagger timeout AAPL's bars go on without it,
    and IBM's position is held (a live feed's end is unknown), where the backtest of the
    same bars closes it at IBM's last bar (it knows the file's length)."""
    root, _frames, lines, _backtest = setup
    stop = pd.Timestamp("2010-12-31")
    files = _start_files(tmp_path, lines, "stop")
    for path in files:
        keep = [
            ln for ln in lines[path.stem][1:]
            if path.stem == "AAPL" or pd.Timestamp(ln[:10]) <= stop
        ]  # fmt: skip
        path.write_text(lines[path.stem][0] + "".join(keep))
    run = run_paper(_settings(root, files, small_learner, tmp_path / "state", stagger_timeout=0.05))
    assert run.last_bar == END
    assert run.frames["IBM"].index[-1] == stop and run.frames["AAPL"].index[-1] == END
    state = load_state(tmp_path / "state" / "state.npz")
    assert state.meta["closed"] == []  # nothing closed on a file's silence
    from metabt.data.ohlcv import load_ohlcv

    cut = {p.stem: load_ohlcv(p) for p in files}
    backtest = run_backtest(
        MetaStrategy, cut, start=START, warmup_bars=120,
        strategy_kwargs={"learner": small_learner, **KW},
    )  # fmt: skip
    assert set(backtest.strategy.ended) == {"IBM"}  # the backtest closes IBM: hindsight


def test_a_restart_reads_the_folder_s_files_with_bounds(
    setup, small_learner, tmp_path, monkeypatch
):
    from metabt.errors import ConfigError
    from metabt.experiments import paper

    root, _frames, lines, _backtest = setup
    files = _full_files(tmp_path, lines, "bounds")
    state = tmp_path / "state"
    run_paper(_settings(root, files, small_learner, state, until=pd.Timestamp("2010-08-31")))
    assert (state / "orders.jsonl").stat().st_size > 100
    monkeypatch.setattr(paper, "MAX_ORDER_LOG_BYTES", 100)
    with pytest.raises(PaperError, match=r"order log .* over the 100-byte limit"):
        run_paper(_settings(root, files, small_learner, state))
    (state / "paper.json").write_text(" " * 1_000_001)
    with pytest.raises(ConfigError, match="larger than 1,000,000 bytes"):
        run_paper(_settings(root, files, small_learner, state))
