"""The public API of DESIGN.md section 3 imports, and every module keeps a sorted __all__."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "metabt",
    "metabt.learn.algorithms",
    "metabt.analyzers",
    "metabt.experiments.backtest",
    "metabt.data.bars",
    "metabt.strategies.baselines",
    "metabt.learn.kernels.batched",
    "metabt.learn.checkpoint",
    "metabt.cli.parser",
    "metabt.cli.commands",
    "metabt.config.defaults",
    "metabt.config.files",
    "metabt.data.ohlcv",
    "metabt.errors",
    "metabt.evaluate.verdict",
    "metabt.experiments.executors",
    "metabt.experiments.compare",
    "metabt.features.factors",
    "metabt.features.causality",
    "metabt.features.hooks",
    "metabt.features.spec",
    "metabt.learn.families",
    "metabt.learn.linear",
    "metabt.learn.learner",
    "metabt.evaluate.metrics",
    "metabt.learn.models",
    "metabt.learn.online",
    "metabt.evaluate.plotting",
    "metabt.strategies.portfolio",
    "metabt.experiments.pricing",
    "metabt.experiments.roster",
    "metabt.experiments.record",
    "metabt.evaluate.report",
    "metabt.experiments.sinusoid",
    "metabt.sizers",
    "metabt.strategies.meta",
    "metabt.experiments.sweep",
    "metabt.data.synthetic",
    "metabt.features.tasks",
    "metabt.learn.training",
    "metabt.strategies.trader",
    "metabt.experiments.walkforward",
    "strategies",
]


def test_design_contract_imports():
    import backtrader as bt

    import metabt
    from metabt import MetaLearner, MetaStrategy, QuantStatsAnalyzer, SignalSizer
    from metabt.data.ohlcv import feed, load_ohlcv
    from metabt.errors import CheckpointError, DataError, MetabtError
    from metabt.features.spec import FeatureSpec

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
        "import sys; import metabt.learn.learner, metabt.learn.models, metabt.features.spec, metabt.features.tasks; "
        "print('backtrader' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
