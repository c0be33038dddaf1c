"""Resumable experiments: a compare killed with SIGKILL resumes to the results of an
uninterrupted run; unit files are read only when their HMAC verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from metabt.errors import ConfigError
from metabt.experiments.resume import UnitStore

CONTEXT = {"metabt": "test", "torch": "test", "threads": 1}

# a small compare: one asset, half a year, 5 outer steps, no smoothing grid
SCRIPT = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from metabt.config.defaults import DEMO
    from metabt.data.ohlcv import load_ohlcv, sample_files
    from metabt.experiments.compare import compare
    from metabt.experiments.resume import UnitStore
    from metabt.experiments.settings import RunSettings

    files = {p.stem: p for p in sample_files()}
    frames = {"AAPL": load_ohlcv(files["AAPL"])}
    cfg = DEMO.with_(meta_steps=5, smooth=1, smooth_grid=())
    settings = RunSettings(
        frames, frames, pd.Timestamp("2011-06-01"), pd.Timestamp("2011-12-31"), cfg=cfg
    )
    context = {"metabt": "test", "torch": "test", "threads": 1}
    store = UnitStore(sys.argv[1], resume=sys.argv[2] == "resume", context=context)
    result = compare(settings, progress=False, store=store)
    result.table.to_pickle(sys.argv[3])
    print(store.loaded)
    """
)


def _compare(tmp_path: Path, units: Path, mode: str, table: Path) -> subprocess.Popen[str]:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), str(units), mode, str(table)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_a_compare_killed_with_sigkill_resumes_to_the_uninterrupted_results(tmp_path):
    reference = _compare(tmp_path, tmp_path / "ref_units", "fresh", tmp_path / "ref.pkl")
    killed = _compare(tmp_path, tmp_path / "units", "fresh", tmp_path / "never.pkl")
    deadline = time.monotonic() + 240
    while len(list((tmp_path / "units").glob("*.unit"))) < 4:  # some units done, not all
        assert killed.poll() is None, killed.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run kept no unit"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    kept = len(list((tmp_path / "units").glob("*.unit")))
    assert not (tmp_path / "never.pkl").exists()
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-2000:]
    resumed = _compare(tmp_path, tmp_path / "units", "resume", tmp_path / "resumed.pkl")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert int(out.strip().splitlines()[-1]) >= kept >= 4  # read back, not run again
    pd.testing.assert_frame_equal(
        pd.read_pickle(tmp_path / "resumed.pkl"), pd.read_pickle(tmp_path / "ref.pkl")
    )


def test_a_tampered_or_foreign_unit_is_refused_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.setenv("METABT_RESUME_KEY", str(tmp_path / "key"))
    store = UnitStore(tmp_path / "units", resume=False, context=CONTEXT)
    key = store.key(unit="u", what="meta", parts=[])
    store.put(key, {"value": 1})
    assert store.get(key) == (True, {"value": 1})
    assert store.get(store.key(unit="u", what="erm", parts=[])) == (False, None)
    path = tmp_path / "units" / f"{key}.unit"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1  # one bit of the pickle changed
    path.write_bytes(bytes(blob))
    with pytest.raises(ConfigError, match="not written by metabt under this account's key"):
        store.get(key)
    # another account's key: a folder someone else wrote is refused whole
    store.put(key, {"value": 1})
    monkeypatch.setenv("METABT_RESUME_KEY", str(tmp_path / "other_key"))
    other = UnitStore(tmp_path / "units", resume=True, context=CONTEXT)
    with pytest.raises(ConfigError, match="not written by metabt"):
        other.get(key)
    assert oct((tmp_path / "key").stat().st_mode & 0o777) == "0o600"


def test_keys_change_with_the_settings_and_a_fresh_run_drops_old_units(tmp_path, monkeypatch):
    monkeypatch.setenv("METABT_RESUME_KEY", str(tmp_path / "key"))
    store = UnitStore(tmp_path / "units", resume=False, context=CONTEXT)
    a = store.key(unit="u", what="meta", parts=[])
    assert a != store.key(unit="v", what="meta", parts=[])
    other = UnitStore(tmp_path / "units", resume=True, context={**CONTEXT, "torch": "2.0"})
    assert a != other.key(unit="u", what="meta", parts=[])  # versions are in every key
    store.put(a, 1)
    assert UnitStore(tmp_path / "units", resume=True, context=CONTEXT).get(a) == (True, 1)
    assert UnitStore(tmp_path / "units", resume=False, context=CONTEXT).get(a) == (False, None)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="metabt did not write it"):
        UnitStore(mine, resume=False, context=CONTEXT)
    assert (mine / "notes.txt").read_text() == "mine"


def test_a_walkforward_resumes_from_its_finished_units(sample_frames, tmp_path):
    from metabt.config.defaults import DEMO
    from metabt.experiments.settings import RunSettings
    from metabt.experiments.walkforward import walkforward

    cfg = DEMO.with_(
        meta_steps=2,
        batch_size=4,
        val_years=0.5,
        hidden=(8,),
        inner_steps=1,
        adapt_every=20,
        smooth=1,
        smooth_grid=(),
    )
    settings = RunSettings(
        sample_frames,
        sample_frames,
        pd.Timestamp("2010-12-01"),
        pd.Timestamp("2011-12-30"),
        cfg=cfg,
    )
    runs = {}
    for mode in ("fresh", "resume"):
        store = UnitStore(tmp_path / "units", resume=mode == "resume", context=CONTEXT)
        runs[mode] = (walkforward(settings, train_years=2, progress=False, store=store), store)
    (first, fresh), (second, resumed) = runs["fresh"], runs["resume"]
    assert fresh.loaded == 0 and resumed.loaded == len(list((tmp_path / "units").glob("*.unit")))
    assert resumed.loaded > 0  # every unit read back, none run again
    pd.testing.assert_frame_equal(first.table, second.table, check_exact=True)


def test_a_key_file_that_is_not_a_small_regular_file_is_one_line(tmp_path, monkeypatch):
    store = UnitStore(tmp_path / "units", resume=False, context=CONTEXT)
    monkeypatch.setenv("METABT_RESUME_KEY", "/dev/zero")  # endless: never read whole
    with pytest.raises(ConfigError, match="resume key /dev/zero cannot be read"):
        store.put(store.key(unit="u"), 1)
    big = tmp_path / "big.key"
    big.write_bytes(b"k" * 5000)
    monkeypatch.setenv("METABT_RESUME_KEY", str(big))
    with pytest.raises(ConfigError, match="has 1025 bytes, not 16 to 1024"):  # read capped
        UnitStore(tmp_path / "u2", resume=False, context=CONTEXT).put("k", 1)
