"""plotting: backtrader's chart of a run saved to PNG with no display."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_plot_saves_a_png_headless(tmp_path):
    """In a process with no DISPLAY, where backtrader's own cerebro.plot() wants TkAgg."""
    code = f"""
import metabt
from metabt.experiments.backtest import run_backtest
from metabt.strategies.baselines import SmaCross
from metabt.data.ohlcv import load_ohlcv
frames = {{"IBM": load_ohlcv({str(ROOT / "sample_data" / "IBM.csv")!r}).loc["2010":"2011"]}}
run = run_backtest(SmaCross, frames, start="2011-01-03")
print(metabt.plot(run.strategy, {str(tmp_path / "chart.png")!r}, size=(8, 5), dpi=60))
"""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    png = (tmp_path / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]  # written atomically


def test_plot_refuses_a_strategy_that_has_not_run(tmp_path):
    import backtrader as bt

    from metabt import plot
    from metabt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"after cerebro\.run"):
        plot(bt.Strategy, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="style"):
        plot(object(), tmp_path / "x.png", style="3d")
