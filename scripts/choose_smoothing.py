"""Choose the demo's ``smooth`` and ``rebalance_band`` (and compare the objectives) on validation.

The rule, fixed before the run (issue 20), is ``metabt.experiments.smoothing.pick``: among
the candidates, the best validation net Sharpe subject to a validation two-way turnover of
at most 40x a year; if none qualifies, the lowest turnover. For each objective (``mse``,
``sharpe``), the demo learner is trained as ``metabt backtest`` trains it (data strictly
before the demo's start, keep-best on the validation tasks of its last ``val_years``);
then MetaStrategy is backtested, with the demo's costs and sizer, on those validation
years only (2006-2007 for the sample data), once per candidate ``smooth`` and sizer
``rebalance_band`` (the relative tolerance band on the volatility-targeted size,
:class:`metabt.sizers.SignalSizer`). No test-period price is read: the frames are cut at
the demo's start.

The P&L objective trains with the smoothing it will trade with, so each (objective, smooth)
pair trains its own learner; the band does not enter training, so each learner is
backtested once per band: 2 x 4 trainings and 2 x 4 x 4 backtests, 5 minutes on 2 busy
cores. A choice at a grid's edge is flagged.

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
from metabt.experiments.parts import hold_out_years, train_learner
from metabt.experiments.smoothing import pick, validation_window
from metabt.strategies.meta import MetaStrategy

CANDIDATES = (1, 5, 10, 20)
BANDS = (0.0, 0.25, 0.5, 0.75)
OBJECTIVES = ("mse", "sharpe")
MAX_TURNOVER = 40.0  # two-way, per year


def validation_runs(
    frames: dict[str, pd.DataFrame], cfg: RunConfig
) -> dict[float, dict[str, float]]:
    """Train ``cfg``'s learner before the demo's start; backtest it on the validation years
    once per candidate band. Returns band -> that backtest's figures."""
    start = pd.Timestamp(cfg.start)
    val_start, val_end = validation_window(start, hold_out_years(frames, cfg, start))
    trained = train_learner(frames, cfg, end=start, progress=False)
    out = {}
    for band in BANDS:
        result = run_backtest(
            MetaStrategy,
            frames,
            start=val_start,
            end=val_end,
            warmup_bars=cfg.warmup_bars,
            costs=Costs(),
            strategy_kwargs={
                "learner": trained.learner,
                **cfg.strategy_kwargs(),
                "smooth": cfg.smooth,
            },
            sizer_kwargs={**cfg.sizer, "rebalance_band": band},
        )
        m = result.metrics
        out[band] = {
            "net_sharpe": float(m["sharpe"]),
            "gross_sharpe": float(m["gross_sharpe"]),
            "turnover": float(m["turnover_two_way"]),
            "break_even_bps": float(m.get("break_even_bps", float("nan"))),
            "kept_step": float(trained.fit.best_step),
        }
    return out


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
    rows: dict[tuple[str, int, float], dict[str, float]] = {}
    for objective in OBJECTIVES:
        for smooth in CANDIDATES:
            tic = time.perf_counter()
            cfg = DEMO.with_(objective=objective, smooth=smooth)
            for band, row in validation_runs(frames, cfg).items():
                rows[(objective, smooth, band)] = row
                print(
                    f"objective {objective:6s} smooth {smooth:2d} band {band:4.2f}: validation "
                    f"net Sharpe {row['net_sharpe']:6.2f} (gross {row['gross_sharpe']:5.2f}), "
                    f"turnover {row['turnover']:6.1f}x, break-even "
                    f"{row['break_even_bps']:5.1f} bps, kept step {row['kept_step']:.0f}",
                    flush=True,
                )
            print(f"  ({time.perf_counter() - tic:.0f}s)", flush=True)
    scores = {key: (row["net_sharpe"], row["turnover"]) for key, row in rows.items()}
    (objective, smooth, band), how = pick(scores, MAX_TURNOVER)
    print(f"chosen ({how}): objective {objective}, smooth {smooth}, rebalance_band {band}")
    for name, value, grid in (("smooth", smooth, CANDIDATES), ("rebalance_band", band, BANDS)):
        if value in (min(grid), max(grid)):
            print(f"note: {name} {value} is at the edge of its grid {list(grid)}")
    demo = (DEMO.objective, DEMO.smooth, DEMO.sizer.get("rebalance_band", 0.0))
    if args.check and demo != (objective, smooth, band):
        print(f"DEMO has objective, smooth, rebalance_band {demo}: update it")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
