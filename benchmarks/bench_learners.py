"""The meta-learner families side by side: sinusoid MSE, regime accuracy, adaptation latency.

1. Sinusoid (Finn et al. 2017, 5.1), K=10, 200 held-out tasks: query MSE after adaptation
   of MAML and ERM (MLP 1-40-40-1, inner lr 0.01, 1 inner step in training, 10 at test),
   CNP (H=40, one forward pass, no step) and CAVIA (MLP 40-40 with a 4-dim context, inner
   lr 1.0, 1 step in training, 10 at test), seeds 0, 1, 2 (mean ± sd).
2. Regime classification (``metabt.experiments.sinusoid.RegimeTasks``, S=60, Q=20, F=12, 2
   informative dims): ProtoNet's query accuracy beside baselines fitted on each task's own
   support set with no meta-learning: nearest class mean on the raw features, per-task OLS
   binned into the same classes (``metabt.learn.algorithms.protonet.ols_accuracy``), and an
   oracle, nearest class mean on the informative dims.
3. Adaptation latency per support window (S=60, F=12; adapt + one ``predict_row``, as
   ``MetaStrategy`` does per adaptation), MAML (MLP 2x32, 5 steps, NumPy kernel), CNP
   (H=32), CAVIA (2x32, 5 steps, autograd), ProtoNet (2x32, E=16), interleaved in one
   process; ratios to MAML (median of per-round ratios, and best-of times).

    python benchmarks/bench_learners.py [--steps 1000] [--seeds 0 1 2] [--out FILE.md]
        [--sections sinusoid regime latency]

``--sections`` runs only those parts; with ``--out`` naming an existing results file, the
other sections are kept from it as that run wrote them, each marked with that run's
command and load, so the file always holds all three.
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

from metabt.experiments.sinusoid import RegimeTasks, nearest_mean_accuracy, run_sinusoid
from metabt.learn.algorithms.protonet import ols_accuracy, prototype_accuracy
from metabt.learn.learner import MetaLearner
from metabt.learn.models import CNP, MLP, CaviaMLP, ProtoNet

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
    tasks, proto, ncm, ols, oracle = RegimeTasks(), [], [], [], []
    informative = slice(0, tasks.signal)
    tic = time.perf_counter()
    for seed in seeds:
        evaluation = tasks.fixed(200, 1_000 + seed)
        learner = MetaLearner(ProtoNet(tasks.features, seed=seed), algorithm="protonet", seed=seed)
        learner.fit(tasks, steps, batch_size=16, progress=False)
        proto.append(prototype_accuracy(learner, *evaluation))
    took = time.perf_counter() - tic
    tic = time.perf_counter()
    for seed in seeds:
        xs, ys, xq, yq = tasks.fixed(200, 1_000 + seed)
        ncm.append(nearest_mean_accuracy(xs, ys, xq, yq))
        ols.append(ols_accuracy(xs, ys, xq, yq))
        oracle.append(nearest_mean_accuracy(xs[..., informative], ys, xq[..., informative], yq))
    baselines = time.perf_counter() - tic
    s, f = tasks.support, tasks.features
    rows = [
        f"| ProtoNet ({steps} steps) | meta-learned | {_cell(proto)} | {took:.0f} s |",
        f"| nearest class mean, raw features | none | {_cell(ncm)} | - |",
        f"| per-task OLS on the {s} support rows (intercept + {f} features), "
        f"binned at the support terciles | none | {_cell(ols)} | {baselines:.1f} s (all 3) |",
        f"| oracle: nearest class mean on the {tasks.signal} informative dims only | "
        f"none (told the informative dims) | {_cell(oracle)} | - |",
    ]
    verdict = "above" if statistics.mean(proto) > statistics.mean(ols) else "below"
    rows += [
        "",
        f"ProtoNet is {verdict} per-task OLS: {statistics.mean(proto):.3f} against "
        f"{statistics.mean(ols):.3f} (means over seeds).",
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
    # per learner: (adapt, predict_row) seconds per window, one entry per round
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in learners}
    for _ in range(rounds):
        for name, learner in learners.items():
            tic = time.perf_counter()
            models = [learner.adapt(xs[w], ys[w]) for w in range(windows)]
            mid = time.perf_counter()
            for w in range(windows):
                models[w].predict_row(rows_x[w])
            end = time.perf_counter()
            times[name].append(((mid - tic) / windows, (end - mid) / windows))
    base = times["maml"]

    def ratio(values: list[tuple[float, float]], bars: int) -> float:
        return statistics.median(
            (a + bars * p) / (ba + bars * bp) for (a, p), (ba, bp) in zip(values, base)
        )

    rows = []
    for name, values in times.items():
        total = [a + p for a, p in values]
        adapt = statistics.median(a for a, _ in values)
        predict = statistics.median(p for _, p in values)
        rows.append(
            f"| {name} | {min(total) * 1e6:.0f} us | {statistics.median(total) * 1e6:.0f} us "
            f"| {ratio(values, 1):.2f}x | {adapt * 1e6:.0f} us | {predict * 1e6:.1f} us "
            f"| {ratio(values, 5):.2f}x |"
        )
        print(rows[-1], flush=True)
    return rows


SECTIONS = ("sinusoid", "regime", "latency")
#: how each section's heading starts in the results file
HEADINGS = {
    "sinusoid": "## Sinusoid",
    "regime": "## Regime classification",
    "latency": "## Adaptation latency",
}
KEPT = "Not re-run by the command above; kept as an earlier run wrote it: "


def _sections_of(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """A results file as (header lines, section name -> its lines, heading first)."""
    header: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] = header
    for line in text.splitlines():
        name = next((n for n, h in HEADINGS.items() if line.startswith(h)), None)
        if name is not None:
            current = sections[name] = []
        current.append(line)
    return header, sections


def _kept(lines: list[str], header: list[str]) -> list[str]:
    """A section kept from an earlier file, marked with that file's command and load."""
    if any(line.startswith(KEPT) for line in lines):
        return lines  # already marked by the run that kept it first
    run = " ".join(
        line.strip() for line in header if line.startswith(("Command:", "Load", "Total"))
    )
    return [lines[0], "", KEPT + run, *lines[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="outer steps per sinusoid run")
    parser.add_argument("--proto-steps", type=int, default=400, help="outer steps of ProtoNet")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="run only these parts; with --out, the others are kept from that file",
    )
    parser.add_argument("--out", default=None, help="write the Markdown tables here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    tic = time.perf_counter()
    print(f"load before: {load}")
    lat = latency() if "latency" in args.sections else []
    sin = sinusoid(args.steps, args.seeds) if "sinusoid" in args.sections else []
    reg = regimes(args.proto_steps, args.seeds) if "regime" in args.sections else []
    after = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    command = "OMP_NUM_THREADS=1 python " + " ".join(
        ["benchmarks/bench_learners.py", *sys.argv[1:]]
    )
    new = {
        "sinusoid": [
            f"## Sinusoid, K=10, {args.steps} outer steps, meta-batch 25, seeds {args.seeds}",
            "",
            "Query MSE on 200 held-out tasks (mean ± sd over seeds). MAML, ERM, CAVIA: 10",
            "gradient steps at test time (CAVIA: on the 4-dim context only); CNP: none",
            "(it always reads the support set, so its two columns are equal).",
            "",
            "| method | before adaptation | after adaptation | time (3 seeds) |",
            "|---|---|---|---|",
            *sin,
        ],
        "regime": [
            f"## Regime classification (RegimeTasks: S=60, Q=20, F=12), seeds {args.seeds}",
            "",
            "Query accuracy over 200 held-out tasks, classes down/flat/up at the support's",
            "terciles (chance 1/3). The label is linear in the 2 informative dims (plus",
            "noise); the other 10 dims are nuisance with sd 3, which drown a nearest class",
            "mean on raw features by construction. The baselines fit each task's own",
            "support set with no meta-learning; the oracle is told which dims carry the",
            "signal, which no learner is.",
            "",
            "| method | meta-learning | accuracy | time |",
            "|---|---|---|---|",
            *reg,
        ],
        "latency": [
            "## Adaptation latency per support window (S=60, F=12), one process",
            "",
            "adapt + one predict_row, 20 windows x 30 interleaved rounds; ratio = median of",
            "per-round ratios to MAML (5 inner steps on the fused NumPy kernel). CNP and",
            "ProtoNet adapt and predict in NumPy (equal to their torch forward to float",
            "precision). Last column: one adaptation and a prediction on each of 5 bars,",
            "MetaStrategy's default cycle (adapt_every=5).",
            "",
            "| learner | best | median | ratio to MAML | adapt (median) "
            "| predict_row (median) | ratio, adapt + 5 predict_row |",
            "|---|---|---|---|---|---|---|",
            *lat,
        ],
    }
    sections = {name: new[name] for name in args.sections}
    missing = [name for name in SECTIONS if name not in sections]
    if missing:
        old_text = ""
        if args.out and os.path.exists(args.out):
            with open(args.out, encoding="utf-8") as fh:
                old_text = fh.read()
        old_header, old_sections = _sections_of(old_text)
        for name in missing:
            if name in old_sections:
                sections[name] = _kept(old_sections[name], old_header)
    body: list[str] = []
    for name in SECTIONS:
        if name in sections:
            lines = sections[name]
            while lines and not lines[-1].strip():
                lines = lines[:-1]
            body += [*lines, ""]
    text = "\n".join(
        [
            "# Meta-learner families (`benchmarks/bench_learners.py`)",
            "",
            f"Command: `{command}` (torch {torch.__version__}, 1 torch thread, "
            f"{os.cpu_count()} CPUs shared with other jobs).",
            f"Load (`uptime`) before: `{load}`; after: `{after.strip()}`.",
            f"Total {time.perf_counter() - tic:.0f} s.",
            "",
            *body,
        ]
    )
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
