"""Nothing a user is handed runs code: files may import only metabt or trusted modules.

Each hostile probe plants a module that writes a marker file when imported (or when its
model runs), hands metabt a checkpoint or config naming it, and checks that the load is
refused with one line and that no marker was written. The standard-library modules with
import-time effects (``this`` prints, ``antigravity`` opens a browser) are named too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from metabt import _trust
from metabt._trust import UntrustedModuleError, import_object, is_trusted, trust
from metabt.errors import CheckpointError, ConfigError
from metabt.features.spec import FeatureSpec
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP, user_model

try:  # the repository root is on sys.path under `python -m pytest` (the Makefile's way)
    import tests.nets as nets
except ImportError:  # pragma: no cover - plain `pytest`: tests/ itself is on sys.path
    import nets  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]

#: A module that writes ``marker`` when imported, and again when its model runs.
EVIL = """
import pathlib
pathlib.Path(__file__).with_name("marker-" + __name__).write_text("imported")
import torch


class Net(torch.nn.Module):
    def __init__(self, n_features, hidden=8, **kwargs):
        super().__init__()
        self.body = torch.nn.Linear(n_features, hidden)
        self.out = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        pathlib.Path(__file__).with_name("marker-forward").write_text("ran")
        return self.out(self.body(x))


def feat(close):
    return close[-1]


class Spec:
    pass
"""


@pytest.fixture
def untrusting(monkeypatch):
    """No module trusted but metabt's, for this test only (the set and the env var)."""
    monkeypatch.setattr(_trust, "_trusted", set())
    monkeypatch.delenv(_trust.ENV_VAR, raising=False)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != _trust.ENV_VAR}
    env["PYTHONPATH"] = str(ROOT)  # metabt itself, not the probe folder
    return env


def _user_checkpoint(folder: Path) -> Path:
    learner = MetaLearner(user_model(f"{nets.__name__}:TwoLayer", n_features=4, hidden=8))
    return learner.save(folder / "user.pt")


def _edited(path: Path, out: Path, edit) -> Path:
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, out)
    return out


def _markers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("marker-*"))


def test_trusting_a_package_covers_its_submodules(untrusting):
    assert is_trusted("metabt.features.spec") and not is_trusted("metabtx")
    assert not is_trusted("mypkg.nets")
    trust("mypkg")
    assert is_trusted("mypkg") and is_trusted("mypkg.nets.deep")
    assert not is_trusted("mypkgx") and not is_trusted("other.mypkg")
    assert os.environ[_trust.ENV_VAR] == "mypkg"  # worker processes inherit it


def test_the_environment_variable_trusts(untrusting, monkeypatch):
    monkeypatch.setenv(_trust.ENV_VAR, "alpha, beta.sub")
    assert is_trusted("alpha.x") and is_trusted("beta.sub.y") and not is_trusted("beta")


@pytest.mark.parametrize("bad", ["", "a b", "../x", "pkg.mod:Net", "pkg/mod"])
def test_a_trusted_name_must_be_a_module_name(untrusting, bad):
    with pytest.raises(ConfigError, match="not a module name"):
        trust(bad)


@pytest.mark.parametrize("module", ["this", "antigravity", "os", "evil"])
def test_an_untrusted_module_is_refused_before_import(untrusting, module):
    was_loaded = module in sys.modules
    with pytest.raises(UntrustedModuleError, match=rf"module '{module}'.*metabt.trust"):
        import_object(f"{module}:X", "model type")
    assert (module in sys.modules) == was_loaded


def test_a_checkpoint_naming_an_untrusted_model_class_imports_nothing(
    tmp_path, untrusting, monkeypatch
):
    (tmp_path / "evil.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _user_checkpoint(tmp_path)  # user_model trusts tests.nets for this process
    bad = _edited(path, tmp_path / "bad.pt", lambda c: c["model_config"].update(type="evil:Net"))
    with pytest.raises(CheckpointError, match=r"'evil', which is not trusted"):
        MetaLearner.load(bad)
    assert _markers(tmp_path) == [] and "evil" not in sys.modules
    trust("evil")  # the user's word: now it loads, and the model is checked and built
    assert type(MetaLearner.load(bad).model).__name__ == "Net"
    assert _markers(tmp_path) == ["marker-evil", "marker-forward"]  # built, shape-checked
    sys.modules.pop("evil", None)


def test_a_checkpoint_naming_an_untrusted_feature_or_spec_class_imports_nothing(
    tmp_path, untrusting, monkeypatch
):
    (tmp_path / "evilfeat.py").write_text(EVIL)
    (tmp_path / "evilspec.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = MetaLearner(MLP(FeatureSpec().n_features, (4,)), feature_spec=FeatureSpec()).save(
        tmp_path / "m.pt"
    )

    def feature(c):
        c["feature_spec"]["custom"] = [
            {"name": "feat", "params": {}, "import_path": "evilfeat:feat", "sha256": "0" * 64}
        ]

    def spec_class(c):
        c["feature_spec"]["class"] = "evilspec:Spec"

    for edit, module in ((feature, "evilfeat"), (spec_class, "evilspec")):
        bad = _edited(path, tmp_path / f"{module}.pt", edit)
        with pytest.raises(CheckpointError, match=rf"'{module}', which is not trusted"):
            MetaLearner.load(bad)
    assert _markers(tmp_path) == []


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metabt", *args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.slow
def test_the_command_line_refuses_planted_modules_and_stdlib_effects(tmp_path, untrusting):
    """evil.py beside the checkpoint, and `this`/`antigravity` named with nothing planted:
    exit 2, one line naming the module and --trust, no marker, no Zen on stdout."""
    (tmp_path / "evil.py").write_text(EVIL)
    path = _user_checkpoint(tmp_path)
    for module in ("evil", "this", "antigravity"):
        bad = _edited(
            path,
            tmp_path / f"{module}.pt",
            lambda c, m=module: c["model_config"].update(type=f"{m}:Net"),
        )
        done = _run_cli(["backtest", "--model", str(bad)], tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"'{module}'" in lines[0] and f"--trust {module}" in lines[0]
        assert "Beautiful is better" not in done.stdout
    assert _markers(tmp_path) == []


@pytest.mark.slow
def test_a_config_file_cannot_trust_a_module_but_the_command_line_can(tmp_path, untrusting):
    (tmp_path / "evil.py").write_text(EVIL)
    (tmp_path / "best.toml").write_text('[backtest]\nmodel_type = "evil:Net"\n')
    done = _run_cli(["backtest", "--config", "best.toml", "--steps", "1"], tmp_path)
    assert done.returncode == 2 and "'evil', which is not trusted" in done.stderr
    assert _markers(tmp_path) == []


@pytest.mark.slow
def test_modules_in_the_working_directory_never_shadow_installed_ones(tmp_path, untrusting):
    """A jinja2.py or tomllib.py in the working directory is not imported instead of the
    real package, under `python -m metabt` (which puts the folder first on sys.path)."""
    for name in ("jinja2", "tomllib"):
        (tmp_path / f"{name}.py").write_text(
            textwrap.dedent(
                f"""
                import pathlib
                pathlib.Path(__file__).with_name("marker-{name}").write_text("shadowed")
                raise SystemExit("shadowed {name}")
                """
            )
        )
    (tmp_path / "c.toml").write_text("[backtest]\nseed = 1\n")
    done = _run_cli(
        ["backtest", "--config", "c.toml", "--steps", "2", "--report", "r.html"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert _markers(tmp_path) == []
