"""Inference a referee accepts: warnings for results too good for daily data."""

from __future__ import annotations

import pandas as pd


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
