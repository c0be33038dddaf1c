"""Wall time of ``compare`` on each executor: serial, local processes and a local Ray.

The same comparison (the whole roster, one seed, the sample data) runs on the three
executors in turn, each run in a fresh interpreter (it imports and warms up what it
uses, as a new ``metabt compare`` does), and this prints each wall time, the speed-up
over serial and the load average of the machine beside it (a shared machine makes
ratios noisy: read them with the load; serial and process run ``--repeats`` times in
turn and the fastest of each is kept). The process time includes starting the worker processes (each
imports metabt), which is also timed alone; the Ray time is given with and without
starting Ray, which is also timed alone. Every executor's table and returns are checked
to equal serial's, bit for bit.

The (fastest) serial run also times each unit (every training part and backtest), from
which the lower bound on the wall time with ``--workers`` workers is printed: the
longest chain of units that must follow one another (a training part, then a backtest
that needs it, :data:`metabt.experiments.roster.STRATEGY_NEEDS`) or the total work spread
evenly over the workers, whichever is longer, plus the workers' start-up; and the same
plus the main process's own work (judging), which runs after the last backtest. It is
a bound: each worker also pays the imports of its first backtest (quantstats, about a
second), which the serial run pays once.

With ``--seeds N`` the comparison runs N seeds (``compare(..., seeds=range(N))``): N
meta-learners to train, which one seed's critical chain does not allow the workers to
share; the bound is then the total work over the workers (each label's time summed over
the seeds) plus the start-up.

    python benchmarks/bench_executors.py [--workers 2] [--steps 600] [--repeats 2] [--no-ray]
        [--seeds 1]
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch

from metabt.config.defaults import DEMO
from metabt.data.ohlcv import load_ohlcv, sample_files
from metabt.experiments.compare import compare
from metabt.experiments.executors import ExecutorSpec, RayExecutor, SerialExecutor, make_executor
from metabt.experiments.roster import STRATEGY_NEEDS
from metabt.experiments.settings import RunSettings

T = TypeVar("T")
R = TypeVar("R")


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


class TimedSerial(SerialExecutor):
    """The serial executor, recording the wall time of each unit by its label.

    A training job is labelled by its part ("meta", "erm", ...), a backtest by its
    strategy's name; with several seeds a label's time is summed over them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, float] = {}

    def submit(self, fn: Callable[[T], R], unit: T) -> Future[R]:
        job: Any = unit
        label = str(job[3] if fn.__name__ == "_train_part" else job[1])
        tic = time.perf_counter()
        future = super().submit(fn, unit)
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - tic
        return future


def bound(seconds: dict[str, float]) -> tuple[float, str, float]:
    """The longest chain of units that must follow one another (seconds, which), total work.

    A backtest starts once the training parts it needs are done (they may run side by
    side): its chain is the longest of them, then itself.
    """
    chains = {part: seconds[part] for part in ("meta", "erm", "linear", "scratch")}
    for name, needs in STRATEGY_NEEDS.items():
        if name in seconds:
            first = max(needs, key=seconds.__getitem__, default=None)
            label = name if first is None else f"{first} -> {name}"
            chains[label] = (seconds[first] if first else 0.0) + seconds[name]
    what = max(chains, key=chains.__getitem__)
    return chains[what], what, sum(seconds.values())


def child(args: argparse.Namespace, settings: RunSettings) -> dict[str, Any]:
    """One measurement, in this fresh interpreter: what ``args.child`` names."""
    out: dict[str, Any] = {}
    if args.child == "start-up":  # the process workers' start-up alone
        with make_executor("process", args.workers) as pool:
            tic = time.perf_counter()
            pool.map(abs, list(range(args.workers)), progress=False)
            out["process start-up"] = time.perf_counter() - tic
        return out
    if args.child == "ray":
        tic = time.perf_counter()
        with RayExecutor(args.workers) as ray:
            ray.map(abs, list(range(args.workers)), progress=False)  # start Ray and workers
            out["ray start-up"] = time.perf_counter() - tic
            mid = time.perf_counter()
            run = compare(settings, progress=False, executor=ray, seeds=seeds(args))
            out["ray"] = time.perf_counter() - mid
        out["ray with start-up"] = time.perf_counter() - tic
    else:
        executor: Any = (
            TimedSerial() if args.child == "serial" else ExecutorSpec("process", args.workers)
        )
        tic = time.perf_counter()
        run = compare(settings, progress=False, executor=executor, seeds=seeds(args))
        out[args.child] = time.perf_counter() - tic
        if args.child == "serial":
            out["units"] = executor.seconds
    out["table"], out["returns"] = run.table, [r.returns for r in run.results]
    return out


def seeds(args: argparse.Namespace) -> list[int] | None:
    """The seeds of the comparison: None (the config's one seed) or 0 .. N-1."""
    return None if args.seeds == 1 else list(range(args.seeds))


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when both runs have the same table and returns, bit for bit."""
    try:
        pd.testing.assert_frame_equal(a["table"], b["table"], check_exact=True)
    except AssertionError:
        return False
    return len(a["returns"]) == len(b["returns"]) and all(
        x.equals(y) for x, y in zip(a["returns"], b["returns"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=600, help="meta-training steps")
    parser.add_argument(
        "--repeats", type=int, default=2, help="serial and process runs (the fastest is kept)"
    )
    parser.add_argument("--start", default="2011-01-03")
    parser.add_argument("--end", default="2013-03-01")
    parser.add_argument("--assets", nargs="+", default=["AAPL", "IBM"])
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    parser.add_argument("--seeds", type=int, default=1, help="seeds compared (0 .. N-1)")
    parser.add_argument(
        "--out", default="benchmarks/results/executors.md", help="Markdown file of the output"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one measurement, then exit
    parser.add_argument("--dump", help=argparse.SUPPRESS)  # where the child writes it
    args = parser.parse_args()

    torch.set_num_threads(1)
    files = {p.stem: p for p in sample_files()}
    frames = {name: load_ohlcv(files[name]) for name in args.assets}
    settings = RunSettings(
        frames=frames,
        train_frames=frames,
        start=pd.Timestamp(args.start),
        end=pd.Timestamp(args.end),
        cfg=DEMO.with_(meta_steps=args.steps),
    )
    if args.child:
        Path(args.dump).write_bytes(pickle.dumps(child(args, settings)))
        return

    lines: list[str] = []

    def say(text: str = "", **kwargs: object) -> None:
        print(text, **kwargs)  # type: ignore[call-overload]
        lines.append(text)

    def measure(what: str, label: str) -> dict[str, Any]:
        """``what`` measured in a fresh interpreter (imports, caches: as a new run)."""
        say(f"{label} ... ({load()})", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "out.pickle"
            subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--child", what, "--dump", str(dump)],
                check=True,
            )
            out: dict[str, Any] = pickle.loads(dump.read_bytes())
        if what in out:
            say(f"{label}: {out[what]:.1f} s", flush=True)
        time.sleep(5)  # the workers of the run exit meanwhile (their teardown takes seconds)
        return out

    say(
        f"compare: {', '.join(args.assets)}, test {args.start} to {args.end}, "
        f"{args.steps} meta steps, {'one seed' if args.seeds == 1 else f'{args.seeds} seeds'}; "
        f"{os.cpu_count()} CPUs; {args.workers} workers; "
        "each run in a fresh interpreter"
    )
    times: dict[str, float] = dict(measure("start-up", "process start-up alone"))
    runs: dict[str, dict[str, Any]] = {}
    for attempt in range(1, args.repeats + 1):  # serial and process in turn: the fastest
        for what in ("serial", "process"):
            out = runs[f"{what} #{attempt}"] = measure(what, f"{what} #{attempt}")
            if out[what] < times.get(what, math.inf):
                times[what] = out[what]
                runs[what] = out
    if not args.no_ray:
        runs["ray"] = measure("ray", "ray")
        times.update({k: v for k, v in runs["ray"].items() if k.startswith("ray")})

    say(f"done ({load()})\n")
    serial = times["serial"]
    order = ["serial", "process", "process start-up", "ray start-up", "ray", "ray with start-up"]
    for name in [n for n in order if n in times]:
        seconds = times[name]
        ratio = (
            ""
            if "start-up" in name and name != "ray with start-up"
            else (f"  speed-up x{serial / seconds:.2f}")
        )
        say(f"{name:>18}: {seconds:7.1f} s{ratio}")
    for name, run in runs.items():
        if name not in ("serial", "process"):
            say(f"{name:>18}: identical to serial: {same(runs['serial'], run)}")

    units: dict[str, float] = runs["serial"]["units"]
    chain, what, work = bound(units)
    if args.seeds > 1:  # the labels' times are sums over the seeds: no chain of one seed
        chain, what = 0.0, "not computed over several seeds"
    main_work = serial - work
    start_up = times["process start-up"]
    lower = max(chain, work / args.workers) + start_up
    say(
        "\nper-unit wall times (fastest serial run): "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(units.items(), key=lambda x: -x[1]))
    )
    say(
        f"lower bound with {args.workers} workers: max(critical chain {chain:.1f} s ({what}), "
        f"total work {work:.1f} s / {args.workers} = {work / args.workers:.1f} s) + start-up "
        f"{start_up:.1f} s = {lower:.1f} s (speed-up at most x{serial / lower:.2f}); "
        f"process took {times['process']:.1f} s, {times['process'] / lower:.2f}x the bound"
    )
    with_main = lower + main_work
    say(
        f"  + the main process's own work ({main_work:.1f} s: serial wall time minus the "
        f"units', mostly judging after the last backtest) = {with_main:.1f} s "
        f"(x{serial / with_main:.2f}); process {times['process'] / with_main:.2f}x that"
    )

    given = [
        *("--workers", str(args.workers), "--steps", str(args.steps)),
        *("--repeats", str(args.repeats)),
        *(["--seeds", str(args.seeds)] if args.seeds != 1 else []),
        *("--start", args.start, "--end", args.end, "--assets", *args.assets),
        *(["--no-ray"] if args.no_ray else []),
        *(["--out", args.out] if args.out != parser.get_default("out") else []),
    ]  # every setting, so that the command reproduces the file whatever the defaults
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_executors.py " + shlex.join(
        given
    )
    Path(args.out).write_text(
        "# compare on each executor: serial, local processes, local Ray\n\n```text\n"
        + "\n".join(lines).strip()
        + "\n```\n\nCommand: `"
        + command
        + "`\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
