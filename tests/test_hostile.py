"""Hostile input through the real ``metabt`` script: limits checked before the work.

Every case exits 2 with exactly one line on stderr (no traceback) and writes nothing:
numbers past the settings' bounds (issue 22: ``batch_size = 2**63-1``, ``support =
2**63-1``, ``val_years = 1e308``, ``--hidden 2000000000``), files past the row or byte
limits, prices whose sums overflow, an unreachable Ray cluster and a run that runs out of
memory. The measured peak memory and time of the bombs: ``benchmarks/bench_bombs.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from test_cli import FILES  # the sample files of the console-script fuzz test

from metabt.cli.main import main


def _run_script(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, limit_mb: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m metabt *argv`` in ``cwd`` (optionally with its address space capped)."""

    def cap() -> None:  # pragma: no cover - runs in the child
        import resource

        assert limit_mb is not None
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))

    return subprocess.run(
        [sys.executable, "-m", "metabt", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        preexec_fn=cap if limit_mb is not None else None,
        timeout=120,
    )


def _assert_refused(done: subprocess.CompletedProcess[str], needle: str, case: object) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (case, done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, (case, done.stderr[-2000:])
    assert needle in lines[0], (case, lines[0])


def _toml(tmp: Path, name: str, text: str) -> str:
    path = tmp / f"{name}.toml"
    path.write_text(text + "\n", encoding="utf-8")
    return str(path)


def test_hostile_numbers_and_files_exit_2_with_one_line_and_write_nothing(tmp_path):
    """Run in threads, a few children at a time: each is a short start-up and a refusal.
    (The flags' bounds are checked in-process too: tests/test_config.py.)"""
    out = tmp_path / "never"
    mine = tmp_path / "mine"  # the working directory: must stay as it is
    mine.mkdir()
    (mine / "keep.txt").write_text("keep", encoding="utf-8")
    huge = tmp_path / "huge.csv"  # prices x 1e306: a backtest's sums overflowed
    frame = pd.read_csv(FILES["IBM"]).iloc[:400]
    for col in ("open", "high", "low", "close"):
        frame[col] = frame[col] * 1e306
    frame.to_csv(huge, index=False)
    bomb = tmp_path / "bomb.csv.zip"  # 3 MB of zeros in a few kB of deflate
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.csv", b"date,open,high,low,close,volume\n" + bytes(3 << 20))
    report = ["--report", str(out / "r.html")]
    many = [str(8)] * 65
    cases: list[tuple[list[str], dict[str, str], str]] = [
        # the examples, in a config file and as flags
        (
            ["backtest", "--config", _toml(tmp_path, "b", "batch_size = 9223372036854775807")],
            {},
            "batch_size: Input should be less than or equal to 100000",
        ),
        (
            ["compare", "--config", _toml(tmp_path, "s", "support = 9223372036854775807")],
            {},
            "from 1 to 100,000 bars",
        ),
        (
            ["walkforward", "--config", _toml(tmp_path, "v", "val_years = 1e308")],
            {},
            "val_years: Input should be less than or equal to 100 (got 1e+308)",
        ),
        (["backtest", "--hidden", "2000000000", *report], {}, "from 1 to 65,536 units"),
        (
            ["train", "--config", _toml(tmp_path, "h", f"hidden = [{', '.join(many)}]")],
            {},
            "at most 64 items",
        ),
        (["backtest", *report], {"METABT_THREADS": "100000000"}, "METABT_THREADS='100000000'"),
        # files: too many rows, a zip bomb, prices whose sums overflow
        (["backtest", *report], {"METABT_MAX_ROWS": "1000"}, "AAPL.csv: 3,270 rows (bars)"),
        (
            ["backtest", "--data", str(bomb), *report],
            {"METABT_MAX_CSV_BYTES": str(1 << 20)},
            "bomb.csv.zip: it decompresses to more than 1,048,576 bytes",
        ),
        (["backtest", "--data", str(huge), *report], {}, "huge.csv: a price outside 1e-30"),
    ]

    def run(case: tuple[list[str], dict[str, str], str]) -> subprocess.CompletedProcess[str]:
        return _run_script(case[0], mine, case[1])

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, cases))
    for case, done in zip(cases, results):
        _assert_refused(done, case[2], case[0])
    assert not out.exists()
    assert sorted(p.name for p in mine.iterdir()) == ["keep.txt"]


def test_an_unreachable_ray_cluster_is_one_line_in_seconds_not_minutes(tmp_path):
    pytest.importorskip("ray")
    import time

    start = time.monotonic()
    done = _run_script(
        ["compare", "--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", "o"], tmp_path
    )
    _assert_refused(done, "ray_address '127.0.0.1:1': no Ray cluster answered", "ray")
    # Ray alone retried for minutes; the port is refused at once (the bound leaves room
    # for the start-up of a child on a busy machine)
    assert "--ray-address" in done.stderr and time.monotonic() - start < 60
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS caps memory on Linux")
def test_a_run_that_runs_out_of_memory_is_one_line_naming_the_size_and_the_fix(tmp_path):
    """A real allocation failure: the child may map 3 GB and the model asks for 3.6 GB."""
    out = tmp_path / "never"
    argv = ["train", "--data", FILES["IBM"], "--train-end", "2008-01-01", "--out"]
    argv += [str(out / "t.pt"), "--hidden", "30000", "30000", "--steps", "1", "--quiet"]
    done = _run_script(argv, tmp_path, limit_mb=3000)
    _assert_refused(done, "out of memory (DefaultCPUAllocator: can't allocate memory", argv)
    assert "lower --batch-size, --support, --query, --hidden" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (MemoryError(), "out of memory (MemoryError)"),
        (
            MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000, 1000000)"),
            "(Unable to allocate 7.28 TiB for an array with shape (1000000, 1000000))",
        ),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                "memory: you tried to allocate 80000000000 bytes. Error code 12 (Cannot "
                "allocate memory)"
            ),
            "you tried to allocate 80000000000 bytes): the run needs more memory",
        ),
    ],
)
def test_allocation_errors_anywhere_in_a_command_become_one_line(
    monkeypatch, capsys, error, needle
):
    import metabt.cli.commands as commands

    def explode(args: object) -> int:
        raise error

    monkeypatch.setattr(commands, "run", explode)
    assert main(["compare", "--out", "never"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert err.startswith("metabt compare: error: out of memory")
    assert "lower --batch-size, --support, --query, --hidden, --workers" in err


def test_other_runtime_errors_are_not_passed_off_as_memory(monkeypatch):
    import metabt.cli.commands as commands

    def explode(args: object) -> int:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(commands, "run", explode)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(["backtest"])


@pytest.mark.parametrize(
    "content", [b"not a database at all\n", b"SQLite format 3\x00" + b"\x00" * 40]
)
def test_a_corrupt_or_truncated_sweep_database_is_one_line_and_left_alone(tmp_path, content):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.db").write_bytes(content)
    space = _toml(tmp_path, "space", "steps = [3, 4]")
    done = _run_script(
        ["sweep", "--space", space, "--out", str(out), "--steps", "3", "--quiet"], tmp_path
    )
    _assert_refused(done, "sweep.db is not a usable sweep database", content[:10])
    assert (out / "sweep.db").read_bytes() == content  # the user's file is not touched
    assert not (out / "trials.csv").exists()
