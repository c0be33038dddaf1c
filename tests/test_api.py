"""The public API of DESIGN.md section 3 imports, and every module keeps a sorted __all__."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "metabt",
    "metabt.algorithms",
    "metabt.analyzers",
    "metabt.backtest",
    "metabt.bars",
    "metabt.baselines",
    "metabt.batched",
    "metabt.checkpoint",
    "metabt.cli",
    "metabt.commands",
    "metabt.config",
    "metabt.configfile",
    "metabt.data",
    "metabt.errors",
    "metabt.evaluation",
    "metabt.executors",
    "metabt.experiments",
    "metabt.factors",
    "metabt.feature_check",
    "metabt.feature_hook",
    "metabt.features",
    "metabt.learners",
    "metabt.linear",
    "metabt.meta",
    "metabt.metrics",
    "metabt.models",
    "metabt.online",
    "metabt.plotting",
    "metabt.portfolio",
    "metabt.pricing",
    "metabt.recipe",
    "metabt.records",
    "metabt.report",
    "metabt.sinusoid",
    "metabt.sizers",
    "metabt.strategy",
    "metabt.sweep",
    "metabt.synthetic",
    "metabt.tasks",
    "metabt.training",
    "metabt.trader",
    "metabt.walkforward",
    "strategies",
]


def test_design_contract_imports():
    import backtrader as bt

    import metabt
    from metabt import MetaLearner, MetaStrategy, QuantStatsAnalyzer, SignalSizer
    from metabt.data import feed, load_ohlcv
    from metabt.errors import CheckpointError, DataError, MetabtError
    from metabt.features import FeatureSpec

    assert issubclass(MetaStrategy, bt.Strategy)
    assert issubclass(SignalSizer, bt.Sizer)
    assert issubclass(QuantStatsAnalyzer, bt.Analyzer)
    assert issubclass(DataError, MetabtError) and issubclass(CheckpointError, MetabtError)
    assert callable(load_ohlcv) and callable(feed) and callable(FeatureSpec().transform)
    assert MetaLearner.__doc__ and metabt.__version__


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_exists_and_is_documented(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    public = module.__all__
    assert list(public) == sorted(public), f"{name}.__all__ is not sorted"
    for attr in public:
        obj = getattr(module, attr)
        if callable(obj) and not attr.isupper():
            assert obj.__doc__, f"{name}.{attr} has no docstring"


def test_core_modules_do_not_import_backtrader():
    import subprocess
    import sys

    code = (
        "import sys; import metabt.meta, metabt.models, metabt.features, metabt.tasks; "
        "print('backtrader' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
