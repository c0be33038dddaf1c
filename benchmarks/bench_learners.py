"""The meta-learner families side by side: sinusoid MSE, regime accuracy, adaptation latency.

1. Sinusoid (Finn et al. 2017, 5.1), K=10, 200 held-out tasks: query MSE after adaptation
   of MAML and ERM (MLP 1-40-40-1, inner lr 0.01, 1 inner step in training, 10 at test),
   CNP (H=40, one forward pass, no step) and CAVIA (MLP 40-40 with a 4-dim context, inner
   lr 1.0, 1 step in training, 10 at test), seeds 0, 1, 2 (mean ± sd).
2. Regime classification (``metabt.sinusoid.RegimeTasks``, S=60, Q=20, F=12, 2
   informative dims): ProtoNet's query accuracy vs the nearest class mean on raw features.
3. Adaptation latency per support window (S=60, F=12; adapt + one ``predict_row``, as
   ``MetaStrategy`` does per adaptation), MAML (MLP 2x32, 5 steps, NumPy kernel), CNP
   (H=32), CAVIA (2x32, 5 steps, autograd), ProtoNet (2x32, E=16), interleaved in one
   process; ratios to MAML (median of per-round ratios, and best-of times).

    python benchmarks/bench_learners.py [--steps 1000] [--seeds 0 1 2] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from metabt.learners import prototype_accuracy
from metabt.meta import MetaLearner
from metabt.models import CNP, MLP, CaviaMLP, ProtoNet
from metabt.sinusoid import RegimeTasks, nearest_mean_accuracy, run_sinusoid

SINUSOID = {  # algorithm -> run_sinusoid kwargs
    "maml": {"inner_lr": 0.01},
    "erm": {"inner_lr": 0.01},
    "cnp": {"inner_lr": 0.01},
    "cavia": {"inner_lr": 1.0},
}


def _cell(values: list[float], digits: int = 3) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def sinusoid(steps: int, seeds: list[int]) -> list[str]:
    rows = []
    for algorithm, kwargs in SINUSOID.items():
        tic = time.perf_counter()
        runs = [run_sinusoid(algorithm, steps=steps, seed=s, **kwargs) for s in seeds]
        took = time.perf_counter() - tic
        cells = [_cell([r[k] for r in runs]) for k in ("query_mse_0step", "query_mse")]
        rows.append(f"| {algorithm} | {cells[0]} | {cells[1]} | {took:.0f} s |")
        print(rows[-1], flush=True)
    return rows


def regimes(steps: int, seeds: list[int]) -> list[str]:
    tasks, proto, ncm = RegimeTasks(), [], []
    tic = time.perf_counter()
    for seed in seeds:
        evaluation = tasks.fixed(200, 1_000 + seed)
        learner = MetaLearner(ProtoNet(tasks.features, seed=seed), algorithm="protonet", seed=seed)
        learner.fit(tasks, steps, batch_size=16, progress=False)
        proto.append(prototype_accuracy(learner, *evaluation))
        ncm.append(nearest_mean_accuracy(*evaluation))
    took = time.perf_counter() - tic
    rows = [
        f"| ProtoNet ({steps} steps) | {_cell(proto)} | {took:.0f} s |",
        f"| nearest class mean, raw features | {_cell(ncm)} | - |",
    ]
    print(*rows, sep="\n", flush=True)
    return rows


def latency(rounds: int = 30, windows: int = 20) -> list[str]:
    f, s = 12, 60
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((windows, s, f)).astype(np.float32)
    ys = (0.01 * rng.standard_normal((windows, s))).astype(np.float32)
    rows_x = rng.standard_normal((windows, f)).astype(np.float32)
    learners = {
        "maml": MetaLearner(MLP(f, (32, 32)), algorithm="maml", inner_steps=5),
        "cnp": MetaLearner(CNP(f, 32), algorithm="cnp"),
        "cavia": MetaLearner(CaviaMLP(f, (32, 32)), algorithm="cavia", inner_steps=5),
        "protonet": MetaLearner(ProtoNet(f, (32, 32)), algorithm="protonet"),
    }
    times: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(rounds):
        for name, learner in learners.items():
            tic = time.perf_counter()
            for w in range(windows):
                learner.adapt(xs[w], ys[w]).predict_row(rows_x[w])
            times[name].append((time.perf_counter() - tic) / windows)
    base = times["maml"]
    rows = []
    for name, values in times.items():
        ratio = statistics.median(v / b for v, b in zip(values, base))
        rows.append(
            f"| {name} | {min(values) * 1e6:.0f} us | {statistics.median(values) * 1e6:.0f} us "
            f"| {ratio:.2f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="outer steps per sinusoid run")
    parser.add_argument("--proto-steps", type=int, default=400, help="outer steps of ProtoNet")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="write the Markdown tables here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    tic = time.perf_counter()
    print(f"load before: {load}")
    lat = latency()
    sin = sinusoid(args.steps, args.seeds)
    reg = regimes(args.proto_steps, args.seeds)
    after = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    command = "OMP_NUM_THREADS=1 python " + " ".join(
        ["benchmarks/bench_learners.py", *sys.argv[1:]]
    )
    text = "\n".join(
        [
            "# Meta-learner families (`benchmarks/bench_learners.py`)",
            "",
            f"Command: `{command}` (torch {torch.__version__}, 1 torch thread, "
            f"{os.cpu_count()} CPUs shared with other jobs).",
            f"Load (`uptime`) before: `{load}`; after: `{after.strip()}`.",
            f"Total {time.perf_counter() - tic:.0f} s.",
            "",
            f"## Sinusoid, K=10, {args.steps} outer steps, meta-batch 25, seeds {args.seeds}",
            "",
            "Query MSE on 200 held-out tasks (mean ± sd over seeds). MAML, ERM, CAVIA: 10",
            "gradient steps at test time (CAVIA: on the 4-dim context only); CNP: none",
            "(it always reads the support set, so its two columns are equal).",
            "",
            "| method | before adaptation | after adaptation | time (3 seeds) |",
            "|---|---|---|---|",
            *sin,
            "",
            f"## Regime classification (RegimeTasks: S=60, Q=20, F=12), seeds {args.seeds}",
            "",
            "Query accuracy over 200 held-out tasks, classes down/flat/up at the support's",
            "terciles (chance 1/3).",
            "",
            "| method | accuracy | time |",
            "|---|---|---|",
            *reg,
            "",
            "## Adaptation latency per support window (S=60, F=12), one process",
            "",
            "adapt + one predict_row, 20 windows x 30 interleaved rounds; ratio = median of",
            "per-round ratios to MAML (5 inner steps on the fused NumPy kernel).",
            "",
            "| learner | best | median | ratio to MAML |",
            "|---|---|---|---|",
            *lat,
            "",
        ]
    )
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
