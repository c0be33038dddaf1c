"""Choose the demo's ``smooth`` (and compare the objectives) on validation data only.

The rule, fixed before the run (issue 20), is ``metabt.experiments.smoothing.pick``: among
the candidates, the best validation net Sharpe subject to a validation two-way turnover of
at most 40x a year; if none qualifies, the lowest turnover. For each objective (``mse``,
``sharpe``), the demo learner is trained as ``metabt backtest`` trains it (data strictly
before the demo's start, keep-best on the validation tasks of its last ``val_years``);
then MetaStrategy is backtested, with the demo's costs and sizer, on those validation
years only (2006-2007 for the sample data), once per candidate ``smooth``. No test-period
price is read: the frames are cut at the demo's start.

The P&L objective trains with the smoothing it will trade with, so each (objective, smooth)
pair trains its own learner: 2 x 4 trainings and backtests, ~5 minutes on 2 idle cores.

    python scripts/choose_smoothing.py            # prints the table and the choice
    python scripts/choose_smoothing.py --check    # exit 1 unless DEMO matches the choice
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd
import torch

from metabt.config.defaults import DEMO, RunConfig
from metabt.data.ohlcv import load_many, sample_files
from metabt.experiments.backtest import Costs, run_backtest
from metabt.experiments.parts import train_learner
from metabt.experiments.smoothing import pick, validation_window
from metabt.strategies.meta import MetaStrategy

CANDIDATES = (1, 5, 10, 20)
OBJECTIVES = ("mse", "sharpe")
MAX_TURNOVER = 40.0  # two-way, per year


def validation_run(frames: dict[str, pd.DataFrame], cfg: RunConfig) -> dict[str, float]:
    """Train ``cfg``'s learner before the demo's start; backtest it on the validation years."""
    start = pd.Timestamp(cfg.start)
    val_start, val_end = validation_window(start, cfg.val_years)
    trained = train_learner(frames, cfg, end=start, progress=False)
    result = run_backtest(
        MetaStrategy,
        frames,
        start=val_start,
        end=val_end,
        warmup_bars=cfg.warmup_bars,
        costs=Costs(),
        strategy_kwargs={"learner": trained.learner, **cfg.strategy_kwargs(), "smooth": cfg.smooth},
        sizer_kwargs=dict(cfg.sizer),
    )
    m = result.metrics
    return {
        "net_sharpe": float(m["sharpe"]),
        "gross_sharpe": float(m["gross_sharpe"]),
        "turnover": float(m["turnover_two_way"]),
        "break_even_bps": float(m.get("break_even_bps", float("nan"))),
        "kept_step": float(trained.fit.best_step),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 unless DEMO matches")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = pd.Timestamp(DEMO.start)
    frames = {
        n: f.loc[: start - pd.Timedelta(days=1)] for n, f in load_many(sample_files()).items()
    }
    print(f"load average {os.getloadavg()[0]:.2f}; validation years before {start.date()}")
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for objective in OBJECTIVES:
        for smooth in CANDIDATES:
            tic = time.perf_counter()
            cfg = DEMO.with_(objective=objective, smooth=smooth)
            rows[(objective, smooth)] = row = validation_run(frames, cfg)
            print(
                f"objective {objective:6s} smooth {smooth:2d}: validation net Sharpe "
                f"{row['net_sharpe']:6.2f} (gross {row['gross_sharpe']:5.2f}), turnover "
                f"{row['turnover']:6.1f}x, break-even {row['break_even_bps']:5.1f} bps, kept "
                f"step {row['kept_step']:.0f} ({time.perf_counter() - tic:.0f}s)",
                flush=True,
            )
    scores = {key: (row["net_sharpe"], row["turnover"]) for key, row in rows.items()}
    (objective, smooth), how = pick(scores, MAX_TURNOVER)
    print(f"chosen ({how}): objective {objective}, smooth {smooth}")
    if args.check and (DEMO.objective, DEMO.smooth) != (objective, smooth):
        print(f"DEMO has objective {DEMO.objective}, smooth {DEMO.smooth}: update it")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
