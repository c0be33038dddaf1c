"""_util: atomic writes that never follow a planted symlink, and quiet third-party calls."""

from __future__ import annotations

import logging
import os
import stat
import warnings

import pytest

from metabt._util import atomic_path, quiet_third_party, write_text


def test_quiet_context_drops_findfont_only_inside_and_restores_state(caplog):
    logger = logging.getLogger("matplotlib.font_manager")
    filters_before = list(logger.filters)
    warning_filters_before = list(warnings.filters)
    caplog.set_level(logging.DEBUG, logger="matplotlib.font_manager")
    with quiet_third_party():
        logger.warning("findfont: Font family 'Arial' not found.")
        logger.warning("another message")  # only findfont records are dropped
        warnings.warn("old API", DeprecationWarning, stacklevel=1)  # silenced
    assert [r.getMessage() for r in caplog.records] == ["another message"]
    assert logger.filters == filters_before
    assert warnings.filters == warning_filters_before
    caplog.clear()
    logger.warning("findfont: Font family 'Arial' not found.")  # outside: not touched
    assert len(caplog.records) == 1


def test_write_text_replaces_atomically_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text(encoding="utf-8") == "two"
    assert list(target.parent.iterdir()) == [target]  # no temporary file left
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_atomic_path_leaves_the_target_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_never_writes_through_a_planted_symlink(tmp_path):
    """Another user cannot predict the temporary name and redirect the write elsewhere."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    target = tmp_path / "out.txt"
    names = set()
    for _ in range(3):
        with atomic_path(target) as tmp:
            assert not tmp.is_symlink()
            names.add(tmp.name)
            tmp.write_text("report", encoding="utf-8")
    assert len(names) == 3  # a fresh, unpredictable name each time
    assert victim.read_text(encoding="utf-8") == "precious"


def test_atomic_dir_replaces_a_report_set_whole_or_not_at_all(tmp_path):
    from metabt._util import RUN_MARKER, atomic_dir

    out = tmp_path / "reports"
    with atomic_dir(out) as tmp:
        (tmp / "a.csv").write_text("1", encoding="utf-8")
        (tmp / "b.html").write_text("<p>", encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "a.csv", "b.html"]
    with pytest.raises(KeyboardInterrupt), atomic_dir(out) as tmp:
        (tmp / "a.csv").write_text("2", encoding="utf-8")
        raise KeyboardInterrupt  # Ctrl-C between two files of the set
    assert (out / "a.csv").read_text(encoding="utf-8") == "1"  # the old set, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]  # no leftovers
    with atomic_dir(out) as tmp:
        (tmp / "c.md").write_text("new", encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "c.md"]  # replaced whole


def test_check_output_path_refuses_impossible_outputs_up_front(tmp_path):
    from metabt._util import check_output_path
    from metabt.errors import ConfigError

    a_file = tmp_path / "f.txt"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file; give a folder"):
        check_output_path(a_file, "--out", kind="dir")
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_path(tmp_path, "--report", kind="file")
    with pytest.raises(ConfigError, match="no folder can be made under it"):
        check_output_path(a_file / "sub" / "r.html", "--report", kind="file")
    assert check_output_path(tmp_path / "new" / "r.html", "--report", kind="file").name == "r.html"


def test_atomic_dir_never_replaces_a_folder_metabt_did_not_write(tmp_path, monkeypatch):
    from metabt._util import RUN_MARKER, atomic_dir
    from metabt.errors import ConfigError

    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("keep")
    (mine / "sub" / "notes.md").write_text("keep too")
    with pytest.raises(ConfigError, match=r"did not write.*\.metabt-run.*force"):
        with atomic_dir(mine) as tmp:
            (tmp / "compare.csv").write_text("x")
    assert (mine / "important.txt").read_text() == "keep"
    assert (mine / "sub" / "notes.md").read_text() == "keep too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging left
    with atomic_dir(mine, force=True) as tmp:  # the user's explicit word
        (tmp / "compare.csv").write_text("x")
    assert sorted(p.name for p in mine.iterdir()) == [RUN_MARKER, "compare.csv"]
    with atomic_dir(mine) as tmp:  # now metabt's own: replaced without force
        (tmp / "compare.csv").write_text("y")
    assert (mine / "compare.csv").read_text() == "y"
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty) as tmp:
        (tmp / "a").write_text("a")
    assert (empty / RUN_MARKER).is_file()
    monkeypatch.chdir(mine)
    for target in (mine, tmp_path, ".", ".."):
        with pytest.raises(ConfigError, match="working directory"), atomic_dir(target, force=True):
            pass
    assert (mine / "compare.csv").read_text() == "y"


def test_atomic_dir_removes_the_staging_folders_a_killed_run_left(tmp_path):
    from metabt._util import RUN_MARKER, atomic_dir

    out = tmp_path / "out"
    stale = tmp_path / ".out.abc123.tmp"
    stale.mkdir()
    (stale / RUN_MARKER).write_text("")
    (stale / "half.csv").write_text("half")
    users = tmp_path / ".out.mine.tmp"  # the same pattern, but not metabt's: kept
    users.mkdir()
    (users / "notes").write_text("keep")
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("a")
    assert not stale.exists() and (users / "notes").read_text() == "keep"
