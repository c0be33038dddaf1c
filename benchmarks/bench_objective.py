"""The after-cost P&L objective against MSE on a synthetic market with high costs.

Issue 20's check that the sharpe objective is not a stub: on a market with a known,
tradable signal and costs high enough that churning loses money, does meta-training on
the after-cost Sharpe of the sized query path give a better validation net Sharpe than
meta-training on the forecast's MSE? And which inner loop should the sharpe objective
meta-train with: the support MSE (the default) or the same P&L loss on the support path
(``inner_objective="same"``)? Every parameter below is fixed before the first run.

Variants (:data:`VARIANTS`): ``mse``; ``sharpe`` with the MSE inner loop; ``sharpe``
with the P&L inner loop; and ``sharpe`` with the MSE inner loop and a learned
partial-adjustment rate κ (``partial_adjustment=True``, traded at the learned κ).

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
  two-way turnover. No test period: the question is the one keep-best asks. The
  backtest's adaptation descends the support MSE for every variant (MetaStrategy has no
  P&L adaptation), so the P&L-inner learner is traded with another inner loop than it
  was meta-trained with. Its own adaptation is scored too: on the validation tasks, each
  variant's kept θ is adapted with the MSE inner loop and with the P&L one, and the
  after-cost Sharpe of the pooled query paths (the sharpe objective, soft clips,
  annualised) is reported for both ("task Sharpe, mse-adapted / pnl-adapted").

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

from metabt.config.defaults import DEMO, RunConfig
from metabt.data.synthetic import regime_market
from metabt.experiments.backtest import Costs, run_backtest
from metabt.experiments.parts import VAL_TASKS, train_learner
from metabt.experiments.smoothing import validation_window
from metabt.features.spec import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn.learner import MetaLearner
from metabt.learn.training import batch_extra
from metabt.strategies.meta import MetaStrategy

STRENGTH = 0.5
ASSETS = 3
BARS = 2500
SEEDS = (0, 1, 2)
COSTS = Costs(commission_bps=20.0, slippage_bps=5.0, borrow_bps=25.0)
#: name -> (objective, inner_objective, partial_adjustment)
VARIANTS = {
    "mse": ("mse", "mse", False),
    "sharpe, mse inner": ("sharpe", "mse", False),
    "sharpe, pnl inner": ("sharpe", "same", False),
    "sharpe, mse inner, learned k": ("sharpe", "mse", True),
}
BARS_PER_YEAR = 252.0
OUT = Path(__file__).resolve().parent / "results" / "objective.md"


def market(seed: int) -> dict[str, pd.DataFrame]:
    """ASSETS regime markets of BARS bars on one calendar."""
    return {
        f"syn{a}": regime_market(BARS, 1000 * seed + a, strength=STRENGTH)[0] for a in range(ASSETS)
    }


def task_sharpes(
    learner: MetaLearner, cfg: RunConfig, frames: dict[str, pd.DataFrame], end: pd.Timestamp
) -> tuple[float, float]:
    """The kept θ's after-cost Sharpe of the validation tasks' pooled query paths
    (annualised), adapted with the MSE inner loop and with the P&L one."""
    tasks = TaskSampler.from_frames(
        frames,
        cfg.spec,
        support=cfg.support,
        query=cfg.query,
        end=end,
        extras=True,
        bars_per_year=BARS_PER_YEAR,
    )
    _, val = tasks.split(end - pd.DateOffset(days=round(365.25 * cfg.val_years)))
    batch = val.fixed(VAL_TASKS, cfg.seed)
    out = []
    for inner in ("mse", "same"):
        scoring = cfg.with_(
            objective="sharpe", inner_objective=inner, partial_adjustment=learner.adjust is not None
        )
        scorer = MetaLearner(
            learner.model,  # the kept θ itself (scoring does not change it)
            algorithm=learner.algorithm,
            inner_lr=learner.inner_lr,
            inner_steps=learner.inner_steps,
            loss=scoring.task_loss(BARS_PER_YEAR),
        )
        if learner.adjust is not None and scorer.adjust is not None:  # the learned κ, as traded
            scorer.adjust.load_state_dict(learner.adjust.state_dict())
        per_bar = -scorer.evaluate(*batch, extra=batch_extra(batch))
        out.append(per_bar * BARS_PER_YEAR**0.5)
    return out[0], out[1]


def one(seed: int, variant: str) -> dict[str, float]:
    """Train on everything before the end, keep-best on the validation years; backtest them."""
    objective, inner, adjust = VARIANTS[variant]
    frames = market(seed)
    end = max(f.index[-1] for f in frames.values()) + pd.Timedelta(days=1)
    cfg = DEMO.with_(
        spec=FeatureSpec(horizon=1),
        seed=seed,
        smooth=1,
        val_years=2.0,  # fixed before the first run (the default is now capped by history)
        objective=objective,
        inner_objective=inner,
        partial_adjustment=adjust,
        fill_cost_bps=COSTS.per_fill_bps,
        borrow_bps=COSTS.borrow_bps,
    )
    tic = time.perf_counter()
    trained = train_learner(frames, cfg, end=end, progress=False)
    seconds = time.perf_counter() - tic
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
    mse_adapted, pnl_adapted = task_sharpes(trained.learner, cfg, frames, end)
    return {
        "net": float(m["sharpe"]),
        "gross": float(m["gross_sharpe"]),
        "turnover": float(m["turnover_two_way"]),
        "kept": float(trained.fit.best_step),
        "kappa": trained.learner.adjust_rate,
        "task_mse": mse_adapted,
        "task_pnl": pnl_adapted,
        "seconds": seconds,
    }


def main() -> None:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = {(s, v): one(s, v) for s in SEEDS for v in VARIANTS}
    end_load = os.getloadavg()[0]
    lines = [
        "# The P&L objective against MSE, synthetic regime market, high costs",
        "",
        f"strength {STRENGTH}, {ASSETS} assets x {BARS} bars, costs {COSTS.describe()}; "
        f"maml, 600 steps, horizon 1, smooth 1; validation years backtested (the backtest "
        f"adapts on the support MSE for every variant); load average {load:.2f} at the "
        f"start, {end_load:.2f} at the end. Written by `benchmarks/bench_objective.py`.",
        "",
        "| seed | variant | net Sharpe | gross Sharpe | turnover (2-way, x/yr) | kept step | "
        "k | task Sharpe, mse-adapted | task Sharpe, pnl-adapted | training s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (seed, variant), r in rows.items():
        lines.append(
            f"| {seed} | {variant} | {r['net']:.2f} | {r['gross']:.2f} | "
            f"{r['turnover']:.1f} | {r['kept']:.0f} | {r['kappa']:.2f} | "
            f"{r['task_mse']:.2f} | {r['task_pnl']:.2f} | {r['seconds']:.0f} |"
        )
    lines.append("")
    for variant in VARIANTS:
        net = [rows[s, variant]["net"] for s in SEEDS]
        turn = [rows[s, variant]["turnover"] for s in SEEDS]
        secs = [rows[s, variant]["seconds"] for s in SEEDS]
        lines.append(
            f"- {variant}: mean net Sharpe {statistics.mean(net):.2f} "
            f"(sd {statistics.stdev(net):.2f}), mean turnover {statistics.mean(turn):.1f}x, "
            f"mean training time {statistics.mean(secs):.0f} s"
        )
    base = "sharpe, mse inner"
    for variant in VARIANTS:
        if variant == base:
            continue
        wins = sum(rows[s, base]["net"] > rows[s, variant]["net"] for s in SEEDS)
        lines.append(
            f"- {base} beats {variant} on validation net Sharpe in {wins} of {len(SEEDS)} seeds"
        )
    own = sum(rows[s, "sharpe, pnl inner"]["task_pnl"] > rows[s, base]["task_mse"] for s in SEEDS)
    lines.append(
        f"- each adapted with its own inner loop on the validation tasks, the pnl-inner learner "
        f"beats the mse-inner one in {own} of {len(SEEDS)} seeds"
    )
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
