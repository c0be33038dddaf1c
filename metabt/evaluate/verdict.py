"""Judging a comparison: the best baseline, block-bootstrap intervals, DSR, HAC ICs, a verdict.

Given the backtests of one run (MetaStrategy and its baselines on the same data, period,
costs and sizer), :func:`judge` adds to each strategy's metrics the probabilistic and
deflated Sharpe ratios, its Sharpe difference with the best non-meta baseline (with a
stationary block-bootstrap interval), and its information coefficients with Newey–West
t-statistics, and states the verdict in plain words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from metabt.evaluate.ic import cross_sectional_ic, panel_ic
from metabt.evaluate.ledger import WindowCount
from metabt.evaluate.metrics import metrics_table, probabilistic_sharpe
from metabt.evaluate.significance import block_bootstrap_sharpe_diff, deflated_sharpe, stepm_pvalues

__all__ = [
    "META_VARIANTS",
    "Run",
    "STEPM_BENCHMARK",
    "Verdict",
    "aggregate_seeds",
    "judge",
]

#: The benchmark of the primary multiple-testing test, fixed in advance: the equal-weight
#: basket held (the roster's BuyAndHold).
STEPM_BENCHMARK = "BuyAndHold"

#: Strategies built on the meta-learned initialisation: never "the best baseline".
META_VARIANTS = frozenset({"MetaStrategy", "MetaOnline", "MetaDrift", "StaticModel"})


class Run(Protocol):
    """What :func:`judge` reads of a run: ``metabt.experiments.backtest.BacktestResult`` is one."""

    name: str
    returns: pd.Series
    metrics: dict[str, float]
    signals: dict[str, pd.DataFrame] | None


@dataclass(frozen=True)
class Verdict:
    """Does the candidate beat the best non-meta baseline after costs, beyond noise?

    Attributes:
        candidate: the strategy judged (MetaStrategy).
        baseline: the non-meta baseline with the highest Sharpe in the run.
        diff, lo, hi: candidate's annualised Sharpe minus the baseline's, and its 95%
            stationary block-bootstrap interval.
        block: expected block length of the bootstrap, bars (Politis–White on the Sharpe
            difference's influence function).
        dsr: the candidate's deflated Sharpe ratio over ``n_trials`` strategies.
        n_trials: strategies in the run.
        half, double: the interval at half and at twice the block.
        p_stepm: the primary test's p-value: the candidate's Romano–Wolf step-down p-value
            against ``stepm_benchmark`` (fixed in advance: the equal-weight basket,
            BuyAndHold), every strategy of the run in the family, on vol-scaled returns.
        fragile: True when those three intervals disagree (above 0, below 0, or across
            it): the verdict then depends on the block length and says so.
        evaluations: strategies evaluated on this test window over every run the trial
            ledger holds (this one included); 0 without a ledger.
        effective_trials: the ledger's effective number of trials on the window (Nyholt
            2004), the N of ``dsr`` when there is a ledger; NaN without one.
        ledger_runs: runs the ledger holds on the window (0 without a ledger).
        sharpe, baseline_sharpe: the candidate's and the baseline's annualised Sharpe
            ratios after costs (NaN when not given), named beside their difference.
    """

    candidate: str
    baseline: str
    diff: float
    lo: float
    hi: float
    block: float
    dsr: float
    n_trials: int
    half: tuple[float, float] = (math.nan, math.nan)
    double: tuple[float, float] = (math.nan, math.nan)
    fragile: bool = False
    p_stepm: float = math.nan
    stepm_benchmark: str = ""
    evaluations: int = 0
    effective_trials: float = math.nan
    ledger_runs: int = 0
    sharpe: float = math.nan
    baseline_sharpe: float = math.nan

    @property
    def edge(self) -> bool:
        """True only with both kinds of evidence: interval above 0 and DSR >= 0.95."""
        return self.lo > 0 and self.dsr >= 0.95

    @property
    def text(self) -> str:
        """The verdict in one line, plain words first."""
        sensitivity = (
            f"; at half and twice the block: {self.half[0]:+.2f} to {self.half[1]:+.2f}, "
            f"{self.double[0]:+.2f} to {self.double[1]:+.2f}"
            if math.isfinite(self.half[0])
            else ""
        )
        both = (
            f"Sharpe {self.candidate} {self.sharpe:+.2f} vs {self.baseline} "
            f"{self.baseline_sharpe:+.2f}: difference {self.diff:+.2f}"
            if math.isfinite(self.sharpe) and math.isfinite(self.baseline_sharpe)
            else f"Sharpe difference {self.diff:+.2f} vs {self.baseline}"
        )
        evidence = (
            f"{both} (95% block-bootstrap interval "
            f"{self.lo:+.2f} to {self.hi:+.2f}, mean block {self.block:.0f} bars{sensitivity})"
            f"; deflated Sharpe {self.dsr:.2f} (an edge needs 0.95) over "
            + (
                f"the test window's effective {self.effective_trials:.1f} trials (this "
                f"window has been evaluated {self.evaluations} times in {self.ledger_runs} "
                "run(s), trial ledger)"
                if self.evaluations
                else f"{self.n_trials} strategies"
            )
        )
        if math.isfinite(self.p_stepm):
            evidence += (
                f"; primary test, Romano-Wolf step-down against {self.stepm_benchmark} over "
                f"the run's {self.n_trials} strategies (returns scaled to a common "
                f"volatility): p = {self.p_stepm:.2f}"
            )
        if self.fragile:
            evidence += "; fragile: the conclusion changes with the block length"
        if self.edge:
            head = f"{self.candidate} beats {self.baseline} after costs"
        elif self.lo > 0:
            head = (
                f"{self.candidate} is ahead of {self.baseline}, but the deflated Sharpe does "
                "not rule out luck: no reliable evidence of an edge"
            )
        elif self.hi < 0:
            head = f"{self.baseline} beats {self.candidate} after costs"
        elif not math.isfinite(self.diff):
            head = f"no verdict: {self.candidate} or {self.baseline} has constant returns"
        else:
            head = f"no evidence of an edge over {self.baseline}"
        return f"verdict: {head}: {evidence}"


def _best_baseline(results: Sequence[Run]) -> Run:
    pool = [r for r in results if r.name not in META_VARIANTS]
    if not pool:
        raise ValueError("judge needs at least one non-meta baseline")
    return max(pool, key=lambda r: np.nan_to_num(r.metrics.get("sharpe", math.nan), nan=-np.inf))


def judge(
    results: Sequence[Run],
    *,
    horizon: int,
    candidate: str = "MetaStrategy",
    seed: int = 0,
    n_resamples: int = 2000,
    periods_per_year: int = 252,
    ledger: WindowCount | None = None,
) -> tuple[pd.DataFrame, Verdict]:
    """Significance columns for every strategy of a run, and the candidate's verdict.

    Added to each row: ``psr`` (probabilistic Sharpe ratio, P[true Sharpe > 0]); ``dsr``
    (deflated Sharpe ratio over all strategies of the run, Bailey and López de Prado 2014);
    ``sharpe_vs_best`` with ``_lo``/``_hi`` (annualised Sharpe minus the best non-meta
    baseline's, 95% stationary block-bootstrap interval, block length by Politis–White on
    the difference's influence function) and ``block``, the intervals at half and twice the
    block (``sharpe_vs_best_lo_half`` ... ``_hi_double``) and ``fragile`` (1 when they
    disagree); ``p_stepm`` (Romano–Wolf step-down p-value against :data:`STEPM_BENCHMARK`,
    every other strategy of the run in the family, on returns scaled to a common ex-ante
    volatility; NaN without that benchmark); for strategies with a forecast, ``ic_pooled``
    (the IC pooled over every (asset, bar) pair of per-asset z-scores), ``ic_t`` and
    ``rank_ic_t`` (its and the rank IC's Driscoll–Kraay t-statistics, ``horizon`` lags,
    :func:`metabt.evaluate.ic.panel_ic`), ``ic_tradable`` and ``ic_tradable_t`` (the
    same against the return from the next bar's open, where orders fill), and with 3 or more
    assets ``cs_ic`` / ``cs_ic_t`` (cross-sectional rank IC per bar, averaged, HAC
    t-statistic).

    Args:
        results: the run's backtests, one per strategy, on the same dates.
        horizon: the label horizon, bars (the HAC lags).
        candidate: the strategy the verdict is about. Default "MetaStrategy".
        seed: seed of the bootstrap. Default 0.
        n_resamples: bootstrap resamples. Default 2000.
        periods_per_year: bars per year that annualise the Sharpe differences (the run's
            ``BacktestResult.frequency.periods``). Default 252 (daily bars).
        ledger: the trial ledger's count of this test window (this run's strategies
            included, :meth:`metabt.evaluate.ledger.Ledger.count`): the ``dsr`` column
            then deflates over the window's effective number of trials and the verdict
            says how often the window has been evaluated. None: over the run's strategies.

    Returns:
        (table indexed by strategy, :class:`Verdict`).

    Raises:
        ValueError: no non-meta baseline, or no row named ``candidate``.
    """
    best = _best_baseline(results)
    trials = {r.name: r.returns for r in results}
    stepm = {}
    if STEPM_BENCHMARK in trials:
        family = {k: v for k, v in trials.items() if k != STEPM_BENCHMARK}
        stepm = stepm_pvalues(
            family,
            trials[STEPM_BENCHMARK],
            periods_per_year=periods_per_year,
            n_resamples=n_resamples // 2,
            seed=seed,
        )
    rows: dict[str, dict[str, float]] = {}
    for r in results:
        row = dict(r.metrics)
        row["psr"] = probabilistic_sharpe(r.returns, periods_per_year=periods_per_year)
        row["dsr"] = deflated_sharpe(r.returns, trials) if ledger is None else ledger.dsr(r.returns)
        boot = block_bootstrap_sharpe_diff(
            r.returns,
            best.returns,
            seed=seed,
            n_resamples=n_resamples,
            periods_per_year=periods_per_year,
        )
        row["sharpe_vs_best"] = boot["diff"]
        row["sharpe_vs_best_lo"] = boot["lo"]
        row["sharpe_vs_best_hi"] = boot["hi"]
        row["block"] = boot["block"]
        for key in ("lo_half", "hi_half", "lo_double", "hi_double"):
            row[f"sharpe_vs_best_{key}"] = boot[key]
        row["fragile"] = boot["fragile"]
        row["p_stepm"] = stepm.get(r.name, math.nan)
        row.update(_ic_columns(r.signals, horizon))
        rows[r.name] = row
    table = metrics_table(rows)
    if candidate not in table.index:
        raise ValueError(f"no strategy named {candidate!r} in the run")
    c = table.loc[candidate]
    verdict = Verdict(
        candidate=candidate,
        baseline=best.name,
        diff=float(c["sharpe_vs_best"]),
        lo=float(c["sharpe_vs_best_lo"]),
        hi=float(c["sharpe_vs_best_hi"]),
        block=float(c["block"]),
        dsr=float(c["dsr"]),
        n_trials=len(results),
        half=(float(c["sharpe_vs_best_lo_half"]), float(c["sharpe_vs_best_hi_half"])),
        double=(float(c["sharpe_vs_best_lo_double"]), float(c["sharpe_vs_best_hi_double"])),
        fragile=bool(c["fragile"] == 1.0),
        p_stepm=float(c["p_stepm"]),
        stepm_benchmark=STEPM_BENCHMARK if stepm else "",
        evaluations=0 if ledger is None else ledger.evaluations,
        effective_trials=math.nan if ledger is None else ledger.effective,
        ledger_runs=0 if ledger is None else ledger.runs,
        sharpe=float(c.get("sharpe", math.nan)),
        baseline_sharpe=float(table.loc[best.name].get("sharpe", math.nan)),
    )
    return table, verdict


def _ic_columns(pairs: Mapping[str, pd.DataFrame] | None, horizon: int) -> dict[str, float]:
    """Mean over assets of the HAC IC statistics, close-to-close and tradable."""
    if not pairs:
        return {}
    forward = panel_ic(pairs, lags=horizon)
    tradable = panel_ic(pairs, lags=horizon, column="tradable")
    out = {
        "ic_pooled": forward["ic"],
        "ic_t": forward["ic_t"],
        "rank_ic_t": forward["rank_ic_t"],
        "ic_tradable": tradable["ic"],
        "ic_tradable_t": tradable["ic_t"],
    }
    if len(pairs) >= 3:
        cs = cross_sectional_ic(pairs, lags=horizon)
        out.update({"cs_ic": cs["cs_ic"], "cs_ic_t": cs["cs_ic_t"]})
    return out


def aggregate_seeds(tables: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Mean and standard deviation across seeds of every metric of every strategy.

    Args:
        tables: seed -> a run's table (strategies x metrics, as :func:`judge` returns).

    Returns:
        DataFrame indexed by (strategy, metric) with columns ``mean``, ``sd`` (ddof=1;
        NaN with one seed), ``n`` (seeds with a finite value) and one column per seed.
    """
    stacked = pd.concat(
        {seed: t.select_dtypes("number").stack(future_stack=True) for seed, t in tables.items()},
        axis=1,
    )
    stacked.index.names = ["strategy", "metric"]
    out = pd.DataFrame(
        {
            "mean": stacked.mean(axis=1),
            "sd": stacked.std(axis=1, ddof=1),
            "n": stacked.notna().sum(axis=1).astype(float),
        }
    )
    return pd.concat([out, stacked.add_prefix("seed_")], axis=1)
