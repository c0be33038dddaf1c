"""Regenerate (or check) the results the README shows, from the real commands.

The README's demo and compare blocks are never copied by hand: this script runs
``metabt backtest`` (the main job, ``make demo``) and ``metabt compare`` on the shipped
sample data, keeps their printed results (not the lines naming output files), and writes
them between the README's ``<!-- results:NAME -->`` markers. ``--check`` regenerates them
and fails if the README differs (wall times, which vary from run to run, are compared as
``Xs``); ``tests/test_readme.py`` runs it.

Usage::

    python scripts/readme_results.py          # rewrite the README blocks
    python scripts/readme_results.py --check  # exit 1 if the README is stale
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: lines that name output files (machine-specific paths), dropped from the blocks
_PATH_LINES = re.compile(
    r"^(tearsheet written|per-asset results written|adaptation diagnostics written|table:|"
    r"per asset:|index of tearsheets:|MetaStrategy adaptation diagnostics:|every seed:)"
)
_WALL_TIME = re.compile(r"\b(in|took) [0-9]+(\.[0-9]+)?s\b")


def _run(args: list[str]) -> str:
    """Run ``python -m metabt ARGS`` from the repository root; its stdout, path lines dropped."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "metabt", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"metabt {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    lines = [line.rstrip() for line in done.stdout.splitlines() if not _PATH_LINES.match(line)]
    return "\n".join(lines).strip() + "\n"


def blocks() -> dict[str, str]:
    """The README blocks, freshly computed: name -> text."""
    with tempfile.TemporaryDirectory() as tmp:
        demo = _run(["backtest", "--quiet", "--report", str(Path(tmp) / "demo.html")])
        compare = _run(["compare", "--quiet", "--out", str(Path(tmp) / "compare")])
    return {"demo": demo, "compare": compare}


def render(readme: str, new: dict[str, str]) -> str:
    """``readme`` with each ``<!-- results:NAME -->`` block replaced by ``new[NAME]``.

    Raises:
        SystemExit: a marker pair is missing.
    """
    for name, text in new.items():
        pattern = re.compile(
            rf"(<!-- results:{name} -->\n```text\n).*?(```\n<!-- /results:{name} -->)", re.S
        )
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- results:{name} --> block; add the markers")
        readme = pattern.sub(lambda m, t=text: m.group(1) + t + m.group(2), readme)
    return readme


def _mask(text: str) -> str:
    return _WALL_TIME.sub(r"\1 Xs", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    updated = render(current, blocks())
    if args.check:
        if _mask(updated) != _mask(current):
            print(
                "README.md results are stale; run `python scripts/readme_results.py`",
                file=sys.stderr,
            )
            return 1
        print("README.md results match the commands")
        return 0
    tmp = README.with_name(f".{README.name}.tmp")
    tmp.write_text(updated, encoding="utf-8")
    os.replace(tmp, README)
    print("README.md results rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
