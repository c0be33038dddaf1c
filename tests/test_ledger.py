"""The trial ledger: counts every evaluation of a test window across runs, its effective
number of trials (Nyholt 2004, checked against a hand computation), and the DSR over it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metabt.errors import ConfigError
from metabt.evaluate.ledger import Ledger, default_path, effective_trials, window_key
from metabt.evaluate.significance import deflated_sharpe_ratio


def _returns(seed, n=300, mix=None):
    rng = np.random.default_rng(seed)
    r = rng.normal(2e-4, 0.01, n)
    if mix is not None:
        r = 0.9 * mix + 0.1 * r
    return pd.Series(r, index=pd.bdate_range("2012-01-02", periods=n))


def test_effective_trials_is_m_for_independent_and_1_for_identical_trials():
    rng = np.random.default_rng(0)
    independent = pd.DataFrame(rng.normal(size=(5000, 4)))
    assert effective_trials(independent) == pytest.approx(4.0, abs=0.05)
    base = rng.normal(size=5000)
    identical = pd.DataFrame({k: base for k in range(4)})
    assert effective_trials(identical) == pytest.approx(1.0)


def test_effective_trials_equals_nyholts_formula_by_hand():
    # two pairs of correlated trials (rho = 0.8): eigenvalues 1.8, 1.8, 0.2, 0.2
    corr = np.array([[1, 0.8, 0, 0], [0.8, 1, 0, 0], [0, 0, 1, 0.8], [0, 0, 0.8, 1]], dtype=float)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200_000, 4)) @ np.linalg.cholesky(corr).T
    lam = np.array([1.8, 1.8, 0.2, 0.2])
    expected = 1 + 3 * (1 - lam.var(ddof=1) / 4)  # 1 + 3 (1 - 0.8533 / 4) = 3.36
    assert effective_trials(pd.DataFrame(z)) == pytest.approx(expected, abs=0.02)


def test_the_window_key_changes_with_the_data_and_the_period():
    frame = pd.DataFrame({"close": [1.0, 2.0, 3.0]}, index=pd.bdate_range("2012-01-02", periods=3))
    key = window_key({"A": frame}, "2012-01-02", "2012-01-04")
    assert key == window_key({"A": frame.copy()}, "2012-01-02", "2012-01-04")
    assert key != window_key({"A": frame * 1.001}, "2012-01-02", "2012-01-04")
    assert key != window_key({"B": frame}, "2012-01-02", "2012-01-04")
    assert key != window_key({"A": frame}, "2012-01-03", "2012-01-04")


def test_a_second_run_on_a_window_raises_its_count_and_effective_n(tmp_path):
    ledger = Ledger(tmp_path / "sub" / "ledger.sqlite")
    base = _returns(0)
    first = {"A": ({"seed": 0}, base), "B": ({"seed": 0}, _returns(1))}
    ledger.record("w", "2012-01-02", "2013-02-01", "compare", first)
    one = ledger.count("w")
    assert (one.evaluations, one.runs) == (2, 1)
    # a near-copy of A and a new independent trial
    second = {"A": ({"seed": 1}, _returns(2, mix=base.to_numpy())), "C": ({}, _returns(3))}
    ledger.record("w", "2012-01-02", "2013-02-01", "compare", second)
    two = ledger.count("w")
    assert (two.evaluations, two.runs) == (4, 2)
    assert one.effective < two.effective < 4  # the near-copy adds less than one trial
    assert "evaluated 4 times in 2 run(s)" in two.describe()
    assert ledger.count("other").evaluations == 0
    assert ledger.windows()["evaluations"].tolist() == [4]
    assert ledger.reset() == 4 and ledger.count("w").evaluations == 0


def test_the_ledger_dsr_is_the_dsr_at_the_effective_n(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    trials = {name: ({}, _returns(seed)) for seed, name in enumerate("ABCDE")}
    ledger.record("w", "2012-01-02", "2013-02-01", "compare", trials)
    count = ledger.count("w")
    r = trials["A"][1]
    sharpes = [float(v.mean() / v.std(ddof=1)) for _, v in trials.values()]
    expected = deflated_sharpe_ratio(
        float(r.mean() / r.std(ddof=1)),
        len(r),
        float(r.skew()),
        float(r.kurt()) + 3,
        count.effective,
        float(np.var(sharpes, ddof=1)),
    )
    assert count.dsr(r) == pytest.approx(expected, rel=1e-9)
    assert math.isnan(count.dsr(pd.Series([0.0] * 10)))


def test_a_long_series_is_counted_not_stored_and_a_bad_path_is_one_line(tmp_path, monkeypatch):
    import metabt.evaluate.ledger as module

    monkeypatch.setattr(module, "MAX_BARS", 100)
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record("w", "2012-01-02", "2013-02-01", "backtest", {"A": ({}, _returns(0))})
    assert ledger.count("w").evaluations == 1
    with pytest.raises(ConfigError, match="not a regular file"):
        Ledger(tmp_path)
    (tmp_path / "text.sqlite").write_text("not a database")
    with pytest.raises(ConfigError, match="cannot be opened"):
        Ledger(tmp_path / "text.sqlite").count("w")
    monkeypatch.setenv("METABT_LEDGER", "off")
    assert default_path() is None
    monkeypatch.setenv("METABT_LEDGER", str(tmp_path / "x.sqlite"))
    assert default_path() == tmp_path / "x.sqlite"


class _Run:
    """What judge and ledger_count read of a backtest (the Run protocol)."""

    def __init__(self, name, returns):
        self.name, self.returns, self.signals = name, returns, None
        sd = returns.std(ddof=1)
        self.metrics = {"sharpe": float(returns.mean() / sd * 252**0.5)}


def test_a_second_run_on_the_window_deflates_over_more_trials(sample_frames, tmp_path):
    from metabt.evaluate.verdict import judge
    from metabt.experiments.scheduler import ledger_count
    from metabt.experiments.settings import RunSettings

    settings = RunSettings(
        sample_frames,
        sample_frames,
        pd.Timestamp("2011-01-03"),
        ledger=str(tmp_path / "l.sqlite"),
    )
    verdicts = []
    for seed in (0, 1):  # a second seed: new returns on the same window
        runs = [
            _Run("MetaStrategy", _returns(10 * seed)),
            _Run("ErmStatic", _returns(10 * seed + 1)),
            _Run("BuyAndHold", _returns(10 * seed + 2)),
        ]
        count = ledger_count(settings, runs, "compare", seed=seed)
        _, verdict = judge(runs, horizon=5, n_resamples=200, ledger=count)
        verdicts.append(verdict)
    first, second = verdicts
    assert (first.evaluations, second.evaluations) == (3, 6)
    assert second.ledger_runs == 2 and second.effective_trials > first.effective_trials + 2
    assert "evaluated 6 times in 2 run(s)" in second.text
    assert second.dsr == pytest.approx(count.dsr(runs[0].returns))  # at the window's N
    _, alone = judge(runs, horizon=5, n_resamples=200)  # over this run's 3 strategies only
    assert second.dsr < alone.dsr  # more trials on the window: a lower deflated Sharpe
    # no ledger in the settings: nothing recorded, the DSR over the run's strategies
    assert (
        ledger_count(RunSettings(sample_frames, sample_frames, settings.start), runs, "x", seed=0)
        is None
    )


def test_the_ledger_command_lists_windows_and_resets_only_when_asked(tmp_path, capsys):
    from metabt.cli.main import main

    path = tmp_path / "l.sqlite"
    assert main(["ledger", "--ledger", str(path)]) == 0
    assert "holds no evaluation" in capsys.readouterr().out
    Ledger(path).record("w" * 64, "2012-01-02", "2013-02-01", "compare", {"A": ({}, _returns(0))})
    assert main(["ledger", "--ledger", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2012-01-02 to 2013-02-01" in out and "evaluated 1 times in 1 run(s)" in out
    assert Ledger(path).count("w" * 64).evaluations == 1  # listing changes nothing
    assert main(["ledger", "--ledger", str(path), "--reset"]) == 0
    assert "deleted 1 evaluations" in capsys.readouterr().out
    assert Ledger(path).count("w" * 64).evaluations == 0
    assert main(["ledger", "--ledger", "off"]) == 2
    assert main(["ledger", "--ledger", str(tmp_path)]) == 2  # a folder: one line, exit 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
