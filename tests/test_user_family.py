"""A user's own learner family: iMAML (examples/imaml.py) by import path, end to end.

Its implicit meta-gradient against the closed form of a linear model with MSE; fit, save,
load (trusted and not), backtest; the algorithm validator and the trust rules of a family
path; and `metabt compare` / `metabt sweep` with ``--algorithm examples.imaml:ImamlFamily``
on a few months of one asset and a few outer steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import metabt
from examples.imaml import ImamlFamily, conjugate_gradient
from metabt import MetaStrategy
from metabt._trust import UntrustedModuleError
from metabt.cli.main import main
from metabt.cli.parser import _algorithm
from metabt.config.defaults import RunConfig
from metabt.data.feeds import feed
from metabt.data.ohlcv import sample_files
from metabt.errors import CheckpointError, ConfigError
from metabt.experiments.space import parse_space
from metabt.features.spec import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn import LearnerFamily
from metabt.learn.algorithms import family_for, import_family, resolve_algorithm
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP

PATH = "examples.imaml:ImamlFamily"
AAPL = str(next(p for p in sample_files() if p.stem == "AAPL"))

#: A module that writes a marker when imported; ``Fam`` is not a LearnerFamily.
PLANTED = """
import pathlib
pathlib.Path(__file__).with_name("marker-" + __name__).write_text("imported")


class Fam:
    def __init__(self, *args, **kwargs):
        pathlib.Path(__file__).with_name("marker-called").write_text("called")
"""


@pytest.fixture
def untrusting(monkeypatch):
    """No module trusted but metabt's, for this test only (restored after)."""
    from metabt import _trust

    monkeypatch.setattr(_trust, "_trusted", set())
    monkeypatch.setenv(_trust.ENV_VAR, "")


# ------------------------------------------------------------------ the public protocol
def test_the_protocol_is_public_and_documented():
    from metabt.learn.algorithms.base import Learner as BaseLearner
    from metabt.learn.algorithms.base import LearnerFamily as Base
    from metabt.learn.losses import TaskLoss

    assert metabt.LearnerFamily is Base and metabt.Learner is BaseLearner
    assert metabt.TaskLoss is TaskLoss and issubclass(metabt.GradientFamily, Base)
    doc = Base.__doc__ or ""
    for method in ("meta_step", "adapt", "adapt_batch", "evaluate", "check_model", "loss"):
        assert method in doc, method
    assert issubclass(ImamlFamily, LearnerFamily)


# ----------------------------------------------------------- the implicit meta-gradient
def _linear_learner(steps: int) -> MetaLearner:
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    return MetaLearner(  # a throwaway nn.Linear, never saved: no save-ability check
        model,
        algorithm=ImamlFamily,
        inner_lr=0.2,
        inner_steps=steps,
        engine="higher",
        check_saveable=False,
    )


def _closed_form(theta, xs, ys, xq, yq, lam):
    """φ* and the iMAML meta-gradient of a linear model with MSE, exactly (NumPy)."""
    grads, plain, phis = np.zeros_like(theta), np.zeros_like(theta), []
    batch = len(xs)
    for x, y, x_q, y_q in zip(xs, ys, xq, yq, strict=True):
        z, z_q = np.c_[x, np.ones(len(x))], np.c_[x_q, np.ones(len(x_q))]
        hess = 2 * z.T @ z / len(z)
        phi = np.linalg.solve(hess + lam * np.eye(len(theta)), 2 * z.T @ y / len(z) + lam * theta)
        g = 2 * z_q.T @ (z_q @ phi - y_q) / len(z_q) / batch  # the task mean's 1/B
        grads += np.linalg.solve(np.eye(len(theta)) + hess / lam, g)
        plain += g
        phis.append(phi)
    return phis, grads, plain


def test_the_meta_gradient_equals_the_closed_form_of_a_linear_model(trusting):
    """Exact inner minimiser and (I + H/λ)⁻¹ g: with enough inner and CG steps the family's
    meta-gradient is the closed form to 1e-6 in float64, for two λ."""
    rng = np.random.default_rng(3)
    xs, ys = rng.normal(size=(2, 20, 3)), rng.normal(size=(2, 20))
    xq, yq = rng.normal(size=(2, 10, 3)), rng.normal(size=(2, 10))
    for lam in (0.5, 3.0):
        learner = _linear_learner(steps=200)
        family = ImamlFamily(lam=lam, cg_steps=20)
        w, b = learner.model.weight.detach().numpy()[0], learner.model.bias.detach().numpy()
        theta = np.r_[w, b]
        phis, expected, plain = _closed_form(theta, xs, ys, xq, yq, lam)
        t = [torch.from_numpy(a) for a in (xs, ys, xq, yq)]
        phi = family.inner(learner, dict(learner.model.named_parameters()), t[0][0], t[1][0], 200)
        got_phi = np.r_[phi["weight"].numpy()[0], phi["bias"].numpy()]
        np.testing.assert_allclose(got_phi, phis[0], atol=1e-9)
        _, grads = family.meta_gradient(learner, *t)
        got = np.r_[grads["weight"].numpy()[0], grads["bias"].numpy()]
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
        # the implicit correction matters: the uncorrected query gradient is far from it
        assert np.abs(plain - expected).max() > 1e-2
        # and the closed form is the derivative of the query loss at the exact minimiser
        # (central differences of θ -> mean_b L_q(φ*_b(θ)))

        def query_loss(th, lam=lam):
            phis = _closed_form(th, xs, ys, xq, yq, lam)[0]
            return np.mean(
                [
                    np.mean((np.c_[x_q, np.ones(len(x_q))] @ phi - y_q) ** 2)
                    for phi, x_q, y_q in zip(phis, xq, yq, strict=True)
                ]
            )

        eye = np.eye(len(theta)) * 1e-6
        numeric = [(query_loss(theta + e) - query_loss(theta - e)) / 2e-6 for e in eye]
        np.testing.assert_allclose(numeric, expected, atol=1e-7, rtol=0)


def test_conjugate_gradient_solves_a_small_system_and_stops_early():
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = {"v": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    v = conjugate_gradient(lambda p: {"v": a @ p["v"]}, b, steps=10)
    torch.testing.assert_close(a @ v["v"], b["v"])
    one = conjugate_gradient(lambda p: {"v": a @ p["v"]}, b, steps=1)
    assert not torch.allclose(a @ one["v"], b["v"])  # one step is not enough for 2 dims


def test_conjugate_gradient_stops_at_negative_curvature_with_a_descent_direction():
    """I + H/λ of a non-convex loss can be indefinite: the exact solve of diag(2, -0.5)
    v = (1, 1) is an ascent direction (vᵀb = -1.5); truncated CG keeps vᵀb > 0."""
    a = torch.diag(torch.tensor([2.0, -0.5], dtype=torch.float64))
    b = {"v": torch.ones(2, dtype=torch.float64)}
    assert float(torch.linalg.solve(a, b["v"]) @ b["v"]) < 0
    v = conjugate_gradient(lambda p: {"v": a @ p["v"]}, b, steps=5)
    assert float(v["v"] @ b["v"]) > 0 and torch.isfinite(v["v"]).all()


@pytest.mark.parametrize("bad", [{"lam": 0.0}, {"lam": float("nan")}, {"cg_steps": 0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="iMAML"):
        ImamlFamily(**bad)


# ------------------------------------------------------- train, save, load, backtest
@pytest.fixture(scope="module")
def frames():
    frame = pd.read_csv(AAPL, index_col=0, parse_dates=True)
    return {"AAPL": frame.loc["2008-01-01":"2010-12-31"]}


def test_it_trains_saves_loads_and_backtests(tmp_path, frames, trusting, monkeypatch):
    from metabt import _trust

    spec = FeatureSpec()
    tasks = TaskSampler.from_frames(frames, spec, support=40, query=10, end="2010-01-01")
    learner = MetaLearner(
        MLP(spec.n_features, (8,), seed=0), algorithm=PATH, inner_steps=2, feature_spec=spec
    )
    assert isinstance(learner.family, ImamlFamily) and learner.algorithm == PATH
    theta0 = [p.detach().clone() for p in learner.model.parameters()]
    result = learner.fit(tasks, 4, batch_size=4, progress=False)
    assert result.steps == 4 and np.isfinite(result.train_losses).all()
    assert any(not torch.equal(a, b) for a, b in zip(theta0, learner.model.parameters()))
    path = learner.save(tmp_path / "imaml.pt")
    assert torch.load(path, weights_only=True)["hparams"]["algorithm"] == PATH

    loaded = MetaLearner.load(path)  # examples was trusted by naming the path above
    assert type(loaded.family) is ImamlFamily and loaded.algorithm == PATH
    x, y = np.random.default_rng(0).normal(size=(2, 40, spec.n_features)), np.zeros((2, 40))
    mine, theirs = learner.adapt(x[0], y[0]).params, loaded.adapt(x[0], y[0]).params
    assert mine.keys() == theirs.keys()
    for name in mine:
        torch.testing.assert_close(theirs[name], mine[name], rtol=0, atol=0)
    batch = loaded.adapt_batch(x, y)  # the default: one regularised adapt per task
    assert batch.loss_after.shape == (2,)

    # a plain Cerebro run of MetaStrategy from the checkpoint adapts with the family
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frames["AAPL"].loc["2009-09-01":"2010-06-30"], name="AAPL"))
    cerebro.addstrategy(MetaStrategy, learner=str(path), adapt_every=10, support=40)
    strat = cerebro.run()[0]
    log = strat.adaptation_log()
    assert len(log) > 5 and (log["loss_after"] < log["loss_before"]).mean() > 0.5

    # untrusted: refused with the module and the fix, before anything is built
    monkeypatch.setattr(_trust, "_trusted", set())
    monkeypatch.setenv(_trust.ENV_VAR, "")
    with pytest.raises(CheckpointError, match=r"'examples.imaml', which is not trusted") as info:
        MetaLearner.load(path)
    assert "metabt.trust('examples')" in str(info.value)
    assert isinstance(info.value.__cause__, UntrustedModuleError)


def test_the_cost_aware_objective_trains_a_user_family_with_its_adjust_rate(frames, trusting):
    """objective "sharpe" with a learned partial-adjustment rate: the family scores the
    pooled P&L with the loss it is handed, and κ moves with θ; the loss is saved."""
    from metabt.learn.losses import PnLLoss

    spec = FeatureSpec()
    tasks = TaskSampler.from_frames(
        frames, spec, support=40, query=10, end="2010-01-01", extras=True
    )
    learner = MetaLearner(
        MLP(spec.n_features, (8,), seed=0),
        algorithm=PATH,
        inner_steps=1,
        meta_lr=0.05,
        loss=PnLLoss(partial_adjustment=True),
    )
    assert isinstance(learner.family.loss, PnLLoss) and learner.adjust is not None
    kappa = learner.adjust_rate
    result = learner.fit(tasks, 3, batch_size=4, progress=False)
    assert np.isfinite(result.train_losses).all() and learner.adjust_rate != kappa


def test_a_checkpoint_naming_a_planted_family_imports_nothing_until_trusted(
    tmp_path, trusting, monkeypatch
):
    """A hand-edited checkpoint names planted.py: refused untrusted (no import); trusted,
    imported but refused as not a LearnerFamily before it is called."""
    from metabt import _trust

    (tmp_path / "planted.py").write_text(PLANTED)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = MetaLearner(MLP(3, (4,))).save(tmp_path / "maml.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["hparams"]["algorithm"] = "planted:Fam"
    torch.save(ckpt, tmp_path / "bad.pt")
    monkeypatch.setattr(_trust, "_trusted", set())
    monkeypatch.setenv(_trust.ENV_VAR, "")
    with pytest.raises(CheckpointError, match=r"'planted', which is not trusted"):
        MetaLearner.load(tmp_path / "bad.pt")
    assert "planted" not in sys.modules and not list(tmp_path.glob("marker-*"))
    trusting("planted")
    with pytest.raises(CheckpointError, match=r"not a subclass of metabt\.LearnerFamily"):
        MetaLearner.load(tmp_path / "bad.pt")
    assert [p.name for p in tmp_path.glob("marker-*")] == ["marker-planted"]  # never called
    sys.modules.pop("planted", None)


# ----------------------------------------------------------- names, paths and trust
def test_names_paths_and_typos(untrusting):
    assert _algorithm("maml") == "maml" and _algorithm(PATH) == PATH
    with pytest.raises(argparse.ArgumentTypeError, match=r"did you mean 'maml'\?"):
        _algorithm("mamll")
    with pytest.raises(ConfigError, match=r"did you mean 'reptile'"):
        RunConfig(algorithm="reptlie")
    assert RunConfig(algorithm=PATH).algorithm == PATH  # text only: nothing imported
    with pytest.raises(ConfigError, match=r"did you mean 'fomaml'"):
        family_for("fomam", "auto")
    # library code resolving a path from a file never trusts it
    with pytest.raises(UntrustedModuleError, match=r"examples\.imaml"):
        resolve_algorithm(PATH)
    # a sweep space may list family paths (checked as text; imported only if trusted)
    (dim,) = parse_space({"algorithm": ["maml", PATH]}, "grid")
    assert dim.choices == ("maml", PATH)
    with pytest.raises(ConfigError, match="did you mean 'anil'"):
        parse_space({"algorithm": ["anli"]}, "grid")
    # trusted: other objects are refused by type, abstract families by what they lack
    from metabt import trust

    trust("examples")
    assert resolve_algorithm(PATH) is ImamlFamily
    with pytest.raises(ConfigError, match=r"not a subclass of metabt\.LearnerFamily"):
        import_family("examples.user_model:TanhNet")
    with pytest.raises(ConfigError, match=r"abstract LearnerFamily.*adapt, meta_step"):
        import_family("metabt.learn.algorithms.base:LearnerFamily")
    with pytest.raises(ConfigError, match=r"has no 'ImamlFamly'.*did you mean 'ImamlFamily'"):
        import_family("examples.imaml:ImamlFamly")


def test_a_family_class_is_recorded_by_its_path_and_one_in_a_function_refused(tmp_path, untrusting):
    from metabt._trust import is_trusted

    learner = MetaLearner(MLP(3, (4,)), algorithm=ImamlFamily)  # the class, named here
    assert learner.algorithm == PATH and is_trusted("examples.imaml")
    assert type(MetaLearner.load(learner.save(tmp_path / "c.pt")).family) is ImamlFamily

    class Local(ImamlFamily):
        pass

    with pytest.raises(ConfigError, match="inside a function"):
        MetaLearner(MLP(3, (4,)), algorithm=Local)


# -------------------------------------------------------------- the command line
def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_compare_and_sweep_run_a_user_family_from_the_command_line(
    tmp_path, capsys, trusting, monkeypatch
):
    """`--algorithm examples.imaml:ImamlFamily` trusts examples (named on the command line):
    compare trains and scores it; a sweep grid of two trials runs it and best.toml names it."""
    from metabt import _trust
    from metabt.experiments import backtest

    monkeypatch.setattr(_trust, "_trusted", set())
    monkeypatch.setenv(_trust.ENV_VAR, "")

    def stub_tearsheet(returns, benchmark, path, **kwargs):  # quantstats: most of the time
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("<html></html>", encoding="utf-8")
        return Path(path)

    monkeypatch.setattr(backtest, "write_tearsheet", stub_tearsheet)
    small = ["--steps", "3", "--hidden", "8", "--inner-steps", "1", "--quiet"]
    code, _, err = _run(
        capsys,
        "compare",
        "--algorithm",
        PATH,
        "--data",
        AAPL,
        "--start",
        "2011-06-01",
        "--end",
        "2011-12-31",
        "--baselines",
        "RollingRidge",
        "--smooth",
        "1",
        "--executor",
        "serial",
        *small,
        "--out",
        str(tmp_path / "cmp"),
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv").set_index("strategy")
    assert "MetaStrategy" in table.index and np.isfinite(table.loc["MetaStrategy", "sharpe"])
    record = json.loads((tmp_path / "cmp" / "run.json").read_text())
    assert record["config"]["algorithm"] == PATH

    config = tmp_path / "small.toml"
    config.write_text(
        "support = 40\nquery = 10\nval_years = 1.0\nadapt_every = 21\n"
        f"[sweep]\ndata = [{json.dumps(AAPL)}]\nstart = 2010-01-01\nval_folds = 1\n"
        'executor = "serial"\n',
        encoding="utf-8",
    )
    space = tmp_path / "space.toml"
    space.write_text("inner_lr = [0.01, 0.05]\n", encoding="utf-8")
    code, out, err = _run(
        capsys,
        "sweep",
        "--config",
        str(config),
        "--space",
        str(space),
        "--sampler",
        "grid",
        "--algorithm",
        PATH,
        *small,
        "--out",
        str(tmp_path / "sweep"),
    )
    assert code == 0, err
    assert out.count("COMPLETE") == 2
    assert f'algorithm = "{PATH}"' in (tmp_path / "sweep" / "best.toml").read_text()


def test_a_config_file_naming_a_family_needs_trust(tmp_path, capsys, untrusting):
    (tmp_path / "c.toml").write_text(f'[train]\nalgorithm = "{PATH}"\n', encoding="utf-8")
    code, _, err = _run(
        capsys,
        "train",
        "--config",
        str(tmp_path / "c.toml"),
        "--data",
        AAPL,
        "--train-end",
        "2009-01-01",
        "--steps",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "m.pt"),
    )
    assert code == 2 and "'examples.imaml', which is not trusted" in err
    assert "--trust examples" in err and not (tmp_path / "m.pt").exists()
    code, _, err = _run(capsys, "train", "--algorithm", "mamll", "--out", "x.pt")
    assert code == 2 and "did you mean 'maml'" in err
