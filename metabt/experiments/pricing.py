"""Fast adaptation of asset-pricing factor models on Ken French's monthly data.

A task is one portfolio and a window of months: the model maps that month's realised factor
returns (MktRF, SMB, HML, Mom; Fama & French 1993, Carhart 1997) to the portfolio's excess
return (portfolio − RF), a contemporaneous linear factor model whose loadings and intercept
adapt to the last k months. MAML (Finn et al. 2017) meta-learns the loadings' initialisation
θ across portfolios and time before ``train_end``; every month of the test period it is
adapted to the k months before that month and scored on the month itself, against rolling
and expanding OLS, a rolling CAPM, θ without adaptation and pooled OLS fine-tuned the same
way (ERM). Losses are compared with a Diebold & Mariano (1995) test on the squared-error
differential with Newey & West (1987) standard errors.

Units: returns in percent per month everywhere (the dataset ships decimals; ×100). Months
are ``pandas.Period`` (freq "M").

Protocol (no test month reaches training; tested):
    * standardisation of the factors: mean and sd over months ≤ ``train_end``;
    * meta-training tasks: a random portfolio, support = k consecutive months, query = the
      next month, k drawn per batch from ``ks``; queries ≤ ``train_end − val_years``;
    * validation (inner learning rate from ``LR_GRID`` and the keep-best step count): every
      (portfolio, month) of the last ``val_years`` before ``train_end`` as a query; θ is then
      re-trained with the chosen rate on queries ≤ ``train_end`` for the chosen step count;
    * test: every month t after ``train_end`` (to ``test_end``), each model fitted on months
      before t only, scored on month t's excess return given month t's realised factors;
      the gradient-adapted models (MAML, ERM fine-tuning) use the same inner steps as in
      training, with the rate capped at the support's stability bound (``adapted_forecasts``).

Metrics, over (portfolio, test month) pairs, for forecasts ŷ of y (excess returns, %):
    rmse = sqrt(mean (y − ŷ)²); r2_zero = 1 − Σ(y − ŷ)² / Σy² (against a zero forecast of the
    excess return); r2_hm = 1 − Σ(y − ŷ)² / Σ(y − ȳ_t)² with ȳ_t the portfolio's expanding
    historical mean of excess returns from the first data month to t − 1 (Campbell &
    Thompson 2008's R²_OS, here of a contemporaneous fit); delta_mse = MSE(model) −
    MSE(rolling OLS, same k) (negative: the model is better); t_nw = its Diebold–Mariano t:
    OLS of the monthly loss differential (averaged over portfolios for the pooled row) on a
    constant with HAC (Newey–West) errors, lag floor(4 (T/100)^(2/9)) (Newey & West 1994).

References:
    Fama & French 1993; Carhart 1997; Finn, Abbeel & Levine 2017; Newey & West 1987, 1994;
    Diebold & Mariano 1995; Campbell & Thompson 2008; Kenneth R. French data library.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from metabt._util import staged_files
from metabt.errors import ConfigError, DataError
from metabt.evaluate.sanitize import csv_frame, markdown_frame
from metabt.experiments.executors import SERIAL, Executor, ExecutorSpec, executor_scope
from metabt.experiments.log import Log, silent
from metabt.learn.algorithms import resolve_algorithm
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP

__all__ = [
    "FACTORS",
    "FrenchData",
    "LR_GRID",
    "MODELS",
    "PricingSettings",
    "PricingStudy",
    "PricingTasks",
    "adapted_forecasts",
    "load_french",
    "newey_west_lags",
    "ols_forecasts",
    "pricing_study",
    "rolling_ols_forecasts",
]

#: The factor columns the model reads, in order (percent per month).
FACTORS = ("MktRF", "SMB", "HML", "Mom")
#: The inner learning rates the validation split chooses from (MAML and ERM fine-tuning).
LR_GRID = (0.03, 0.1, 0.3)
#: Model names of the study's tables, in display order.
MODELS = (
    "rolling_ols",
    "capm_rolling",
    "expanding_ols",
    "maml",
    "maml_init",
    "erm_ft",
    "pooled_ols",
    "maml_mlp",
    "maml_mlp_init",
)
_Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
_SOURCE = (
    "Kenneth R. French data library (Dartmouth), monthly factors and portfolios as shipped "
    "in linearmodels.datasets.french"
)


@dataclass(frozen=True)
class FrenchData:
    """Ken French's monthly factors and portfolio excess returns, percent per month.

    Attributes:
        factors: (T, 5) float64 DataFrame, columns MktRF, SMB, HML, Mom, RF, index a monthly
            ``PeriodIndex`` named "month".
        excess: (T, P) float64 DataFrame, each portfolio's return minus RF, same index.
    """

    factors: pd.DataFrame
    excess: pd.DataFrame

    @property
    def months(self) -> pd.PeriodIndex:
        """The monthly PeriodIndex shared by both frames."""
        return pd.PeriodIndex(self.factors.index)

    @property
    def portfolios(self) -> tuple[str, ...]:
        """Portfolio names: 12 industries, 9 size/value (SxVy), 9 size/momentum (SxMy)."""
        return tuple(str(c) for c in self.excess.columns)


def load_french() -> FrenchData:
    """Load the French data shipped with ``linearmodels`` as tidy percent frames.

    The dataset (``linearmodels.datasets.french``) holds 819 months, 1949-01 to 2017-03, in
    decimals: MktRF, SMB, HML, Mom, RF and 30 raw portfolio returns (12 industries, 9
    size/value and 9 size/momentum portfolios). Returns are converted to percent and the
    portfolios to excess returns (minus RF).

    Returns:
        A :class:`FrenchData`.

    Raises:
        DataError: linearmodels is not installed (``pip install linearmodels``), or the
            dataset has missing values, gaps or unexpected columns.
    """
    try:
        from linearmodels.datasets import french
    except ImportError as exc:
        raise DataError(
            "the French factor data comes from the linearmodels package, which is not "
            "installed; run `pip install linearmodels`"
        ) from exc
    raw = french.load()
    missing = [c for c in ("dates", *FACTORS, "RF") if c not in raw.columns]
    if missing:
        raise DataError(f"linearmodels' French dataset lacks columns {missing}")
    months = pd.PeriodIndex(pd.to_datetime(raw["dates"]), freq="M", name="month")
    if not (np.diff(months.asi8) == 1).all():
        raise DataError("linearmodels' French dataset is not a gap-free monthly series")
    values = raw.drop(columns="dates").astype(np.float64) * 100.0
    values.index = months
    if not np.isfinite(values.to_numpy()).all():
        raise DataError("linearmodels' French dataset holds missing or infinite values")
    factors = values[[*FACTORS, "RF"]]
    ports = [c for c in values.columns if c not in factors.columns]
    excess = values[ports].sub(values["RF"], axis=0)
    return FrenchData(factors=factors, excess=excess)


@dataclass
class PricingTasks:
    """Sampler of (portfolio, window) tasks for meta-training (``sample(batch_size, rng)``).

    Each batch draws one support length k from ``ks``; each task a portfolio and a query
    month q with ``max(first_query, k) <= q <= last_query``: support = months q−k … q−1,
    query = month q (inputs: standardised factors, labels: excess returns in percent).

    Args:
        x: (T, F) float32 standardised factor returns.
        y: (P, T) float32 excess returns, percent per month.
        ks: support lengths to draw from.
        first_query, last_query: range of query month indices (inclusive).
    """

    x: np.ndarray
    y: np.ndarray
    ks: tuple[int, ...]
    first_query: int
    last_query: int

    @property
    def last_month_used(self) -> int:
        """Index of the last month any task of this sampler reads (its last query)."""
        return self.last_query

    def sample(self, batch_size: int, rng: np.random.Generator) -> _Batch:
        """A batch: xs (B, k, F), ys (B, k), xq (B, 1, F), yq (B, 1) float32 tensors."""
        k = int(rng.choice(self.ks))
        p = rng.integers(self.y.shape[0], size=batch_size)
        q = rng.integers(max(self.first_query, k), self.last_query + 1, size=batch_size)
        return _batch(self.x, self.y, p, q, k)

    def exhaustive(self, k: int) -> _Batch:
        """Every (portfolio, query month) task with support k, as one batch."""
        months = np.arange(max(self.first_query, k), self.last_query + 1)
        p, q = np.meshgrid(np.arange(self.y.shape[0]), months, indexing="ij")
        return _batch(self.x, self.y, p.ravel(), q.ravel(), k)


def _batch(x: np.ndarray, y: np.ndarray, p: np.ndarray, q: np.ndarray, k: int) -> _Batch:
    idx = q[:, None] + np.arange(-k, 0)[None, :]  # (B, k) support months before q
    xs, ys, xq, yq = (x[idx], y[p[:, None], idx], x[q][:, None, :], y[p, q][:, None])
    t = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (xs, ys, xq, yq)]
    return t[0], t[1], t[2], t[3]


# ------------------------------------------------------------------------ forecasters
def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), x])


def rolling_ols_forecasts(x: np.ndarray, y: np.ndarray, k: int, months: np.ndarray) -> np.ndarray:
    """Rolling-window OLS forecasts with statsmodels ``RollingOLS``.

    For month t the loadings (with intercept) are fitted on months t−k … t−1 and applied to
    month t's factors.

    Args:
        x: (T, F) float factor returns (any scaling; OLS is invariant to it).
        y: (P, T) float excess returns, percent per month.
        k: window length in months (> F + 1).
        months: (M,) int indices of the forecast months (each >= k).

    Returns:
        (P, M) float64 forecasts of y[:, months].
    """
    from statsmodels.regression.rolling import RollingOLS

    design = _design(x)
    out = np.empty((y.shape[0], len(months)))
    for i, series in enumerate(y):
        params = RollingOLS(series, design, window=k).fit(params_only=True).params
        params = np.asarray(params)  # row s: fitted on months s−k+1 … s
        out[i] = np.einsum("mf,mf->m", design[months], params[months - 1])
    return out


def ols_forecasts(x: np.ndarray, y: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Expanding-window OLS forecasts: loadings fitted on months 0 … t−1 (all history).

    Args:
        x: (T, F) float factor returns; y: (P, T) float excess returns (percent).
        months: (M,) int forecast month indices (each > F + 1).

    Returns:
        (P, M) float64 forecasts.
    """
    design = _design(x)
    xx = np.cumsum(design[:, :, None] * design[:, None, :], axis=0)  # (T, F+1, F+1)
    xy = np.cumsum(design[None, :, :] * y[:, :, None], axis=1)  # (P, T, F+1)
    beta = np.linalg.solve(xx[months - 1][None], xy[:, months - 1, :, None])[..., 0]
    return np.einsum("mf,pmf->pm", design[months], beta)


def adapted_forecasts(
    learner: MetaLearner,
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    months: np.ndarray,
    steps: int | None = None,
    *,
    lr_cap: bool = True,
) -> np.ndarray:
    """Forecasts of a learner adapted, for each month t, to months t−k … t−1 only.

    With ``lr_cap`` the inner rate of one adaptation is min(inner_lr, 1/λ_max), λ_max the
    largest eigenvalue of the support MSE's Hessian of a linear model, (2/k) AᵀA with
    A = [1, x_support] (k, F+1): the gradient-descent stability bound. It binds only in
    support windows with extreme factor moves (2000–2001, 2008–2009), where a fixed rate
    makes the inner loop diverge; elsewhere the adaptation is exactly ``learner.adapt``.

    Args:
        learner: a MetaLearner over F inputs (θ is not changed).
        x: (T, F) float32 standardised factors; y: (P, T) float32 excess returns (percent).
        k: support months. months: (M,) int forecast month indices (each >= k).
        steps: inner steps; None uses the learner's. 0 gives θ's forecasts.
        lr_cap: cap the scalar inner rate at the stability bound (not metasgd's). Default True.

    Returns:
        (P, M) float64 forecasts.
    """
    if steps == 0:
        with torch.no_grad():
            pred = learner.model(torch.from_numpy(np.ascontiguousarray(x[months])))
        return np.tile(pred.reshape(-1).double().numpy(), (y.shape[0], 1))
    out = np.empty((y.shape[0], len(months)))
    base = learner.inner_lr
    try:
        for j, t in enumerate(months):
            if lr_cap:
                design = _design(x[t - k : t].astype(np.float64))
                top = float(np.linalg.eigvalsh(2.0 / k * design.T @ design)[-1])
                learner.inner_lr = min(base, 1.0 / top)
            for i in range(y.shape[0]):
                phi = learner.adapt(x[t - k : t], y[i, t - k : t], steps=steps)
                out[i, j] = phi.predict_row(x[t])
    finally:
        learner.inner_lr = base
    return out


# --------------------------------------------------------------------------- metrics
def newey_west_lags(n: int) -> int:
    """HAC lag rule of thumb floor(4 (n/100)^(2/9)) (Newey & West 1994); at least 1.

    Args:
        n: observations.

    Returns:
        The lag.
    """
    return max(1, math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


def _dm_t(diff: np.ndarray) -> float:
    """Diebold–Mariano t of a loss differential series: OLS on a constant, HAC errors."""
    import statsmodels.api as sm

    d = np.asarray(diff, dtype=np.float64)
    if np.allclose(d, d[0]):
        return 0.0 if d[0] == 0 else math.copysign(math.inf, d[0])
    fit = sm.OLS(d, np.ones(len(d))).fit(
        cov_type="HAC", cov_kwds={"maxlags": newey_west_lags(len(d))}
    )
    return float(fit.tvalues[0])


def _scores(y: np.ndarray, pred: np.ndarray, hm: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Metrics of forecasts (P, M) against y, the historical mean hm and reference ref."""
    err, hm_err, ref_err = (y - pred) ** 2, (y - hm) ** 2, (y - ref) ** 2
    diff = (err - ref_err).mean(axis=0)  # pooled over portfolios, one value per month
    return {
        "rmse": float(np.sqrt(err.mean())),
        "r2_zero": float(1.0 - err.sum() / (y**2).sum()),
        "r2_hm": float(1.0 - err.sum() / hm_err.sum()),
        "delta_mse": float(diff.mean()),
        "t_nw": _dm_t(diff),
    }


# ------------------------------------------------------------------------- training
def _train(
    learner: MetaLearner,
    tasks: PricingTasks,
    steps: int,
    *,
    batch_size: int,
    seed: int,
    val: Sequence[_Batch] = (),
    val_every: int = 50,
) -> tuple[float, int]:
    """Meta-train θ; with validation batches keep the best θ. Returns (best loss, step)."""
    best, best_step, best_state = math.inf, 0, None
    for step in range(1, steps + 1):
        learner.meta_step(*tasks.sample(batch_size, np.random.default_rng([seed, step])))
        if val and (step % val_every == 0 or step == steps):
            loss = float(np.mean([learner.evaluate(*b) for b in val]))
            if not math.isfinite(loss):
                break
            if loss < best:
                best, best_step = loss, step
                best_state = copy.deepcopy(learner.model.state_dict())
    if best_state is not None:
        learner.model.load_state_dict(best_state)
    return best, best_step


def _pooled_ols(x: np.ndarray, y: np.ndarray, last: int) -> np.ndarray:
    """Pooled OLS (intercept first) of all portfolios' excess returns on months 0 … last."""
    design = np.tile(_design(x[: last + 1]), (y.shape[0], 1))
    beta, *_ = np.linalg.lstsq(design, y[:, : last + 1].ravel(), rcond=None)
    return beta


def _erm_learner(beta: np.ndarray, inner_lr: float, inner_steps: int) -> MetaLearner:
    """A linear learner whose θ is the pooled OLS fit (fine-tuned like MAML at test time)."""
    model = MLP(len(FACTORS), hidden=(), seed=0)
    with torch.no_grad():
        model.head.bias.fill_(float(beta[0]))
        model.head.weight.copy_(torch.tensor(beta[None, 1:], dtype=torch.float32))
    return MetaLearner(model, algorithm="erm", inner_lr=inner_lr, inner_steps=inner_steps)


@dataclass
class _Setup:
    """Arrays and month indices of one study."""

    x: np.ndarray  # (T, F) float32 standardised factors
    y: np.ndarray  # (P, T) float32 excess returns
    raw_x: np.ndarray  # (T, F) float64 factors, percent
    months: pd.PeriodIndex
    portfolios: tuple[str, ...]
    train_last: int  # index of train_end
    fit_last: int  # last query month of the selection fits
    test: np.ndarray  # forecast month indices


@dataclass(frozen=True)
class _SeedFit:
    """One meta-learned model to fit: the data split, the hidden sizes, the seed, the budget."""

    setup: _Setup
    hidden: tuple[int, ...]
    seed: int
    fit: dict[str, Any]


def _fit_seed(unit: _SeedFit) -> tuple[MetaLearner, dict[str, float]]:
    """:func:`_meta_fit` of one unit (a top-level function, so executors can pickle it)."""
    return _meta_fit(unit.setup, unit.hidden, seed=unit.seed, **unit.fit)


def _meta_fit(
    setup: _Setup,
    hidden: tuple[int, ...],
    *,
    ks: tuple[int, ...],
    algorithm: str,
    steps: int,
    batch_size: int,
    inner_steps: int,
    meta_lr: float,
    seed: int,
    lr_grid: Sequence[float],
) -> tuple[MetaLearner, dict[str, float]]:
    """Choose the inner rate and step count on validation, re-train to train_end."""
    x, y = setup.x, setup.y

    def learner(lr: float) -> MetaLearner:
        model = MLP(len(FACTORS), hidden=hidden, seed=seed)
        return MetaLearner(  # a family's path from a file: imported only if trusted
            model,
            algorithm=resolve_algorithm(algorithm),
            inner_lr=lr,
            inner_steps=inner_steps,
            meta_lr=meta_lr,
        )

    fit_tasks = PricingTasks(x, y, ks, max(ks), setup.fit_last)
    val_tasks = PricingTasks(x, y, ks, setup.fit_last + 1, setup.train_last)
    val = [val_tasks.exhaustive(k) for k in ks]
    results = {}
    for lr in lr_grid:
        results[lr] = _train(
            learner(lr), fit_tasks, steps, batch_size=batch_size, seed=seed, val=val
        )
    lr = min(results, key=lambda r: results[r][0])
    if not math.isfinite(results[lr][0]):
        raise ConfigError(
            f"meta-training of the {hidden or 'linear'} model diverged for every inner rate in "
            f"{list(lr_grid)}; lower meta_lr (now {meta_lr}) or the rates"
        )
    final = learner(lr)
    final_tasks = PricingTasks(x, y, ks, max(ks), setup.train_last)
    best_step = max(results[lr][1], 1)
    _train(final, final_tasks, best_step, batch_size=batch_size, seed=seed)
    final.train_range = (str(setup.months[0]), str(setup.months[setup.train_last]))
    return final, {"inner_lr": lr, "steps": best_step, "val_mse": results[lr][0]}


def _erm_fit(
    setup: _Setup, ks: tuple[int, ...], inner_steps: int, lr_grid: Sequence[float]
) -> tuple[MetaLearner, dict[str, float]]:
    """Pooled OLS θ; fine-tuning rate chosen on the same validation tasks as MAML's."""
    val_tasks = PricingTasks(setup.x, setup.y, ks, setup.fit_last + 1, setup.train_last)
    val = [val_tasks.exhaustive(k) for k in ks]
    beta_fit = _pooled_ols(setup.x, setup.y, setup.fit_last)
    losses = {
        lr: float(np.mean([_erm_learner(beta_fit, lr, inner_steps).evaluate(*b) for b in val]))
        for lr in lr_grid
    }
    lr = min(losses, key=lambda r: losses[r])
    beta = _pooled_ols(setup.x, setup.y, setup.train_last)
    return _erm_learner(beta, lr, inner_steps), {"inner_lr": lr, "val_mse": losses[lr]}


# -------------------------------------------------------------------------- results
@dataclass
class PricingStudy:
    """Results of :func:`pricing_study`.

    Attributes:
        table: pooled results, one row per (model, k): columns model, k, rmse (percent per
            month), rmse_sd (across seeds; 0 for deterministic models), r2_zero, r2_hm,
            delta_mse (MSE − rolling OLS MSE at the same k, %²), delta_mse_sd, t_nw
            (Diebold–Mariano t, HAC), seeds (number of seeds averaged).
        per_portfolio: the same metrics per (model, k, portfolio), averaged over seeds.
        runs: per-seed pooled rows (model, k, seed, metrics).
        config: the study's settings, chosen rates and step counts, dates, runtime.
        verdict: one row per (meta-learned model, k) (:func:`_verdict`): the meta-learned
            model against the best other model at that k (lowest RMSE), with the difference
            of their MSEs and its Diebold–Mariano t, and the reading (``"better"``,
            ``"worse"`` or ``"no difference"`` at |t| < 1.96).
    """

    table: pd.DataFrame
    per_portfolio: pd.DataFrame
    runs: pd.DataFrame
    config: dict[str, object] = field(default_factory=dict)
    verdict: pd.DataFrame = field(default_factory=pd.DataFrame)

    def verdict_lines(self) -> list[str]:
        """The verdict as sentences, one per (meta-learned model, k)."""
        return [
            f"k={row.k}: {row.model} RMSE {row.rmse:.4f} vs the best other model, "
            f"{row.rival} {row.rival_rmse:.4f}: ΔMSE {row.delta_mse:+.4f} (%² a month), "
            f"Diebold–Mariano t {row.t_nw:+.2f} -> "
            + (
                f"{row.model} is better"
                if row.reading == "better"
                else f"{row.rival} is better"
                if row.reading == "worse"
                else "no significant difference (|t| < 1.96)"
            )
            for row in self.verdict.itertuples()
        ]

    def markdown(self) -> str:
        """The pooled table as a Markdown document with the data source and protocol."""
        c = self.config
        shown = self.table.copy()
        for col in ("rmse", "rmse_sd", "delta_mse", "delta_mse_sd"):
            shown[col] = shown[col].map(lambda v: f"{v:.4f}")
        for col in ("r2_zero", "r2_hm", "t_nw"):
            shown[col] = shown[col].map(lambda v: f"{v:.3f}")
        lines = [
            "# Fast adaptation of factor models: French monthly portfolios",
            "",
            f"Data: {_SOURCE}; months {c['data_start']} to {c['data_end']}; factors "
            f"{', '.join(FACTORS)}; target: portfolio return − RF, percent per month; "
            f"{c['n_portfolios']} portfolios.",
            f"Training: months ≤ {c['train_end']} (validation {c['val_start']} – "
            f"{c['train_end']}); test: {c['test_start']} – {c['test_end']} "
            f"({c['n_test_months']} months, each forecast from months before it only).",
            f"Meta-learning: {c['algorithm']}, linear model (4 loadings + intercept), "
            f"{c['inner_steps']} inner steps; seeds {c['seeds']}; chosen on validation: "
            f"{_chosen(c)}.",
            "Baselines: rolling OLS and rolling CAPM (intercept + MktRF beta) on the same k "
            "months; expanding OLS on all months from the data start to t − 1 (k unused); "
            "maml_init = θ without adaptation (k unused); erm_ft = pooled OLS of the "
            "training period fine-tuned like MAML; pooled_ols = without fine-tuning. Test-"
            "time inner rate capped at 1/λ_max of the support Hessian (binds only in "
            "extreme windows).",
            "Metrics: rmse in % per month; r2_zero = 1 − SSE/Σy²; r2_hm = 1 − SSE/SSE of the "
            "expanding historical mean (Campbell & Thompson 2008); delta_mse = MSE − MSE of "
            "rolling OLS at the same k (negative = better); t_nw = Diebold–Mariano t of the "
            f"monthly portfolio-averaged loss differential, Newey–West lag {c['nw_lag']} "
            "(floor(4 (T/100)^(2/9))). Model and seed means; sd across seeds.",
            "",
            markdown_frame(shown).to_markdown(index=False),
            "",
            "Verdict: each meta-learned model against the best other model at the same k "
            "(lowest RMSE among the baselines), Diebold–Mariano t of the MSE difference:",
            "",
            *(f"- {line}" for line in self.verdict_lines()),
            "",
            f"Runtime {c['runtime_s']:.0f} s. {c.get('note', '')}".rstrip(),
            "",
        ]
        return "\n".join(lines)

    def summary(self) -> str:
        """A plain-text summary (what the CLI prints)."""
        return "\n".join(self.main_lines())

    def main_lines(self) -> list[str]:
        """The summary as lines: dates, chosen hyper-parameters, the pooled table."""
        c = self.config
        head = [
            f"French monthly data {c['data_start']}–{c['data_end']}, {c['n_portfolios']} "
            f"portfolios; train ≤ {c['train_end']}, test {c['test_start']}–{c['test_end']}",
            f"{c['algorithm']} chosen on validation: {_chosen(c)}",
        ]
        table = self.table.drop(columns=["rmse_sd", "delta_mse_sd"]).to_string(
            index=False, float_format=lambda v: f"{v:.4f}"
        )
        return [*head, *table.splitlines(), "", "verdict:", *self.verdict_lines()]

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write pricing.csv, pricing_per_portfolio.csv, pricing.md, pricing_rmse_vs_k.png.

        Files are staged and moved into ``out_dir`` together (other files there are left
        alone), so a failure leaves the previous set intact.

        Args:
            out_dir: destination folder (created if missing).

        Returns:
            The paths written.
        """
        names = ["pricing.csv", "pricing_per_portfolio.csv", "pricing.md"]
        names.append("pricing_rmse_vs_k.png")
        with staged_files(out_dir) as tmp:
            csv_frame(self.table).to_csv(tmp / names[0], index=False)
            csv_frame(self.per_portfolio).to_csv(tmp / names[1], index=False)
            (tmp / names[2]).write_text(self.markdown(), encoding="utf-8")
            self._plot(tmp / names[3])
        return [Path(out_dir) / n for n in names]

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        rmse = self.table["rmse"]
        top = 1.15 * float(rmse.quantile(0.9))  # a k=6 OLS outlier would flatten the rest
        for model, rows in self.table.groupby("model", sort=False):
            ax.errorbar(rows["k"], rows["rmse"], yerr=rows["rmse_sd"], marker="o", label=model)
            for k, v in zip(rows["k"], rows["rmse"], strict=True):
                if v > top:
                    ax.annotate(f"{model} {v:.1f} ↑", (k, top), fontsize=7, va="top")
        ax.set_ylim(0.95 * float(rmse.min()), top)
        ax.set_xlabel("k, months of history")
        ax.set_ylabel("out-of-sample RMSE, % per month (pooled)")
        c = self.config
        ax.set_title(f"French portfolios, test {c['test_start']}–{c['test_end']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


# ------------------------------------------------------------------------ the study
def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    values = tuple(ks)
    low = len(FACTORS) + 2
    if not values or any(isinstance(k, bool) or not isinstance(k, int) for k in values):
        raise ConfigError(f"ks must be a non-empty list of integers, got {ks!r}")
    if min(values) < low or max(values) > 240 or len(set(values)) != len(values):
        raise ConfigError(
            f"ks must be distinct integers from {low} (the OLS baseline needs more months "
            f"than its {len(FACTORS) + 1} parameters) to 240, got {list(values)}"
        )
    return tuple(sorted(values))


def _month(value: str, label: str, months: pd.PeriodIndex) -> int:
    try:
        month = pd.Period(value, freq="M")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{label} {value!r} is not a month like '1989-12'") from exc
    if not months[0] <= month <= months[-1]:
        raise ConfigError(
            f"{label} {month} is outside the data ({months[0]} to {months[-1]}); choose a "
            "month inside it"
        )
    return int(months.get_loc(month))


def _setup(
    data: FrenchData,
    ks: tuple[int, ...],
    train_end: str,
    test_end: str | None,
    val_years: int,
    portfolios: Sequence[str] | None,
) -> _Setup:
    months = data.months
    names = data.portfolios if portfolios is None else tuple(portfolios)
    unknown = sorted(set(names) - set(data.portfolios))
    if not names or unknown:
        raise ConfigError(
            f"unknown or no portfolios {unknown or list(names)}; choose from "
            f"{list(data.portfolios)}"
        )
    train_last = _month(train_end, "train_end", months)
    test_last = len(months) - 1 if test_end is None else _month(test_end, "test_end", months)
    if isinstance(val_years, bool) or not isinstance(val_years, int) or val_years < 1:
        raise ConfigError(f"val_years must be an integer >= 1, got {val_years!r}")
    fit_last = train_last - 12 * val_years
    if fit_last - max(ks) < 24:
        raise ConfigError(
            f"train_end {train_end} leaves too few months before the {val_years}-year "
            f"validation split for k={max(ks)}; choose a later train_end or smaller ks"
        )
    if test_last <= train_last:
        raise ConfigError(f"no test months: test_end must come after train_end {train_end}")
    raw = data.factors[list(FACTORS)].to_numpy()
    mean, sd = raw[: train_last + 1].mean(0), raw[: train_last + 1].std(0)
    return _Setup(
        x=((raw - mean) / sd).astype(np.float32),
        y=data.excess[list(names)].to_numpy().T.astype(np.float32),
        raw_x=raw,
        months=months,
        portfolios=names,
        train_last=train_last,
        fit_last=fit_last,
        test=np.arange(train_last + 1, test_last + 1),
    )


@dataclass(frozen=True)
class PricingSettings:
    """What the pricing study is run with: periods, portfolios, the meta-learner's budget.

    The study's counterpart of :class:`~metabt.experiments.settings.RunSettings` (it reads
    no price files: the data is Ken French's monthly factors, :func:`load_french`).
    Checked by :func:`pricing_study`, before any work.

    Attributes:
        ks: support lengths k in months (each >= 6). Default (6, 12, 24, 36).
        train_end: last training month, "YYYY-MM". Default "1989-12".
        test_end: last test month; None = the last month of the data (2017-03).
        algorithm: MetaLearner algorithm for θ ("maml", "fomaml", "metasgd", ...).
        steps: outer steps of each selection fit (the final fit uses the best count on
            validation). Default 1500 (the 1989-12 split picks 1200–1350).
        batch_size: tasks per outer step. Default 256.
        inner_steps: inner gradient steps in training and at test time. Default 5.
        meta_lr: outer Adam learning rate. Default 3e-2.
        val_years: years before train_end used for validation. Default 10.
        portfolios: portfolio names (default all 30).
        nonlinear: also meta-learn an MLP 4→16→1 (ReLU) ("maml_mlp"); experimental: it
            diverges with the default rates (ConfigError), try meta_lr=3e-3.
        lr_grid: inner learning rates to choose from on validation.
    """

    ks: Sequence[int] = (6, 12, 24, 36)
    train_end: str = "1989-12"
    test_end: str | None = None
    algorithm: str = "maml"
    steps: int = 1500
    batch_size: int = 256
    inner_steps: int = 5
    meta_lr: float = 3e-2
    val_years: int = 10
    portfolios: Sequence[str] | None = None
    nonlinear: bool = False
    lr_grid: Sequence[float] = LR_GRID


def pricing_study(
    settings: PricingSettings,
    *,
    seeds: Sequence[int] = (0,),
    data: FrenchData | None = None,
    executor: ExecutorSpec | Executor = SERIAL,
    log: Log = silent,
) -> PricingStudy:
    """Meta-learned vs classical factor models, out of sample on French portfolios.

    See the module docstring for the protocol and metric definitions.

    Args:
        settings: periods, portfolios and the meta-learner's budget
            (:class:`PricingSettings`; ``PricingSettings()`` for the defaults).
        seeds: seeds to repeat the meta-learned models with (trained per seed and
            averaged). Default (0,).
        data: a :class:`FrenchData` (default :func:`load_french`); tests perturb it.
        executor: where the meta-learned models (one per variant and seed) are fitted: an
            :class:`~metabt.experiments.executors.ExecutorSpec` (made and closed here) or an
            open :class:`~metabt.experiments.executors.Executor`, as for
            :func:`~metabt.experiments.compare.compare`. Each fit runs on one thread with
            its own seed, so the results are the same whatever the executor. Default:
            serial, here.
        log: receives a progress line as each stage starts.

    Returns:
        A :class:`PricingStudy`.

    Raises:
        ConfigError: bad ks, months outside the data, unknown portfolios, bad settings.
        DataError: linearmodels missing.
    """
    tic = time.perf_counter()
    ks = _check_ks(settings.ks)
    seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds must be a list of integers, got {seeds!r}")
    algorithm, steps, batch_size = settings.algorithm, settings.steps, settings.batch_size
    inner_steps, meta_lr, lr_grid = settings.inner_steps, settings.meta_lr, settings.lr_grid
    for label, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")
    if not lr_grid or any(not (isinstance(r, (int, float)) and r > 0) for r in lr_grid):
        raise ConfigError(f"lr_grid must hold positive rates, got {lr_grid!r}")
    setup = _setup(
        data or load_french(),
        ks,
        settings.train_end,
        settings.test_end,
        settings.val_years,
        settings.portfolios,
    )
    x, y, test = setup.x, setup.y, setup.test
    y_test = y[:, test].astype(np.float64)
    csum = np.cumsum(y.astype(np.float64), axis=1)
    hm = csum[:, test - 1] / test  # expanding mean of months 0 … t−1
    preds: dict[tuple[str, int, int], np.ndarray] = {}
    for k in ks:
        preds["rolling_ols", k, -1] = rolling_ols_forecasts(setup.raw_x, y, k, test)
        preds["capm_rolling", k, -1] = rolling_ols_forecasts(setup.raw_x[:, :1], y, k, test)
    expanding = ols_forecasts(setup.raw_x, y.astype(np.float64), test)
    chosen: dict[str, object] = {}
    log("baselines done; pooled OLS + fine-tuning")
    erm, chosen["erm_ft"] = _erm_fit(setup, ks, inner_steps, lr_grid)
    pooled = adapted_forecasts(erm, x, y, 0, test, steps=0)
    for k in ks:
        preds["expanding_ols", k, -1] = expanding
        preds["pooled_ols", k, -1] = pooled
        preds["erm_ft", k, -1] = adapted_forecasts(erm, x, y, k, test)
    variants = [("maml", ())] + ([("maml_mlp", (16,))] if settings.nonlinear else [])
    fit = dict(ks=ks, algorithm=algorithm, steps=steps, batch_size=batch_size,
               inner_steps=inner_steps, meta_lr=meta_lr, lr_grid=tuple(lr_grid))  # fmt: skip
    units = [_SeedFit(setup, hidden, s, fit) for _, hidden in variants for s in seeds]
    log("; ".join(f"{name} seed {s}" for name, _ in variants for s in seeds) + ": meta-training")
    with executor_scope(executor) as ex:
        fitted = ex.map(_fit_seed, units, desc="pricing fits", progress=False)
    for (name, _), unit, (learner, info) in zip(
        [v for v in variants for _ in seeds], units, fitted, strict=True
    ):
        s = unit.seed
        chosen[f"{name} seed {s}"] = info
        init = adapted_forecasts(learner, x, y, 0, test, steps=0)
        for k in ks:
            preds[f"{name}_init", k, s] = init
            preds[name, k, s] = adapted_forecasts(learner, x, y, k, test)
    runs, per = [], []
    for (model, k, s), pred in preds.items():
        ref = preds["rolling_ols", k, -1]
        runs.append({"model": model, "k": k, "seed": s, **_scores(y_test, pred, hm, ref)})
        for i, port in enumerate(setup.portfolios):
            one = _scores(y_test[i : i + 1], pred[i : i + 1], hm[i : i + 1], ref[i : i + 1])
            per.append({"model": model, "k": k, "seed": s, "portfolio": port, **one})
    runs_df = pd.DataFrame(runs)
    verdict = _verdict(preds, y_test, ks, seeds, [name for name, _ in variants])
    table = _aggregate(runs_df, ["model", "k"])
    per_df = _aggregate(pd.DataFrame(per), ["model", "k", "portfolio"])
    per_df = per_df.drop(columns=["rmse_sd", "delta_mse_sd", "seeds"])
    months = setup.months
    config: dict[str, object] = {
        "ks": list(ks),
        "algorithm": algorithm,
        "steps": steps,
        "batch_size": batch_size,
        "inner_steps": inner_steps,
        "meta_lr": meta_lr,
        "seeds": list(seeds),
        "chosen": chosen,
        "data_start": str(months[0]),
        "data_end": str(months[-1]),
        "train_end": str(months[setup.train_last]),
        "val_start": str(months[setup.fit_last + 1]),
        "test_start": str(months[test[0]]),
        "test_end": str(months[test[-1]]),
        "n_test_months": len(test),
        "n_portfolios": len(setup.portfolios),
        "nw_lag": newey_west_lags(len(test)),
        "runtime_s": time.perf_counter() - tic,
    }
    return PricingStudy(
        table=table, per_portfolio=per_df, runs=runs_df, config=config, verdict=verdict
    )


def _verdict(
    preds: dict[tuple[str, int, int], np.ndarray],
    y: np.ndarray,
    ks: Sequence[int],
    seeds: Sequence[int],
    meta_models: Sequence[str],
) -> pd.DataFrame:
    """Each meta-learned model against the best other model at each k.

    The rival is the model with the lowest pooled RMSE at that k among the baselines
    (rolling and expanding OLS, rolling CAPM, pooled OLS, ERM fine-tuning; not the
    meta-learned models nor their unadapted θ). The loss differential is the monthly,
    portfolio-averaged squared error of the meta-learned model (averaged over seeds) minus
    the rival's; its Diebold–Mariano t uses Newey–West errors (:func:`_dm_t`).

    Returns:
        One row per (model, k): model, k, rmse, rival, rival_rmse, delta_mse, t_nw, reading.
    """
    rows = []
    for name in meta_models:
        own = {f"{name}_init", name}
        for k in ks:
            err = np.mean([((y - preds[name, k, s]) ** 2) for s in seeds], axis=0)
            others = {
                m: (y - p) ** 2
                for (m, kk, _), p in preds.items()
                if kk == k and m not in own and not m.startswith("maml")
            }
            rival = min(others, key=lambda m: float(others[m].mean()))
            diff = (err - others[rival]).mean(axis=0)
            t = _dm_t(diff)
            rows.append(
                {
                    "model": name,
                    "k": k,
                    "rmse": float(np.sqrt(err.mean())),
                    "rival": rival,
                    "rival_rmse": float(np.sqrt(others[rival].mean())),
                    "delta_mse": float(diff.mean()),
                    "t_nw": t,
                    "reading": "better" if t < -1.96 else "worse" if t > 1.96 else "no difference",
                }
            )
    return pd.DataFrame(rows)


def _chosen(config: dict[str, object]) -> str:
    """The validation choices (rate, steps, validation MSE) as a short string."""
    chosen = config.get("chosen", {})
    assert isinstance(chosen, dict)
    return "; ".join(
        f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in info.items())
        for name, info in chosen.items()
    )


def _aggregate(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean of the metrics over seeds per key, with sd of rmse and delta_mse, in MODELS order."""
    grouped = df.groupby(keys, sort=False)
    out = grouped[["rmse", "r2_zero", "r2_hm", "delta_mse", "t_nw"]].mean()
    out["rmse_sd"] = grouped["rmse"].std(ddof=1).fillna(0.0)
    out["delta_mse_sd"] = grouped["delta_mse"].std(ddof=1).fillna(0.0)
    out["seeds"] = grouped.size()
    out = out.reset_index()
    out["_order"] = out["model"].map(MODELS.index)
    out = out.sort_values(["_order", *keys[1:]], kind="stable").drop(columns="_order")
    cols = [*keys, "rmse", "rmse_sd", "r2_zero", "r2_hm", "delta_mse", "delta_mse_sd", "t_nw"]
    return out[[*cols, "seeds"]].reset_index(drop=True)
