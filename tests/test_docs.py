"""The README's Python example and the examples/ scripts run as written (so they never rot)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2, "README.md lacks its two ```python blocks"
    return blocks[0] + blocks[1]  # the example, then optstrategy on its learner


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    code = _readme_python()
    # the one change: fewer meta-training steps, to keep the suite fast
    assert "steps=300" in code
    code = code.replace("steps=300", "steps=10")
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "theta.pt").stat().st_size > 1_000
    assert (tmp_path / "reports" / "aapl.html").stat().st_size > 10_000
    assert (tmp_path / "reports" / "aapl_diagnostics.html").stat().st_size > 20_000
    assert "bokeh" in (tmp_path / "reports" / "aapl_chart.html").read_text(encoding="utf-8")
    out = capsys.readouterr().out
    assert "sharpe" in out and "schedule" in out  # metrics, then the adaptation log
    # optstrategy on every CPU: one line per adapt_every value
    assert [line.split()[0] for line in out.strip().splitlines()[-3:]] == ["5", "10", "20"]


@pytest.mark.slow
def test_sinusoid_example_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sinusoid_maml.py"), "--steps", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for algorithm in ("maml", "erm", "scratch"):
        assert any(line.startswith(algorithm) and "query MSE" in line for line in lines)
    assert "support MSE" in lines[-1]


@pytest.mark.slow
def test_readme_bring_your_own_commands_run(tmp_path):
    """The README's features-and-model block, as written (fewer training steps)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- byo:start -->")[1].split("<!-- byo:end -->")[0]
    lines = [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.startswith("metabt ")]
    assert len(lines) >= 5
    for name in ("sample_data", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    metabt = str(Path(sys.executable).parent / "metabt")
    for line in lines:
        line = line.replace("--steps 300", "--steps 10")
        done = subprocess.run(
            f"{metabt} {line[len('metabt ') :]} --quiet"
            if not line.startswith("metabt config")
            else f"{metabt} {line[len('metabt ') :]}",
            shell=True,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, (line, done.stderr[-2000:])
    for path in ("models/rsi.pt", "models/net.pt", "reports/rsi.html", "reports/net_toml.html"):
        assert (tmp_path / path).stat().st_size > 1_000, path
    record = json.loads((tmp_path / "reports" / "rsi.run.json").read_text())
    assert record["checkpoints"][0]["sha256"] and record["data"][0]["sha256"]
    custom = record["config"]["learner"]["feature_spec"]["custom"]
    assert custom[0]["import_path"] == "examples.rsi_feature:rsi"
    assert custom[0]["params"] == {"window": 14} and len(custom[0]["sha256"]) == 64


def test_readme_paper_trading_commands_run(tmp_path):
    """The README's paper-trading block, as written (fewer training steps, no pause)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- paper:start -->")[1].split("<!-- paper:end -->")[0]
    lines = [ln.strip() for ln in block.splitlines() if ln.startswith(("metabt ", "python "))]
    assert [ln.split()[0] for ln in lines] == ["metabt", "python", "metabt"]
    for name in ("sample_data", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    train = lines[0].replace("--steps 300", "--steps 10")
    script = "\n".join(
        [f"{train} --quiet", lines[1].replace("--every 0.02", "--every 0"), lines[2]]
    )
    done = subprocess.run(
        ["bash", "-ec", script],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MetaStrategy" in done.stdout and "SmaCross" in done.stdout
    state = tmp_path / "paper" / "ibm"
    for name in ("paper.json", "state.npz", "orders.jsonl", "tearsheet.html", "chart.html"):
        assert (state / name).stat().st_size > 0, name


def test_readme_user_learner_family_commands_run(tmp_path):
    """The README's own-algorithm block, as written (fewer training steps)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- family:start -->")[1].split("<!-- family:end -->")[0]
    lines = [ln.strip() for ln in block.splitlines() if ln.startswith("metabt ")]
    assert len(lines) == 2 and "examples.imaml:ImamlFamily" in lines[0]
    for name in ("sample_data", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    metabt = str(Path(sys.executable).parent / "metabt")
    for line in lines:
        line = line.replace("--steps 300", "--steps 5")
        done = subprocess.run(
            f"{metabt} {line[len('metabt ') :]} --quiet",
            shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (line, done.stderr[-2000:])
    assert (tmp_path / "reports" / "imaml.html").stat().st_size > 1_000
    record = json.loads((tmp_path / "reports" / "imaml.run.json").read_text())
    assert record["config"]["learner"]["algorithm"] == "examples.imaml:ImamlFamily"
