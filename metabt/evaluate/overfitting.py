"""Backtest overfitting: PBO by CSCV, and combinatorial purged cross-validation splits.

:func:`pbo` is the probability of backtest overfitting of a selection among N trials,
estimated by combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado
and Zhu 2017). :func:`cpcv_splits` and :func:`cpcv_paths` are the splits and backtest
paths of combinatorial purged cross-validation (López de Prado 2018, ch. 7 and 12):
N contiguous groups of bars, k of them tested per split, training bars whose label
window reaches a test bar purged, and an embargo after each test group.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metabt.errors import ConfigError

__all__ = [
    "MIN_BLOCK_BARS",
    "MIN_PBO_TRIALS",
    "PBOResult",
    "Split",
    "cpcv_paths",
    "cpcv_splits",
    "pbo",
]

#: Trials below which :func:`pbo` gives n/a: with few trials the rank of the in-sample
#: best out of sample is too coarse for a probability (Bailey et al. 2017 use N >= 16).
MIN_PBO_TRIALS = 16
#: Bars per CSCV block below which :func:`pbo` gives n/a (a Sharpe needs a deviation).
MIN_BLOCK_BARS = 2


@dataclass(frozen=True)
class PBOResult:
    """The probability of backtest overfitting and what it was computed from.

    Attributes:
        pbo: share of the combinations whose logit is <= 0 (the in-sample best trial
            ranks at or below the out-of-sample median); NaN when not computed.
        logits: (C,) float64, λ_c = log(ω_c / (1 − ω_c)) per combination, ω_c the
            relative out-of-sample rank of the in-sample best; empty when not computed.
        n_trials: N, columns of the matrix.
        n_bars: T, bars used (a multiple of ``n_blocks``).
        n_blocks: S, blocks the bars were cut into.
        reason: why the PBO was not computed ("" when it was).
    """

    pbo: float
    logits: np.ndarray
    n_trials: int
    n_bars: int
    n_blocks: int
    reason: str = ""

    def describe(self) -> str:
        """One line: ``PBO 0.43 (CSCV, 16 blocks, 12870 combinations, 20 trials)`` or n/a."""
        if self.reason:
            return f"PBO n/a ({self.reason})"
        return (
            f"PBO {self.pbo:.2f} (CSCV, {self.n_blocks} blocks, {len(self.logits)} "
            f"combinations, {self.n_trials} trials)"
        )


def _half_sharpes(sums: np.ndarray, squares: np.ndarray, n: int, means: np.ndarray) -> np.ndarray:
    """(C, N) per-bar Sharpe ratios of halves from their sums (C, N) and sums of squares of
    returns centred on the column means ``means`` (N,), ``n`` bars each."""
    var = np.clip((squares - sums**2 / n) / (n - 1), 0.0, None)  # shift-invariant
    mean = sums / n + means
    flat = var <= 1e-24 * (squares / n + means**2)  # constant over the half
    return np.where(flat, 0.0, mean / np.sqrt(np.where(flat, 1.0, var)))


def pbo(
    returns: pd.DataFrame | np.ndarray,
    *,
    n_blocks: int = 16,
    min_trials: int = MIN_PBO_TRIALS,
) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation.

    The T×N matrix of per-bar returns (T bars, N trials) is cut into S contiguous blocks
    of ``T // S`` bars (the oldest ``T mod S`` bars are dropped). For each of the
    C(S, S/2) ways to pick S/2 blocks as the in-sample half (the rest, out of sample),
    the trial with the highest in-sample Sharpe ratio is found, its out-of-sample Sharpe
    ranked among the N trials' (rank 1 the lowest, ties given their average rank), the
    relative rank ω = rank / (N + 1) turned into the logit λ = log(ω / (1 − ω)). PBO is
    the share of combinations with λ <= 0: how often the in-sample choice is no better
    than the median trial out of sample. Sharpe ratios are per bar (mean over standard
    deviation, ddof=1); a trial constant over a half has Sharpe 0 there; ties for the
    in-sample best go to the first column.

    Args:
        returns: (T, N) float, simple per-bar returns, one column per trial (a DataFrame
            or an array); rows are bars in time order. Rows with a NaN are dropped.
        n_blocks: S, an even number of blocks >= 2. Default 16 (12870 combinations).
        min_trials: N below which the PBO is n/a. Default :data:`MIN_PBO_TRIALS` (16).

    Returns:
        A :class:`PBOResult`; its ``pbo`` is NaN and ``reason`` says why when there are
        fewer than ``min_trials`` trials or fewer than ``MIN_BLOCK_BARS`` bars per block.

    Raises:
        ConfigError: ``returns`` is not two-dimensional, or ``n_blocks`` is not an even
            integer >= 2.

    References:
        Bailey, Borwein, López de Prado and Zhu 2017, "The Probability of Backtest
        Overfitting", Journal of Computational Finance 20(4), section 2 (CSCV).
    """
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 2 or n_blocks % 2:
        raise ConfigError(
            f"n_blocks must be an even integer >= 2 (CSCV blocks), got {n_blocks!r}; e.g. 16"
        )
    matrix = np.asarray(returns, dtype=np.float64)
    if matrix.ndim != 2:
        raise ConfigError(
            f"returns must be a (bars, trials) matrix, got {matrix.ndim} dimension(s); pass "
            "one column of per-bar returns per trial"
        )
    matrix = matrix[~np.isnan(matrix).any(axis=1)]
    n_bars, n_trials = matrix.shape
    block = n_bars // n_blocks

    def unavailable(reason: str) -> PBOResult:
        return PBOResult(math.nan, np.empty(0), n_trials, block * n_blocks, n_blocks, reason)

    if n_trials < min_trials:
        return unavailable(f"{n_trials} trials, fewer than the {min_trials} PBO needs")
    if block < MIN_BLOCK_BARS:
        return unavailable(
            f"{n_bars} bars with returns in every trial, too few for {n_blocks} blocks of "
            f"{MIN_BLOCK_BARS} bars"
        )
    used = matrix[n_bars - block * n_blocks :]
    means = used.mean(axis=0)
    blocks = (used - means).reshape(n_blocks, block, n_trials)  # centred: stable variances
    sums = blocks.sum(axis=1)  # (S, N)
    squares = (blocks**2).sum(axis=1)
    combos = np.array(list(itertools.combinations(range(n_blocks), n_blocks // 2)))
    chosen = np.zeros((len(combos), n_blocks))
    chosen[np.arange(len(combos))[:, None], combos] = 1.0
    half = block * n_blocks // 2
    ins = _half_sharpes(chosen @ sums, chosen @ squares, half, means)  # (C, N)
    outs = _half_sharpes((1 - chosen) @ sums, (1 - chosen) @ squares, half, means)
    best = np.argmax(ins, axis=1)  # the first of tied maxima
    at_best = outs[np.arange(len(combos)), best][:, None]
    below, tied = (outs < at_best).sum(axis=1), (outs == at_best).sum(axis=1)
    rank = 1.0 + below + 0.5 * (tied - 1)  # 1 = the lowest; ties share their average rank
    omega = rank / (n_trials + 1)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(float(np.mean(logits <= 0)), logits, n_trials, block * n_blocks, n_blocks)


# --------------------------------------------------------------------------- CPCV


@dataclass(frozen=True)
class Split:
    """One CPCV split of ``n_bars`` bars.

    Attributes:
        test_groups: (k,) the indices of the groups tested, ascending.
        train: (n_train,) int64 bar indices used for training, ascending: every bar outside
            the test groups, less the purged and embargoed ones.
        test: (n_test,) int64 bar indices of the test groups, ascending.
        test_bounds: (first bar, last bar) of each test group, in ``test_groups`` order.
    """

    test_groups: tuple[int, ...]
    train: np.ndarray
    test: np.ndarray
    test_bounds: tuple[tuple[int, int], ...]


def _check_int(value: object, name: str, low: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}; {fix}")
    return int(value)


def _groups(n_bars: int, n_groups: int) -> list[np.ndarray]:
    return np.array_split(np.arange(n_bars), n_groups)


def cpcv_splits(
    n_bars: int,
    n_groups: int,
    n_test_groups: int,
    *,
    horizon: int,
    embargo: int,
) -> Iterator[Split]:
    """The C(N, k) splits of combinatorial purged cross-validation, in lexicographic order.

    The bars 0..T−1 are cut into N contiguous groups of nearly equal size
    (``numpy.array_split``); each split tests k of them and trains on the others, less

    * the purge: a training bar t before a test group whose label window
      (t, t + horizon] reaches its first bar f (``f − horizon <= t < f``), and
    * the embargo: the ``max(embargo, horizon)`` bars right after each test group (whose
      labels overlap the test labels, or whose features, support and query windows would
      read the test bars).

    Every group is tested C(N−1, k−1) times.

    Args:
        n_bars: T, bars in the period.
        n_groups: N, groups (>= 2, <= T).
        n_test_groups: k, groups tested per split (1 <= k < N).
        horizon: label horizon in bars (>= 0): a label at t is realised at t + horizon.
        embargo: bars dropped from training after each test group (>= 0); at least the
            feature look-back plus support plus query bars for a meta-learner.

    Yields:
        :class:`Split` per combination of test groups.

    Raises:
        ConfigError: a count out of range.

    References:
        López de Prado 2018, Advances in Financial Machine Learning, Wiley: 7.4 (purging,
        embargo) and 12.4 (combinatorial purged cross-validation).
    """
    n_bars = _check_int(n_bars, "n_bars", 1, "pass the number of bars in the period")
    n_groups = _check_int(n_groups, "n_groups", 2, "e.g. 6 CPCV groups")
    if n_groups > n_bars:
        raise ConfigError(
            f"n_groups {n_groups} is more than the {n_bars} bars; use fewer CPCV groups"
        )
    k = _check_int(n_test_groups, "n_test_groups", 1, "e.g. 2 test groups per split")
    if k >= n_groups:
        raise ConfigError(
            f"n_test_groups {k} must be below n_groups {n_groups}; e.g. 2 of 6 groups"
        )
    horizon = _check_int(horizon, "horizon", 0, "pass the label horizon in bars")
    embargo = _check_int(embargo, "embargo", 0, "pass the embargo in bars")
    groups = _groups(n_bars, n_groups)
    bars = np.arange(n_bars)
    for tested in itertools.combinations(range(n_groups), k):
        keep = np.ones(n_bars, dtype=bool)
        for g in tested:
            first, last = int(groups[g][0]), int(groups[g][-1])
            keep[first : last + 1] = False
            keep[max(first - horizon, 0) : first] = False  # purge: labels reaching the test
            # after it, the labels that overlap the test labels and the embargo
            keep[last + 1 : last + 1 + max(embargo, horizon)] = False
        test = np.concatenate([groups[g] for g in tested]).astype(np.int64)
        bounds = tuple((int(groups[g][0]), int(groups[g][-1])) for g in tested)
        yield Split(tuple(tested), bars[keep].astype(np.int64), test, bounds)


def cpcv_paths(n_groups: int, n_test_groups: int) -> np.ndarray:
    """The backtest paths of CPCV: which split's test of each group each path takes.

    Each group is tested in C(N−1, k−1) splits; path p takes, for every group, the p-th
    split (in :func:`cpcv_splits` order) that tests it, so the φ = C(N−1, k−1) paths
    each cover the whole period once.

    Args:
        n_groups: N, groups.
        n_test_groups: k, groups tested per split.

    Returns:
        (φ, N) int64: entry [p, g] is the index of the split whose test of group g path p
        uses.

    Raises:
        ConfigError: a count out of range.

    References:
        López de Prado 2018, Advances in Financial Machine Learning, 12.4.
    """
    n_groups = _check_int(n_groups, "n_groups", 2, "e.g. 6 CPCV groups")
    k = _check_int(n_test_groups, "n_test_groups", 1, "e.g. 2 test groups per split")
    if k >= n_groups:
        raise ConfigError(
            f"n_test_groups {k} must be below n_groups {n_groups}; e.g. 2 of 6 groups"
        )
    n_paths = math.comb(n_groups - 1, k - 1)
    out = np.empty((n_paths, n_groups), dtype=np.int64)
    seen = [0] * n_groups
    for s, tested in enumerate(itertools.combinations(range(n_groups), k)):
        for g in tested:
            out[seen[g], g] = s
            seen[g] += 1
    return out
