"""experiments: the shared run settings refuse short histories before any work."""

from __future__ import annotations

import pandas as pd
import pytest

from metabt.errors import ConfigError, DataError
from metabt.experiments import RunSettings


def test_run_settings_refuse_a_history_too_short_before_any_work(sample_frames):
    frames = {"AAPL": sample_frames["AAPL"].loc["2010-11-01":"2011-03-31"]}
    settings = RunSettings(frames=frames, train_frames=frames, start=pd.Timestamp("2011-01-03"))
    with pytest.raises(DataError, match=r"AAPL: \d+ bars to feed .* needs at least 200"):
        settings.check_history(roster=False)
    with pytest.raises(DataError, match="RecursiveLeastSquares"):
        settings.check_history(roster=True)
    long = RunSettings(
        frames=sample_frames, train_frames=sample_frames, start=pd.Timestamp("2010-01-04")
    )
    long.check_history(roster=True)  # 300 bars of warm-up and two years: enough


def test_run_settings_refuse_an_end_before_the_start(sample_frames):
    with pytest.raises(ConfigError, match="swap them"):
        RunSettings(
            frames=sample_frames,
            train_frames=sample_frames,
            start=pd.Timestamp("2011-01-03"),
            end=pd.Timestamp("2010-01-04"),
        )
