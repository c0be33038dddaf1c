"""walkforward: contiguous folds covering the period; the same results on every executor."""

from __future__ import annotations

import itertools
import re

import pandas as pd
import pytest

from metabt.config.defaults import DEMO
from metabt.errors import ConfigError
from metabt.experiments.executors import SERIAL, ProcessExecutor
from metabt.experiments.settings import RunSettings
from metabt.experiments.walkforward import walkforward, walkforward_folds


def test_walkforward_folds_are_contiguous_and_cover_the_period():
    folds = walkforward_folds("2008-01-01", "2013-03-01")
    assert folds[0][0] == pd.Timestamp("2008-01-01") and folds[-1][1] == pd.Timestamp("2013-03-01")
    for (_, end), (nxt, _) in itertools.pairwise(folds):
        assert nxt == end + pd.Timedelta(days=1)
    assert len(walkforward_folds("2008-01-01", "2013-03-01", years=2)) == 3
    with pytest.raises(ConfigError, match="swap"):
        walkforward_folds("2013-01-01", "2008-01-01")


@pytest.mark.slow
def test_walkforward_on_local_processes_equals_serial_bit_for_bit(sample_frames):
    cfg = DEMO.with_(
        meta_steps=2, batch_size=4, val_years=0.5, hidden=(8, 8), inner_steps=1, adapt_every=20
    )
    settings = RunSettings(
        frames=sample_frames,
        train_frames=sample_frames,
        start=pd.Timestamp("2010-12-01"),
        end=pd.Timestamp("2011-12-30"),
        cfg=cfg,
    )
    runs, logs = {}, {}
    with ProcessExecutor(2) as pool:
        for name, executor in (("serial", SERIAL), ("process", pool)):
            lines: list[str] = []
            runs[name] = walkforward(
                settings,
                fold_years=1,
                train_years=2,
                seeds=[0],
                progress=False,
                log=lines.append,
                executor=executor,
            )
            logs[name] = [re.sub(r"\d+\.\d+s\b", "Ts", line) for line in lines]
        assert pool._pool is not None  # an executor passed in is left open
    a, b = runs["serial"], runs["process"]
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    pd.testing.assert_frame_equal(a.summary, b.summary, check_exact=True)
    assert a.verdicts == b.verdicts and logs["serial"] == logs["process"]
    assert a.table["fold"].max() == 2  # two (fold, seed) units
    for name, stitched in a.stitched.items():
        assert stitched.returns.equals(b.stitched[name].returns), name
    assert logs["serial"][0].startswith("fold 1/")
