"""_checks: argument, date and support-set checks with messages that name the fix."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from metabt._checks import as_date, as_timestamp, check_support, did_you_mean
from metabt.errors import ConfigError


def test_did_you_mean_names_the_closest_option():
    assert did_you_mean("suport", ["support", "query"]) == " (did you mean 'support'?)"
    assert did_you_mean("zzz", ["support"]) == ""


def test_dates_parse_drop_the_zone_and_name_the_parameter():
    assert as_timestamp("2010-01-04", "start") == pd.Timestamp("2010-01-04")
    aware = as_timestamp(pd.Timestamp("2010-01-04 09:30", tz="America/New_York"), "start")
    assert aware == pd.Timestamp("2010-01-04 09:30") and aware.tz is None
    assert as_date("2010-01-04", "start") == dt.date(2010, 1, 4) and as_date(None, "x") is None
    with pytest.raises(ConfigError, match="trade_start must be a date"):
        as_timestamp("soon", "trade_start")


def test_check_support_refuses_what_adaptation_cannot_use():
    check_support(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ConfigError, match="S >= 1"):
        check_support(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ConfigError, match=r"x \(3, 2\) and y \(4,\)"):
        check_support(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ConfigError, match="NaN or infinite"):
        check_support(np.array([[np.inf, 0.0]]), np.zeros(1))
