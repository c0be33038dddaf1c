"""Is a Sharpe ratio real? Block-bootstrap intervals of Sharpe differences, Romano-Wolf
step-down p-values over a roster, and the deflated Sharpe ratio.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from metabt.errors import DataError
from metabt.evaluate.metrics import PERIODS_PER_YEAR, check_periods, check_returns

__all__ = [
    "EULER_GAMMA",
    "block_bootstrap_sharpe_diff",
    "deflated_sharpe",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "sharpe_influence",
    "stepdown_pvalues",
    "stepm_pvalues",
    "vol_scaled",
]


EULER_GAMMA = 0.5772156649015329


def sharpe_influence(x: np.ndarray) -> np.ndarray:
    """The influence function of the (per-bar) Sharpe ratio at each observation.

    With mean μ, standard deviation σ (ddof=0) and SR = μ/σ, the Sharpe ratio is a smooth
    function of the first two moments, and its delta-method linearisation is
    ``IF_t = (x_t − μ)/σ − SR · ((x_t − μ)² − σ²) / (2σ²)``: ``mean(IF) = 0`` and
    ``var(IF) / n`` is the Sharpe's asymptotic variance (for i.i.d. normal returns
    ``1 + SR²/2``, Lo 2002). The serial dependence that matters for a Sharpe interval is
    that of this series, not of the returns themselves.

    Args:
        x: (T,) per-bar returns.

    Returns:
        (T,) float64; all NaN when ``x`` is constant.

    References:
        Lo 2002, "The Statistics of Sharpe Ratios"; Ledoit and Wolf 2008, "Robust
        performance hypothesis testing with the Sharpe ratio", section 3.1.
    """
    x = np.asarray(x, dtype=np.float64)
    mu, sd = x.mean(), x.std()
    if not sd > 0:
        return np.full(len(x), np.nan)
    d = x - mu
    return d / sd - (mu / sd) * (d**2 - sd**2) / (2 * sd**2)


def _block_length(data: np.ndarray) -> float:
    """The stationary bootstrap's expected block length for ``data`` ((T,) or (T, K)):
    Politis–White's (``arch.bootstrap.optimal_block_length``), the largest over columns,
    at least 1 bar; 1 when no column has one (a degenerate series, e.g. two identical
    strategies' difference)."""
    from arch.bootstrap import optimal_block_length

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lengths = optimal_block_length(data)["stationary"].to_numpy()
    finite = lengths[np.isfinite(lengths)]
    return float(max(1.0, finite.max())) if len(finite) else 1.0


def _stance(lo: float, hi: float) -> int:
    """What an interval says: +1 above 0, -1 below, 0 contains it."""
    return 1 if lo > 0 else -1 if hi < 0 else 0


def block_bootstrap_sharpe_diff(
    returns: pd.Series,
    baseline: pd.Series,
    *,
    periods_per_year: int = PERIODS_PER_YEAR,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    block: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Annualised Sharpe of ``returns`` minus ``baseline``'s, with a stationary-bootstrap CI.

    The two series are resampled together in random-length blocks (the stationary
    bootstrap of Politis and Romano 1994, ``arch.bootstrap.StationaryBootstrap``), which
    keeps their autocorrelation and their cross-correlation; the interval is the
    percentile interval of the resampled differences. The expected block length is chosen
    by the rule of Politis and White 2004 (with the correction of Patton, Politis and
    White 2009, ``arch.bootstrap.optimal_block_length``) on the series whose mean the
    Sharpe difference linearises to: the difference of the two influence functions
    (:func:`sharpe_influence`; Ledoit and Wolf 2008 choose the block for the same
    statistic). The returns' own dependence is the wrong guide: a Sharpe's variance
    depends on second moments (on the sample data, Politis–White gives 3.6 bars on x − y
    but 63 on the squared returns of buy-and-hold).

    The interval is also computed at half and at twice that block; ``fragile`` is 1 when
    the three intervals do not say the same (above 0, below 0, or containing it).

    Args:
        returns: simple per-bar returns of the strategy (DatetimeIndex).
        baseline: simple per-bar returns of the baseline; the common dates are used.
        periods_per_year: bars per year. Default 252.
        confidence: level of the interval. Default 0.95.
        n_resamples: bootstrap resamples. Default 2000.
        block: expected block length in bars; None chooses it by the rule above.
        seed: seed of the resampling generator. Default 0.

    Returns:
        ``{"diff", "lo", "hi", "block", "lo_half", "hi_half", "lo_double", "hi_double",
        "fragile"}``: the difference of annualised Sharpe ratios (mean / std, ddof=1,
        times sqrt(periods_per_year), as quantstats with rf=0), the interval, the block
        length used (bars), the intervals at half and twice the block, and 1.0 if they
        disagree (else 0.0). NaN where a series is constant.

    Raises:
        DataError: fewer than 20 common dates.

    References:
        Politis and Romano 1994, "The Stationary Bootstrap", JASA 89; Politis and White
        2004, "Automatic Block-Length Selection for the Dependent Bootstrap"; Ledoit and
        Wolf 2008, "Robust performance hypothesis testing with the Sharpe ratio".
    """
    from arch.bootstrap import StationaryBootstrap

    a = check_returns(returns, "returns")
    b = check_returns(baseline, "baseline")
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(both) < 20:
        raise DataError(
            f"block_bootstrap_sharpe_diff needs >= 20 common dates of the two return series, "
            f"got {len(both)}; align the series (same dates)"
        )
    root = math.sqrt(check_periods(periods_per_year))
    x, y = both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()

    def sharpe(v: np.ndarray) -> float:
        sd = v.std(ddof=1)
        return float(v.mean() / sd * root) if sd > 0 else math.nan

    def diff(u: np.ndarray, v: np.ndarray) -> float:
        return sharpe(u) - sharpe(v)

    point = diff(x, y)
    nan = math.nan
    if not math.isfinite(point):
        out = dict.fromkeys(("lo", "hi", "lo_half", "hi_half", "lo_double", "hi_double"), nan)
        return {"diff": point, "block": nan if block is None else block, "fragile": nan, **out}
    if block is None:
        block = _block_length(sharpe_influence(x) - sharpe_influence(y))
    tail = (1.0 - confidence) / 2.0 * 100.0

    def interval(length: float) -> tuple[float, float]:
        bs = StationaryBootstrap(length, x, y, seed=np.random.default_rng(seed))  # type: ignore[arg-type]
        draws = np.array([diff(u, v) for (u, v), _ in bs.bootstrap(n_resamples)])
        draws = draws[np.isfinite(draws)]
        low, high = np.percentile(draws, [tail, 100.0 - tail])
        return float(low), float(high)

    lo, hi = interval(block)
    lo_half, hi_half = interval(max(1.0, block / 2.0))
    lo_double, hi_double = interval(block * 2.0)
    stances = {_stance(lo, hi), _stance(lo_half, hi_half), _stance(lo_double, hi_double)}
    return {
        "diff": point,
        "lo": lo,
        "hi": hi,
        "block": block,
        "lo_half": lo_half,
        "hi_half": hi_half,
        "lo_double": lo_double,
        "hi_double": hi_double,
        "fragile": float(len(stances) > 1),
    }


def vol_scaled(
    returns: pd.Series,
    *,
    window: int = 60,
    target_vol: float = 0.10,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> pd.Series:
    """Returns scaled to a common ex-ante volatility: ``r_t · target / σ̂_{t−1}``.

    ``σ̂_{t−1}`` is the annualised standard deviation of the ``window`` returns before bar
    t (none of bar t itself), so the scale is known when bar t starts; the first
    ``window`` bars are dropped. Leverage then cannot decide a comparison of means.

    Args:
        returns: simple per-bar returns.
        window: bars of the trailing volatility (>= 2). Default 60.
        target_vol: annualised volatility to scale to (fraction). Default 0.10.
        periods_per_year: bars per year. Default 252.

    Returns:
        The scaled returns (bars with a positive trailing volatility only).
    """
    r = check_returns(returns, "returns")
    sigma = r.rolling(window).std(ddof=1).shift(1) * math.sqrt(check_periods(periods_per_year))
    scaled = r * (target_vol / sigma)
    return scaled[(sigma > 0) & np.isfinite(scaled)]


def stepm_pvalues(
    returns: Mapping[str, pd.Series],
    benchmark: pd.Series,
    *,
    periods_per_year: int = PERIODS_PER_YEAR,
    n_resamples: int = 1000,
    block: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Romano–Wolf step-down p-values: which strategies beat the benchmark, family-wise.

    Each strategy k and the benchmark are scaled to a common ex-ante volatility
    (:func:`vol_scaled`); the statistic is ``T_k = sqrt(n) · mean(d_k)`` of the difference
    ``d_k`` of the scaled returns (H_k: mean(d_k) <= 0). The (n, K) matrix of differences
    is resampled jointly by the stationary bootstrap (``arch.bootstrap.
    StationaryBootstrap``, block by Politis–White on the mean difference, the largest over
    strategies) and ``T*_k = sqrt(n) · (mean(d*_k) − mean(d_k))``. With the statistics in
    decreasing order ``T_(1) >= ... >= T_(K)``, the raw p-value of the j-th is the share of
    resamples whose maximum of ``T*`` over the strategies not yet stepped past (the j-th
    and below) reaches ``T_(j)``, and the adjusted p-values are made monotone down the
    order: this controls the family-wise error rate over the whole roster, asymptotically
    (Romano and Wolf 2005; the p-values of Romano and Wolf 2016, algorithm 4.1).

    Args:
        returns: strategy name -> simple per-bar returns (not the benchmark).
        benchmark: the benchmark's simple per-bar returns (fixed in advance).
        periods_per_year: bars per year. Default 252.
        n_resamples: bootstrap resamples. Default 1000.
        block: expected block length (bars); None chooses it as above.
        seed: seed of the resampling. Default 0.

    Returns:
        name -> adjusted p-value (NaN for a series with fewer than 20 bars in common).

    References:
        Romano and Wolf 2005, "Stepwise Multiple Testing as Formalized Data Snooping",
        Econometrica 73(4); Romano and Wolf 2016, "Efficient computation of adjusted
        p-values for resampling-based stepdown multiple testing", Stat. Prob. Letters.
    """
    from arch.bootstrap import StationaryBootstrap

    bench = vol_scaled(benchmark, periods_per_year=periods_per_year)
    scaled = {k: vol_scaled(v, periods_per_year=periods_per_year) for k, v in returns.items()}
    frame = pd.concat({k: v - bench for k, v in scaled.items()}, axis=1, join="inner").dropna()
    out = dict.fromkeys(returns, math.nan)
    if len(frame) < 20 or frame.shape[1] == 0:
        return out
    d = frame.to_numpy()
    n = len(d)
    stats = math.sqrt(n) * d.mean(axis=0)
    if block is None:
        block = _block_length(d)
    bs = StationaryBootstrap(block, d, seed=np.random.default_rng(seed))  # type: ignore[arg-type]
    boot = np.array(
        [math.sqrt(n) * (x.mean(axis=0) - d.mean(axis=0)) for (x,), _ in bs.bootstrap(n_resamples)]
    )
    adjusted = stepdown_pvalues(stats, boot)
    out.update({name: float(p) for name, p in zip(frame.columns, adjusted)})
    return out


def stepdown_pvalues(stats: np.ndarray, boot: np.ndarray) -> np.ndarray:
    """Romano–Wolf adjusted p-values from statistics and their centred resamples.

    Args:
        stats: (K,) float, the statistics ``T_k`` (larger = more evidence against H_k).
        boot: (B, K) float, the resampled statistics centred at the sample's
            (``T*_k − T_k``, e.g. ``sqrt(n) · (mean(d*_k) − mean(d_k))``).

    Returns:
        (K,) float p-values in ``stats``' order: ``(1 + #{b: max_{l>=j} T*_{b,(l)} >=
        T_(j)}) / (1 + B)`` down the decreasing order of ``T``, made monotone.

    References:
        Romano and Wolf 2016, "Efficient computation of adjusted p-values for
        resampling-based stepdown multiple testing", Stat. Prob. Letters 113, algorithm 4.1.
    """
    order = np.argsort(-stats, kind="stable")
    n_boot = boot.shape[0]
    raw = np.empty(len(stats))
    for j in range(len(order)):
        rest = boot[:, order[j:]].max(axis=1)
        raw[j] = (1 + np.count_nonzero(rest >= stats[order[j]])) / (1 + n_boot)
    adjusted = np.maximum.accumulate(raw)
    out = np.empty(len(stats))
    out[order] = adjusted
    return out


def expected_max_sharpe(n_trials: float, trials_variance: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` strategies with no true edge.

    ``sqrt(V) * ((1 − γ) Φ⁻¹(1 − 1/N) + γ Φ⁻¹(1 − 1/(N e)))``, γ the Euler–Mascheroni
    constant: the benchmark that a selected strategy's Sharpe must beat.

    Args:
        n_trials: N, the number of strategies tried (>= 1; 1 gives 0); a real number for
            an effective count of correlated trials.
        trials_variance: V, variance of the trials' Sharpe ratios (per-period units).

    Returns:
        The expected maximum, in the units of the Sharpe ratios (per period).

    References:
        Bailey and López de Prado 2014, "The Deflated Sharpe Ratio", eq. (2).
    """
    from scipy.stats import norm

    if n_trials <= 1:
        return 0.0
    z1 = norm.ppf(1.0 - 1.0 / n_trials)
    z2 = norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(trials_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe_ratio(
    sharpe: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    n_trials: float,
    trials_variance: float,
) -> float:
    """The deflated Sharpe ratio: the probability that the true Sharpe beats the best of luck.

    ``DSR = Φ[(SR − SR₀) √(T − 1) / √(1 − γ₃ SR + (γ₄ − 1)/4 SR²)]`` with
    ``SR₀ = expected_max_sharpe(N, V)``: the probabilistic Sharpe ratio against the Sharpe
    that the best of N strategies with no edge would show.

    Args:
        sharpe: SR, the selected strategy's Sharpe ratio per period (not annualised).
        n_obs: T, its number of returns.
        skew: γ₃, skewness of its returns.
        kurtosis: γ₄, kurtosis of its returns (not excess: 3 for a normal).
        n_trials: N, strategies tried in the run (every row of the comparison).
        trials_variance: V, variance of the trials' per-period Sharpe ratios.

    Returns:
        A probability in [0, 1] (NaN for invalid moments).

    References:
        Bailey and López de Prado 2014, "The Deflated Sharpe Ratio: Correcting for
        Selection Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management
        40(5); the numerical example of its section 5 (DSR ≈ 0.90) is a test.
    """
    from scipy.stats import norm

    benchmark = expected_max_sharpe(n_trials, trials_variance)
    denom = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if not (denom > 0 and n_obs > 1):
        return math.nan
    return float(norm.cdf((sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denom)))


def deflated_sharpe(returns: pd.Series, trials: Mapping[str, pd.Series]) -> float:
    """:func:`deflated_sharpe_ratio` of ``returns``, deflated over every series in ``trials``.

    Args:
        returns: simple per-bar returns of the strategy judged.
        trials: name -> per-bar returns of every strategy tried in the run (the judged one
            included); N = len(trials), V = variance of their per-bar Sharpe ratios.

    Returns:
        The DSR, a probability; NaN for a constant series.
    """
    r = check_returns(returns, "returns").dropna()
    sharpes = []
    for series in trials.values():
        v = check_returns(series, "trial returns").dropna()
        sd = v.std(ddof=1)
        if sd > 0:
            sharpes.append(v.mean() / sd)
    sd = r.std(ddof=1)
    if not sd > 0 or len(sharpes) < 1:
        return math.nan
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    return deflated_sharpe_ratio(
        float(r.mean() / sd),
        len(r),
        float(r.skew()),
        float(r.kurt()) + 3.0,  # pandas gives excess kurtosis
        len(trials),
        variance,
    )
