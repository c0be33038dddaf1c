"""Performance numbers of metabt runs: quantstats metrics, Sharpe inference, IC, per-asset results.

Numbers only: drawing and writing files live in :mod:`metabt.evaluate.report`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from metabt._stats import annual_turnover
from metabt._util import quiet_third_party
from metabt.errors import ConfigError, DataError

__all__ = [
    "ASSET_COLUMNS",
    "COST_COLUMNS",
    "EULER_GAMMA",
    "PERIODS_PER_YEAR",
    "asset_results",
    "basket_returns",
    "block_bootstrap_sharpe_diff",
    "check_periods",
    "check_returns",
    "compute_metrics",
    "cross_sectional_ic",
    "deflated_sharpe",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "hac_ic",
    "mean_ic",
    "metrics_table",
    "pair_ic",
    "panel_ic",
    "probabilistic_sharpe",
    "sharpe_influence",
    "stepdown_pvalues",
    "stepm_pvalues",
    "vol_scaled",
]

PERIODS_PER_YEAR = 252  # daily bars

#: The cost columns of a backtest (``metabt.evaluate.costs.CostReport.columns`` without
#: ``net_sharpe``, which is ``sharpe``); :func:`metrics_table` puts them after every other
#: column.
COST_COLUMNS: tuple[str, ...] = (
    "gross_sharpe",
    "cost_drag",
    "break_even_bps",
    "holding_bars",
    "long_share",
    "alpha",
    "alpha_t",
    "beta",
    "beta_t",
)


def check_returns(returns: object, name: str) -> pd.Series:
    """``returns`` as a float64 Series, or DataError naming the problem and the fix."""
    if not isinstance(returns, pd.Series):
        raise DataError(
            f"{name} must be a pandas Series of simple per-bar returns, got "
            f"{type(returns).__name__}; pass e.g. analysis['returns']"
        )
    try:
        values = returns.astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must hold numbers (simple per-bar returns): {exc}") from exc
    if not isinstance(values.index, pd.DatetimeIndex):
        raise DataError(
            f"{name} must have a DatetimeIndex (the dates of the bars), got "
            f"{type(values.index).__name__}; set one, e.g. series.index = pd.to_datetime(dates)"
        )
    if values.index.tz is not None:  # quantstats wants tz-naive dates: keep the wall time
        values = values.tz_localize(None)
    if not np.isfinite(values.to_numpy()).any():
        raise DataError(
            f"{name} has no finite value ({len(values)} bars); the backtest recorded no "
            "returns: check the start/end dates"
        )
    return values


def check_periods(periods_per_year: object) -> int:
    """``periods_per_year`` as an int, or ConfigError naming the problem and the fix."""
    if (
        isinstance(periods_per_year, bool)
        or not isinstance(periods_per_year, numbers.Integral)
        or periods_per_year < 1
    ):
        raise ConfigError(
            f"periods_per_year must be a positive integer (bars per year, e.g. 252 for "
            f"daily bars), got {periods_per_year!r}"
        )
    return int(periods_per_year)


def compute_metrics(
    returns: pd.Series, *, periods_per_year: int = 252, turnover: float | None = None
) -> dict[str, float]:
    """Performance metrics of a return series, every one computed by ``quantstats.stats``.

    ``periods`` is passed explicitly to every annualised metric (quantstats defaults to
    252 otherwise). In quantstats 0.0.86 ``cagr`` counts years as
    ``returns.count() / periods_per_year`` (bars, not calendar days), and ``calmar`` is
    that CAGR over |max drawdown|. Degenerate series give quantstats' own values without
    warnings: e.g. all-zero returns give sharpe NaN and win_rate 0.0, a constant positive
    series gives sharpe inf.

    Args:
        returns (pd.Series): simple, non-cumulative, per-bar returns (fraction, 0.01 = 1%),
            float, DatetimeIndex of the bar dates (a tz-aware index is made tz-naive,
            keeping wall times). NaN bars are skipped by quantstats.
        periods_per_year (int): bars per year used to annualise. Default 252.
        turnover (float | None): the strategy's turnover, computed by the caller (e.g.
            traded value / mean equity per year, fraction); copied into the result as
            ``turnover`` when given. Default None.

    Returns:
        dict[str, float]: ``sharpe``, ``sortino`` (annualised ratios, rf = 0), ``cagr``
        (annual fraction), ``max_drawdown`` (fraction, <= 0), ``volatility`` (annualised
        fraction), ``calmar`` (ratio), ``total_return`` (compounded fraction),
        ``win_rate`` (fraction of non-zero bars that are positive), and ``turnover`` if
        given.

    Raises:
        DataError: ``returns`` is not a Series of numbers with a DatetimeIndex, or has no
            finite value.
        ConfigError: ``periods_per_year`` is not a positive integer; ``turnover`` is not a
            finite number.

    References:
        quantstats.stats (https://github.com/ranaroussi/quantstats).
    """
    from quantstats import stats as qs_stats  # heavy: imported only where used

    r = check_returns(returns, "returns")
    periods = check_periods(periods_per_year)
    if turnover is not None and (
        isinstance(turnover, bool)
        or not (isinstance(turnover, numbers.Real) and math.isfinite(turnover))
    ):
        raise ConfigError(f"turnover must be a finite number (fraction), got {turnover!r}")
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # all-zero returns: quantstats warns, then returns win_rate 0.0
        warnings.filterwarnings("ignore", message="No non-zero returns", category=UserWarning)
        metrics = {
            "sharpe": qs_stats.sharpe(r, periods=periods),
            "sortino": qs_stats.sortino(r, periods=periods),
            "cagr": qs_stats.cagr(r, periods=periods),
            "max_drawdown": qs_stats.max_drawdown(r),
            "volatility": qs_stats.volatility(r, periods=periods),
            "calmar": qs_stats.calmar(r, periods=periods),
            "total_return": qs_stats.comp(r),
            "win_rate": qs_stats.win_rate(r),
        }
    out = {key: float(value) for key, value in metrics.items()}
    if turnover is not None:
        out["turnover"] = float(turnover)
    return out


def probabilistic_sharpe(returns: pd.Series, *, periods_per_year: int = 252) -> float:
    """Probability that the true Sharpe ratio is above 0, given skew, kurtosis and length.

    Computed by ``quantstats.stats.probabilistic_sharpe_ratio``.

    Args:
        returns: simple per-bar returns (tz-naive DatetimeIndex).
        periods_per_year: bars per year. Default 252.

    Returns:
        A probability in [0, 1]; NaN for a constant series.

    References:
        Bailey and López de Prado 2012, "The Sharpe Ratio Efficient Frontier".
    """
    r = check_returns(returns, "returns")
    periods = check_periods(periods_per_year)
    with quiet_third_party():
        from quantstats import stats as qs_stats

        return float(qs_stats.probabilistic_sharpe_ratio(r, periods=periods))


def metrics_table(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per strategy, one column per metric.

    Args:
        rows (Mapping[str, Mapping[str, float]]): strategy name -> metrics (e.g. from
            :func:`compute_metrics`). Columns follow the first row's key order, except the
            cost columns (:data:`COST_COLUMNS`), which come last in their own order; a
            metric a strategy lacks is NaN.

    Returns:
        pd.DataFrame: (n_strategies, n_metrics) float64, index named ``strategy`` in the
        order of ``rows``.
    """
    columns: list[str] = []
    for metrics in rows.values():
        columns.extend(k for k in metrics if k not in columns)
    costs = [c for c in COST_COLUMNS if c in columns]
    columns = [c for c in columns if c not in costs] + costs
    table = pd.DataFrame(
        [[float(m.get(c, math.nan)) for c in columns] for m in rows.values()],
        index=pd.Index(list(rows), name="strategy", dtype=object),
        columns=columns,
        dtype="float64",
    )
    return table


def pair_ic(pair: pd.DataFrame) -> tuple[float, float] | None:
    """(Pearson, Spearman) correlation of ``signal`` and ``forward`` of one data.

    Args:
        pair: DataFrame with ``signal`` and ``forward`` columns.

    Returns:
        (ic, rank_ic), or None with fewer than 20 bars or a constant signal.
    """
    if len(pair) < 20 or pair["signal"].std() == 0:
        return None
    return (
        float(pair["signal"].corr(pair["forward"])),
        float(pair["signal"].corr(pair["forward"], method="spearman")),
    )


def mean_ic(pairs: Mapping[str, pd.DataFrame]) -> dict[str, float]:
    """Information coefficient of signals, mean over data.

    For each data: the correlation between the signal at the close of bar t and the
    realised forward log return log(C_{t+h} / C_t), Pearson (``ic``) and Spearman
    (``rank_ic``), over bars with both known (:func:`pair_ic`); then the mean across data.

    Args:
        pairs: data name -> DataFrame with ``signal`` and ``forward`` columns
            (``metabt.analyzers.signal_frames``).

    Returns:
        ``{"ic": float, "rank_ic": float}``; NaN when no data has 20 usable bars.
    """
    ics = [ic for ic in map(pair_ic, pairs.values()) if ic is not None]
    return {
        "ic": float(np.mean([ic for ic, _ in ics])) if ics else math.nan,
        "rank_ic": float(np.mean([rank for _, rank in ics])) if ics else math.nan,
    }


def basket_returns(
    frames: Mapping[str, pd.DataFrame | pd.Series], index: pd.DatetimeIndex
) -> pd.Series:
    """Per-bar returns of the equal-weight basket of every asset, on ``index``.

    Each asset's close-to-close simple return ``C_t / C_{t-1} - 1`` over its own bars (its
    bar before ``index[0]`` gives the first return), 0 on a date of ``index`` where it has
    no bar (or no previous one); the basket's return is their mean over all assets (an
    equal-weight book rebalanced every bar): what the alpha and beta of
    :func:`metabt.evaluate.costs.cost_report` are measured against.

    Args:
        frames: asset -> OHLCV frame (its ``close`` column) or a Series of closes, tz-naive
            DatetimeIndex.
        index: the dates to return (a run's bars).

    Returns:
        pd.Series (float64) on ``index``, name ``basket``.

    Raises:
        DataError: no assets.
    """
    if not frames:
        raise DataError("basket_returns: no assets; pass at least one frame of closes")
    columns = []
    for name, frame in frames.items():
        close = frame["close"] if isinstance(frame, pd.DataFrame) else frame
        close = close.astype("float64")
        if isinstance(close.index, pd.DatetimeIndex) and close.index.tz is not None:
            close = close.tz_localize(None)
        change = close.pct_change(fill_method=None)
        columns.append(change.reindex(index).fillna(0.0).rename(str(name)))
    basket = pd.concat(columns, axis=1).mean(axis=1)
    return basket.astype("float64").rename("basket")


ASSET_COLUMNS = [
    "bars",
    "exposure",
    "hit_rate",
    "contribution",
    "turnover_two_way",
    "ic",
    "rank_ic",
    "adaptations",
    "query_loss",
]


def asset_results(
    positions: pd.DataFrame,
    prices: Mapping[str, pd.DataFrame],
    equity: pd.Series,
    *,
    cash: float,
    traded: Mapping[str, float] | None = None,
    signal_pairs: Mapping[str, pd.DataFrame] | None = None,
    adaptation_log: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-asset and portfolio results of one backtest.

    Orders fill at the open, so in bar t an asset earns, before costs,
    ``pnl_t = q_{t-1} (O_t - C_{t-1}) + q_t (C_t - O_t)`` with q the shares held at each
    close: the old position through the overnight gap, the new one from the open. Summed
    over assets this is the portfolio's P&L before commission and slippage.

    Args:
        positions: (dates, assets) signed position value at each close, currency units
            (backtrader's ``PositionsValue`` analyzer), test period only.
        prices: asset -> DataFrame with ``open`` and ``close`` over the test period (its
            own calendar).
        equity: portfolio value at each close, currency units (same dates as the returns).
        cash: starting cash, currency units (no position before the test period).
        traded: asset -> filled notional over the test period, currency units.
        signal_pairs: asset -> ``signal`` and ``forward`` columns
            (``metabt.analyzers.signal_frames``), for the model's IC; None for strategies
            without a model.
        adaptation_log: ``MetaStrategy.adaptation_log()`` (query losses per adaptation).

    Returns:
        DataFrame indexed by asset, then ``portfolio``, with columns:
        ``bars`` (test bars), ``exposure`` (mean |position| / equity; for the portfolio,
        mean gross leverage), ``hit_rate`` (share of bars with a position, entering or
        held, whose P&L was positive; bars with zero P&L are left out; pooled over assets
        for the portfolio), ``contribution`` (sum of pnl_t as a fraction of starting cash),
        ``turnover_two_way`` (filled notional, buys plus sells, per year over average
        equity), ``ic`` / ``rank_ic``
        (Pearson / Spearman correlation of the signal with the forward log return; the
        portfolio row is their mean), ``adaptations`` and ``query_loss`` (count-weighted
        mean realised query MSE); NaN where they do not apply.
    """
    rows: dict[str, dict[str, float]] = {}
    hits = scored_total = 0
    mean_equity = float(equity.mean()) if len(equity) else math.nan
    traded = traded or {}
    for name, bars in prices.items():
        open_ = bars["open"].astype(float)
        close = bars["close"].astype(float)
        row: dict[str, float] = {"bars": float(len(close))}
        if name in positions:
            value = positions[name].reindex(close.index).fillna(0.0)
            shares = value / close
            before = shares.shift(1, fill_value=0.0)
            pnl = before * (open_ - close.shift(1)).fillna(0.0) + shares * (close - open_)
            scored = ((shares != 0) | (before != 0)) & (pnl != 0)
            hit = int((pnl[scored] > 0).sum())
            hits += hit
            scored_total += int(scored.sum())
            row["exposure"] = float((value.abs() / equity.reindex(close.index)).mean())
            row["hit_rate"] = hit / int(scored.sum()) if scored.any() else math.nan
            row["contribution"] = float(pnl.sum()) / cash
        row["turnover_two_way"] = annual_turnover(
            traded.get(name, math.nan), mean_equity, len(equity), PERIODS_PER_YEAR
        )
        pair = (signal_pairs or {}).get(name)
        ic = pair_ic(pair) if pair is not None else None
        if ic is not None:
            row["ic"], row["rank_ic"] = ic
        if adaptation_log is not None:
            mine = adaptation_log[adaptation_log["data"] == name]
            row["adaptations"] = float(len(mine))
            row["query_loss"] = _pooled_query_loss(mine)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=ASSET_COLUMNS)
    gross = positions.abs().sum(axis=1) / equity.reindex(positions.index)
    table.loc["portfolio"] = {
        "bars": float(len(equity)),
        "exposure": float(gross.mean()) if len(gross) else math.nan,
        "hit_rate": hits / scored_total if scored_total else math.nan,
        "contribution": float(table["contribution"].sum(min_count=1)),
        "turnover_two_way": annual_turnover(
            sum(traded.values()), mean_equity, len(equity), PERIODS_PER_YEAR
        )
        if traded
        else math.nan,
        "ic": float(table["ic"].mean()),
        "rank_ic": float(table["rank_ic"].mean()),
        "adaptations": float(table["adaptations"].sum(min_count=1)),
        "query_loss": _pooled_query_loss(adaptation_log),
    }
    table.index.name = "asset"
    return table


def _pooled_query_loss(log: pd.DataFrame | None) -> float:
    if log is None or not len(log):
        return math.nan
    counts = log["query_count"].to_numpy(dtype=float)
    if not counts.sum():
        return math.nan
    losses = np.nan_to_num(log["query_loss"].to_numpy(dtype=float))
    return float((losses * counts).sum() / counts.sum())


# ---------------------------------------------------------------- inference on time series
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


def hac_ic(pair: pd.DataFrame, *, lags: int, column: str = "forward") -> dict[str, float]:
    """IC and rank IC of one data, with Newey–West (HAC) standard errors and t-statistics.

    The IC is the slope of the standardised target on the standardised signal (equal to
    their Pearson correlation); its standard error is Newey–West with ``lags`` lags
    (``statsmodels`` OLS, ``cov_type="HAC"``), which accounts for the overlap of
    ``horizon``-bar forward returns (use lags >= horizon). The rank IC is the same on
    ranks (Spearman).

    Args:
        pair: DataFrame with ``signal`` and a target column (``forward``: close-to-close
            forward log return; ``tradable``: from the next bar's open).
        lags: Newey–West lags (bars, >= 1).
        column: the target column. Default "forward".

    Returns:
        ``{"ic", "ic_se", "ic_t", "rank_ic", "rank_ic_t", "n"}``; NaN with fewer than 20
        bars or a constant signal.

    References:
        Newey and West 1987, "A Simple, Positive Semi-Definite, Heteroskedasticity and
        Autocorrelation Consistent Covariance Matrix", Econometrica 55(3).
    """
    import statsmodels.api as sm

    data = pair[["signal", column]].dropna()
    out = dict.fromkeys(("ic", "ic_se", "ic_t", "rank_ic", "rank_ic_t"), math.nan)
    out["n"] = float(len(data))
    if len(data) < 20 or data["signal"].std() == 0 or data[column].std() == 0:
        return out
    for name, frame in (("ic", data), ("rank_ic", data.rank())):
        z = (frame - frame.mean()) / frame.std()
        if not np.isfinite(z.to_numpy()).all() or z["signal"].nunique() < 2:
            continue  # a signal constant to float precision (e.g. a near-constant forecast)
        # "add": statsmodels would otherwise drop a regressor it finds constant
        x = sm.add_constant(z["signal"].to_numpy(), has_constant="add")
        fit = sm.OLS(z[column].to_numpy(), x).fit(cov_type="HAC", cov_kwds={"maxlags": int(lags)})
        out[name] = float(fit.params[1])
        out[f"{name}_t"] = float(fit.tvalues[1])
        if name == "ic":
            out["ic_se"] = float(fit.bse[1])
    return out


def panel_ic(
    pairs: Mapping[str, pd.DataFrame], *, lags: int, column: str = "forward"
) -> dict[str, float]:
    """The pooled IC over every (asset, bar) pair, with a Driscoll–Kraay t-statistic.

    Within each asset, the signal and the target are standardised (z-scores; ranks first
    for the rank IC); the pooled IC is the OLS slope of the target's z-score on the
    signal's over every (asset, bar) pair (a weighted mean of the assets' correlations).
    Its standard error is Driscoll–Kraay: Newey–West with ``lags`` lags on the per-date
    sums of the scores (``statsmodels`` OLS, ``cov_type="hac-groupsum"`` with the dates
    as time, Bartlett weights, no small-sample correction), robust to the correlation
    across assets on a date and to the overlap of ``horizon``-bar targets across dates.
    A mean of per-asset t-statistics is not a t-statistic; this is.

    Args:
        pairs: data name -> DataFrame (DatetimeIndex) with ``signal`` and ``column``.
        lags: Newey–West lags (bars, >= the label horizon).
        column: the target column ("forward" or "tradable"). Default "forward".

    Returns:
        ``{"ic", "ic_t", "rank_ic", "rank_ic_t", "n", "dates"}``; NaN with fewer than 20
        dates or no varying signal.

    References:
        Driscoll and Kraay 1998, "Consistent Covariance Matrix Estimation with Spatially
        Dependent Panel Data", REStat 80(4); statsmodels ``OLS.fit(cov_type=
        "hac-groupsum")``.
    """
    import statsmodels.api as sm

    out = dict.fromkeys(("ic", "ic_t", "rank_ic", "rank_ic_t"), math.nan)
    frames = []
    for frame in pairs.values():
        data = frame[["signal", column]].dropna()
        if len(data) < 3 or data["signal"].std() == 0 or data[column].std() == 0:
            continue
        frames.append(data)
    stacked = pd.concat(frames) if frames else pd.DataFrame(columns=["signal", column])
    out["n"] = float(len(stacked))
    dates = pd.Index(stacked.index).unique().sort_values()
    out["dates"] = float(len(dates))
    if len(dates) < 20:
        return out
    time = pd.Index(dates).get_indexer(stacked.index)
    for name, ranked in (("ic", False), ("rank_ic", True)):
        parts = []
        for data in frames:
            d = data.rank() if ranked else data
            z = (d - d.mean()) / d.std()
            parts.append(z)
        z = pd.concat(parts)
        if not np.isfinite(z.to_numpy()).all() or z["signal"].nunique() < 2:
            continue
        x = sm.add_constant(z["signal"].to_numpy(), has_constant="add")
        fit = sm.OLS(z[column].to_numpy(), x).fit(
            cov_type="hac-groupsum",
            cov_kwds={"time": time, "maxlags": int(lags), "use_correction": False},
        )
        out[name] = float(fit.params[1])
        out[f"{name}_t"] = float(fit.tvalues[1])
    return out


def cross_sectional_ic(
    pairs: Mapping[str, pd.DataFrame], *, lags: int, column: str = "forward"
) -> dict[str, float]:
    """Cross-sectional rank IC per bar, averaged, with its Newey–West t-statistic.

    On each date with at least 3 assets, the Spearman correlation across assets of the
    signal with the target; then the mean of that series and the HAC t-statistic of the
    mean (``lags`` lags). The standard in Qlib / DoubleAdapt reports.

    Args:
        pairs: data name -> DataFrame with ``signal`` and the target column.
        lags: Newey–West lags (bars, >= horizon).
        column: the target column. Default "forward".

    Returns:
        ``{"cs_ic", "cs_ic_t", "cs_dates"}``; NaN with fewer than 20 usable dates.
    """
    import statsmodels.api as sm

    out = {"cs_ic": math.nan, "cs_ic_t": math.nan, "cs_dates": 0.0}
    if len(pairs) < 3:
        return out
    signal = pd.DataFrame({k: v["signal"] for k, v in pairs.items()})
    target = pd.DataFrame({k: v[column] for k, v in pairs.items()})
    ok = signal.notna() & target.notna()
    enough = ok.sum(axis=1) >= 3
    ranks_s = signal.where(ok)[enough].rank(axis=1)
    ranks_t = target.where(ok)[enough].rank(axis=1)
    ics = ranks_s.corrwith(ranks_t, axis=1).dropna()
    out["cs_dates"] = float(len(ics))
    if len(ics) < 20:
        return out
    fit = sm.OLS(ics.to_numpy(), np.ones(len(ics))).fit(
        cov_type="HAC", cov_kwds={"maxlags": int(lags)}
    )
    out["cs_ic"], out["cs_ic_t"] = float(fit.params[0]), float(fit.tvalues[0])
    return out
