"""README.md's Pieces table is what scripts/pieces.py generates from the modules' docstrings."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pieces", ROOT / "scripts" / "pieces.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_pieces_table_is_current(capsys):
    assert _script().main(["--check"]) == 0, capsys.readouterr().out


def test_table_lists_every_module_once_by_layer():
    script = _script()
    rows = script.rows()
    names = [name for _, name, _ in rows]
    assert len(names) == len(set(names))
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "metabt").rglob("*.py")
    }
    assert {f"`{m}`" for m in modules} <= set(names)
    assert "`strategies/meta_single_asset.py`" in names
    layers = [layer for layer, _, _ in rows]
    order = [layer for layer, _ in script.LAYERS] + ["recipes"]
    assert layers == sorted(layers, key=order.index)  # lowest layer first, grouped
    assert all(what and "\n" not in what and ":mod:" not in what for _, _, what in rows)


def test_check_fails_on_a_stale_table(tmp_path, monkeypatch, capsys):
    script = _script()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    stale = tmp_path / "README.md"
    layer, name, _ = script.rows()[1]
    row = f"| {layer} | {name} |"
    assert text.count(row) == 1
    stale.write_text(text.replace(row, f"| {layer} | `renamed` |"))
    monkeypatch.setattr(script, "README", stale)
    assert script.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().out
    assert script.main(["--write"]) == 0 and script.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == text
