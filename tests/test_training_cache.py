"""The main job's training cache: a second ``metabt backtest`` on the same data and settings
reads the trained model back (and says so) instead of training, and trades identically;
any change trains afresh; an entry this account did not sign is refused."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from metabt.cli.main import main
from metabt.data.ohlcv import sample_files
from metabt.experiments.cache import CACHE_ENV, MAX_ENTRIES, TrainingCache, cache_folder

FILES = {p.stem: str(p) for p in sample_files()}
ARGS = ["backtest", "--data", FILES["AAPL"], "--start", "2011-01-01", "--end", "2011-06-30",
        "--steps", "5", "--quiet"]  # fmt: skip
TRAINED = re.compile(r"^meta-trained maml .*$", re.MULTILINE)


def _backtest(capsys, tmp_path, *extra: str, name: str = "run") -> tuple[str, pd.Series]:
    report = tmp_path / f"{name}.html"
    assert main([*ARGS, *extra, "--report", str(report)]) == 0
    out = capsys.readouterr().out
    returns = pd.read_csv(tmp_path / f"{name}_assets.csv")
    return out, returns


@pytest.mark.slow
def test_a_second_run_reuses_the_model_and_trades_identically(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    first, assets1 = _backtest(capsys, tmp_path, name="a")
    assert "reused the model cached" not in first
    training = TRAINED.search(first)
    assert training is not None
    assert len(list(folder.glob("*.unit"))) == 1

    second, assets2 = _backtest(capsys, tmp_path, name="b")
    assert f"reused the model cached in {folder}" in second
    assert training.group(0) in second  # the training's own summary, repeated
    table = lambda out: out[out.index("strategy") :].split("\n\n")[0]  # noqa: E731
    assert table(first) == table(second)
    pd.testing.assert_frame_equal(assets1, assets2)

    # another setting misses and trains; --no-cache neither reads nor writes
    third, _ = _backtest(capsys, tmp_path, "--seed", "1", name="c")
    assert "reused the model cached" not in third and TRAINED.search(third)
    assert len(list(folder.glob("*.unit"))) == 2
    fourth, _ = _backtest(capsys, tmp_path, "--no-cache", name="d")
    assert "reused the model cached" not in fourth
    assert len(list(folder.glob("*.unit"))) == 2


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_folder() is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_folder() == tmp_path
    monkeypatch.delenv(CACHE_ENV)
    assert cache_folder() is not None and cache_folder().parts[-2:] == ("metabt", "trained")


def test_an_entry_not_signed_by_this_account_is_refused(tmp_path, sample_frames, monkeypatch):
    from metabt.config.defaults import DEMO
    from metabt.errors import ConfigError
    from metabt.experiments.settings import RunSettings

    cache = TrainingCache(tmp_path / "c", context={"v": 1})
    settings = RunSettings(
        frames=sample_frames, train_frames=sample_frames, start=pd.Timestamp("2011-01-03"),
        cfg=DEMO,
    )  # fmt: skip
    key = cache.key(settings, settings.start)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".metabt-run").write_text("x")
    (tmp_path / "c" / f"{key}.unit").write_bytes(b"\0" * 64)
    with pytest.raises(ConfigError, match="was not written by metabt under this account's key"):
        cache.train(settings, settings.start, progress=False, log=print)
    assert key != cache.key(settings.__class__(**{**vars(settings), "cfg": DEMO.with_(seed=3)}),
                            settings.start)  # fmt: skip


def test_the_oldest_entries_beyond_the_cap_are_removed(tmp_path):
    import os

    folder = tmp_path / "c"
    cache = TrainingCache(folder, context={})
    folder.mkdir()
    for i in range(MAX_ENTRIES + 3):
        path = folder / f"{i:02d}.unit"
        path.write_bytes(b"x")
        os.utime(path, (i, i))
    cache._prune(keep="00")
    left = sorted(p.stem for p in folder.glob("*.unit"))
    assert left == ["00"] + [f"{i:02d}" for i in range(3, MAX_ENTRIES + 3)]


def test_entries_are_keyed_by_metabt_s_sources_not_only_its_version(tmp_path, sample_frames):
    """A stored learner pickles metabt's objects: code edited under the same version number
    must miss the cache (a fresh clone's demo once unpickled a kernel from older code)."""
    import argparse

    from metabt._version import source_digest
    from metabt.cli.commands import _code_context

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    before = source_digest(pkg)
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    source_digest.cache_clear()
    assert source_digest(pkg) != before and len(before) == 64
    context = _code_context(argparse.Namespace(threads=1))
    assert context["sources"] == source_digest()
    one = TrainingCache(tmp_path / "c1", context=context)
    other = TrainingCache(tmp_path / "c2", context={**context, "sources": before})
    from metabt.config.defaults import DEMO
    from metabt.experiments.settings import RunSettings

    settings = RunSettings(
        frames=sample_frames, train_frames=sample_frames, start=pd.Timestamp("2011-01-03"),
        cfg=DEMO,
    )  # fmt: skip
    assert one.key(settings, settings.start) != other.key(settings, settings.start)
