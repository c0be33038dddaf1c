"""Fast adaptation of factor models on Ken French's monthly portfolios (issue 13, item 5).

MAML-initialised linear factor model (MktRF, SMB, HML, Mom → portfolio excess return)
adapted on k = 6, 12, 24, 36 months vs rolling OLS, rolling CAPM, expanding OLS, θ without
adaptation and pooled OLS fine-tuned the same way; trained ≤ 1989-12, tested 1990-01 to
2017-03 (``metabt.experiments.pricing.pricing_study``). Writes benchmarks/results/pricing.md,
pricing.csv, pricing_per_portfolio.csv and pricing_rmse_vs_k.png.

    python benchmarks/bench_pricing.py [--seeds 0 1 2] [--steps 1500] [--nonlinear]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from metabt.experiments.pricing import PricingSettings, pricing_study

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500, help="outer steps per fit")
    parser.add_argument("--train-end", default="1989-12")
    parser.add_argument("--nonlinear", action="store_true", help="also an MLP 4-16-1")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tic = time.perf_counter()
    study = pricing_study(
        PricingSettings(steps=args.steps, train_end=args.train_end, nonlinear=args.nonlinear),
        seeds=args.seeds,
        log=lambda line: print(f"[pricing] {line}", file=sys.stderr, flush=True),
    )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    study.config["note"] = (
        f"1 thread (torch.set_num_threads(1)), load average {load} on a shared 2-core box; "
        f"wall time {time.perf_counter() - tic:.0f} s."
    )
    for path in study.write(args.out):
        print("wrote", path)
    print("\n".join(study.main_lines()))
    print(f"runtime {time.perf_counter() - tic:.0f} s, load average {load}")


if __name__ == "__main__":
    main()
