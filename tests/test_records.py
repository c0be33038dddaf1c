"""run.json: the record of a run (config, data hashes, versions, commit, times)."""

from __future__ import annotations

import hashlib
import json

from metabt._version import __version__
from metabt.experiments.record import (
    RunRecord,
    file_sha256,
    git_commit,
    package_versions,
    plain,
)


def test_file_hash_matches_hashlib(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"date,close\n2020-01-01,1\n" * 1000)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_holds_config_data_checkpoint_versions_and_times(tmp_path):
    data = tmp_path / "a.csv"
    data.write_text("date,close\n")
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights")
    record = RunRecord("backtest", {"seed": 3, "start": __import__("datetime").date(2010, 1, 4)})
    record.add_data([data])
    record.add_checkpoint(ckpt)
    path = record.write(tmp_path / "out" / "run.json")
    saved = json.loads(path.read_text())
    assert saved["command"] == "backtest"
    assert saved["config"] == {"seed": 3, "start": "2010-01-04"}
    assert saved["seeds"] == [3]
    assert saved["data"][0]["sha256"] == file_sha256(data)
    assert saved["checkpoints"][0]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert saved["metabt_version"] == __version__
    assert saved["packages"]["torch"] and saved["packages"]["pandas"]
    assert saved["started_utc"] <= saved["finished_utc"]
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_plain_gives_json_primitives_for_the_record_and_the_sweep():
    """One helper for run.json (NaN kept) and sweep.json (NaN and infinities as null)."""
    import datetime as dt
    import math
    from pathlib import Path

    import numpy as np
    import pandas as pd

    value = {
        1: (np.int64(2), np.float32(0.5), math.nan, -math.inf, Path("a/b")),
        "day": dt.date(2010, 1, 4),
        "at": pd.Timestamp("2010-01-04 10:00"),
        "ok": [True, None, "x", 1.5],
    }
    record = plain(value)
    assert record["1"][:2] == [2, 0.5] and math.isnan(record["1"][2])
    assert record["1"][3] == -math.inf and record["1"][4] == "a/b"
    assert record["day"] == "2010-01-04" and record["at"] == "2010-01-04T10:00:00"
    assert record["ok"] == [True, None, "x", 1.5]
    sweep = plain(value, nan_as_null=True)
    assert sweep["1"][2:4] == [None, None] and {**sweep, "1": None} == {**record, "1": None}
    json.dumps(sweep, allow_nan=False)  # strict JSON


def test_git_commit_outside_a_repository_is_none(tmp_path):
    assert git_commit(tmp_path) is None
    assert package_versions(["surely-not-a-package-xyz"]) == {"surely-not-a-package-xyz": None}
