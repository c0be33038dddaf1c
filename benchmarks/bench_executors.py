"""Wall time of ``compare`` on each executor: serial, local processes and a local Ray.

One process runs the same comparison (the whole roster, one seed, the sample data) on
the three executors in turn and prints each wall time, the speed-up over serial and
the load average of the machine beside it (a shared machine makes ratios noisy: read
them with the load). The process time includes starting the worker processes (each
imports metabt); the Ray time is given with and without starting Ray, which is also
timed alone. Every executor's table and returns are checked to equal serial's, bit for
bit.

    python benchmarks/bench_executors.py [--workers 2] [--steps 200] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch

from metabt.config import DEMO
from metabt.data import load_ohlcv, sample_files
from metabt.executors import RayExecutor, make_executor
from metabt.experiments import Comparison, RunSettings, compare


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def same(a: Comparison, b: Comparison) -> bool:
    """True when both comparisons have the same table and returns, bit for bit."""
    try:
        pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    except AssertionError:
        return False
    return all(x.returns.equals(y.returns) for x, y in zip(a.results, b.results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200, help="meta-training steps")
    parser.add_argument("--start", default="2011-01-03")
    parser.add_argument("--end", default="2013-03-01")
    parser.add_argument("--assets", nargs="+", default=["AAPL", "IBM"])
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    parser.add_argument(
        "--out", default="benchmarks/results/executors.md", help="Markdown file of the output"
    )
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str = "", **kwargs: object) -> None:
        print(text, **kwargs)  # type: ignore[call-overload]
        lines.append(text)

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
    say(
        f"compare: {', '.join(args.assets)}, test {args.start} to {args.end}, "
        f"{args.steps} meta steps, one seed; {os.cpu_count()} CPUs; {args.workers} workers"
    )
    times: dict[str, float] = {}
    runs: dict[str, Comparison] = {}

    say(f"serial ... ({load()})", flush=True)
    tic = time.perf_counter()
    runs["serial"] = compare(settings, progress=False)
    times["serial"] = time.perf_counter() - tic
    say(f"serial: {times['serial']:.1f} s", flush=True)

    say(f"process ... ({load()})", flush=True)
    tic = time.perf_counter()
    runs["process"] = compare(settings, progress=False, executor="process", workers=args.workers)
    times["process"] = time.perf_counter() - tic
    say(f"process: {times['process']:.1f} s", flush=True)
    with make_executor("process", args.workers) as pool:  # worker start-up alone
        tic = time.perf_counter()
        pool.map(abs, list(range(args.workers)), progress=False)
        times["process start-up"] = time.perf_counter() - tic

    if not args.no_ray:
        say(f"ray ... ({load()})", flush=True)
        tic = time.perf_counter()
        with RayExecutor(args.workers) as ray:
            ray.map(abs, list(range(args.workers)), progress=False)  # start Ray and workers
            times["ray start-up"] = time.perf_counter() - tic
            mid = time.perf_counter()
            runs["ray"] = compare(settings, progress=False, executor=ray)
            times["ray"] = time.perf_counter() - mid
        times["ray with start-up"] = time.perf_counter() - tic

    say(f"done ({load()})\n")
    serial = times["serial"]
    for name, seconds in times.items():
        ratio = (
            ""
            if "start-up" in name and name != "ray with start-up"
            else (f"  speed-up x{serial / seconds:.2f}")
        )
        say(f"{name:>18}: {seconds:7.1f} s{ratio}")
    for name, run in runs.items():
        say(f"{name:>18}: identical to serial: {same(runs['serial'], run)}")

    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_executors.py"
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
