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

    from metabt.evaluate.metrics import sharpe_influence

    rng = np.random.default_rng(0)
    for sr in (0.0, 0.1, 0.3):
        x = rng.normal(sr, 1.0, 400_000)
        influence = sharpe_influence(x)
        assert abs(influence.mean()) < 1e-9
        assert influence.var() == pytest.approx(1 + sr**2 / 2, rel=0.02)
    assert np.isnan(sharpe_influence(np.ones(10))).all()


def test_the_interval_is_reported_at_half_and_twice_the_block_and_fragility_is_flagged():
    import numpy as np

    from metabt.evaluate.metrics import block_bootstrap_sharpe_diff
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

    from metabt.evaluate.metrics import hac_ic, panel_ic

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
