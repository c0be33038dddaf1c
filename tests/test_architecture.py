"""The package's layering, read from its source with ``ast``: imports only point down.

metabt is a stack of ranks; a module may import only modules of a lower rank, or of its own
subpackage (a subpackage is one concept; inside it, the order is the modules' own business,
but no circle). Every import counts, including lazy imports inside functions and imports under
``if TYPE_CHECKING:`` (annotations need no upward dependency: the learning core names the
feature spec through a protocol, ``metabt.learn.spec.FeatureSpecLike``).

Ranks, lowest first:

1. private helpers and errors (``errors``, ``_version``, ``_checks``, ``_trust``, ``_util``,
   ``_stats``);
2. ``data`` and, beside it, ``learn`` (torch only: no data, no features);
3. ``features`` (FeatureSpec, user feature hooks, causality check, factors, task samplers);
4. ``config`` (the run's settings and the config-file schema);
5. ``sizers`` (backtrader's sizers), then ``strategies`` (the trader sizes through them);
6. ``evaluate`` (metrics, significance, verdicts, reports, plots);
7. ``analyzers`` (backtrader analyzers that compose evaluate's metrics and reports);
8. ``experiments`` (backtest, roster, compare, walk-forward, sweep, executors, run record);
9. ``cli`` (the only package that names command-line flags).
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metabt"
ROOT = PACKAGE.parent

#: rank of each top-level part of the package (a subpackage or a top-level module)
RANKS: dict[str, float] = {
    "errors": 1,
    "_version": 1,
    "_checks": 1,
    "_trust": 1,
    "_util": 1,
    "_stats": 1,
    "data": 2,
    "learn": 2,
    "features": 3,
    "config": 4,
    "sizers": 5,
    "costs": 5,
    "strategies": 5.5,
    "evaluate": 6,
    "analyzers": 7,
    "experiments": 8,
    "cli": 9,
    "__main__": 10,
}
#: inside rank 1, the order of the private helpers (they may import earlier ones)
HELPERS = ["errors", "_version", "_checks", "_trust", "_util", "_stats"]
#: subpackages that must never import backtrader at module level (data: only inside ``feed``)
NO_BACKTRADER = {
    "learn",
    "features",
    "config",
    "evaluate.ic",
    "evaluate.metrics",
    "evaluate.significance",
    "evaluate.verdict",
}


def _modules() -> dict[str, Path]:
    """Dotted name below metabt (``learn.learner``, ``learn`` for its ``__init__``) -> path."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts) or "__init__"] = path
    return out


def _imports(path: Path, name: str) -> list[tuple[str, bool, bool]]:
    """(imported dotted module, at module level?, under TYPE_CHECKING?) for every import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(sub) for sub in ast.walk(node))
    top = {id(node) for node in tree.body}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        flags = (id(node) in top, id(node) in typing_only)
        if isinstance(node, ast.Import):
            out += [(alias.name, *flags) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join(["metabt", *parent, *([base] if base else [])])
            out.append((base, *flags))
            out += [(f"{base}.{alias.name}", *flags) for alias in node.names]
    return out


def _target(imported: str, modules: dict[str, Path]) -> str | None:
    """The metabt module an import refers to (``metabt.learn.learner.X`` -> ``learn.learner``)."""
    parts = imported.split(".")
    if parts[0] != "metabt":
        return None
    parts = parts[1:]
    while parts and ".".join(parts) not in modules:
        parts = parts[:-1]
    return ".".join(parts) if parts else "__init__"


def _part(module: str) -> str:
    return module.split(".")[0]


def _rank(module: str) -> float:
    part = _part(module)
    if part in HELPERS:
        return 1 + HELPERS.index(part) / 10
    return RANKS[part]


def test_every_part_has_a_rank():
    parts = {_part(m) for m in _modules()} - {"__init__"}
    assert sorted(parts - set(RANKS)) == [], "give the new part a rank in RANKS"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_point_down(module):
    """Every import, lazy or for typing only, goes to a lower rank or within the subpackage."""
    modules = _modules()
    if module == "__init__":  # the lazy public API sits above everything
        return
    for name, _, _ in _imports(modules[module], module):
        target = _target(name, modules)
        if target is None or target == module:
            continue
        assert target != "__init__", f"metabt.{module} imports the package root ({name})"
        if _part(target) == _part(module):
            continue  # inside one subpackage (circles are checked below)
        assert _rank(target) < _rank(module), (
            f"metabt.{module} imports metabt.{target}, which is not below it; move the shared "
            "piece down a rank"
        )


def test_no_import_circle_even_for_typing():
    modules = _modules()
    graph = {
        m: {t for n, _, _ in _imports(p, m) if (t := _target(n, modules)) not in (None, m)}
        for m, p in modules.items()
        if m != "__init__"
    }
    # a package __init__ that re-exports its modules is the package, not a cycle member
    for m in graph:
        graph[m] -= {p for p in graph if m.startswith(p + ".")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("module", sorted(_modules()))
def test_package_never_imports_top_level_strategies(module):
    for name, _, _ in _imports(_modules()[module], module):
        assert name.split(".")[0] != "strategies", f"metabt.{module} imports {name}"


@pytest.mark.parametrize(
    "module", sorted(m for m in _modules() if any(m.startswith(p) for p in NO_BACKTRADER))
)
def test_core_modules_do_not_import_backtrader(module):
    for name, _, _ in _imports(_modules()[module], module):
        assert name.split(".")[0] != "backtrader", f"metabt.{module} imports backtrader"


def test_importing_the_learning_core_loads_no_finance():
    """`import metabt.learn` (and MetaLearner with it) loads no backtrader, quantstats, data,
    feature, factor or config module: the core can be used and tested alone."""
    code = (
        "import sys; from metabt.learn import MetaLearner; import metabt.learn.linear, "
        "metabt.learn.online, metabt.learn.kernels.batched; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('backtrader', 'quantstats')"
        " or m.startswith(('metabt.data', 'metabt.features', 'metabt.config'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_the_command_line_parser_loads_no_torch():
    code = (
        "import sys; from metabt.cli.parser import _build_parser; _build_parser(); "
        "print('torch' in sys.modules, 'backtrader' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "False False", done.stdout


_FLAG = re.compile(r"(^|\s|`|')--[a-z]")


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _part(m) != "cli"))
def test_library_errors_name_parameters_not_flags(module):
    """Only cli/ speaks in --flags; the library names the parameter (`end` is before
    `start`), and the CLI maps parameters to flags in one place."""
    tree = ast.parse(_modules()[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            texts = [
                c.value
                for c in ast.walk(node.exc)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
            flagged = [t for t in texts if _FLAG.search(t)]
            assert not flagged, f"metabt.{module}:{node.lineno} names a flag: {flagged[0]!r}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_docstring_and_sorted_all(module):
    """Each module says what it is in one line and lists its public names, sorted."""
    doc = ast.get_docstring(ast.parse(_modules()[module].read_text(encoding="utf-8")))
    assert doc and doc.splitlines()[0].strip(), f"metabt.{module}: no docstring"
    if module == "__main__":  # importing it runs the command
        return
    mod = importlib.import_module("metabt" if module == "__init__" else f"metabt.{module}")
    names = getattr(mod, "__all__", None)
    if names is None and _modules()[module].name == "__init__.py":
        return  # a subpackage that only documents itself
    assert names is not None, f"metabt.{module} has no __all__"
    assert list(names) == sorted(names, key=str.lower) or list(names) == sorted(names)
    for name in names:
        assert hasattr(mod, name), f"metabt.{module}.__all__ lists a missing {name!r}"
