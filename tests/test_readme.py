"""The README's results are what the commands print now (scripts/readme_results.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_results_match_the_commands():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "readme_results", ROOT / "scripts" / "readme_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_masked_check_ignores_numbers_and_alignment_but_not_words():
    mask = _script()._mask
    a = "sharpe  cagr\nMeta  -0.35  -5.09%\nvalidation 1.2228 (step 500) in 20.4s"
    b = "sharpe  cagr\nMeta   -0.4  -15.10%\nvalidation 1.2227 (step 400) in 11.6s"
    assert mask(a) != mask(b)  # numbers compared where the fingerprints agree
    assert mask(a, numbers=True) == mask(b, numbers=True)
    assert mask(a, numbers=True) != mask(b.replace("cagr", "calmar"), numbers=True)
    assert mask(a, numbers=True) != mask(a.replace("Meta", "Meta\nErm  0.1  1%"), numbers=True)


def test_readme_records_the_fingerprint_of_the_machine_that_wrote_its_numbers():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _script()._FINGERPRINT.search(text), "README.md lost its results:fingerprint line"
