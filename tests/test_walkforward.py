"""walkforward: test folds that are contiguous, non-overlapping and cover the period."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from metabt.errors import ConfigError
from metabt.walkforward import walkforward_folds


def test_walkforward_folds_are_contiguous_and_cover_the_period():
    folds = walkforward_folds("2008-01-01", "2013-03-01")
    assert folds[0][0] == pd.Timestamp("2008-01-01") and folds[-1][1] == pd.Timestamp("2013-03-01")
    for (_, end), (nxt, _) in itertools.pairwise(folds):
        assert nxt == end + pd.Timedelta(days=1)
    assert len(walkforward_folds("2008-01-01", "2013-03-01", years=2)) == 3
    with pytest.raises(ConfigError, match="swap"):
        walkforward_folds("2013-01-01", "2008-01-01")
