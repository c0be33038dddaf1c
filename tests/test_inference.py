"""Inference a referee accepts: warnings for results too good for daily data."""

from __future__ import annotations

import pandas as pd
import pytest


def test_a_too_good_daily_result_gets_a_warning_naming_the_usual_leaks():
    from metabt.data.bars import BarFrequency
    from metabt.experiments.backtest import BacktestResult
    from metabt.experiments.compare import implausible_warnings

    def result(name, sharpe, ic, per_year=252.0):
        return BacktestResult(
            name=name,
            returns=pd.Series(dtype=float),
            benchmark=pd.Series(dtype=float),
            metrics={"sharpe": sharpe, "ic": ic},
            strategy=None,
            analyzer=None,
            frequency=BarFrequency("daily" if per_year < 300 else "hourly", per_year),
        )

    lines = implausible_warnings(
        [
            result("Peek", 8.51, 0.988),
            result("Fine", 1.1, 0.02),
            result("Hourly", 6.0, 0.1, per_year=6240.0),
            result("Ic", 0.5, 0.45),
        ]
    )
    assert len(lines) == 2
    assert lines[0].startswith("warning: Peek: a net Sharpe of 8.51 and an IC of 0.99 on daily")
    assert "built from future prices" in lines[0] and "survivorship" in lines[0]
    assert lines[1].startswith("warning: Ic: an IC of 0.45")


def test_the_sharpe_influence_function_gives_lo_2002s_iid_variance():
    """Independent reference: for i.i.d. normal returns the Sharpe's asymptotic variance is
    1 + SR²/2 (Lo 2002); the influence function's variance must match it."""
    import numpy as np

    from metabt.evaluate.significance import sharpe_influence

    rng = np.random.default_rng(0)
    for sr in (0.0, 0.1, 0.3):
        x = rng.normal(sr, 1.0, 400_000)
        influence = sharpe_influence(x)
        assert abs(influence.mean()) < 1e-9
        assert influence.var() == pytest.approx(1 + sr**2 / 2, rel=0.02)
    assert np.isnan(sharpe_influence(np.ones(10))).all()


def test_the_interval_is_reported_at_half_and_twice_the_block_and_fragility_is_flagged():
    import numpy as np

    from metabt.evaluate.significance import block_bootstrap_sharpe_diff
    from metabt.evaluate.verdict import Verdict

    rng = np.random.default_rng(1)
    idx = pd.bdate_range("2010-01-01", periods=1500)
    base = pd.Series(rng.normal(0.0003, 0.01, 1500), index=idx)
    better = pd.Series(base.to_numpy() + rng.normal(0.0015, 0.004, 1500), index=idx)
    out = block_bootstrap_sharpe_diff(better, base, n_resamples=500)
    assert out["lo"] > 0 and out["lo_half"] > 0 and out["lo_double"] > 0
    assert out["fragile"] == 0.0 and out["block"] >= 1.0
    assert out["lo_double"] <= out["hi_double"] and out["lo_half"] <= out["hi_half"]
    fixed = block_bootstrap_sharpe_diff(better, base, n_resamples=500, block=out["block"])
    assert (fixed["lo"], fixed["hi"]) == (out["lo"], out["hi"])  # the same block, seed
    v = Verdict("M", "B", -0.5, -1.0, 0.1, 3.0, 0.1, 5, (-0.9, -0.05), (-1.1, 0.2), True)
    assert "at half and twice the block: -0.90 to -0.05, -1.10 to +0.20" in v.text
    assert v.text.endswith("fragile: the conclusion changes with the block length")


def test_the_panel_ic_t_statistic_equals_linearmodels_driscoll_kraay():
    """Independent reference: linearmodels' PanelOLS with the Driscoll–Kraay (kernel)
    covariance on the same per-asset z-scores; with a date-wide common shock the robust
    t-statistic is far below the naive pooled one."""
    import numpy as np
    import statsmodels.api as sm
    from linearmodels.panel import PanelOLS

    from metabt.evaluate.ic import hac_ic, panel_ic

    rng = np.random.default_rng(0)
    idx = pd.bdate_range("2010-01-01", periods=300)
    common = rng.normal(size=300)
    pairs = {}
    for a in range(5):
        s = rng.normal(size=300) + 0.8 * common  # signals share a date component too
        f = 0.1 * s + 0.7 * common + rng.normal(size=300)
        pairs[f"A{a}"] = pd.DataFrame({"signal": s, "forward": f}, index=idx)
    ours = panel_ic(pairs, lags=5)
    parts = []
    for name, d in pairs.items():
        z = (d - d.mean()) / d.std()
        parts.append(z.assign(entity=name, time=d.index))
    panel = pd.concat(parts).set_index(["entity", "time"])
    ref = PanelOLS(panel["forward"], sm.add_constant(panel[["signal"]])).fit(
        cov_type="kernel", kernel="bartlett", bandwidth=5, debiased=False
    )
    assert ours["ic"] == pytest.approx(float(ref.params["signal"]), rel=1e-10)
    assert ours["ic_t"] == pytest.approx(float(ref.tstats["signal"]), rel=1e-8)
    assert ours["n"] == 1500 and ours["dates"] == 300
    naive = PanelOLS(panel["forward"], sm.add_constant(panel[["signal"]])).fit()
    # the date-wide shock makes the five assets' pairs on a date one draw, not five
    assert ours["ic_t"] < 0.85 * float(naive.tstats["signal"])
    assert np.isfinite([hac_ic(p, lags=5)["ic_t"] for p in pairs.values()]).all()


def _stepm_by_definition(stats, boot):
    """The step-down procedure run at every level α a p-value can take; each hypothesis's
    p-value is the smallest α that rejects it (brute force, no shortcut)."""
    import numpy as np

    n_boot, k = boot.shape
    levels = [(1 + m) / (1 + n_boot) for m in range(n_boot + 1)]
    p = np.ones(k)
    for alpha in reversed(levels):
        rejected: set[int] = set()
        while True:
            active = [i for i in range(k) if i not in rejected]
            if not active:
                break
            worst = boot[:, active].max(axis=1)
            new = {i for i in active if (1 + np.sum(worst >= stats[i])) / (1 + n_boot) <= alpha}
            if not new:
                break
            rejected |= new
        for i in rejected:
            p[i] = alpha
    return p


def test_stepdown_pvalues_equal_the_procedure_run_at_every_level():
    import numpy as np

    from metabt.evaluate.significance import stepdown_pvalues

    rng = np.random.default_rng(4)
    for _ in range(5):
        stats = rng.normal(0, 2, 6)
        boot = rng.normal(0, 1, (99, 6))
        np.testing.assert_allclose(
            stepdown_pvalues(stats, boot), _stepm_by_definition(stats, boot), rtol=0, atol=1e-12
        )


def test_stepm_finds_the_strategy_with_an_edge_and_not_the_null_ones():
    import numpy as np

    from metabt.evaluate.significance import stepm_pvalues, vol_scaled

    rng = np.random.default_rng(5)
    idx = pd.bdate_range("2008-01-01", periods=2000)
    market = rng.normal(0.0003, 0.01, 2000)
    bench = pd.Series(market, index=idx)
    returns = {
        "edge": pd.Series(0.5 * market + rng.normal(0.0015, 0.006, 2000), index=idx),
        # 3x leverage on a copy of the benchmark: scaled, it is the benchmark
        "levered": pd.Series(3 * market, index=idx),
        "noise": pd.Series(rng.normal(0.0, 0.01, 2000), index=idx),
    }
    p = stepm_pvalues(returns, bench, n_resamples=499)
    assert p["edge"] < 0.01
    assert p["levered"] > 0.2 and p["noise"] > 0.2
    scaled = vol_scaled(bench, window=60)
    t = 100
    past = bench.iloc[t - 60 : t]
    assert scaled.loc[idx[t]] == pytest.approx(
        bench.iloc[t] * 0.10 / (past.std(ddof=1) * np.sqrt(252)), rel=1e-12
    )


def test_the_verdict_names_the_primary_test_and_compare_csv_gets_p_stepm():
    import numpy as np

    from metabt.evaluate.verdict import judge

    rng = np.random.default_rng(6)
    idx = pd.bdate_range("2008-01-01", periods=800)
    market = rng.normal(0.0003, 0.01, 800)

    class R:
        def __init__(self, name, r):
            self.name, self.returns, self.signals = name, pd.Series(r, index=idx), None
            self.metrics = {"sharpe": float(r.mean() / r.std() * np.sqrt(252))}

    runs = [
        R("MetaStrategy", 0.5 * market + rng.normal(0, 0.005, 800)),
        R("SmaCross", 0.3 * market + rng.normal(0, 0.005, 800)),
        R("BuyAndHold", market),
    ]
    table, verdict = judge(runs, horizon=5, n_resamples=400)
    assert np.isnan(table.loc["BuyAndHold", "p_stepm"])
    assert 0 < table.loc["MetaStrategy", "p_stepm"] <= 1
    assert verdict.p_stepm == table.loc["MetaStrategy", "p_stepm"]
    assert "primary test, Romano-Wolf step-down against BuyAndHold over the run's 3" in (
        verdict.text
    )
    assert {"sharpe_vs_best_lo_half", "sharpe_vs_best_hi_double", "fragile"} <= set(table)
