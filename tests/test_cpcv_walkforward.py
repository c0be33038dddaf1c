"""walkforward(cv="cpcv"): C(N, k) splits trained outside their test groups, φ paths.

N = 4 groups of two years of test bars, k = 2 tested per split: 6 splits (each trained once,
purged and embargoed, after its test groups too), 12 group backtests, 3 paths that each
cover every test bar once.
"""

from __future__ import annotations

import pandas as pd
import pytest

from metabt.config.defaults import DEMO
from metabt.errors import ConfigError
from metabt.experiments import scheduler
from metabt.experiments.parts import check_excluded
from metabt.experiments.settings import RunSettings
from metabt.experiments.walkforward import cpcv_exclusions, walkforward

CFG = DEMO.with_(
    meta_steps=3,
    batch_size=4,
    val_years=0.5,
    hidden=(8,),
    inner_steps=1,
    adapt_every=20,
    support=20,
    query=5,
    baselines=("RollingRidge",),
)


@pytest.fixture(scope="module")
def settings(sample_frames):
    return RunSettings(
        frames=sample_frames,
        train_frames=sample_frames,
        start=pd.Timestamp("2010-01-04"),
        end=pd.Timestamp("2011-12-30"),
        cfg=CFG,
    )


def test_cpcv_exclusions_purge_before_and_embargo_after():
    cal = pd.bdate_range("2020-01-01", periods=40)
    spans = cpcv_exclusions(cal, 10, [(0, 4), (20, 24)], horizon=2, embargo=3)
    assert spans == ((cal[8], cal[17]), (cal[28], cal[37]))
    # clipped at the ends of the data; the embargo is at least the horizon
    assert cpcv_exclusions(cal, 0, [(0, 4)], horizon=5, embargo=1) == ((cal[0], cal[9]),)
    assert cpcv_exclusions(cal, 30, [(5, 9)], horizon=1, embargo=4) == ((cal[34], cal[39]),)


@pytest.fixture(scope="module")
def cpcv_run(settings):
    """One CPCV walk-forward (N=4, k=2), with every training call and meta-learner seen."""
    calls, learners = [], []
    train = scheduler.train_part

    def spy(frames, cfg, end, part, **kwargs):
        calls.append((part, pd.Timestamp(end), kwargs.get("exclude")))
        out = train(frames, cfg, end, part, **kwargs)
        if part == "meta":
            learners.append((out[0].learner, kwargs["exclude"]))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scheduler, "train_part", spy)
        result = walkforward(settings, progress=False, cv="cpcv", cv_groups=4, cv_test_groups=2)
    return result, calls, learners


def test_cpcv_walkforward_end_to_end(cpcv_run):
    result, calls, _ = cpcv_run
    # 6 splits, each trained once per part (its two test groups share the training),
    # on every bar up to the end of the test window: the cut-off is the day after
    assert sorted({part for part, _, _ in calls}) == ["linear", "meta"]
    assert len(calls) == 2 * 6
    assert {end for _, end, _ in calls} == {pd.Timestamp("2011-12-31")}
    table = result.table
    units = table[["split", "fold"]].drop_duplicates()
    assert len(units) == 12 and table["split"].nunique() == 6
    assert units.groupby("fold").size().tolist() == [3, 3, 3, 3]  # C(3, 1) tests a group
    # every path covers every test bar once
    bars = table[table["strategy"] == "MetaStrategy"].drop_duplicates("fold")
    total = int(bars["bars"].sum())
    paths = result.paths
    assert paths is not None and paths["path"].nunique() == 3
    assert (paths["bars"] == total).all()
    meta = result.stitched["MetaStrategy"].returns
    assert len(meta) == total and meta.index.is_unique and meta.index.is_monotonic_increasing
    # per strategy, the mean and spread of the paths' net Sharpe
    summary = result.summary
    assert {"path_sharpe_mean", "path_sharpe_sd", "paths"} <= set(summary.columns)
    sharpe = paths[paths["strategy"] == "MetaStrategy"]["sharpe"]
    assert summary.loc["MetaStrategy", "path_sharpe_mean"] == pytest.approx(sharpe.mean())
    assert result.verdicts[0].startswith("CPCV, 4 groups, 2 tested per split: 6 splits, 3 paths")
    # each split's exclusions cover its test groups (plus purge and embargo), and its
    # training reads bars after them (the cut-off is past the last test bar)
    spans_of = [spans for part, _, spans in calls if part == "meta"]  # in split order
    trained_after = 0
    for split in range(1, 7):
        rows = table[(table["split"] == split) & (table["strategy"] == "MetaStrategy")]
        spans = spans_of[split - 1]
        assert len(rows) == 2 and len(spans) == 2
        for (first, last), (a, b) in zip(rows[["test_start", "test_end"]].values, spans):
            assert a < pd.Timestamp(first) and pd.Timestamp(last) <= b
        last_test = max(pd.Timestamp(t) for t in rows["test_end"])
        trained_after += pd.Timestamp(rows["train_end"].iloc[0]) > last_test
    # a split trains after its last test group when bars remain past the embargo (look-back
    # + support + query bars) and the features' own look-back: here split 1 (groups 1, 2)
    assert trained_after >= 1


def test_cpcv_learners_pass_check_excluded(cpcv_run):
    _, _, seen = cpcv_run
    assert len(seen) == 6
    for learner, spans in seen:
        check_excluded(learner, spans)
        with pytest.raises(ConfigError, match="does not cover"):
            a, b = spans[0]
            check_excluded(learner, [(a - pd.Timedelta(days=7), b)])


def test_cpcv_settings_are_checked(settings):
    with pytest.raises(ConfigError, match="`cv` must be one of walkforward, cpcv"):
        walkforward(settings, progress=False, cv="kfold")
    with pytest.raises(
        ConfigError, match="`cv_test_groups` 4 must be at least 1 and below `cv_groups` 4"
    ):
        walkforward(settings, progress=False, cv="cpcv", cv_groups=4, cv_test_groups=4)
    with pytest.raises(ConfigError, match="train_years"):
        walkforward(settings, progress=False, cv="cpcv", train_years=2)


def test_the_command_line_names_its_flags(capsys):
    from metabt.cli.main import main

    code = main(["walkforward", "--cv", "cpcv", "--cv-groups", "4", "--cv-test-groups", "4",
                 "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--cv-test-groups 4 must be at least 1 and below --cv-groups 4" in err[0]
