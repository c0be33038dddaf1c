"""The public API of DESIGN.md section 3 imports, and every module keeps a sorted __all__."""

from __future__ import annotations

import importlib
import inspect

import pytest


def _all_modules() -> list[str]:
    """Every module of the package, found on disk (a new module is covered without a list)."""
    import pkgutil

    import metabt

    found = ["metabt"]
    for info in pkgutil.walk_packages(metabt.__path__, "metabt."):
        if not info.name.endswith("__main__"):
            found.append(info.name)
    return sorted(found)


MODULES = _all_modules()


def test_design_contract_imports():
    import backtrader as bt

    import metabt
    from metabt import MetaLearner, MetaStrategy, QuantStatsAnalyzer, SignalSizer
    from metabt.data import feed, load_ohlcv  # DESIGN's public paths, not the modules
    from metabt.errors import CheckpointError, DataError, MetabtError
    from metabt.features import FeatureSpec
    from metabt.learn import MetaLearner as CoreLearner

    assert CoreLearner is MetaLearner

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
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not attr.isupper():
            assert obj.__doc__, f"{name}.{attr} has no docstring"


def test_core_modules_do_not_import_backtrader():
    import subprocess
    import sys

    code = (
        "import sys; import metabt.learn.learner, metabt.learn.models, metabt.features.spec, "
        "metabt.features.tasks; print('backtrader' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
