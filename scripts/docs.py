"""Build the API reference from the docstrings (pdoc, Google style) into docs/api; a warning fails.

Documents ``metabt`` (its top-level names) and every public module: each module of the
package whose dotted name has no part starting with ``_``.

    python scripts/docs.py                 # build into docs/api (open docs/api/index.html)
    python scripts/docs.py --out site/api  # build elsewhere

Every warning pdoc gives while it renders (a docstring it cannot parse, a name it cannot
resolve, a module it cannot import) is printed and the build exits with status 1, so CI
(``make test`` runs tests/test_docs_build.py, which builds it) keeps the reference clean.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api"


def public_modules() -> list[str]:
    """``metabt`` and the dotted names of its public modules, sorted (packages before their
    modules)."""
    import metabt

    names = ["metabt"]
    for info in pkgutil.walk_packages(metabt.__path__, "metabt."):
        parent, _, leaf = info.name.rpartition(".")
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        # a module its package lists in __all__ (metabt.cli.main) pdoc adds by itself
        if leaf not in getattr(importlib.import_module(parent), "__all__", ()):
            names.append(info.name)
    return sorted(names)


def build(out: Path) -> list[str]:
    """Render the reference into ``out``; return pdoc's warnings (empty when clean)."""
    import pdoc
    import pdoc.render

    modules = public_modules()
    for name in modules:  # imported first: a library's own import-time warning is not pdoc's
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
        # a package's lazy public names (a module __getattr__) are resolved, so that pdoc,
        # which reads the module's namespace, documents them where the package lists them
        for public in getattr(module, "__all__", ()):
            if public not in vars(module):
                setattr(module, public, getattr(module, public))
    pdoc.render.configure(docformat="google", show_source=False, search=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=out)
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default docs/api)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # this checkout's metabt, not another one installed
    problems = build(args.out)
    for line in problems:
        print(f"docs: {line}", file=sys.stderr)
    if problems:
        print(f"docs: {len(problems)} warning(s); fix the docstrings above", file=sys.stderr)
        return 1
    print(f"API reference written to {(args.out / 'index.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
