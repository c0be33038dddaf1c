"""The ``metabt`` command: train a meta-learner, backtest and compare it with its baselines.

Exit codes: 0 success; 2 bad input or usage (one line on stderr, no traceback);
1 unexpected failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from metabt.errors import ConfigError, MetabtError

__all__ = ["main"]

DEFAULT_REPORT = Path("reports") / "metabt_backtest.html"
DEFAULT_COMPARE = Path("reports") / "compare"
DEFAULT_WALKFORWARD = Path("reports") / "walkforward"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _date(value: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date; use YYYY-MM-DD") from exc


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


def _positive(value: str) -> float:
    number = _non_negative(value)
    if number == 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def _build_parser() -> argparse.ArgumentParser:
    from metabt import __version__
    from metabt.meta import ALGORITHMS
    from strategies.meta import DEMO

    parser = _Parser(
        prog="metabt",
        description="Meta-learned (MAML) adaptive strategies in Backtrader, "
        "with quantstats reports.",
    )
    parser.add_argument("--version", action="version", version=f"metabt {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="{train,backtest,compare,walkforward}", parser_class=_Parser
    )

    def training_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--algorithm",
            choices=ALGORITHMS,
            default=DEMO.algorithm,
            help=f"meta-learning algorithm (default {DEMO.algorithm})",
        )
        p.add_argument(
            "--model-type",
            choices=("mlp", "gru"),
            default=DEMO.model_type,
            help=f"model (default {DEMO.model_type})",
        )
        p.add_argument(
            "--steps",
            type=_positive_int,
            default=DEMO.meta_steps,
            help=f"meta-training outer steps (default {DEMO.meta_steps})",
        )
        p.add_argument(
            "--inner-steps",
            type=_positive_int,
            default=DEMO.inner_steps,
            help=f"inner-loop steps per adaptation (default {DEMO.inner_steps})",
        )
        p.add_argument("--seed", type=int, default=DEMO.seed, help="seed (default 0)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    train = sub.add_parser("train", help="meta-train on data strictly before --train-end")
    train.add_argument("--data", nargs="+", required=True, metavar="FILE", help="OHLCV CSV files")
    train.add_argument(
        "--train-end",
        type=_date,
        required=True,
        metavar="DATE",
        help="cut-off: no price on or after this date is used",
    )
    train.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write")
    training_options(train)

    def run_options(p: argparse.ArgumentParser) -> None:
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
            default=pd.Timestamp(DEMO.start),
            metavar="DATE",
            help="first backtest date; training uses data strictly before it "
            f"(default {DEMO.start})",
        )
        p.add_argument(
            "--end", type=_date, metavar="DATE", help="last backtest date (default: all)"
        )
        p.add_argument("--cash", type=_positive, default=100_000.0, help="starting cash")
        p.add_argument(
            "--commission",
            type=_non_negative,
            default=5.0,
            metavar="BPS",
            help="commission, basis points of traded value (default 5)",
        )
        p.add_argument(
            "--slippage",
            type=_non_negative,
            default=2.0,
            metavar="BPS",
            help="slippage, basis points of price (default 2)",
        )
        p.add_argument(
            "--adapt-every",
            type=_positive_int,
            default=DEMO.adapt_every,
            metavar="BARS",
            help=f"bars between adaptations (default {DEMO.adapt_every})",
        )
        p.add_argument(
            "--support",
            type=_positive_int,
            default=DEMO.support,
            metavar="BARS",
            help=f"realised bars per adaptation (default {DEMO.support})",
        )

    bt_ = sub.add_parser(
        "backtest",
        help="backtest MetaStrategy beside buy-and-hold and SMA crossover "
        "(no arguments: the main job on the sample data)",
    )
    run_options(bt_)
    bt_.add_argument("--model", metavar="CKPT", help="a trained checkpoint (default: train first)")
    bt_.add_argument(
        "--report",
        default=str(DEFAULT_REPORT),
        metavar="HTML",
        help=f"tearsheet path (default {DEFAULT_REPORT})",
    )
    training_options(bt_)

    cmp_ = sub.add_parser(
        "compare",
        help="MetaStrategy beside StaticModel, ErmAdapt, ScratchAdapt, buy-and-hold and SMA "
        "crossover on the same data, period, costs and sizer",
    )
    run_options(cmp_)
    cmp_.add_argument(
        "--out",
        default=str(DEFAULT_COMPARE),
        metavar="DIR",
        help="folder for compare.csv, compare.md, index.html and tearsheets/ "
        f"(default {DEFAULT_COMPARE})",
    )
    training_options(cmp_)

    wf_ = sub.add_parser(
        "walkforward",
        help="yearly folds, each meta-trained strictly before it; stitched out-of-sample report",
    )
    run_options(wf_)
    wf_.add_argument(
        "--out",
        default=str(DEFAULT_WALKFORWARD),
        metavar="DIR",
        help=f"folder for folds.csv and walkforward.html (default {DEFAULT_WALKFORWARD})",
    )
    wf_.add_argument(
        "--fold-years",
        type=_positive_int,
        default=1,
        metavar="N",
        help="calendar years per test fold (default 1)",
    )
    wf_.add_argument(
        "--train-years",
        type=_positive_int,
        metavar="N",
        help="rolling training window in years (default: expanding, all history)",
    )
    training_options(wf_)
    return parser


def _load_frames(files: Sequence[str] | None) -> dict[str, pd.DataFrame]:
    from metabt.data import load_many, sample_files

    return load_many(list(files) if files else sample_files())


def _train(
    frames: dict[str, pd.DataFrame],
    args: argparse.Namespace,
    end: pd.Timestamp,
    checkpoint: str | None = None,
    algorithm: str | None = None,
) -> Any:
    from strategies.meta import DEMO, demo_learner

    cfg = DEMO.with_(
        algorithm=algorithm or args.algorithm,
        model_type=args.model_type,
        meta_steps=args.steps,
        inner_steps=args.inner_steps,
        seed=args.seed,
    )
    first = min(f.index[0] for f in frames.values())
    if first >= end:
        raise ConfigError(
            f"no training data before {end.date()} (data starts {first.date()}); "
            "pick a later cut-off date or give earlier --train-data"
        )
    tic = time.perf_counter()
    run = demo_learner(frames, cfg, end=end, checkpoint=checkpoint, progress=not args.quiet)
    learner, fit = run.learner, run.fit
    assert learner.train_range is not None
    print(
        f"meta-trained {learner.algorithm} ({args.model_type}, engine {learner.engine}) on "
        f"{', '.join(frames)} from {learner.train_range[0]} to {learner.train_range[1]}: "
        f"{fit.steps} steps in {time.perf_counter() - tic:.1f}s; validation query MSE after "
        f"adaptation {fit.best_val_loss:.4f} (step {fit.best_step}) vs {run.val_zero_mse:.4f} "
        "for always predicting zero"
    )
    if fit.steps > 0 and fit.best_step == 0:
        print(
            f"note: no validation check improved on the initial θ, so {learner.algorithm}'s "
            "kept θ is its initialisation (training did not generalise to the validation "
            "tasks); with the same seed it equals the scratch baseline's"
        )
    return learner


def _cmd_train(args: argparse.Namespace) -> int:
    frames = _load_frames(args.data)
    learner = _train(frames, args, args.train_end)
    path = learner.save(args.out)
    print(f"checkpoint written to {path}")
    return 0


def _prepare(
    args: argparse.Namespace,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, Any]]:
    """Frames to trade, frames to train on, and the run settings shared by every strategy."""
    from metabt.backtest import Costs
    from strategies.meta import DEMO

    costs = Costs(commission_bps=args.commission, slippage_bps=args.slippage)
    frames = _load_frames(args.data)
    train_frames = _load_frames(args.train_data) if args.train_data else frames
    if args.end is not None and args.end < args.start:
        raise ConfigError(
            f"--end {args.end.date()} is before --start {args.start.date()}; swap them"
        )
    common: dict[str, Any] = {
        "start": args.start,
        "end": args.end,
        "cash": args.cash,
        "costs": costs,
        "warmup_bars": DEMO.warmup_bars,
        "sizer_kwargs": dict(DEMO.sizer),
    }
    return frames, train_frames, common


def _check_no_leak(learner: Any, start: pd.Timestamp) -> None:
    if learner.train_range is not None and pd.Timestamp(learner.train_range[1]) >= start:
        raise ConfigError(
            f"the model was trained on data up to {learner.train_range[1]}, on or after the "
            f"backtest start {start.date()}; that would leak the test period into training. "
            "Use a later --start or a model trained before it"
        )


def _header(result: Any, frames: dict[str, pd.DataFrame], common: dict[str, Any]) -> str:
    period = result.returns.index
    return (
        f"backtest {period[0].date()} to {period[-1].date()} ({len(period)} bars) on "
        f"{', '.join(frames)}; {common['costs'].describe()}; cash {common['cash']:,.0f}"
    )


def _warn_rejections(results: Sequence[Any]) -> None:
    for r in results:
        if r.rejected_orders:
            print(
                f"warning: {r.name}: the broker rejected {len(r.rejected_orders)} orders "
                "(insufficient cash at the next open)"
            )


def _cmd_backtest(args: argparse.Namespace) -> int:
    from metabt.backtest import run_backtest
    from metabt.meta import MetaLearner
    from metabt.report import format_table, metrics_table, write_text
    from metabt.strategy import MetaStrategy
    from strategies.baselines import BuyAndHold, SmaCross

    frames, train_frames, common = _prepare(args)
    start: pd.Timestamp = args.start
    learner = MetaLearner.load(args.model) if args.model else _train(train_frames, args, start)
    _check_no_leak(learner, start)
    tic = time.perf_counter()
    meta = run_backtest(
        MetaStrategy,
        frames,
        name="MetaStrategy",
        strategy_kwargs={
            "learner": learner,
            "adapt_every": args.adapt_every,
            "support": args.support,
            "seed": args.seed,
        },
        **common,
    )
    elapsed = time.perf_counter() - tic
    results = [
        meta,
        run_backtest(BuyAndHold, frames, name="BuyAndHold", **common),
        run_backtest(SmaCross, frames, name="SmaCross", **common),
    ]
    log = meta.strategy.adaptation_log()
    print(f"\n{_header(meta, frames, common)}")
    print(
        f"MetaStrategy: {len(log)} adaptations (every {args.adapt_every} bars on the last "
        f"{args.support} realised bars, horizon {learner.horizon}); mean support MSE "
        f"{log['loss_before'].mean():.4f} before -> {log['loss_after'].mean():.4f} after; "
        f"backtest took {elapsed:.1f}s"
    )
    _warn_rejections(results)
    print()
    print(format_table(metrics_table({r.name: r.metrics for r in results})))
    if len(frames) > 1:
        print("\nMetaStrategy per asset (contribution: P&L before costs / starting cash)")
        print(format_table(meta.assets))
    report = meta.tearsheet(
        Path(args.report),
        title=f"MetaStrategy ({learner.algorithm}) vs buy-and-hold {next(iter(frames))}",
    )
    diagnostics = meta.diagnostics(report.with_name(f"{report.stem}_diagnostics.html"))
    assets = write_text(
        report.with_name(f"{report.stem}_assets.csv"), meta.assets.reset_index().to_csv(index=False)
    )
    print(f"\ntearsheet written to {report.resolve()}")
    print(f"per-asset results written to {assets.resolve()}")
    print(f"adaptation diagnostics written to {diagnostics.resolve()}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from metabt.backtest import run_backtest
    from metabt.report import (
        format_table,
        metrics_table,
        probabilistic_sharpe,
        sharpe_difference_ci,
        write_comparison,
    )
    from metabt.strategy import MetaStrategy
    from strategies.baselines import BuyAndHold, ErmAdapt, ScratchAdapt, SmaCross, StaticModel

    frames, train_frames, common = _prepare(args)
    start: pd.Timestamp = args.start
    learners = {
        algorithm: _train(train_frames, args, start, algorithm=algorithm)
        for algorithm in (args.algorithm, "erm", "scratch")
    }
    for learner in learners.values():
        _check_no_leak(learner, start)
    schedule = {"adapt_every": args.adapt_every, "support": args.support, "seed": args.seed}
    runs: list[tuple[str, Any, dict[str, Any]]] = [
        ("MetaStrategy", MetaStrategy, {"learner": learners[args.algorithm], **schedule}),
        (
            "MetaDrift",  # the same, plus the market observer: adapt when the error jumps
            MetaStrategy,
            {"learner": learners[args.algorithm], **schedule, "drift_threshold": 2.0},
        ),
        ("StaticModel", StaticModel, {"learner": learners[args.algorithm], **schedule}),
        ("ErmAdapt", ErmAdapt, {"learner": learners["erm"], **schedule}),
        ("ScratchAdapt", ScratchAdapt, {"learner": learners["scratch"], **schedule}),
        ("BuyAndHold", BuyAndHold, {}),
        ("SmaCross", SmaCross, {}),
    ]
    results = [
        run_backtest(cls, frames, name=name, strategy_kwargs=kwargs, **common)
        for name, cls, kwargs in runs
    ]
    out = Path(args.out)
    tearsheets = {
        r.name: r.tearsheet(
            out / "tearsheets" / f"{r.name}.html",
            title=f"{r.name} vs buy-and-hold {next(iter(frames))}",
        )
        for r in results
    }
    erm = next(r for r in results if r.name == "ErmAdapt")
    for r in results:
        r.metrics["psr"] = probabilistic_sharpe(r.returns)
        diff, low, high = sharpe_difference_ci(r.returns, erm.returns, seed=args.seed)
        r.metrics.update({"sharpe_vs_erm": diff, "sharpe_vs_erm_lo": low, "sharpe_vs_erm_hi": high})
    table = metrics_table({r.name: r.metrics for r in results})
    train_range = learners[args.algorithm].train_range
    notes = [
        _header(results[0], frames, common),
        f"meta-training ({args.algorithm}, erm, scratch baselines) on {', '.join(train_frames)} "
        f"from {train_range[0]} to {train_range[1]}, strictly before {start.date()}",
        f"adaptation every {args.adapt_every} bars on the last {args.support} realised bars; "
        "turnover is filled notional per year over average equity; ic/rank_ic: signal vs "
        "forward return; psr: probability that the true Sharpe > 0; sharpe_vs_erm: Sharpe "
        "minus ErmAdapt's, with a 95% paired bootstrap interval (lo, hi): if it contains 0, "
        "the difference could be noise; MetaDrift: MetaStrategy that also adapts when its "
        "realised error exceeds twice its usual level",
    ]
    assets = pd.concat({r.name: r.assets for r in results}, names=["strategy", "asset"])
    notes.append(
        "hit_rate: share of (asset, bar) pairs with a position whose P&L was positive "
        "(win_rate: share of positive portfolio bars); per asset (assets.csv): exposure = "
        "mean |position| / equity, contribution = P&L before costs as a fraction of "
        "starting cash"
    )
    paths = write_comparison(
        table, tearsheets, out, title="metabt compare", notes=notes, assets=assets
    )
    diagnostics = results[0].diagnostics(out / "MetaStrategy_diagnostics.html")
    print()
    for note in notes:
        print(note)
    _warn_rejections(results)
    print()
    print(format_table(table))
    print(f"\ntable: {paths['csv'].resolve()} and {paths['markdown'].resolve()}")
    print(f"per asset: {paths['assets_csv'].resolve()} and {paths['assets_markdown'].resolve()}")
    print(f"index of tearsheets: {paths['html'].resolve()}")
    print(f"MetaStrategy adaptation diagnostics: {diagnostics.resolve()}")
    return 0


def _cmd_walkforward(args: argparse.Namespace) -> int:
    from metabt.backtest import run_backtest, walkforward_folds
    from metabt.report import compute_metrics, write_diagnostics, write_tearsheet, write_text
    from metabt.strategy import MetaStrategy

    frames, train_frames, common = _prepare(args)
    end = args.end if args.end is not None else max(f.index[-1] for f in frames.values())
    folds = walkforward_folds(args.start, end, years=args.fold_years)
    rows, returns, benchmarks, logs, assets = [], [], [], [], {}
    pairs: dict[str, list[pd.DataFrame]] = {}
    for k, (test_start, test_end) in enumerate(folds, 1):
        window = train_frames
        if args.train_years is not None:  # rolling: only the last train_years before the fold
            first = test_start - pd.DateOffset(years=args.train_years)
            window = {name: f.loc[first:] for name, f in train_frames.items()}
        print(f"fold {k}/{len(folds)}: test {test_start.date()} to {test_end.date()}")
        learner = _train(window, args, test_start)
        _check_no_leak(learner, test_start)
        result = run_backtest(
            MetaStrategy,
            frames,
            name=f"fold {k}",
            strategy_kwargs={
                "learner": learner,
                "adapt_every": args.adapt_every,
                "support": args.support,
                "seed": args.seed,
            },
            **{**common, "start": test_start, "end": test_end},
        )
        m = result.metrics
        rows.append(
            {
                "fold": k,
                "train_start": learner.train_range[0],
                "train_end": learner.train_range[1],
                "test_start": str(result.returns.index[0].date()),
                "test_end": str(result.returns.index[-1].date()),
                "bars": len(result.returns),
                "adaptations": len(result.strategy.adaptations),
                **{
                    key: m[key]
                    for key in (
                        "sharpe",
                        "cagr",
                        "max_drawdown",
                        "total_return",
                        "hit_rate",
                        "turnover",
                        "ic",
                        "rank_ic",
                    )
                },
            }
        )
        returns.append(result.returns)
        benchmarks.append(result.benchmark)
        logs.append(result.strategy.adaptation_log().assign(fold=k))
        assets[k] = result.assets
        for name, pair in (result.signals or {}).items():
            pairs.setdefault(name, []).append(pair)
    stitched = pd.concat(returns).rename("returns")
    benchmark = pd.concat(benchmarks).rename(next(iter(frames)))
    if not stitched.index.is_monotonic_increasing or stitched.index.has_duplicates:
        raise RuntimeError("walk-forward folds overlap; this is a bug in walkforward_folds")
    table = pd.DataFrame(rows).set_index("fold")
    out = Path(args.out)
    csv = write_text(out / "folds.csv", table.reset_index().to_csv(index=False))
    report = write_tearsheet(
        stitched,
        benchmark,
        out / "walkforward.html",
        title=f"MetaStrategy walk-forward, {len(folds)} folds",
    )
    asset_csv = write_text(
        out / "assets.csv",
        pd.concat(assets, names=["fold", "asset"]).reset_index().to_csv(index=False),
    )
    diagnostics = write_diagnostics(
        stitched,
        benchmark,
        pd.concat(logs, ignore_index=True),
        {name: pd.concat(parts) for name, parts in pairs.items()},
        out / "walkforward_diagnostics.html",
        title=f"MetaStrategy walk-forward, {len(folds)} folds: adaptation diagnostics",
    )
    overall = compute_metrics(stitched)
    print()
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(
        f"\nstitched out-of-sample {stitched.index[0].date()} to {stitched.index[-1].date()} "
        f"({len(stitched)} bars, {common['costs'].describe()}): sharpe {overall['sharpe']:.2f}, "
        f"cagr {overall['cagr']:.2%}, max drawdown {overall['max_drawdown']:.2%}"
    )
    print(f"fold table: {csv.resolve()}\ntearsheet: {report.resolve()}")
    print(f"per fold and asset: {asset_csv.resolve()}\ndiagnostics: {diagnostics.resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metabt`` console script.

    Args:
        argv: arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit code: 0 success, 2 bad input, 1 unexpected failure.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if args.command is None:
        parser.print_help()
        return 2
    commands = {
        "train": _cmd_train,
        "backtest": _cmd_backtest,
        "compare": _cmd_compare,
        "walkforward": _cmd_walkforward,
    }
    try:
        return commands[args.command](args)
    except MetabtError as exc:
        print(f"metabt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metabt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
