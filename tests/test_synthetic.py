"""The synthetic markets and the benchmark family's mechanics (not which method wins).

``metabt.data.synthetic.regime_market`` must hold exactly the signal it documents: a forecaster
that knows the regime scores IC strength / sqrt(1 + strength²) against the next bar's log
return, and nothing at strength 0. The backtest must measure IC on the same alignment (a
signal that is the realised forward return scores IC 1). One small ``compare`` runs the
whole roster on a synthetic setting, as ``benchmarks/bench_synthetic.py`` does.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from metabt.config.defaults import DEMO
from metabt.data.ohlcv import load_ohlcv
from metabt.data.synthetic import gbm_market, regime_market, volume_score
from metabt.errors import ConfigError
from metabt.evaluate.ic import pair_ic
from metabt.evaluate.verdict import META_VARIANTS
from metabt.experiments.backtest import Costs, run_backtest
from metabt.experiments.compare import RunSettings, compare
from metabt.features.spec import FeatureSpec
from metabt.strategies.meta import SignalTrader

ROSTER = [
    "MetaStrategy",
    "MetaDrift",
    "StaticModel",
    "ErmStatic",
    "ErmAdapt",
    "ScratchAdapt",
    "RollingRidge",
    "RecursiveLeastSquares",
    "LightGBM",
    "TimeSeriesMomentum",
    "ConstantLong",
    "BuyAndHold",
    "SmaCross",
]


def _theory(strength: float) -> float:
    return strength / math.sqrt(1.0 + strength**2)


def _oracle_pairs(frame: pd.DataFrame, regime: pd.Series) -> pd.DataFrame:
    """signal_t = s_t * z_t against forward_t = log(C_{t+1} / C_t)."""
    forward = np.log(frame["close"]).diff().shift(-1)
    return pd.DataFrame({"signal": regime * volume_score(frame), "forward": forward}).dropna()


# ---- (a) the signal is what the docstring says


@pytest.mark.parametrize("strength", [0.0, 0.125, 0.25, 0.5, 1.0])
def test_regime_known_oracle_has_the_theoretical_ic(strength):
    n = 20_000
    frame, regime = regime_market(n, 11, strength=strength)
    ic = pair_ic(_oracle_pairs(frame, regime))
    assert ic is not None
    rho = _theory(strength)
    sd = (1 - rho**2) / math.sqrt(n)  # large-sample sd of a correlation estimate
    assert ic[0] == pytest.approx(rho, abs=4 * sd)
    if strength == 0.0:
        assert abs(ic[0]) < 0.03 and abs(ic[1]) < 0.03


def test_returns_are_the_stated_model():
    """r_{t+1} / vol - strength * s_t * z_t recovers the noise e: N(0, 1), unrelated to z."""
    strength, vol = 0.5, 0.01
    frame, regime = regime_market(20_000, 5, strength=strength, vol=vol)
    pairs = _oracle_pairs(frame, regime)
    noise = pairs["forward"] / vol - strength * pairs["signal"]
    assert abs(noise.mean()) < 0.03
    assert noise.std() == pytest.approx(1.0, abs=0.02)
    assert abs(noise.corr(volume_score(frame).reindex(noise.index))) < 0.03
    # volume alone predicts only through the sample's regime imbalance (0 on average)
    z_only = pd.DataFrame({"signal": volume_score(frame), "forward": pairs["forward"]}).dropna()
    imbalance = float(regime.loc[z_only.index].mean())
    assert pair_ic(z_only)[0] == pytest.approx(_theory(strength) * imbalance, abs=0.03)


class _Oracle(SignalTrader):
    """Test-only strategy that looks ahead on purpose (see test_backtest._Oracle)."""

    horizon = 1
    signal: ClassVar[dict[str, pd.Series]] = {}

    def compute_signal(self, i, data):
        t = pd.Timestamp(data.datetime.date(0))
        value = self.signal[data._name].get(t, math.nan)
        return float(value)


def _backtest_oracle(signal: pd.Series, frame: pd.DataFrame, start: pd.Timestamp):
    _Oracle.signal = {"X": signal}
    return run_backtest(_Oracle, {"X": frame}, start=start, warmup_bars=100, costs=Costs())


def test_backtest_ic_is_one_for_the_realised_forward_return():
    frame, _ = regime_market(700, 3, strength=0.25)
    forward = np.log(frame["close"]).diff().shift(-1)
    run = _backtest_oracle(forward, frame, frame.index[200])
    assert run.metrics["ic"] == pytest.approx(1.0, abs=1e-9)
    assert run.metrics["rank_ic"] == pytest.approx(1.0, abs=1e-9)


def test_backtest_ic_of_the_regime_oracle_matches_theory():
    """The backtest's IC lines the signal of bar t up with the return from t to t+1."""
    strength = 0.5
    frame, regime = regime_market(1_300, 4, strength=strength)
    start = frame.index[300]
    run = _backtest_oracle(regime * volume_score(frame), frame, start)
    n = len(run.returns)
    rho = _theory(strength)
    assert run.metrics["ic"] == pytest.approx(rho, abs=4 * (1 - rho**2) / math.sqrt(n))
    expected = pair_ic(_oracle_pairs(frame, regime).loc[start:])
    assert run.metrics["ic"] == pytest.approx(expected[0], abs=0.01)


# ---- (b) the frames and the regimes


def test_frames_pass_load_ohlcv_and_are_deterministic_per_seed():
    frame, regime = regime_market(500, 7, strength=0.25)
    bare = pd.DataFrame(frame.to_numpy(), index=frame.index, columns=frame.columns)
    pd.testing.assert_frame_equal(load_ohlcv(bare), frame)
    again, regime_again = regime_market(500, 7, strength=0.25)
    pd.testing.assert_frame_equal(again, frame)
    pd.testing.assert_series_equal(regime_again, regime)
    other, _ = regime_market(500, 8, strength=0.25)
    assert not np.allclose(other["close"], frame["close"])
    assert regime.index.equals(frame.index) and set(regime.unique()) <= {-1.0, 1.0}
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "date"
    gbm = gbm_market(300, 1)
    pd.testing.assert_frame_equal(load_ohlcv(gbm.copy()), gbm)
    pd.testing.assert_frame_equal(gbm_market(300, 1), gbm)


def test_the_old_test_names_are_the_library_generators():
    from synthetic import gbm_frame, regime_frame

    assert gbm_frame is gbm_market and regime_frame is regime_market


@pytest.mark.parametrize(("mean_regime", "n"), [(20, 20_000), (250, 100_000)])
def test_regimes_flip_at_the_stated_rate(mean_regime, n):
    """Flips ~ Binomial(n, 1/mean_regime): the mean run length has a relative sd of
    sqrt(mean_regime / n), 3% and 5% here; the tolerance is 3 of those."""
    _, regime = regime_market(n, 2, strength=0.0, mean_regime=mean_regime, start="1700-01-04")
    values = regime.to_numpy()
    runs = int((values[1:] != values[:-1]).sum()) + 1
    assert n / runs == pytest.approx(mean_regime, rel=3 * math.sqrt(mean_regime / n))


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="strength"):
        regime_market(100, 0, strength=-0.1)
    with pytest.raises(ConfigError, match="mean_regime"):
        regime_market(100, 0, strength=0.1, mean_regime=0.5)
    with pytest.raises(ConfigError, match="n"):
        regime_market(1, 0, strength=0.1)
    with pytest.raises(ConfigError, match="vol"):
        gbm_market(100, 0, vol=0.0)
    with pytest.raises(ConfigError, match="earlier start"):
        regime_market(100_000, 0, strength=0.1)  # past the last date pandas can hold


def test_benchmark_family_is_as_documented():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_synthetic.py"
    spec = importlib.util.spec_from_file_location("bench_synthetic", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert 0.0 in bench.STRENGTHS and len(bench.STRENGTHS) >= 4
    assert tuple(bench.SEEDS) == (0, 1, 2, 3, 4)
    assert bench.HORIZON == 1
    seeds = [
        bench.data_seed(k, seed, asset)
        for k in range(len(bench.STRENGTHS))
        for seed in bench.SEEDS
        for asset in range(bench.TRAIN_ASSETS + 1)
    ]
    assert len(set(seeds)) == len(seeds)


# ---- (c) the whole roster runs on a small synthetic setting


@pytest.mark.slow
def test_compare_runs_every_strategy_of_the_roster_on_a_synthetic_market():
    train_bars, test_bars = 1_000, 200
    train = {f"train{a}": regime_market(train_bars, 100 + a, strength=0.5)[0] for a in range(2)}
    traded, _ = regime_market(train_bars + test_bars, 102, strength=0.5)
    start = traded.index[train_bars]
    cfg = DEMO.with_(
        spec=FeatureSpec(horizon=1), seed=0, start=str(start.date()), meta_steps=10, batch_size=4
    )
    settings = RunSettings(
        frames={"traded": traded}, train_frames=train, start=start, costs=Costs(), cfg=cfg
    )
    comparison = compare(settings, seeds=[0], progress=False)
    table = comparison.table
    assert list(table.index) == ROSTER
    assert np.isfinite(table["sharpe"].to_numpy(dtype=float)).all()
    verdict = comparison.runs[0].verdict
    assert verdict.candidate == "MetaStrategy" and verdict.baseline not in META_VARIANTS
    assert isinstance(verdict.edge, bool)
    train_range = comparison.runs[0].models.meta.learner.train_range
    assert train_range is not None and pd.Timestamp(train_range[1]) < start
    assert all(len(r.returns) == test_bars for r in comparison.results)
