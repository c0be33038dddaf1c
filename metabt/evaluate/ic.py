"""Information coefficients of signals: per data, pooled over a panel and cross-sectional,
with HAC (Newey-West) and Driscoll-Kraay t-statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = [
    "cross_sectional_ic",
    "hac_ic",
    "mean_ic",
    "pair_ic",
    "panel_ic",
]


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
