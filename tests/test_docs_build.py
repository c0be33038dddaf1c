"""The API reference builds (scripts/docs.py, pdoc) with no warning and covers the public API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import metabt

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_api_reference_builds_cleanly_and_names_every_public_name(tmp_path):
    out = tmp_path / "api"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr  # any pdoc warning fails the build
    assert done.stderr == ""
    page = (out / "metabt.html").read_text(encoding="utf-8")
    documented = set(re.findall(r'id="([^"]+)"', page))
    assert [name for name in metabt.__all__ if name not in documented] == []
    # the public modules have pages; the private helpers do not
    for module in ("analyzers", "sizers", "evaluate/chart", "learn/learner", "data/ohlcv"):
        assert (out / "metabt" / f"{module}.html").is_file(), module
    assert not (out / "metabt" / "_util.html").exists()
