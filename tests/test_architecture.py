"""The package's layering, read from its source with ``ast``: imports only point down.

Data flows one way: frame -> features -> tasks -> learner -> strategy -> analyzers ->
report -> experiments -> CLI. Every import the package makes, including imports inside
functions (lazy imports), must go to a module earlier in :data:`LAYERS`; imports under
``if TYPE_CHECKING:`` are for annotations only and are not counted.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metabt"

#: Every module of the package, lowest first: a module may import only earlier ones.
LAYERS = [
    "errors",
    "_version",
    "_checks",
    "_trust",
    "_util",
    "_stats",
    "bars",
    "data",
    "synthetic",
    "feature_hook",
    "feature_check",
    "features",
    "factors",
    "tasks",
    "config",
    "configfile",
    "records",
    "_numpy_models",
    "models",
    "_kernels",
    "learners",
    "algorithms",
    "batched",
    "checkpoint",
    "training",
    "meta",
    "linear",
    "sinusoid",
    "pricing",
    "online",
    "sizers",
    "trader",
    "strategy",
    "baselines",
    "portfolio",
    "metrics",
    "report",
    "plotting",
    "analyzers",
    "backtest",
    "evaluation",
    "recipe",
    "executors",
    "experiments",
    "walkforward",
    "sweep",
    "commands",
    "cli",
    "__main__",
]
#: ``metabt.data.feed`` builds a backtrader feed (DESIGN's public path), so ``data`` may
#: import backtrader inside ``feed`` only, never when the module itself is imported.
LAZY_BACKTRADER = {"data"}
#: Modules that know nothing of backtrader (every layer below the sizer), so they can be
#: used and tested without it.
CORE = set(LAYERS[: LAYERS.index("sizers")]) - LAZY_BACKTRADER


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(sub) for sub in ast.walk(node))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = "metabt" + (f".{base}" if base else "")
            out.append((base, id(node) in top))
            out += [(f"{base}.{alias.name}", id(node) in top) for alias in node.names]
    return out


def _internal(name: str, modules: dict[str, Path]) -> str | None:
    """The metabt module an import refers to (``metabt.meta.X`` -> ``meta``), or None."""
    parts = name.split(".")
    if parts[0] != "metabt":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1] if parts[1] in modules else None


def test_every_module_has_a_layer():
    assert sorted(_modules()) == sorted(LAYERS)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_point_down(module):
    modules = _modules()
    rank = {name: i for i, name in enumerate(LAYERS)}
    for name, _ in _imports(modules[module]):
        target = _internal(name, modules)
        if target is None or target == module:
            continue
        assert target != "__init__", f"metabt.{module} imports the package root ({name})"
        assert rank[target] < rank[module], (
            f"metabt.{module} imports metabt.{target}, which is not below it; move the shared "
            "piece down a layer"
        )


@pytest.mark.parametrize("module", sorted(_modules()))
def test_package_never_imports_top_level_strategies(module):
    for name, _ in _imports(_modules()[module]):
        assert name.split(".")[0] != "strategies", f"metabt.{module} imports {name}"


@pytest.mark.parametrize("module", sorted(CORE | LAZY_BACKTRADER))
def test_core_modules_do_not_import_backtrader(module):
    for name, at_top in _imports(_modules()[module]):
        if name.split(".")[0] != "backtrader":
            continue
        assert module in LAZY_BACKTRADER and not at_top, f"metabt.{module} imports backtrader"


def test_no_import_cycles():
    """Implied by test_imports_point_down; checked on the graph too, for a clear message."""
    modules = _modules()
    graph = {
        m: {t for n, _ in _imports(p) if (t := _internal(n, modules)) not in (None, m)}
        for m, p in modules.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_docstring_and_sorted_all(module):
    """Each module says what it is in one line and lists its public names, sorted."""
    doc = ast.get_docstring(ast.parse(_modules()[module].read_text(encoding="utf-8")))
    assert doc and doc.splitlines()[0].strip(), f"metabt.{module}: no docstring"
    if module == "__main__":  # importing it runs the command
        return
    mod = importlib.import_module(f"metabt.{module}")
    names = getattr(mod, "__all__", None)
    assert names is not None, f"metabt.{module} has no __all__"
    assert list(names) == sorted(names, key=str.lower) or list(names) == sorted(names)
    for name in names:
        assert hasattr(mod, name), f"metabt.{module}.__all__ lists a missing {name!r}"
