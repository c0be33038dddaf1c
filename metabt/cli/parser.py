"""The ``metabt`` command: arguments, config files, exit codes (the work: ``cli.commands``).

Exit codes: 0 success; 2 bad input or usage (one line on stderr, no traceback);
1 unexpected failure.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import pandas as pd


__all__ = [
    "add_backtest_parser",
    "add_compare_parser",
    "add_config_parser",
    "add_pricing_parser",
    "add_sweep_parser",
    "add_train_parser",
    "add_walkforward_parser",
]

THREADS_ENV = "METABT_THREADS"
DEFAULT_REPORT = Path("reports") / "metabt_backtest.html"
DEFAULT_COMPARE = Path("reports") / "compare"
DEFAULT_WALKFORWARD = Path("reports") / "walkforward"
DEFAULT_SWEEP = Path("reports") / "sweep"
DEFAULT_PRICING = Path("reports") / "pricing"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _date(value: str) -> pd.Timestamp:
    """A date option (``metabt._checks.as_timestamp``): NaT and non-dates are refused."""
    from metabt._checks import as_timestamp
    from metabt.errors import ConfigError

    try:
        stamp = as_timestamp(value, "date")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date; use YYYY-MM-DD") from exc
    assert stamp is not None  # argparse passes a string
    return stamp


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from exc
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 1")
    return number


def _non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from exc
    if not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number >= 0")
    return number


def _seed(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer seed") from exc
    if not 0 <= number < 2**32:
        raise argparse.ArgumentTypeError(f"seed {value!r} must be in [0, 2**32 - 1]")
    return number


def _default_threads() -> int:
    """Threads from $METABT_THREADS (a positive integer), else 1."""
    import os

    raw = os.environ.get(THREADS_ENV, "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    from metabt.config.defaults import LIMITS

    if not 1 <= value <= LIMITS["threads"].high:
        raise SystemExit(
            f"metabt: error: {THREADS_ENV}={raw!r} must be an integer "
            f"{LIMITS['threads'].describe()}"
        )
    return value


def _bounded(name: str) -> Callable[[str], float]:
    """The converter of a numeric flag: a number in setting ``name``'s range
    (``metabt.config.defaults.LIMITS``, the config-file schema's too)."""
    from metabt.config.defaults import LIMITS

    limit = LIMITS[name]

    def convert(value: str) -> float:
        try:
            number = int(value) if limit.integer else float(value)
        except ValueError as exc:
            kind = "an integer" if limit.integer else "a number"
            raise argparse.ArgumentTypeError(f"{value!r} is not {kind}") from exc
        low_ok = number > limit.low if limit.above else number >= limit.low
        if not (math.isfinite(number) and low_ok and number <= limit.high):
            raise argparse.ArgumentTypeError(
                f"{value!r} is out of range: it must be {limit.describe()}"
            )
        return number

    convert.__name__ = name
    return convert


def _positive(value: str) -> float:
    number = _non_negative(value)
    if number == 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def _fraction(value: str) -> float:
    """A number in [0, 1)."""
    number = _non_negative(value)
    if number >= 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be < 1 (a fraction, e.g. 0.25)")
    return number


def _model_type(value: str) -> str:
    """``mlp``, ``gru`` or an import path ``package.module:Class`` of a torch module."""
    import re

    from metabt.config.defaults import MODEL_TYPES

    if value in MODEL_TYPES or re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a model type; use {' or '.join(MODEL_TYPES)}, or the import path "
        "of your torch.nn.Module class as package.module:ClassName"
    )


def _algorithm(value: str) -> str:
    """A built-in algorithm name or the import path ``package.module:Class`` of a user's
    learner family (imported later, under the trust rules); a typo gets the closest name."""
    from metabt.errors import ConfigError
    from metabt.learn.names import check_algorithm

    try:
        return check_algorithm(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _json_object(value: str) -> dict[str, Any]:
    import json

    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not JSON ({exc.msg}); write e.g. '{{\"hidden\": 64}}'"
        ) from exc
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(
            f"{value!r} must be a JSON object, e.g. '{{\"hidden\": 64}}'"
        )
    return parsed


def _training_options(p: argparse.ArgumentParser) -> None:
    from metabt.config.defaults import (
        ALGORITHM_NAMES,
        DEMO,
        INNER_LR,
        INNER_LR_BY_ALGORITHM,
        INNER_OBJECTIVES,
        MODEL_TYPES,
        OBJECTIVES,
        VAL_YEARS,
    )

    p.add_argument(
        "--algorithm",
        type=_algorithm,
        default=DEMO.algorithm,
        metavar="ALGORITHM",
        help=f"meta-learning algorithm: {', '.join(ALGORITHM_NAMES)}, or the import path "
        "package.module:Class of your own metabt.LearnerFamily subclass "
        f"(default {DEMO.algorithm})",
    )
    p.add_argument(
        "--model-type",
        type=_model_type,
        default=DEMO.model_type,
        metavar="TYPE",
        help=f"model: {', '.join(MODEL_TYPES)}, or the import path package.module:Class of "
        f"your torch.nn.Module (built as Class(n_features=F, **model_kwargs)) "
        f"(default {DEMO.model_type})",
    )
    p.add_argument(
        "--model-kwargs",
        type=_json_object,
        default={},
        metavar="JSON",
        help="keyword arguments of the model, a JSON object, e.g. '{\"hidden\": 64}'",
    )
    p.add_argument(
        "--hidden",
        type=_bounded("hidden"),
        nargs="+",
        default=list(DEMO.hidden),
        metavar="WIDTH",
        help=f"MLP hidden widths (default {' '.join(map(str, DEMO.hidden))})",
    )
    p.add_argument(
        "--feature",
        dest="features",
        action="append",
        default=[],
        metavar="PATH",
        help="add a feature: a registered name or package.module:function, optionally "
        'followed by JSON params, e.g. examples.rsi_feature:rsi{"window": 21} (repeatable)',
    )
    p.add_argument(
        "--benchmark",
        metavar="FILE",
        help="an index or ETF's OHLCV file: each asset gets its close as the `benchmark` "
        "column, as of each bar, for factor features (--feature metabt.features.factors:beta, "
        "metabt.features.factors:resid_mom, ...)",
    )
    p.add_argument(
        "--horizon",
        type=_bounded("horizon"),
        default=DEMO.spec.horizon,
        metavar="BARS",
        help=f"label horizon (default {DEMO.spec.horizon})",
    )
    p.add_argument(
        "--query",
        type=_bounded("query"),
        default=DEMO.query,
        metavar="BARS",
        help=f"bars per training query set (default {DEMO.query})",
    )
    p.add_argument(
        "--val-years",
        type=_bounded("val_years"),
        default=DEMO.val_years,
        metavar="YEARS",
        help=f"last years before the cut-off held out to validate training (default "
        f"{VAL_YEARS:g}, or a third of the training history when that is shorter)",
    )
    p.add_argument(
        "--inner-lr",
        type=_bounded("inner_lr"),
        default=None,
        metavar="RATE",
        help=f"inner-loop learning rate (default {INNER_LR:g}; "
        + ", ".join(f"{v:g} for {k}" for k, v in INNER_LR_BY_ALGORITHM.items())
        + ", whose context inputs start at 0)",
    )
    p.add_argument(
        "--meta-lr",
        type=_bounded("meta_lr"),
        default=DEMO.meta_lr,
        metavar="RATE",
        help=f"outer-loop (Adam) learning rate (default {DEMO.meta_lr:g})",
    )
    p.add_argument(
        "--batch-size",
        type=_bounded("batch_size"),
        default=DEMO.batch_size,
        metavar="TASKS",
        help=f"tasks per outer step (default {DEMO.batch_size})",
    )
    p.add_argument(
        "--steps",
        type=_bounded("steps"),
        default=DEMO.meta_steps,
        help=f"meta-training outer steps (default {DEMO.meta_steps})",
    )
    p.add_argument(
        "--inner-steps",
        type=_bounded("inner_steps"),
        default=DEMO.inner_steps,
        help=f"inner-loop steps per adaptation (default {DEMO.inner_steps})",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=DEMO.objective,
        help="what meta-training minimises and keep-best selects on: mse (the forecast's "
        "error) or sharpe/utility (the after-cost P&L of the sized, smoothed query path, "
        f"with the run's --commission, --spread, --slippage, --borrow and --smooth; default "
        f"{DEMO.objective})",
    )
    p.add_argument(
        "--partial-adjustment",
        action="store_true",
        help="with --objective sharpe/utility: learn a partial-adjustment rate k with the "
        "model (each bar the position moves k of the way to the sized forecast, Garleanu & "
        "Pedersen 2013); the checkpoint records k and the backtest trades at it (default "
        "off: k = 1)",
    )
    p.add_argument(
        "--inner-objective",
        choices=INNER_OBJECTIVES,
        default=DEMO.inner_objective,
        help="what the meta-training inner loop descends: mse (the support labels' error) "
        "or same (the --objective's P&L on the support path; maml, fomaml, metasgd, anil, "
        f"cavia); the backtest's adaptation stays mse (default {DEMO.inner_objective})",
    )
    p.add_argument("--seed", type=_seed, default=DEMO.seed, help="seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=_bounded("threads"),
        default=_default_threads(),
        metavar="N",
        help=f"threads for torch and BLAS (default 1, or ${THREADS_ENV}): metabt's models "
        "are tiny, and more threads than free cores slow them down",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    from metabt.config.defaults import DEMO

    p.add_argument(
        "--data",
        nargs="+",
        metavar="FILE",
        help="OHLCV CSV files to trade (default: the sample data)",
    )
    p.add_argument(
        "--train-data",
        nargs="+",
        metavar="FILE",
        help="files to meta-train on, e.g. other assets (default: --data)",
    )
    p.add_argument(
        "--start",
        type=_date,
        default=DEMO.start,  # argparse converts a string default with type=
        metavar="DATE",
        help=f"first backtest date; training uses data strictly before it (default {DEMO.start})",
    )
    p.add_argument("--end", type=_date, metavar="DATE", help="last backtest date (default: all)")
    p.add_argument("--cash", type=_bounded("cash"), default=100_000.0, help="starting cash")
    _cost_options(p)
    p.add_argument(
        "--adapt-every",
        type=_bounded("adapt_every"),
        default=DEMO.adapt_every,
        metavar="BARS",
        help=f"bars between adaptations (default {DEMO.adapt_every})",
    )
    _smooth_option(p)
    p.add_argument(
        "--bars-per-year",
        type=_bounded("bars_per_year"),
        metavar="N",
        help="bars in a year, for volatility targets, Sharpe, CAGR and turnover (default: "
        "detected from the dates: 252 for daily stock bars, 52 weekly, ~6,240 hourly FX)",
    )
    p.add_argument(
        "--online-meta-lr",
        type=_bounded("online_meta_lr"),
        default=0.0,
        metavar="RATE",
        help="outer-loop rate of online meta-updates of the meta-init during the backtest, "
        "from adaptations whose query labels are realised (default 0: off)",
    )


def _cost_options(p: argparse.ArgumentParser) -> None:
    """--asset-class and the costs it defaults (--commission, --spread, --slippage,
    --borrow), and --impact, --participation: the broker's costs (and the P&L objective's)."""
    from metabt.config.assets import ASSET_CLASS_NAMES, ASSET_CLASSES

    def defaults(field: str) -> str:
        return ", ".join(f"{name} {getattr(a, field):g}" for name, a in ASSET_CLASSES.items())

    p.add_argument(
        "--asset-class",
        choices=ASSET_CLASS_NAMES,
        default=None,
        help="declare the asset class: it sets the default costs below, fractional units "
        "(fx, crypto) and the calendar that counts bars a year (equity 252 days of 6.5 "
        "hours, fx 24/5, crypto 24/7, futures 23 hours on 252 days); flags override it "
        "(default: none, US-equity costs with the calendar detected from the dates)",
    )
    for flag, field, what in (
        ("--commission", "commission_bps", "commission, basis points of traded value"),
        ("--spread", "spread_bps", "half the bid-ask spread, basis points of price, per fill"),
        ("--slippage", "slippage_bps", "slippage, basis points of price, on every fill"),
        ("--borrow", "borrow_bps", "short-borrow fee, basis points a year of the short value"),
    ):
        p.add_argument(
            flag,
            type=_bounded(flag[2:]),
            default=None,
            metavar="BPS",
            help=f"{what} (default: the asset class's: {defaults(field)})",
        )
    p.add_argument(
        "--impact",
        type=_bounded("impact"),
        default=0.0,
        metavar="K",
        help="square-root market impact: each fill pays K x sigma x sqrt(size / ADV) of its "
        "value, sigma and ADV over the 20 bars before it (Almgren et al. 2005; K of order 1, "
        "Toth et al. 2011); needs volume (default 0: off)",
    )
    p.add_argument(
        "--participation",
        type=_bounded("participation"),
        default=None,
        metavar="FRAC",
        help="fill at most FRAC of a bar's volume (0.1 = 10%%); the rest is re-sized at the "
        "next bar; needs volume (default: no cap)",
    )


def _smooth_option(p: argparse.ArgumentParser) -> None:
    from metabt.config.defaults import DEMO

    p.add_argument(
        "--smooth",
        type=_bounded("smooth"),
        default=None,
        metavar="BARS",
        help="trade the mean of each asset's last BARS forecasts (overlapping h-bar "
        f"forecasts combined; 1: no smoothing). Default {DEMO.smooth}, chosen on validation "
        "by scripts/choose_smoothing.py; compare and walkforward choose each strategy's "
        "from --smooth-grid on the validation years unless --smooth is given",
    )
    p.add_argument(
        "--no-trade-bps",
        type=_bounded("no_trade_bps"),
        default=0.0,
        metavar="BPS",
        help="MetaStrategy trades only when the forecast return pays this cost of a fill, "
        "the forecast calibrated to returns on the validation years before the test "
        "(a no-trade region; 0: off, the default; compare and walkforward try it per "
        "strategy, default there the run's cost per fill)",
    )
    _sizer_options(p)


def _sizer_options(p: argparse.ArgumentParser) -> None:
    """The SignalSizer settings a run (and a sweep) may change; defaults: the demo's."""
    from metabt.config.defaults import DEMO

    p.add_argument(
        "--deadband",
        type=_non_negative,
        default=DEMO.sizer["deadband"],
        metavar="W",
        help="no trade while the target weight is within W of the current weight "
        f"(fraction of equity; default {DEMO.sizer['deadband']:g})",
    )
    p.add_argument(
        "--rebalance-band",
        type=_fraction,
        default=DEMO.sizer["rebalance_band"],
        metavar="F",
        help="keep a position on its target's side while within F x |target weight| of it, "
        "so the volatility-targeted size is not re-traded on every move of volatility "
        f"(default {DEMO.sizer['rebalance_band']:g}, chosen on validation by "
        "scripts/choose_smoothing.py)",
    )
    p.add_argument(
        "--fractional",
        action="store_true",
        help="hold fractions of a unit (crypto, FX; steps of 1e-8), not whole shares: a "
        "position worth less than one unit is otherwise 0",
    )
    p.add_argument(
        "--signal-scale",
        type=_positive,
        default=DEMO.sizer["signal_scale"],
        metavar="S",
        help="signal size that earns the full volatility-target weight (default "
        f"{DEMO.sizer['signal_scale']:g})",
    )


def _baselines_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--baselines",
        nargs="+",
        metavar="NAME",
        help="run only these roster strategies beside MetaStrategy and BuyAndHold (the "
        "subject and the benchmark, always run), e.g. RollingRidge LightGBM; default: the "
        "whole roster; an unknown name is refused with the list of names",
    )


def _smooth_grid_option(p: argparse.ArgumentParser) -> None:
    from metabt.config.defaults import DEMO

    grid = " ".join(str(n) for n in DEMO.smooth_grid)
    p.add_argument(
        "--smooth-grid",
        type=_bounded("smooth_grid"),
        nargs="+",
        default=list(DEMO.smooth_grid),
        metavar="BARS",
        help="each signal-trading strategy trades the candidate with the best validation "
        f"net Sharpe at validation turnover <= {DEMO.max_val_turnover:g}x a year (default "
        f"{grid}; one value fixes it for every strategy)",
    )


def _support_option(p: argparse.ArgumentParser) -> None:
    from metabt.config.defaults import DEMO

    p.add_argument(
        "--support",
        type=_bounded("support"),
        default=DEMO.support,
        metavar="BARS",
        help=f"realised bars per adaptation and per training support set (default {DEMO.support})",
    )


def _command(
    sub: Any, name: str, help_: str, *, run: bool = True, out: tuple[str, str] | None = None
) -> argparse.ArgumentParser:
    """A sub-command with the shared options (run options first, training options last)."""
    p = sub.add_parser(name, help=help_)
    p.add_argument(
        "--config",
        metavar="TOML",
        help="read settings from a TOML file (flags override it); `metabt config --example` "
        "prints a template",
    )
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE",
        help="let checkpoints and config files import this module and its submodules "
        "(repeatable; also METABT_TRUST=a,b); modules named on the command line "
        "(--model-type, --feature) are trusted for the run",
    )
    if run:
        _run_options(p)
    _support_option(p)
    if out is not None:
        p.add_argument("--out", default=out[0], metavar="DIR", help=out[1])
    return p


def _ledger_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ledger",
        metavar="FILE",
        help="the trial ledger this run's strategies are added to, and whose count of this "
        "test window deflates the Sharpe (default $METABT_LEDGER, else "
        "~/.metabt/ledger.sqlite; 'off' keeps none); `metabt ledger` lists or resets it",
    )


def _experiment_options(p: argparse.ArgumentParser) -> None:
    """Executor and seeds: the options every experiment (compare, walkforward, sweep) shares."""
    _executor_options(p)
    p.add_argument(
        "--seeds",
        type=_seed,
        nargs="+",
        metavar="S",
        help="repeat the whole pipeline (training included) per seed; report mean and "
        "sd (default: --seed)",
    )


def _executor_options(p: argparse.ArgumentParser) -> None:
    """Where independent units run: the executor options of every experiment (pricing too)."""
    p.add_argument(
        "--executor",
        choices=("serial", "process", "ray"),
        default="process",
        help="where independent units (strategy x fold x seed) run: serial (this "
        "process), process (local worker processes) or ray (pip install metabt[ray]) "
        "(default process)",
    )
    p.add_argument(
        "--workers",
        type=_bounded("workers"),
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="parallel workers (default 2, or 1 on a one-CPU machine; at most the CPU count "
        "unless --ray-address names a cluster; each unit runs on one thread, so results are "
        "identical whatever the executor)",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join this Ray cluster (e.g. auto or ray://host:10001); default: start a local Ray",
    )


def add_train_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt train`: meta-train on data strictly before a cut-off."""
    p = _command(sub, "train", "meta-train on data strictly before --train-end", run=False)
    # required, from the flags or the config file (checked after merging them)
    p.add_argument(
        "--data", nargs="+", metavar="FILE", help="OHLCV files (CSV, .csv.gz, Parquet); required"
    )
    p.add_argument(
        "--train-end",
        type=_date,
        metavar="DATE",
        help="cut-off: no price on or after this date is used; required",
    )
    p.add_argument("--out", metavar="CKPT", help="checkpoint to write; required")
    p.add_argument(
        "--bars-per-year",
        type=_bounded("bars_per_year"),
        metavar="N",
        help="bars in a year (default: detected from the dates)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_bounded("checkpoint_every"),
        default=50,
        metavar="N",
        help="save the unfinished run to CKPT.partial every N steps (default 50; also the "
        "validation interval)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in CKPT.partial (e.g. after a crash or kill)",
    )
    # what the P&L objectives (--objective sharpe) train with: the costs and smoothing of
    # the backtests the model is for
    _cost_options(p)
    _smooth_option(p)
    _training_options(p)
    return p


def _portfolio_options(p: argparse.ArgumentParser) -> None:
    """Per-asset or cross-sectional book, and the cross-sectional book's settings."""
    p.add_argument(
        "--portfolio",
        choices=("per-asset", "cross-sectional"),
        default="per-asset",
        help="per-asset: each asset's own signal sets its position (MetaStrategy); "
        "cross-sectional: signals ranked or z-scored across the universe into one book "
        "(CrossSectionalStrategy) (default per-asset)",
    )
    p.add_argument(
        "--cross-section", choices=("rank", "zscore"), default="rank", help="(cross-sectional)"
    )
    p.add_argument(
        "--book",
        choices=("dollar-neutral", "long-only"),
        default="dollar-neutral",
        help="(cross-sectional) book (default dollar-neutral)",
    )
    for flag, default, what in (
        ("--name-cap", 0.25, "largest |weight| of one name, fraction of portfolio value"),
        ("--net-leverage", 1.0, "cap on |sum of weights|"),
        ("--min-trade", 0.0, "smaller weight changes do not trade, fraction of value"),
    ):
        p.add_argument(
            flag,
            type=_bounded(flag[2:].replace("-", "_")),
            default=default,
            metavar="FRAC",
            help=f"(cross-sectional) {what} (default {default:g})",
        )
    p.add_argument(
        "--turnover-budget",
        type=_bounded("turnover_budget"),
        metavar="FRAC",
        help="(cross-sectional) most value traded per rebalance, fraction (default: none)",
    )
    p.add_argument(
        "--rebalance-every",
        type=_bounded("rebalance_every"),
        default=1,
        metavar="BARS",
        help="(cross-sectional) bars between rebalances (default 1)",
    )


def add_backtest_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt backtest`: MetaStrategy beside buy-and-hold and the SMA crossover."""
    p = _command(
        sub,
        "backtest",
        "backtest MetaStrategy beside buy-and-hold and SMA crossover "
        "(no arguments: the main job on the sample data)",
    )
    p.add_argument("--model", metavar="CKPT", help="a trained checkpoint (default: train first)")
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="without --model: train afresh, neither reading nor keeping the model in the "
        "training cache ($METABT_CACHE, else ~/.cache/metabt/trained; 'off' disables it), "
        "which otherwise hands back a model trained on the same data and settings",
    )
    _portfolio_options(p)
    p.add_argument(
        "--report",
        default=str(DEFAULT_REPORT),
        metavar="HTML",
        help=f"tearsheet path (default {DEFAULT_REPORT})",
    )
    p.add_argument(
        "--capacity",
        type=_bounded("capacity"),
        nargs="+",
        metavar="CASH",
        help="also backtest the strategy at each of these capitals (e.g. 1e5 1e6 1e7 1e8) and "
        "write its capacity curve, net Sharpe against capital, beside the tearsheet "
        "(<report>_capacity.csv and .png); falls with capital only with --impact",
    )
    _ledger_option(p)
    _training_options(p)
    return p


def add_paper_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt paper`: paper-trade a checkpoint on bars appended to the data files."""
    p = _command(
        sub,
        "paper",
        "paper-trade a trained checkpoint on bars as a downloader appends them to --data "
        "(state kept in --state, resumed on restart)",
    )
    p.add_argument("--model", metavar="CKPT", help="the trained checkpoint to trade; required")
    p.add_argument(
        "--state",
        metavar="DIR",
        help="state folder: settings, the strategy's state after every bar, the order log, "
        "the tearsheet and chart; a new folder, or one this command wrote (resumed); required",
    )
    p.add_argument(
        "--poll",
        type=_bounded("poll"),
        default=5.0,
        metavar="SECONDS",
        help="seconds between looks at the files when no new bar is waiting (default 5)",
    )
    p.add_argument(
        "--until",
        type=_date,
        metavar="DATE",
        help="stop once the last bar on or before DATE is processed, and print the same "
        "summary as `metabt backtest` over the same bars (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--stagger-timeout",
        type=_bounded("stagger_timeout"),
        metavar="SECONDS",
        help="process a bar time this long after the first file reached it, without the files "
        "that lag (their late bar is then refused) (default: wait for every file)",
    )
    p.add_argument(
        "--report-every",
        type=_bounded("report_every"),
        default=20,
        metavar="BARS",
        help="bars between refreshes of the tearsheet and chart in --state (0: at the end "
        "only; default 20)",
    )
    p.add_argument(
        "--accept-broker",
        action="store_true",
        help="on restart, take the broker's cash and positions when they differ from the "
        "saved state, instead of stopping",
    )
    _portfolio_options(p)
    _training_options(p)
    return p


def add_compare_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt compare`: MetaStrategy beside every baseline."""
    p = _command(
        sub,
        "compare",
        "MetaStrategy beside every baseline (trained ERM, rolling ridge, RLS, ...) on the same "
        "data, period, costs and sizer, with block-bootstrap intervals, deflated Sharpe and a "
        "verdict",
        out=(
            str(DEFAULT_COMPARE),
            "folder for compare.csv, compare.md, index.html and tearsheets/ "
            f"(default {DEFAULT_COMPARE})",
        ),
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out even when it holds files metabt did not write (never the working "
        "directory or its parents)",
    )
    _ledger_option(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the units (trainings, backtests) a killed run of the same command and "
        "settings finished, kept beside --out in .<out>.units; without it a run starts afresh",
    )
    _training_options(p)
    _experiment_options(p)
    _smooth_grid_option(p)
    _baselines_option(p)
    return p


def add_walkforward_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt walkforward`: folds, each trained strictly before it."""
    p = _command(
        sub,
        "walkforward",
        "yearly folds, each meta-trained strictly before it; stitched out-of-sample report",
        out=(
            str(DEFAULT_WALKFORWARD),
            f"folder for folds.csv and walkforward.html (default {DEFAULT_WALKFORWARD})",
        ),
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out even when it holds files metabt did not write (never the working "
        "directory or its parents)",
    )
    p.add_argument(
        "--fold-years",
        type=_bounded("fold_years"),
        default=1,
        metavar="N",
        help="calendar years per test fold (default 1)",
    )
    p.add_argument(
        "--train-years",
        type=_bounded("train_years"),
        metavar="N",
        help="rolling training window in years (default: expanding, all history)",
    )
    p.add_argument(
        "--cv",
        choices=("walkforward", "cpcv"),
        default="walkforward",
        help="walkforward (yearly folds, each trained strictly before it; the default) or "
        "cpcv (combinatorial purged cross-validation: the test window in --cv-groups "
        "groups, each split trained on every bar outside its --cv-test-groups test groups, "
        "after them too, purged and embargoed; results over the stitched paths)",
    )
    p.add_argument(
        "--cv-groups",
        type=_bounded("cv_groups"),
        default=6,
        metavar="N",
        help="cpcv: groups of the test window (default 6)",
    )
    p.add_argument(
        "--cv-test-groups",
        type=_bounded("cv_test_groups"),
        default=2,
        metavar="K",
        help="cpcv: groups tested per split, fewer than --cv-groups (default 2)",
    )
    _ledger_option(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the units (trainings, backtests) a killed run of the same command and "
        "settings finished, kept beside --out in .<out>.units; without it a run starts afresh",
    )
    _training_options(p)
    _experiment_options(p)
    _smooth_grid_option(p)
    _baselines_option(p)
    return p


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt sweep`: hyper-parameter search on validation folds."""
    p = _command(
        sub,
        "sweep",
        "hyperparameter search (grid or Optuna TPE), each trial scored on walk-forward "
        "validation folds strictly before a held-out test period no trial sees; resumable",
        out=(
            str(DEFAULT_SWEEP),
            f"folder for sweep.db, trials.csv, best.toml (default {DEFAULT_SWEEP})",
        ),
    )
    p.add_argument(
        "--space",
        metavar="TOML",
        help="the search space: a TOML file of setting = [values] (grid) or setting = "
        "{low = .., high = .., log = true} (tpe); or the `space` table of --config",
    )
    p.add_argument("--sampler", choices=("tpe", "grid"), default="tpe", help="search (default tpe)")
    p.add_argument(
        "--trials",
        type=_positive_int,
        metavar="N",
        help="trials in all, resumed ones included (default: the grid's size; 20 for tpe)",
    )
    p.add_argument(
        "--val-folds",
        type=_positive_int,
        default=2,
        metavar="N",
        help="one-year validation folds before --start (default 2)",
    )
    p.add_argument(
        "--cv",
        choices=("walkforward", "cpcv"),
        default="walkforward",
        help="how a trial is scored on the --val-folds years: walkforward (train before each "
        "fold, backtest it) or cpcv (combinatorial purged cross-validation: 6 groups, 2 "
        "tested per split, purged and embargoed; default walkforward)",
    )
    _training_options(p)
    _experiment_options(p)
    return p


def add_pricing_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt pricing`: factor-model loadings on Ken French's portfolios."""
    p = sub.add_parser(
        "pricing",
        help="fast adaptation of factor-model loadings on Ken French's monthly portfolios, "
        "against rolling OLS, expanding OLS and CAPM, out of sample",
    )
    p.add_argument("--config", metavar="TOML", help="read settings from a TOML file")
    p.add_argument(
        "--ks",
        type=_bounded("ks"),
        nargs="+",
        default=[6, 12, 24, 36],
        metavar="MONTHS",
        help="months of history each model adapts or fits on (default 6 12 24 36)",
    )
    p.add_argument(
        "--train-end",
        default="1989-12",
        metavar="YYYY-MM",
        help="last month of meta-training; the test starts the month after (default 1989-12)",
    )
    p.add_argument("--test-end", metavar="YYYY-MM", help="last test month (default: all)")
    p.add_argument(
        "--algorithm", default="maml", help="meta-learning algorithm of the loadings (default maml)"
    )
    p.add_argument(
        "--steps", type=_bounded("steps"), default=1500, help="outer steps (default 1500)"
    )
    p.add_argument(
        "--seeds", type=_seed, nargs="+", default=[0], metavar="S", help="seeds (default 0)"
    )
    p.add_argument("--portfolios", nargs="+", metavar="NAME", help="portfolios (default: all 30)")
    p.add_argument(
        "--nonlinear", action="store_true", help="a small MLP instead of the linear model"
    )
    p.add_argument(
        "--out",
        default=str(DEFAULT_PRICING),
        metavar="DIR",
        help=f"folder for pricing.csv/.md and the RMSE-vs-k plot (default {DEFAULT_PRICING})",
    )
    _executor_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=_bounded("threads"),
        default=_default_threads(),
        metavar="N",
        help="threads",
    )
    return p


def add_config_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt config`: the documented config-file template."""
    p = sub.add_parser("config", help="print a documented config-file template")
    p.add_argument(
        "--example", action="store_true", help="print every setting with its default, as TOML"
    )
    return p


def add_ledger_parser(sub: Any) -> argparse.ArgumentParser:
    """`metabt ledger`: the trial ledger's windows, or its reset."""
    p = sub.add_parser(
        "ledger", help="list the test windows the trial ledger counts, or reset it (--reset)"
    )
    _ledger_option(p)
    p.add_argument(
        "--reset",
        action="store_true",
        help="delete every evaluation the ledger holds (the only way it shrinks)",
    )
    return p


def _build_parser() -> argparse.ArgumentParser:
    """The ``metabt`` parser: one sub-parser per command (``add_<command>_parser``)."""
    from metabt._version import __version__

    parser = _Parser(
        prog="metabt",
        description="Meta-learned (MAML) adaptive strategies in Backtrader, "
        "with quantstats reports.",
    )
    parser.add_argument("--version", action="version", version=f"metabt {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        metavar="{train,backtest,paper,compare,walkforward,sweep,pricing,config,ledger}",
        parser_class=_Parser,
    )
    commands = {
        "train": add_train_parser(sub),
        "backtest": add_backtest_parser(sub),
        "paper": add_paper_parser(sub),
        "compare": add_compare_parser(sub),
        "walkforward": add_walkforward_parser(sub),
        "sweep": add_sweep_parser(sub),
        "pricing": add_pricing_parser(sub),
    }
    add_config_parser(sub)
    add_ledger_parser(sub)
    parser.set_defaults(subparsers=commands)
    return parser
