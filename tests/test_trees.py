"""trees: the LightGBM baseline is lightgbm.train itself, selected on validation, causal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from metabt.config.defaults import DEMO
from metabt.errors import ConfigError
from metabt.experiments.parts import VAL_TASKS, train_gbm
from metabt.learn.adapter import Adapter
from metabt.learn.trees import GbmAdapter, gbm_params

lightgbm = pytest.importorskip("lightgbm")

END = pd.Timestamp("2011-01-01")  # sample_frames: 2008 to 2011


def _rows(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A weak nonlinear signal in noise: boosting helps for a while, then overfits."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (0.3 * np.tanh(2 * x[:, 0]) + rng.normal(size=n)).astype(np.float32)
    return x, y


def test_the_adapter_equals_lightgbm_train_called_directly():
    x, y = _rows(0, 3000)
    xv, yv = _rows(1, 1000)
    gbm = GbmAdapter.train(DEMO.spec, x, y, xv, yv, seed=3, stopping=20)
    params = gbm_params(3)
    data = lightgbm.Dataset(x, y, params=params)
    direct = lightgbm.train(
        params,
        data,
        num_boost_round=1000,
        valid_sets=[lightgbm.Dataset(xv, yv, reference=data)],
        callbacks=[lightgbm.early_stopping(20, verbose=False)],
    )
    assert gbm.rounds == direct.best_iteration
    expected = direct.predict(xv, num_iteration=direct.best_iteration)
    np.testing.assert_array_equal(gbm.model().predict(xv), expected)
    fitted = gbm.adapt(x[:60], y[:60])  # "adapting" returns the same booster
    assert fitted.predict_row(xv[0]) == expected[0] and fitted.steps == 0
    assert fitted.loss_before == pytest.approx(float(np.mean(y[:60].astype(float) ** 2)))
    assert isinstance(gbm, Adapter) and gbm.horizon == DEMO.spec.horizon
    again = GbmAdapter.train(DEMO.spec, x, y, xv, yv, seed=3, stopping=20)
    np.testing.assert_array_equal(again.model().predict(xv), expected)  # reproducible


def test_the_kept_round_count_is_the_argmin_of_the_validation_curve():
    x, y = _rows(0, 3000)
    xv, yv = _rows(1, 1000)
    gbm = GbmAdapter.train(DEMO.spec, x, y, xv, yv, stopping=20)
    curve = np.array(gbm.val_curve)
    assert gbm.rounds == int(np.argmin(curve)) + 1 and gbm.val_loss == curve.min()
    assert 1 < gbm.rounds < len(curve)  # it stopped after its minimum: kept, not the last
    mse = float(np.mean((gbm.model().predict(xv) - yv.astype(float)) ** 2))
    assert mse == pytest.approx(gbm.val_loss, rel=1e-6)  # the curve is the query MSE


def test_bad_rows_are_refused():
    x, y = _rows(0, 100)
    with pytest.raises(ConfigError, match="x must be"):
        GbmAdapter.train(None, x, y[:50], x, y)
    with pytest.raises(ConfigError, match="finite"):
        GbmAdapter.train(None, np.where(x > 2, np.nan, x), y, x, y)
    with pytest.raises(ConfigError, match="rounds"):
        GbmAdapter.train(None, x, y, x, y, rounds=0)


def test_training_uses_only_rows_before_the_validation_split(sample_frames):
    """Prices from the validation split on change no tree fitted (only the kept count)."""
    cfg = DEMO.with_(val_years=1.0)
    frames = {k: f.loc[: END - pd.Timedelta(days=1)] for k, f in sample_frames.items()}
    split = END - pd.DateOffset(days=round(365.25 * cfg.val_years))
    shocked = {}
    for name, frame in frames.items():
        frame = frame.copy()
        after = frame.index >= split
        frame.loc[after, ["open", "high", "low", "close"]] *= 1.7
        frame.loc[after, "volume"] *= 3
        shocked[name] = frame
    a = train_gbm(frames, cfg, END)
    b = train_gbm(shocked, cfg, END)
    assert a.learner.train_rows == b.learner.train_rows
    x = np.random.default_rng(0).normal(size=(200, cfg.spec.n_features))
    rounds = min(len(a.learner.val_curve), len(b.learner.val_curve))
    np.testing.assert_array_equal(
        a.learner.booster.predict(x, num_iteration=rounds),
        b.learner.booster.predict(x, num_iteration=rounds),
    )
    full = train_gbm(sample_frames, cfg, END)  # prices on or after END are never read
    np.testing.assert_array_equal(full.learner.model().predict(x), a.learner.model().predict(x))
    assert pd.Timestamp(a.train_range[1]) < END and a.seconds >= 0
    assert len(a.learner.val_curve) >= a.learner.rounds and VAL_TASKS == 64
    line = a.summary(list(frames))[0]
    assert f"kept round {a.learner.rounds}" in line and "keep-best" in line


def test_the_learning_core_does_not_import_lightgbm():
    code = "import sys, metabt.learn.trees, metabt.learn; print('lightgbm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
