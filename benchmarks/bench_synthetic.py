"""Synthetic regime family: the whole compare roster on seeded markets of known signal strength.

The family (every parameter below was fixed before the first run and is not changed after
seeing results). Each unit is one (strength, seed):

* the market is :func:`metabt.data.synthetic.regime_market`: log volume i.i.d. N(14, 0.3²) with
  standard score z_t, a hidden regime s_t in {+1, -1} that flips with probability 1/250 per
  bar, and a next-bar log return r_{t+1} = 0.01 * (s_t * strength * z_t + e_{t+1}). A
  forecaster that knew the regime would have an IC of strength / sqrt(1 + strength²); no
  single feature row reveals the regime, and averaged over regimes volume predicts nothing;
* two training assets of TRAIN_BARS bars and one traded asset of TRAIN_BARS + TEST_BARS
  bars on the same business-day calendar, each with its own data seed derived from
  (strength index, seed). The test period is the traded asset's last TEST_BARS bars; every
  model is trained strictly before its first day (the training assets end the day before);
* ``metabt.experiments.compare.compare`` with ``DEMO.with_(spec=FeatureSpec(horizon=1), seed=seed,
  start=...)``: it trains maml, erm and scratch, chooses the ridge penalty and RLS
  forgetting factor on validation tasks, and backtests MetaStrategy, MetaDrift,
  StaticModel, ErmStatic, ErmAdapt, ScratchAdapt, RollingRidge, RecursiveLeastSquares,
  BuyAndHold and SmaCross on the traded asset with default costs, then judges MetaStrategy
  against the best non-meta baseline (``Comparison.runs[0].verdict``).

Writes ``benchmarks/results/synthetic.csv`` (one row per strength, seed and strategy) and
``benchmarks/results/synthetic.md`` (mean ± sd over seeds; ``--quick`` writes
``synthetic_quick.*`` instead). Units run in 2 worker processes, 1 torch thread each.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
        .venv/bin/python benchmarks/bench_synthetic.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# ---------------------------------------------------------------------------------------
# The family's parameters, fixed in code before any run (reasons beside each).
# ---------------------------------------------------------------------------------------
#: Volume-effect strengths, in units of the return-noise sd. 0.0 is the null (no signal:
#: every model strategy should show no edge); 0.5 is half the strength of the test this
#: family replaces (regime-known IC 0.45 instead of 0.71); 0.25 is where a reviewer found
#: no consistent winner; 0.125 is weaker still. Regime-known R²: 0, 1.5%, 5.9%, 20%.
STRENGTHS: tuple[float, ...] = (0.0, 0.125, 0.25, 0.5)
#: Seeds of the whole pipeline (data, model initialisation, task sampling, bootstrap).
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
#: Bars per training asset (about 10 years of business days); DEMO's val_years=2 holds
#: out the last ~500 of them as validation tasks.
TRAIN_BARS = 2500
#: Bars of the test period (about 4 years): long enough for ~4 regimes of 250 bars.
TEST_BARS = 1000
#: Mean regime length, bars (the generator's default: about a trading year).
MEAN_REGIME = 250
#: Return-noise sd, log return per bar (the generator's default: 1% a day).
VOL = 0.01
#: Label horizon, bars. The regime acts one bar ahead, so horizon 1 is part of the
#: family's definition (what there is to predict), not a tuned setting.
HORIZON = 1
#: Training assets per unit (the traded asset is never trained on).
TRAIN_ASSETS = 2
#: First date of every series.
FIRST_DATE = "2000-01-03"
#: --quick: one unit and fewer outer steps, for smoke tests only (results are not the
#: benchmark's).
QUICK_STRENGTH, QUICK_SEED, QUICK_META_STEPS = 0.5, 0, 50
#: Columns recorded per (strength, seed, strategy) from ``Comparison.table``.
METRICS = (
    "sharpe",
    "ic",
    "rank_ic",
    "hit_rate",
    "turnover_two_way",
    "dsr",
    "sharpe_vs_best",
    "sharpe_vs_best_lo",
    "sharpe_vs_best_hi",
)
RESULTS = Path(__file__).resolve().parent / "results"


def data_seed(strength_index: int, seed: int, asset: int) -> int:
    """The data seed of one asset: distinct for every (strength index, seed, asset).

    Assets 0 .. TRAIN_ASSETS-1 are the training assets, TRAIN_ASSETS the traded one.
    """
    return 1000 * (strength_index + 1) + 10 * seed + asset


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_unit(strength_index: int, strength: float, seed: int, meta_steps: int | None) -> dict:
    """One (strength, seed): build the three assets, run ``compare``, return its rows.

    Returns:
        {"rows": one dict per strategy, "seconds": wall time, "verdict": its text}.
    """
    from metabt.config.defaults import DEMO
    from metabt.data.synthetic import regime_market, volume_score
    from metabt.evaluate.ic import pair_ic
    from metabt.experiments.backtest import Costs
    from metabt.experiments.compare import RunSettings, compare
    from metabt.features import FeatureSpec

    tic = time.perf_counter()

    def market(asset: int, n: int) -> tuple[pd.DataFrame, pd.Series]:
        return regime_market(
            n,
            data_seed(strength_index, seed, asset),
            strength=strength,
            mean_regime=MEAN_REGIME,
            vol=VOL,
            start=FIRST_DATE,
        )

    train = {f"train{a}": market(a, TRAIN_BARS)[0] for a in range(TRAIN_ASSETS)}
    traded, regime = market(TRAIN_ASSETS, TRAIN_BARS + TEST_BARS)
    start = traded.index[TRAIN_BARS]
    assert all(f.index[-1] < start for f in train.values())

    # what a forecaster that knows the regime would score on the test period (reference)
    forward = np.log(traded["close"]).diff().shift(-1)
    pair = pd.DataFrame({"signal": regime * volume_score(traded), "forward": forward})
    oracle = pair_ic(pair.loc[start:].dropna())
    oracle_ic = math.nan if oracle is None else oracle[0]

    changes: dict[str, Any] = {
        "spec": FeatureSpec(horizon=HORIZON),
        "seed": seed,
        "start": str(start.date()),
    }
    if meta_steps is not None:
        changes["meta_steps"] = meta_steps
    cfg = DEMO.with_(**changes)
    settings = RunSettings(
        frames={"traded": traded}, train_frames=train, start=start, costs=Costs(), cfg=cfg
    )
    comparison = compare(settings, seeds=[seed], progress=False)
    run = comparison.runs[0]
    verdict = run.verdict
    table = comparison.table
    rows = []
    for strategy in table.index:
        row: dict[str, Any] = {"strength": strength, "seed": seed, "strategy": strategy}
        row.update({m: float(table.loc[strategy, m]) for m in METRICS})
        row["untrained"] = bool(table.loc[strategy, "untrained"])
        row.update(
            {
                "meta_edge": bool(verdict.edge),
                "best_baseline": verdict.baseline,
                "oracle_ic": oracle_ic,
                "meta_val_loss": run.models.meta.val_loss,
                "meta_val_zero_mse": run.models.meta.val_zero_mse,
                "meta_best_step": run.models.meta.fit.best_step,
                "ridge_alpha": run.models.ridge_alpha,
                "rls_forgetting": run.models.rls_forgetting,
                "test_start": str(start.date()),
                "test_bars": len(run.results[0].returns),
                "data_seeds": " ".join(
                    str(data_seed(strength_index, seed, a)) for a in range(TRAIN_ASSETS + 1)
                ),
            }
        )
        rows.append(row)
    return {"rows": rows, "seconds": time.perf_counter() - tic, "verdict": verdict.text}


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # what a plain open() would give, not mkstemp's 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mean_sd(values: Sequence[float], digits: int) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    mean = statistics.fmean(finite)
    if len(finite) == 1:
        return f"{mean:+.{digits}f}"
    return f"{mean:+.{digits}f} ± {statistics.stdev(finite):.{digits}f}"


def markdown(frame: pd.DataFrame) -> str:
    """The distribution over seeds per (strength, strategy), and the verdicts per strength."""
    strengths = sorted(frame["strength"].unique())
    strategies = list(dict.fromkeys(frame["strategy"]))
    n_seeds = frame["seed"].nunique()
    head = "| strategy | " + " | ".join(f"strength {s:g}" for s in strengths) + " |"
    rule = "|---|" + "---|" * len(strengths)
    out = []
    for metric, digits, title in (
        ("sharpe", 2, "Sharpe after costs"),
        ("ic", 3, "IC (signal vs next-bar log return)"),
    ):
        out += [f"{title}, mean ± sd over {n_seeds} seeds:", "", head, rule]
        for strategy in strategies:
            cells = [
                _mean_sd(
                    frame.loc[
                        (frame["strength"] == s) & (frame["strategy"] == strategy), metric
                    ].tolist(),
                    digits,
                )
                for s in strengths
            ]
            out.append(f"| {strategy} | " + " | ".join(cells) + " |")
        out.append("")
    meta = frame[frame["strategy"] == "MetaStrategy"]
    out += [
        "MetaStrategy against the best non-meta baseline of each seed (its verdict):",
        "",
        "| strength | regime-known oracle IC | MetaStrategy edge (seeds) | Sharpe vs best, "
        "mean ± sd | seeds with interval above 0 | best non-meta baseline (seeds) |",
        "|---|---|---|---|---|---|",
    ]
    for s in strengths:
        rows = meta[meta["strength"] == s]
        best = rows["best_baseline"].value_counts()
        names = ", ".join(f"{name} {count}" for name, count in best.items())
        out.append(
            f"| {s:g} | {_mean_sd(rows['oracle_ic'].tolist(), 3)} | "
            f"{int(rows['meta_edge'].sum())} of {len(rows)} | "
            f"{_mean_sd(rows['sharpe_vs_best'].tolist(), 2)} | "
            f"{int((rows['sharpe_vs_best_lo'] > 0).sum())} of {len(rows)} | {names} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: strength {QUICK_STRENGTH}, seed {QUICK_SEED}, "
        f"{QUICK_META_STEPS} meta steps (not the benchmark)",
    )
    args = parser.parse_args()
    if args.quick:
        units = [(STRENGTHS.index(QUICK_STRENGTH), QUICK_STRENGTH, QUICK_SEED)]
        meta_steps: int | None = QUICK_META_STEPS
        stem = "synthetic_quick"
    else:
        units = [(k, s, seed) for k, s in enumerate(STRENGTHS) for seed in SEEDS]
        meta_steps = None
        stem = "synthetic"
    load_before = os.getloadavg()
    strengths = sorted({s for _, s, _ in units})
    seeds = sorted({seed for _, _, seed in units})
    print(
        f"synthetic regime family: strengths {', '.join(f'{s:g}' for s in strengths)}; "
        f"seeds {', '.join(map(str, seeds))}; {len(units)} units; "
        f"{TRAIN_ASSETS} x {TRAIN_BARS} training bars, {TEST_BARS} test bars; horizon "
        f"{HORIZON}; meta steps {meta_steps or 'DEMO default'}"
    )
    print(f"load average before (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)}")
    tic = time.perf_counter()
    rows: list[dict] = []
    workers = min(2, len(units))
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
    ) as pool:
        futures = {pool.submit(run_unit, k, s, seed, meta_steps): (s, seed) for k, s, seed in units}
        for done, future in enumerate(as_completed(futures), 1):
            strength, seed = futures[future]
            result = future.result()
            rows += result["rows"]
            print(
                f"[{done}/{len(units)}] strength {strength:g} seed {seed}: "
                f"{result['seconds']:.0f}s; {result['verdict']}",
                flush=True,
            )
    wall = time.perf_counter() - tic
    load_after = os.getloadavg()
    frame = pd.DataFrame(rows)
    order = {name: i for i, name in enumerate(dict.fromkeys(frame["strategy"]))}
    frame = frame.sort_values(
        ["strength", "seed", "strategy"], key=lambda c: c.map(order) if c.name == "strategy" else c
    ).reset_index(drop=True)
    table = markdown(frame)
    footer = (
        f"wall time {wall / 60:.1f} min on {os.cpu_count()} cores ({workers} worker process(es), "
        f"1 torch thread each); load average (1, 5, 15 min) before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.2f}' for x in load_after)}"
    )
    csv_path, md_path = RESULTS / f"{stem}.csv", RESULTS / f"{stem}.md"
    _write_atomic(csv_path, frame.to_csv(index=False))
    _write_atomic(md_path, table + "\n" + footer + "\n")
    print()
    print(table)
    print(footer)
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
