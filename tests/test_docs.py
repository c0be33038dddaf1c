"""The README's Python example and the examples/ scripts run as written (so they never rot)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no ```python block"
    return blocks[0]


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
    out = capsys.readouterr().out
    assert "sharpe" in out and "schedule" in out  # metrics, then the adaptation log


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
