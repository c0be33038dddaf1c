"""A stand-in for a market-data downloader: append a CSV file's rows to another, one by one.

``metabt paper`` follows files that a downloader extends. To try it without a data
vendor, this script copies the header and every row up to ``--history`` (inclusive) of a
bar file at once, then appends the later rows one at a time, ``--every`` seconds apart,
up to ``--until``, as a downloader appends each new bar::

    python examples/replay_downloader.py sample_data/IBM.csv live/IBM.csv \\
        --history 2011-12-30 --until 2012-06-29 --every 0.05 --background

With ``--background`` the history is written before the command returns and the rows are
appended by a background process, so a ``metabt paper`` started next finds the file. Each
row is written whole with its line break in one write, as a downloader should (a
half-written last line is simply waited for by ``metabt paper``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and append the rows; returns the exit code (0)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a CSV bar file with a date column first")
    parser.add_argument("target", type=Path, help="the file to create and extend")
    parser.add_argument("--history", required=True, help="last date written at once")
    parser.add_argument("--until", help="last date appended (default: the source's end)")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between rows")
    parser.add_argument(
        "--background",
        action="store_true",
        help="append from a background process, once the history is written (POSIX)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.every <= 3600:
        parser.error("--every must be 0..3600 seconds")
    lines = args.source.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    dates = [pd.Timestamp(row.split(",", 1)[0]) for row in rows]
    history = pd.Timestamp(args.history)
    until = pd.Timestamp(args.until) if args.until else dates[-1]
    args.target.parent.mkdir(parents=True, exist_ok=True)
    with open(args.target, "w") as out:
        out.write(header + "".join(r for r, d in zip(rows, dates) if d <= history))
    if args.background and os.fork() > 0:
        return 0  # the parent: the history is in place; the child appends
    for row, when in zip(rows, dates):
        if history < when <= until:
            time.sleep(args.every)
            with open(args.target, "a") as out:
                out.write(row if row.endswith("\n") else row + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
