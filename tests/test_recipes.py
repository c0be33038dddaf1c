"""The recipes in strategies/ run as written (short options) and do what they say.

``strategies/`` is a folder of scripts, not a package (it is not installed), so each recipe is
loaded from its path.
"""

from __future__ import annotations

import configparser
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "strategies"
SHORT = ["--start", "2008-01-01", "--end", "2008-09-30"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_are_documented_scripts_not_a_package():
    recipes = sorted(RECIPES.glob("*.py"))
    assert {p.stem for p in recipes} >= {"meta_single_asset", "meta_universe", "baselines"}
    assert not (RECIPES / "__init__.py").exists()
    for path in recipes:
        module = _load(path.stem)
        doc = module.__doc__ or ""
        assert f"python strategies/{path.name}" in doc, f"{path.name}: how to run it"
        assert callable(module.main), path.name
        assert 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")


def test_only_metabt_is_installed():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    include = cfg["options.packages.find"]["include"].split()
    assert include and all(name == "metabt" or name.startswith("metabt.") for name in include)


@pytest.mark.slow
def test_meta_single_asset_trains_saves_and_trades(tmp_path, capsys):
    checkpoint = tmp_path / "theta.pt"
    result = _load("meta_single_asset").main(
        ["--steps", "5", "--asset", "AAPL", "--checkpoint", str(checkpoint), *SHORT]
    )
    assert checkpoint.stat().st_size > 1_000
    assert result["asset"] == "AAPL"
    assert result["adaptations"] >= 30  # every 5 bars over about 190 bars
    assert result["fills"] > 0 and result["traded"] > 0
    assert math.isfinite(result["metrics"]["sharpe"])
    assert "MetaStrategy on AAPL, 2008-01-02 to 2008-09-30" in capsys.readouterr().out


@pytest.mark.slow
def test_meta_universe_trades_every_asset(capsys):
    result = _load("meta_universe").main(["--steps", "5", *SHORT])
    assert result["assets"] == ["AAPL", "GOOG", "IBM", "MSFT"]
    assert all(result["traded_by_asset"][name] > 0 for name in result["assets"])
    weights = result["weights"].dropna()
    assert len(weights) > 10
    assert weights.sum(axis=1).abs().max() < 1e-6  # dollar-neutral targets
    assert (weights.abs() <= 0.35 + 1e-9).all().all()  # the name cap
    assert result["adaptations"] > 0
    assert math.isfinite(result["metrics"]["sharpe"])
    assert "traded (x starting cash): AAPL" in capsys.readouterr().out


@pytest.mark.slow
def test_baselines_side_by_side(capsys):
    table = _load("baselines").main(["--assets", "IBM", "MSFT", *SHORT])
    assert list(table.index) == ["BuyAndHold", "SmaCross", "RollingRidge"]
    assert table["bars"].nunique() == 1 and table["bars"].iloc[0] > 150  # same test period
    assert table["sharpe"].map(math.isfinite).all()
    assert 0.9 < table.loc["BuyAndHold", "traded"] < 1.0  # bought once, never rebalanced
    assert table.loc["RollingRidge", "traded"] > 2 * table.loc["BuyAndHold", "traded"]
    assert "RollingRidge" in capsys.readouterr().out
