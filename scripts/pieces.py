"""The README's "Pieces" table, generated from the first paragraph of each module's docstring.

One row per module of metabt (each subpackage first, then its modules) and per recipe in
``strategies/``, grouped by layer, lowest first (the layers of ``tests/test_architecture.py``).
The table sits in README.md between ``<!-- pieces:start -->`` and ``<!-- pieces:end -->``.

    python scripts/pieces.py            # print the table (Markdown)
    python scripts/pieces.py --check    # exit 1 if README.md's table differs
    python scripts/pieces.py --write    # replace README.md's table with the generated one

A module in a top-level part of metabt that no layer below names is an error: add it to
``LAYERS`` (and to the architecture test's ranks).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "metabt"
RECIPES = ROOT / "strategies"
README = ROOT / "README.md"
START, END = "<!-- pieces:start -->", "<!-- pieces:end -->"

#: (layer, top-level parts of metabt in it, in this order), lowest layer first
LAYERS: list[tuple[str, list[str]]] = [
    ("package", ["__init__"]),
    ("helpers", ["errors", "_version", "_checks", "_trust", "_util", "_stats"]),
    ("data", ["data"]),
    ("learn", ["learn"]),
    ("features", ["features"]),
    ("config", ["config"]),
    ("strategies", ["sizers", "costs", "strategies"]),
    ("evaluate", ["evaluate"]),
    ("analyzers", ["analyzers"]),
    ("experiments", ["experiments"]),
    ("cli", ["cli", "__main__"]),
]

_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|exc):`~?([^`]+)`")


def summary(path: Path) -> str:
    """The first paragraph of the module docstring of ``path``, as one Markdown line."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise SystemExit(f"{path.relative_to(ROOT)} has no module docstring")
    text = " ".join(doc.strip().split("\n\n")[0].split())
    text = _ROLE.sub(r"`\1`", text).replace("``", "`")
    return text.replace("|", "\\|")


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _order(path: Path) -> tuple[str, ...]:
    """Sort key inside a top-level part: a package's ``__init__`` before its modules."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return tuple("" if p == "__init__" else p for p in parts)


def rows() -> list[tuple[str, str, str]]:
    """(layer, module path, what) for every module and recipe, lowest layer first."""
    by_part: dict[str, list[Path]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        by_part.setdefault(part, []).append(path)
    named = {part for _, parts in LAYERS for part in parts}
    unknown = sorted(set(by_part) - named)
    if unknown:
        raise SystemExit(f"metabt parts in no layer of scripts/pieces.py LAYERS: {unknown}")
    out = []
    for layer, parts in LAYERS:
        for part in parts:
            for path in sorted(by_part.get(part, []), key=_order):
                name = _dotted(path)
                out.append((layer, f"`{name}`", summary(path)))
    for path in sorted(RECIPES.glob("*.py")):
        out.append(("recipes", f"`strategies/{path.name}`", summary(path)))
    return out


def table() -> str:
    """The Pieces table, Markdown, without the markers."""
    lines = ["| layer | module | what |", "|---|---|---|"]
    lines += [f"| {layer} | {name} | {what} |" for layer, name, what in rows()]
    return "\n".join(lines) + "\n"


def readme_table(text: str) -> str:
    """The table between the markers of README.md's text."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"README.md needs exactly one {START} and one {END}")
    return text.split(START, 1)[1].split(END, 1)[0].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    """Print, check or write the table; the exit code (1: README.md differs, with --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md's table differs")
    mode.add_argument("--write", action="store_true", help="update README.md's table in place")
    args = parser.parse_args(argv)
    new = table()
    if not (args.check or args.write):
        sys.stdout.write(new)
        return 0
    text = README.read_text(encoding="utf-8")
    old = readme_table(text)
    if args.check:
        if old == new:
            return 0
        diff = difflib.unified_diff(
            old.splitlines(), new.splitlines(), "README.md", "scripts/pieces.py", lineterm=""
        )
        print("\n".join(diff))
        print("README.md's Pieces table is stale: run python scripts/pieces.py --write")
        return 1
    head, rest = text.split(START, 1)
    README.write_text(f"{head}{START}\n{new}{END}{rest.split(END, 1)[1]}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
