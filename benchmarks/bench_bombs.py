"""Peak memory and time of the ``metabt`` command on hostile input: refused within budget.

Each hostile input (a 3 MB ``.csv.gz`` that inflates to 3 GB, the same as a ``.csv.zip``,
a deflate-zipped checkpoint that would unpack to 2 GB, a 2 GB sparse CSV, ``--config
/dev/zero``, ``--space /dev/zero``, a FIFO as the config file, and the issue's
out-of-range settings) is given to ``python -m metabt`` in a fresh child process; this
prints each child's exit code, wall seconds and peak resident memory (``ru_maxrss`` from
``os.wait4``, the child alone) against the budget of 1 GB and 60 s, its one stderr line,
and the load average of the machine (a shared machine makes the seconds noisy). A child
still running at the time limit is killed and reported as such.

Not part of the test suite (tests/test_hostile.py checks the exit codes and messages).

    python benchmarks/bench_bombs.py [--out benchmarks/results/bombs.md]
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

#: The budget every hostile input must stay within.
BUDGET_MB = 1024
LIMIT_S = 60.0


def _gzip_bomb(path: Path, gigabytes: int = 3) -> None:
    """A .csv.gz of about 3 MB that inflates to ``gigabytes`` GB: one member of 100 MB of
    zeros, compressed once and repeated (gzip members concatenate)."""
    member = gzip.compress(bytes(100 << 20), compresslevel=9)
    with open(path, "wb") as out:
        out.write(gzip.compress(b"date,open,high,low,close,volume\n"))
        for _ in range(gigabytes * 10):
            out.write(member)


def _zip_bomb(path: Path, name: str, megabytes: int, head: bytes = b"") -> None:
    """A deflate zip whose one entry ``name`` is ``megabytes`` MB of zeros."""
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open(name, "w", force_zip64=True) as entry:
            entry.write(head)
            for _ in range(megabytes):
                entry.write(chunk)


def _sparse_csv(path: Path, gigabytes: int = 2) -> None:
    """A CSV whose header is followed by ``gigabytes`` GB of a hole (no disk used)."""
    with open(path, "wb") as out:
        out.write(b"date,open,high,low,close,volume\n")
        out.truncate(gigabytes << 30)


def _run(argv: list[str], cwd: Path) -> tuple[int | str, float, float, str]:
    """Exit code (or "killed"), seconds, peak RSS in MB and the last stderr line of one
    ``python -m metabt`` child."""
    err_path = cwd / "stderr.txt"
    with open(err_path, "wb") as err, open(os.devnull, "wb") as null:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "metabt", *argv],
            cwd=cwd,
            stdout=null,
            stderr=err,
            start_new_session=True,
        )
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            os.killpg(child.pid, signal.SIGKILL)

        timer = threading.Timer(LIMIT_S, kill)
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    lines = err_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    code: int | str = "killed" if killed.is_set() else child.returncode
    if len(lines) > 1:
        code = f"{code} ({len(lines)} stderr lines)"
    peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    return code, seconds, peak_mb, lines[-1] if lines else ""


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="metabt-bombs-") as folder:
        tmp = Path(folder)
        work = tmp / "cwd"
        work.mkdir()
        print("building the bombs ...", file=sys.stderr)
        _gzip_bomb(tmp / "bomb.csv.gz")
        _zip_bomb(tmp / "bomb.csv.zip", "bomb.csv", 3 << 10, b"date,open,high,low,close,volume\n")
        _zip_bomb(tmp / "bomb.pt", "archive/data/0", 2 << 10)
        _sparse_csv(tmp / "sparse.csv")
        fifo = tmp / "pipe.toml"
        os.mkfifo(fifo)
        (tmp / "big_batch.toml").write_text("batch_size = 9223372036854775807\n")
        out = str(tmp / "out")
        cases = [
            (
                f"3 MB .csv.gz bomb ({(tmp / 'bomb.csv.gz').stat().st_size / 1e6:.1f} MB, "
                "inflates to 3 GB)",
                ["backtest", "--data", str(tmp / "bomb.csv.gz"), "--report", out + "/r.html"],
            ),
            (
                f".csv.zip bomb ({(tmp / 'bomb.csv.zip').stat().st_size / 1e6:.1f} MB, 3 GB)",
                ["backtest", "--data", str(tmp / "bomb.csv.zip"), "--report", out + "/r.html"],
            ),
            (
                f"deflate-zipped checkpoint bomb ({(tmp / 'bomb.pt').stat().st_size / 1e6:.1f} "
                "MB, unpacks to 2 GB)",
                ["backtest", "--model", str(tmp / "bomb.pt"), "--report", out + "/r.html"],
            ),
            (
                "2 GB sparse CSV",
                ["backtest", "--data", str(tmp / "sparse.csv"), "--report", out + "/r.html"],
            ),
            ("--config /dev/zero", ["backtest", "--config", "/dev/zero"]),
            ("--space /dev/zero", ["sweep", "--space", "/dev/zero", "--out", out]),
            ("FIFO config", ["backtest", "--config", str(fifo)]),
            (
                "config batch_size = 2**63-1",
                ["backtest", "--config", str(tmp / "big_batch.toml")],
            ),
            ("--hidden 2000000000", ["backtest", "--hidden", "2000000000"]),
        ]
        before = _load()
        rows = []
        for name, argv in cases:
            code, seconds, peak, line = _run(argv, work)
            ok = code == 2 and seconds <= LIMIT_S and peak <= BUDGET_MB
            rows.append((name, code, seconds, peak, "yes" if ok else "**NO**", line))
            print(f"{name}: exit {code}, {seconds:.1f} s, {peak:.0f} MB", file=sys.stderr)
        after = _load()
        wrote = sorted(p.name for p in work.iterdir() if p.name != "stderr.txt")
    lines = [
        "# Hostile input: peak memory and time of `python -m metabt`",
        "",
        f"Budget: peak RSS <= {BUDGET_MB} MB, <= {LIMIT_S:.0f} s, exit 2 with one stderr line.",
        f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs.",
        f"Load before: `{before}`",
        f"Load after: `{after}`",
        "",
        "| input | exit | seconds | peak RSS (MB) | within budget | stderr |",
        "|---|---|---:|---:|---|---|",
    ]
    for name, code, seconds, peak, ok, line in rows:
        shown = line if len(line) <= 160 else line[:157] + "..."
        lines.append(
            f"| {name} | {code} | {seconds:.1f} | {peak:.0f} | {ok} | {shown.replace('|', '/')} |"
        )
    lines += ["", f"Files left in the working directory: {wrote or 'none'}.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
