"""Factor models adapted on Ken French's data (metabt.experiments.pricing): protocol checks.

A slice: three portfolios, two support lengths, a few meta-steps. The properties checked are
the ones the study's numbers rest on: the OLS baselines equal statsmodels/NumPy fits done
here independently, no test month reaches meta-training, every forecast uses only months
before its own, and the Diebold–Mariano t has the sign of the loss difference.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("linearmodels")

import metabt.experiments.pricing as pricing
from metabt.errors import ConfigError, DataError

PORTS = ["NoDur", "S1V1", "S5M5"]
KS = (6, 12)


@pytest.fixture(scope="module")
def data() -> pricing.FrenchData:
    return pricing.load_french()


@pytest.fixture(scope="module")
def setup(data):
    return pricing._setup(data, KS, "1989-12", "1995-12", 10, PORTS)


@pytest.fixture(scope="module")
def study(data) -> pricing.PricingStudy:
    settings = pricing.PricingSettings(
        ks=KS, train_end="1989-12", test_end="1993-12", steps=10, portfolios=PORTS,
        lr_grid=(0.1,),
    )  # fmt: skip
    lines: list[str] = []
    study = pricing.pricing_study(settings, data=data, log=lines.append)
    assert lines == ["baselines done; pooled OLS + fine-tuning", "maml seed 0: meta-training"]
    return study


def _learner(setup, seed=0):
    learner, _ = pricing._meta_fit(
        setup, (), ks=KS, algorithm="maml", steps=10, batch_size=32, inner_steps=3,
        meta_lr=3e-2, seed=seed, lr_grid=(0.05,),
    )  # fmt: skip
    return learner


def test_french_data_is_monthly_percent_excess_returns(data):
    months = data.months
    assert str(months[0]) == "1949-01" and str(months[-1]) == "2017-03"
    assert (np.diff(months.asi8) == 1).all() and len(data.portfolios) == 30
    assert list(data.factors.columns) == ["MktRF", "SMB", "HML", "Mom", "RF"]
    # percent: the market's monthly sd is a few percent, not a few hundredths
    assert 3.0 < data.factors["MktRF"].std() < 6.0
    raw = __import__("linearmodels.datasets.french", fromlist=["load"]).load()
    np.testing.assert_allclose(data.excess["NoDur"].to_numpy(), (raw.NoDur - raw.RF) * 100)


def test_rolling_ols_equals_statsmodels_and_lstsq(setup):
    from statsmodels.regression.rolling import RollingOLS

    k, test = 12, setup.test
    got = pricing.rolling_ols_forecasts(setup.raw_x, setup.y, k, test)
    design = np.column_stack([np.ones(len(setup.raw_x)), setup.raw_x])
    series = setup.y[1].astype(np.float64)
    params = RollingOLS(series, design, window=k).fit().params
    want_sm = np.array([design[t] @ params[t - 1] for t in test])
    want_np = np.array(
        [design[t] @ np.linalg.lstsq(design[t - k : t], series[t - k : t])[0] for t in test]
    )
    np.testing.assert_allclose(got[1], want_sm, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[1], want_np, rtol=1e-5, atol=1e-5)
    # expanding OLS: all months from the first data month to t - 1
    exp = pricing.ols_forecasts(setup.raw_x, setup.y.astype(np.float64), test[:3])
    t = test[2]
    beta = np.linalg.lstsq(design[:t], series[:t])[0]
    assert exp[1, 2] == pytest.approx(design[t] @ beta, rel=1e-8)


def test_meta_training_never_sees_test_months(data, setup):
    first_test = setup.test[0]
    tasks = pricing.PricingTasks(setup.x, setup.y, KS, max(KS), setup.train_last)
    assert tasks.last_month_used < first_test
    rng = np.random.default_rng(0)
    for _ in range(20):
        tasks.sample(64, rng)  # draws only q <= last_query; support before q
    # perturb every month after train_end: θ is bit-for-bit the same
    noisy = data.excess.copy()
    noisy.iloc[first_test:] += 50.0
    factors = data.factors.copy()
    factors.iloc[first_test:] *= 3.0
    other = dataclasses.replace(data, excess=noisy, factors=factors)
    setup2 = pricing._setup(other, KS, "1989-12", "1995-12", 10, PORTS)
    theta1 = _learner(setup).model.state_dict()
    theta2 = _learner(setup2).model.state_dict()
    for name, value in theta1.items():
        assert torch.equal(value, theta2[name]), name


def test_forecasts_use_only_months_before_the_forecast_month(setup):
    learner = _learner(setup)
    k, t = 12, setup.test[5]
    months = np.array([t, t + 1])
    y = setup.y.copy()
    base = pricing.adapted_forecasts(learner, setup.x, y, k, months)
    ols = pricing.rolling_ols_forecasts(setup.raw_x, y, k, months)
    y[:, t] += 25.0  # the forecast month's own excess return
    y[:, t - k - 1] -= 25.0  # a month before the window
    moved = pricing.adapted_forecasts(learner, setup.x, y, k, months)
    ols_moved = pricing.rolling_ols_forecasts(setup.raw_x, y, k, months)
    np.testing.assert_array_equal(moved[:, 0], base[:, 0])
    np.testing.assert_allclose(ols_moved[:, 0], ols[:, 0], rtol=1e-9)
    # month t is in month t+1's support window, so that forecast does move
    assert np.all(np.abs(moved[:, 1] - base[:, 1]) > 1e-3)
    assert np.all(np.abs(ols_moved[:, 1] - ols[:, 1]) > 1e-3)


def test_newey_west_t_has_the_sign_of_the_loss_difference():
    rng = np.random.default_rng(0)
    d = rng.normal(0.5, 1.0, 300)
    assert pricing._dm_t(d) > 2 and pricing._dm_t(-d) < -2
    assert pricing._dm_t(-d) == pytest.approx(-pricing._dm_t(d))
    assert pricing.newey_west_lags(327) == 5 and pricing.newey_west_lags(3) == 1


def test_study_tables_and_files(study, tmp_path):
    table = study.table
    assert set(table["model"]) == {
        "rolling_ols", "capm_rolling", "expanding_ols", "maml", "maml_init", "erm_ft",
        "pooled_ols",
    }  # fmt: skip
    assert sorted(set(table["k"])) == list(KS) and len(table) == 7 * len(KS)
    ref = table[table.model == "rolling_ols"]
    assert (ref["delta_mse"] == 0).all()
    other = table[table.model != "rolling_ols"]
    assert (np.sign(other["delta_mse"]) == np.sign(other["t_nw"])).all()
    assert np.isfinite(table[["rmse", "r2_zero", "r2_hm"]].to_numpy()).all()
    # the zero-steps models ignore k
    init = table[table.model == "maml_init"]["rmse"].to_numpy()
    assert init[0] == pytest.approx(init[1])
    assert study.config["test_start"] == "1990-01" and study.config["test_end"] == "1993-12"
    assert len(study.per_portfolio) == 7 * len(KS) * len(PORTS)
    paths = study.write(tmp_path / "out")
    assert [p.name for p in paths] == [
        "pricing.csv", "pricing_per_portfolio.csv", "pricing.md", "pricing_rmse_vs_k.png",
    ]  # fmt: skip
    assert all(p.stat().st_size > 0 for p in paths)
    assert "French" in paths[2].read_text() and "| maml" in paths[2].read_text()
    assert paths[3].read_bytes()[:4] == b"\x89PNG"
    assert "rolling_ols" in study.summary() and study.main_lines()[0].startswith("French")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ks": (3, 12)}, "ks must"),
        ({"ks": ()}, "ks must"),
        ({"ks": (12, 12)}, "ks must"),
        ({"train_end": "2030-01"}, "outside the data"),
        ({"train_end": "1955-12"}, "too few months"),
        ({"train_end": "soon"}, "is not a month"),
        ({"test_end": "1985-01"}, "no test months"),
        ({"portfolios": ["Gold"]}, "unknown"),
        ({"steps": 0}, "steps"),
        ({"seeds": "x"}, "seeds"),
        ({"seeds": ()}, "seeds"),
    ],
)
def test_bad_settings_raise_config_error(data, kwargs, match):
    settings = pricing.PricingSettings(**{k: v for k, v in kwargs.items() if k != "seeds"})
    with pytest.raises(ConfigError, match=match):
        pricing.pricing_study(settings, seeds=kwargs.get("seeds", (0,)), data=data)


def test_missing_linearmodels_names_the_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("linearmodels"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(DataError, match="pip install linearmodels"):
        pricing.load_french()


def test_the_fits_on_local_processes_equal_the_serial_fits(data):
    from metabt.experiments.executors import ExecutorSpec

    settings = pricing.PricingSettings(
        ks=KS, train_end="1989-12", test_end="1991-12", steps=5, portfolios=PORTS,
        lr_grid=(0.1,),
    )  # fmt: skip
    runs = []
    for spec in (ExecutorSpec("serial"), ExecutorSpec("process", 2)):
        lines: list[str] = []
        study = pricing.pricing_study(settings, seeds=(0, 1), data=data, executor=spec,
                                      log=lines.append)  # fmt: skip
        assert lines[-1] == "maml seed 0; maml seed 1: meta-training"
        runs.append(study.runs)
    assert set(runs[0]["seed"]) >= {0, 1}
    pd.testing.assert_frame_equal(runs[0], runs[1], check_exact=True)


def test_the_verdict_sets_each_meta_model_against_the_best_other_model(study):
    v = study.verdict
    assert list(v["model"]) == ["maml"] * len(KS) and list(v["k"]) == list(KS)
    table = study.table.set_index(["model", "k"])
    for row in v.itertuples():
        others = table.xs(row.k, level="k").drop(index=["maml", "maml_init"])
        assert row.rival == others["rmse"].idxmin()
        assert row.rival_rmse == pytest.approx(others["rmse"].min())
        assert row.rmse == pytest.approx(table.loc[("maml", row.k), "rmse"])
        assert row.reading == ("better" if row.t_nw < -1.96 else "worse" if row.t_nw > 1.96
                               else "no difference")  # fmt: skip
    lines = study.main_lines()
    assert lines[lines.index("verdict:") + 1].startswith(f"k={KS[0]}: maml RMSE ")
    assert "Diebold–Mariano t" in study.markdown()
