"""evaluation: the best baseline, the verdict's four cases, and seeds aggregated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from synthetic import daily_returns

from metabt.evaluate.metrics import compute_metrics
from metabt.evaluate.verdict import Verdict, aggregate_seeds, judge


@dataclass
class _Run:
    name: str
    returns: pd.Series
    metrics: dict[str, float] = field(default_factory=dict)
    signals: dict[str, pd.DataFrame] | None = None

    def __post_init__(self) -> None:
        self.metrics = compute_metrics(self.returns)


def _runs(edge: float) -> list[_Run]:
    base = daily_returns(750, seed=1)
    meta = daily_returns(750, seed=2) + edge
    return [
        _Run("MetaStrategy", meta.rename("returns")),
        _Run("StaticModel", (meta * 3).rename("returns")),  # meta variant: never "the best"
        _Run("RollingRidge", (base + 0.0005).rename("returns")),
        _Run("BuyAndHold", (daily_returns(750, seed=3) - 0.001).rename("returns")),
    ]


def test_the_best_baseline_is_the_best_non_meta_one():
    table, verdict = judge(_runs(0.0), horizon=5, n_resamples=300)
    assert verdict.baseline == "RollingRidge"  # StaticModel's higher Sharpe does not count
    assert table.loc["RollingRidge", "sharpe_vs_best"] == 0.0
    assert verdict.n_trials == 4 and 0 <= verdict.dsr <= 1
    row = table.loc["MetaStrategy"]
    assert row["sharpe_vs_best_lo"] <= row["sharpe_vs_best"] <= row["sharpe_vs_best_hi"]


def test_a_large_edge_is_found_and_none_is_not_claimed():
    _, strong = judge(_runs(0.004), horizon=5, n_resamples=300)
    assert strong.edge and strong.text.startswith("verdict: MetaStrategy beats RollingRidge")
    _, none = judge(_runs(0.0), horizon=5, n_resamples=300)
    assert not none.edge


@pytest.mark.parametrize(
    ("lo", "hi", "dsr", "head"),
    [
        (0.1, 0.9, 0.99, "MetaStrategy beats X after costs"),
        (0.1, 0.9, 0.50, "does not rule out luck"),
        (-0.9, -0.1, 0.01, "X beats MetaStrategy after costs"),
        (-0.5, 0.5, 0.30, "no evidence of an edge over X"),
    ],
)
def test_verdict_text_states_each_case_plainly(lo, hi, dsr, head):
    verdict = Verdict("MetaStrategy", "X", (lo + hi) / 2, lo, hi, 3.0, dsr, 10)
    assert head in verdict.text and "deflated Sharpe" in verdict.text
    assert verdict.edge == (lo > 0 and dsr >= 0.95)
    assert "no verdict" in Verdict("MetaStrategy", "X", math.nan, math.nan, math.nan, 1, 0, 2).text


def test_aggregate_seeds_gives_mean_and_sd():
    tables = {
        seed: pd.DataFrame({"sharpe": [seed, 2.0 * seed]}, index=pd.Index(["A", "B"], name="s"))
        for seed in (1, 2, 3)
    }
    stats = aggregate_seeds(tables)
    assert stats.loc[("A", "sharpe"), "mean"] == pytest.approx(2.0)
    assert stats.loc[("B", "sharpe"), "sd"] == pytest.approx(np.std([2, 4, 6], ddof=1))
    assert stats.loc[("A", "sharpe"), "n"] == 3 and "seed_2" in stats.columns


def test_the_verdict_names_both_sharpes_their_difference_and_the_dsr_threshold():
    table, verdict = judge(_runs(0.0), horizon=5, n_resamples=300)
    meta, base = table.loc["MetaStrategy", "sharpe"], table.loc[verdict.baseline, "sharpe"]
    text = verdict.text
    assert f"Sharpe MetaStrategy {meta:+.2f} vs {verdict.baseline} {base:+.2f}" in text
    assert f"difference {verdict.diff:+.2f}" in text
    assert verdict.diff == pytest.approx(meta - base, abs=1e-9)  # a difference, not a Sharpe
    assert "(an edge needs 0.95)" in text
