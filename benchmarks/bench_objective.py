"""The after-cost P&L objective against MSE on a synthetic market with high costs.

Issue 20's check that the sharpe objective is not a stub: on a market with a known,
tradable signal and costs high enough that churning loses money, does meta-training on
the after-cost Sharpe of the sized query path give a better validation net Sharpe than
meta-training on the forecast's MSE? Every parameter below is fixed before the first run.

* Market: :func:`metabt.data.synthetic.regime_market`, strength 0.5 (regime-known IC
  0.45), regimes of 250 bars on average, 1% daily noise; ASSETS assets of BARS bars each,
  one data seed per (seed, asset).
* Costs: commission 20 bps + slippage 5 bps per fill (25 bps: 3.6x the demo's 7), borrow
  25 bps a year. The P&L objective trains with exactly these costs.
* Learner: the demo's (maml, MLP 32x32, 600 outer steps, support 60, query 20), horizon 1
  (the regime acts one bar ahead), smooth 1 for both objectives (the objective's own
  effect, no smoothing to hide turnover), seeds SEEDS.
* Score: MetaStrategy backtested on the validation years (the last ``val_years`` = 2 of
  the data, whose tasks selected θ), with the run's costs: net Sharpe, gross Sharpe and
  two-way turnover. No test period: the question is the one keep-best asks.

Writes ``benchmarks/results/objective.md``; prints the load average beside the timings.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_objective.py
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from metabt.config.defaults import DEMO
from metabt.data.synthetic import regime_market
from metabt.experiments.backtest import Costs, run_backtest
from metabt.experiments.parts import train_learner
from metabt.experiments.smoothing import validation_window
from metabt.features.spec import FeatureSpec
from metabt.strategies.meta import MetaStrategy

STRENGTH = 0.5
ASSETS = 3
BARS = 2500
SEEDS = (0, 1, 2)
COSTS = Costs(commission_bps=20.0, slippage_bps=5.0, borrow_bps=25.0)
OBJECTIVES = ("mse", "sharpe")
OUT = Path(__file__).resolve().parent / "results" / "objective.md"


def market(seed: int) -> dict[str, pd.DataFrame]:
    """ASSETS regime markets of BARS bars on one calendar."""
    return {
        f"syn{a}": regime_market(BARS, 1000 * seed + a, strength=STRENGTH)[0] for a in range(ASSETS)
    }


def one(seed: int, objective: str) -> dict[str, float]:
    """Train on everything before the end, keep-best on the validation years; backtest them."""
    frames = market(seed)
    end = max(f.index[-1] for f in frames.values()) + pd.Timedelta(days=1)
    cfg = DEMO.with_(
        spec=FeatureSpec(horizon=1),
        seed=seed,
        smooth=1,
        objective=objective,
        fill_cost_bps=COSTS.per_fill_bps,
        borrow_bps=COSTS.borrow_bps,
    )
    tic = time.perf_counter()
    trained = train_learner(frames, cfg, end=end, progress=False)
    first, last = validation_window(end, cfg.val_years)
    result = run_backtest(
        MetaStrategy,
        frames,
        start=first,
        end=last,
        warmup_bars=cfg.warmup_bars,
        costs=COSTS,
        strategy_kwargs={"learner": trained.learner, **cfg.strategy_kwargs()},
        sizer_kwargs=dict(cfg.sizer),
    )
    m = result.metrics
    return {
        "net": float(m["sharpe"]),
        "gross": float(m["gross_sharpe"]),
        "turnover": float(m["turnover_two_way"]),
        "kept": float(trained.fit.best_step),
        "seconds": time.perf_counter() - tic,
    }


def main() -> None:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = {(s, o): one(s, o) for s in SEEDS for o in OBJECTIVES}
    lines = [
        "# The P&L objective against MSE, synthetic regime market, high costs",
        "",
        f"strength {STRENGTH}, {ASSETS} assets x {BARS} bars, costs {COSTS.describe()}; "
        f"maml, 600 steps, horizon 1, smooth 1; validation years backtested; load average "
        f"{load:.2f} at the start",
        "",
        "| seed | objective | net Sharpe | gross Sharpe | turnover (2-way, x/yr) | kept step | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (seed, objective), r in rows.items():
        lines.append(
            f"| {seed} | {objective} | {r['net']:.2f} | {r['gross']:.2f} | "
            f"{r['turnover']:.1f} | {r['kept']:.0f} | {r['seconds']:.0f} |"
        )
    lines.append("")
    for objective in OBJECTIVES:
        net = [rows[s, objective]["net"] for s in SEEDS]
        turn = [rows[s, objective]["turnover"] for s in SEEDS]
        lines.append(
            f"- {objective}: mean net Sharpe {statistics.mean(net):.2f} "
            f"(sd {statistics.stdev(net):.2f}), mean turnover {statistics.mean(turn):.1f}x"
        )
    wins = sum(rows[s, "sharpe"]["net"] > rows[s, "mse"]["net"] for s in SEEDS)
    lines.append(f"- sharpe beats mse on validation net Sharpe in {wins} of {len(SEEDS)} seeds")
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
