"""metabt.evaluate.overfitting: PBO by CSCV against a brute force, and the CPCV splitter.

The brute force below is written from the paper's recipe (Bailey, Borwein, López de Prado
and Zhu 2017, section 2), one combination at a time with plain loops, independently of
the vectorised :func:`pbo`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from metabt.errors import ConfigError
from metabt.evaluate.overfitting import cpcv_paths, cpcv_splits, pbo


def brute_force_pbo(matrix: np.ndarray, n_blocks: int) -> tuple[float, list[float]]:
    """CSCV one combination at a time: rows of the chosen blocks in, the others out."""
    n_bars, n_trials = matrix.shape
    size = n_bars // n_blocks
    rows = matrix[n_bars - size * n_blocks :]
    blocks = [rows[i * size : (i + 1) * size] for i in range(n_blocks)]
    logits = []
    for ins in itertools.combinations(range(n_blocks), n_blocks // 2):
        train = np.vstack([blocks[i] for i in ins])
        test = np.vstack([blocks[i] for i in range(n_blocks) if i not in ins])
        is_sharpe = [train[:, j].mean() / train[:, j].std(ddof=1) for j in range(n_trials)]
        oos_sharpe = [test[:, j].mean() / test[:, j].std(ddof=1) for j in range(n_trials)]
        best = is_sharpe.index(max(is_sharpe))
        ordered = sorted(oos_sharpe)  # rank 1 = the lowest (no ties in continuous data)
        rank = ordered.index(oos_sharpe[best]) + 1
        omega = rank / (n_trials + 1)
        logits.append(math.log(omega / (1 - omega)))
    return sum(v <= 0 for v in logits) / len(logits), logits


@pytest.mark.parametrize(
    ("seed", "n_bars", "n_trials", "n_blocks"),
    [(0, 24, 3, 4), (1, 37, 4, 6), (2, 60, 5, 6), (3, 41, 5, 4)],
)
def test_pbo_matches_a_brute_force_enumeration(seed, n_bars, n_trials, n_blocks):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0005, 0.01, size=(n_bars, n_trials))
    matrix[:, 0] += 0.002 * np.sin(np.arange(n_bars) / 3)  # trials that differ by period
    expected, logits = brute_force_pbo(matrix, n_blocks)
    got = pbo(pd.DataFrame(matrix), n_blocks=n_blocks, min_trials=1)
    assert got.reason == ""
    assert got.n_blocks == n_blocks and got.n_trials == n_trials
    assert got.n_bars == (n_bars // n_blocks) * n_blocks
    assert len(got.logits) == math.comb(n_blocks, n_blocks // 2)
    np.testing.assert_allclose(got.logits, logits, rtol=1e-12)
    assert got.pbo == expected


def test_pbo_of_noise_is_near_a_half_and_of_a_real_edge_near_zero():
    # noise: the in-sample best is a random draw out of sample; one matrix varies a lot
    # (its halves share the whole sample), so average over matrices
    noise = [
        pbo(np.random.default_rng(s).normal(0, 0.01, size=(400, 20)), n_blocks=8).pbo
        for s in range(30)
    ]
    assert 0.4 < float(np.mean(noise)) < 0.65
    rng = np.random.default_rng(7)
    edge = rng.normal(0, 0.01, size=(800, 20))
    edge[:, 5] += 0.004  # a per-bar Sharpe of 0.4 in one trial
    result = pbo(edge)
    assert result.pbo <= 0.02 and len(result.logits) == math.comb(16, 8)
    assert "PBO 0.0" in result.describe()


def test_pbo_is_na_with_a_reason_below_the_minimums():
    rng = np.random.default_rng(0)
    few = pbo(rng.normal(size=(500, 15)))
    assert math.isnan(few.pbo) and "15 trials, fewer than the 16" in few.reason
    assert few.describe().startswith("PBO n/a (15 trials")
    short = pbo(rng.normal(size=(31, 20)))
    assert math.isnan(short.pbo) and "31 bars" in short.reason and "16 blocks" in short.reason
    with pytest.raises(ConfigError, match="n_blocks must be an even integer"):
        pbo(rng.normal(size=(100, 20)), n_blocks=5)
    with pytest.raises(ConfigError, match=r"returns must be a \(bars, trials\) matrix"):
        pbo(rng.normal(size=100))


# --------------------------------------------------------------------------- CPCV


@pytest.mark.parametrize(
    ("n_bars", "n_groups", "k", "horizon", "embargo"),
    [(100, 6, 2, 3, 5), (97, 5, 1, 0, 0), (250, 8, 3, 10, 4), (60, 4, 2, 2, 30)],
)
def test_cpcv_splits_purge_embargo_and_count(n_bars, n_groups, k, horizon, embargo):
    splits = list(cpcv_splits(n_bars, n_groups, k, horizon=horizon, embargo=embargo))
    assert len(splits) == math.comb(n_groups, k)
    groups = np.array_split(np.arange(n_bars), n_groups)
    tested = np.zeros(n_groups, dtype=int)
    for split in splits:
        assert len(split.test_groups) == k
        tested[list(split.test_groups)] += 1
        test = np.concatenate([groups[g] for g in split.test_groups])
        np.testing.assert_array_equal(split.test, test)
        assert split.train.dtype == np.int64 and split.test.dtype == np.int64
        assert np.all(np.diff(split.train) > 0)
        assert not set(split.train) & set(split.test)
        assert split.test_bounds == tuple((groups[g][0], groups[g][-1]) for g in split.test_groups)
        for g in split.test_groups:
            first, last = groups[g][0], groups[g][-1]
            gap = split.train - first
            # no training bar whose label (t, t + horizon] reaches the test group
            assert not np.any((gap < 0) & (gap >= -horizon))
            after = split.train - last
            assert not np.any((after > 0) & (after <= max(embargo, horizon)))
        # the bars not dropped are all kept
        dropped = set()
        for g in split.test_groups:
            first, last = groups[g][0], groups[g][-1]
            dropped |= set(
                range(max(first - horizon, 0), min(last + max(embargo, horizon), n_bars - 1) + 1)
            )
        assert set(split.train) == set(range(n_bars)) - dropped
    assert (tested == math.comb(n_groups - 1, k - 1)).all()


def test_cpcv_paths_cover_every_group_once_per_path():
    paths = cpcv_paths(6, 2)
    splits = list(cpcv_splits(60, 6, 2, horizon=0, embargo=0))
    assert paths.shape == (math.comb(5, 1), 6)
    for path in paths:
        for group, s in enumerate(path):
            assert group in splits[s].test_groups
    for group in range(6):  # each of the group's tests in exactly one path
        assert sorted(paths[:, group]) == [
            s for s, split in enumerate(splits) if group in split.test_groups
        ]


def test_cpcv_rejects_bad_counts():
    with pytest.raises(ConfigError, match="n_test_groups 6 must be below n_groups 6"):
        list(cpcv_splits(100, 6, 6, horizon=1, embargo=0))
    with pytest.raises(ConfigError, match="n_groups 20 is more than the 10 bars"):
        list(cpcv_splits(10, 20, 1, horizon=1, embargo=0))
    with pytest.raises(ConfigError, match="horizon must be an integer >= 0"):
        list(cpcv_splits(100, 6, 2, horizon=-1, embargo=0))
    with pytest.raises(ConfigError, match="n_groups must be an integer >= 2"):
        cpcv_paths(1, 1)


# ------------------------------------------------------- a leaky synthetic market

H = 20  # label horizon (bars): labels of neighbouring bars overlap by H - 1 bars


def _leaky_market(seed: int, n_bars: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Unpredictable returns, H-bar forward labels, and a feature smooth in time.

    The feature carries no information about the future (it is the bar's date, like a
    slow moving average would be); a nearest-neighbour learner finds, for a test bar, the
    training bars next to it in time, whose labels share up to H - 1 returns with its own.
    """
    rng = np.random.default_rng(seed)
    prices = np.concatenate([[0.0], np.cumsum(rng.normal(0, 0.01, n_bars + H))])
    labels = prices[H : H + n_bars] - prices[:n_bars]  # the sum of the next H returns
    return np.arange(n_bars, dtype=float), labels


def _knn_score(x: np.ndarray, y: np.ndarray, splits, k: int = 4) -> float:
    """Correlation of k-nearest-neighbour predictions with the labels, over all tests."""
    predictions, truths = [], []
    for split in splits:
        distance = np.abs(x[split.test][:, None] - x[split.train][None, :])
        nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
        predictions.append(y[split.train][nearest].mean(axis=1))
        truths.append(y[split.test])
    return float(np.corrcoef(np.concatenate(predictions), np.concatenate(truths))[0, 1])


def test_purge_and_embargo_remove_the_leak_of_overlapping_labels():
    leaky, unpurged, purged = [], [], []
    for seed in range(3):
        x, y = _leaky_market(seed)
        n = len(y)
        leaky.append(_knn_score(x, y, cpcv_splits(n, 30, 1, horizon=0, embargo=0)))  # k-fold
        unpurged.append(_knn_score(x, y, cpcv_splits(n, 30, 2, horizon=0, embargo=0)))
        purged.append(_knn_score(x, y, cpcv_splits(n, 30, 2, horizon=H, embargo=H)))
    # plain k-fold (and CPCV without purging) "predicts" noise: the labels leak
    assert min(leaky) > 0.5 and min(unpurged) > 0.5
    # purged and embargoed, the skill is gone (the returns are unpredictable)
    assert abs(float(np.mean(purged))) < 0.2 and max(purged) < 0.3
