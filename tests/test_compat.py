"""Checkpoints written before the subpackage move load and trade identically.

``tests/data/old_factors.pt`` was written by metabt at commit 88f290d (flat modules) with
factor features recorded as ``metabt.factors:beta`` and ``metabt.factors:resid_mom``;
``old_factors_returns.csv`` holds that version's backtest returns of it
(``tests/data/make_old_factors.py``, run against that commit). The old module paths resolve
through the alias table ``metabt._trust.MOVED_MODULES``, not through shim modules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metabt._trust import MOVED_MODULES
from metabt.data import load_ohlcv, sample_files
from metabt.experiments.backtest import run_backtest
from metabt.features.factors import with_benchmark
from metabt.learn import MetaLearner
from metabt.strategies.meta import MetaStrategy

DATA = Path(__file__).resolve().parent / "data"


def test_the_old_checkpoint_records_the_old_module_paths():
    ckpt = torch.load(DATA / "old_factors.pt", weights_only=True)
    paths = [f["import_path"] for f in ckpt["feature_spec"]["custom"]]
    assert paths == ["metabt.factors:beta", "metabt.factors:resid_mom"]
    assert MOVED_MODULES["metabt.factors"] == "metabt.features.factors"


def test_no_shim_module_stands_at_an_old_path():
    root = Path(__file__).resolve().parents[1]
    for old in MOVED_MODULES:
        flat = root / (old.replace(".", "/") + ".py")
        assert not flat.exists() or old in ("metabt.data", "metabt.features"), flat


def test_an_old_checkpoint_with_factor_features_loads_and_trades_identically():
    learner = MetaLearner.load(DATA / "old_factors.pt")
    assert [ref.import_path for ref in learner.feature_spec.custom] == [
        "metabt.features.factors:beta",
        "metabt.features.factors:resid_mom",
    ]
    files = {p.stem: p for p in sample_files()}
    bench = Path(files["AAPL"]).parent / "benchmarks" / "DIA.csv"
    frames = {
        n: with_benchmark(load_ohlcv(files[n]), bench).loc["2005-01-01":"2009-06-30"]
        for n in ("AAPL", "IBM")
    }
    result = run_backtest(
        MetaStrategy,
        frames,
        start="2008-01-02",
        end="2008-12-31",
        strategy_kwargs={"learner": learner, "support": 40},
    )
    old = pd.read_csv(DATA / "old_factors_returns.csv", index_col=0, parse_dates=True).iloc[:, 0]
    assert len(result.returns) == len(old) == 253
    assert (result.returns.index == old.index).all()
    np.testing.assert_allclose(result.returns.to_numpy(), old.to_numpy(), rtol=1e-9, atol=1e-12)
