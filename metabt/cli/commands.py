"""The work of each ``metabt`` sub-command: load, run, print, write the record.

``metabt.cli.main`` parses the command line (and ``--config``) and calls one of the
``cmd_*`` functions here with the resolved arguments. Heavy packages (torch, backtrader)
are imported inside the functions, so ``metabt --help`` stays light.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from metabt.config.defaults import RunConfig
    from metabt.costs import Costs
    from metabt.experiments.cache import TrainingCache
    from metabt.experiments.executors import ExecutorSpec
    from metabt.experiments.record import RunRecord
    from metabt.experiments.resume import UnitStore
    from metabt.experiments.settings import RunSettings

__all__ = ["COMMANDS", "config_of", "costs_of", "ledger_path", "run"]


def _say(text: object = "", *, stderr: bool = False) -> None:
    """Print what a command reports: every line without control or bidi characters.

    The one place the commands print; names in the text (data files, strategies, features)
    cannot move the cursor, colour the terminal or reorder a line
    (:func:`metabt.evaluate.sanitize.terminal`).

    Args:
        text: the line(s) to print. Default "" (an empty line).
        stderr: print to stderr, flushed (progress), instead of stdout.
    """
    import sys

    from metabt.evaluate.sanitize import terminal

    print(terminal(text), file=sys.stderr if stderr else sys.stdout, flush=stderr)


def _check_output(path: Path, flag: str, *, kind: str) -> None:
    from metabt._util import check_output_path

    check_output_path(path, flag, kind=kind)


def _load_frames(
    files: Sequence[str] | None, benchmark: str | None = None
) -> dict[str, pd.DataFrame]:
    """Validated frames of the files (default: the sample data); with ``benchmark``, each
    gets the benchmark's close as its ``benchmark`` column (as of each bar, never later)."""
    from metabt.data.ohlcv import load_many, sample_files

    frames = load_many(list(files) if files else sample_files())
    if benchmark is None:
        return frames
    from metabt.data.ohlcv import load_ohlcv
    from metabt.features.factors import with_benchmark

    bench = load_ohlcv(benchmark)
    return {name: with_benchmark(frame, bench) for name, frame in frames.items()}


def costs_of(args: argparse.Namespace) -> Costs:
    """The run's costs: the declared asset class's (``--asset-class``; none: US equities),
    with the cost flags given over them.

    Args:
        args: the parsed options of a command with cost options.

    Returns:
        The :class:`~metabt.costs.Costs`.
    """
    from metabt.costs import Costs

    return Costs.for_asset_class(
        args.asset_class,
        commission_bps=args.commission,
        spread_bps=args.spread,
        slippage_bps=args.slippage,
        borrow_bps=args.borrow,
        impact=args.impact,
        participation=args.participation,
    )


def config_of(args: argparse.Namespace) -> RunConfig:
    """The run configuration: the demo's, with the flags (and config file) given.

    Args:
        args: the parsed options of a command.

    Returns:
        The :class:`~metabt.config.defaults.RunConfig`.
    """
    import dataclasses

    from metabt.config.defaults import DEMO, SIZER_SETTINGS

    spec = dataclasses.replace(DEMO.spec, horizon=args.horizon)
    if args.features:
        spec = spec.with_features(*args.features)
    sizer = dict(DEMO.sizer)
    if getattr(args, "bars_per_year", None) is not None:
        sizer["bars_per_year"] = args.bars_per_year
    for name in SIZER_SETTINGS:
        if getattr(args, name, None) is not None:
            sizer[name] = getattr(args, name)
    if getattr(args, "fractional", False):
        sizer["fractional"] = True
    changes: dict[str, Any] = {
        "algorithm": args.algorithm,
        "model_type": args.model_type,
        "model_kwargs": dict(args.model_kwargs),
        "hidden": tuple(args.hidden),
        "spec": spec,
        "meta_steps": args.steps,
        "inner_steps": args.inner_steps,
        "inner_lr": args.inner_lr,
        "meta_lr": args.meta_lr,
        "batch_size": args.batch_size,
        "query": args.query,
        "val_years": args.val_years,
        "support": args.support,
        "sizer": sizer,
        "seed": args.seed,
        "objective": args.objective,
        "partial_adjustment": bool(getattr(args, "partial_adjustment", False)),
        "inner_objective": getattr(args, "inner_objective", DEMO.inner_objective),
    }
    if hasattr(args, "smooth_grid"):
        changes["smooth_grid"] = tuple(args.smooth_grid)
    if hasattr(args, "no_trade_bps"):
        changes["no_trade_bps"] = float(args.no_trade_bps)
    if getattr(args, "baselines", None) is not None:
        changes["baselines"] = tuple(args.baselines)
    if getattr(args, "smooth", None) is not None:  # given: every strategy trades it
        changes.update(smooth=args.smooth, smooth_grid=())
    if hasattr(args, "adapt_every"):
        changes.update(adapt_every=args.adapt_every, online_meta_lr=args.online_meta_lr)
    if getattr(args, "portfolio", "per-asset") == "cross-sectional":
        changes["portfolio"] = {
            "cross_section": args.cross_section,
            "book": args.book.replace("-", "_"),
            "name_cap": args.name_cap,
            "net_leverage": args.net_leverage,
            "min_trade": args.min_trade,
            "turnover_budget": args.turnover_budget,
            "rebalance_every": args.rebalance_every,
        }
    cfg = DEMO.with_(**changes)
    if hasattr(args, "commission"):
        # the costs a P&L objective trains with (the run's), and the asset class's units
        # and calendar
        cfg = costs_of(args).configure(cfg)
    return cfg


def _settings(args: argparse.Namespace) -> RunSettings:
    """Frames to trade and to train on, period, cash, costs and configuration.

    The data files are read and validated first, before torch and backtrader are
    imported, so a bad file is reported at once.
    """
    frames = _load_frames(args.data, args.benchmark)
    train_frames = _load_frames(args.train_data, args.benchmark) if args.train_data else frames
    from metabt.experiments.settings import RunSettings

    costs = costs_of(args)
    return RunSettings(
        frames=frames,
        train_frames=train_frames,
        start=args.start,
        end=args.end,
        cash=args.cash,
        costs=costs,
        cfg=config_of(args),
        ledger=None if not hasattr(args, "ledger") else _ledger_str(args.ledger),
    )


def _ledger_str(flag: str | None) -> str | None:
    path = ledger_path(flag)
    return None if path is None else str(path)


def ledger_path(flag: str | None) -> Path | None:
    """The trial ledger file: ``--ledger`` (``off``: none), else
    :func:`metabt.evaluate.ledger.default_path` (``$METABT_LEDGER`` or the home folder's)."""
    from metabt.evaluate.ledger import default_path

    if flag is None:
        return default_path()
    return None if flag.strip().lower() == "off" else Path(flag).expanduser()


def _ledger_record(record: RunRecord, verdicts: Sequence[Any], roster: int) -> None:
    """How many trials the run's verdicts deflated over, into ``run.json``."""
    record.config["trials"] = {
        "roster": roster,
        "ledger_evaluations": [v.evaluations for v in verdicts],
        "ledger_runs": [v.ledger_runs for v in verdicts],
        "effective_trials": [v.effective_trials for v in verdicts],
    }


def _unit_store(args: argparse.Namespace) -> UnitStore:
    """Where the run keeps its finished units (``.<out>.units`` beside ``--out``), read back
    with ``--resume``; keyed also by metabt's version and sources, torch's version and the
    thread count."""
    from metabt.experiments.resume import UnitStore

    out = Path(args.out).resolve()
    context = _code_context(args)
    return UnitStore(out.parent / f".{out.name}.units", resume=args.resume, context=context)


def _training_cache(args: argparse.Namespace) -> TrainingCache | None:
    """The main job's training cache (:mod:`metabt.experiments.cache`), keyed also by
    metabt's version and sources, torch's version and the thread count; None when
    ``$METABT_CACHE`` is off."""
    from metabt.experiments.cache import TrainingCache, cache_folder

    folder = cache_folder()
    if folder is None:
        return None
    return TrainingCache(folder, context=_code_context(args))


def _code_context(args: argparse.Namespace) -> dict[str, Any]:
    """What a stored unit or trained learner depends on beyond its settings and data:
    metabt's version and the digest of its sources (a unit pickles metabt's objects, so code
    that changed under the same version number must not read them back), torch's version
    and the thread count."""
    import torch

    from metabt._version import __version__, source_digest

    return {
        "metabt": __version__,
        "sources": source_digest(),
        "torch": torch.__version__,
        "threads": args.threads,
    }


def _resumed(store: UnitStore) -> None:
    """The outputs are written: say how many units a resume reused; drop the units."""
    if store.loaded:
        _say(f"resumed: {store.loaded} finished unit(s) read back from {store.folder}")
    store.remove()


def _executor(args: argparse.Namespace) -> ExecutorSpec:
    """Where the units run: ``--executor``, ``--workers``, ``--ray-address``."""
    from metabt.experiments.executors import ExecutorSpec

    return ExecutorSpec(args.executor, args.workers, args.ray_address)


def _record(args: argparse.Namespace, cfg: RunConfig | None = None) -> RunRecord:
    """The run's record, started now: every option as resolved, and the learner config."""
    from metabt.experiments.record import RunRecord

    options = {k: v for k, v in vars(args).items() if k != "subparsers"}
    if cfg is not None:
        options["resolved"] = cfg.describe()
        # the model actually built: "cnp", "protonet" and "cavia" replace the default "mlp"
        options["model"] = cfg.model_config()
    return RunRecord(args.command, options)


def _record_data(record: RunRecord, args: argparse.Namespace) -> None:
    """Every data file the run read (traded, trained on, benchmark), with its SHA-256."""
    from metabt.data.ohlcv import sample_files

    files: list[Path] = []
    groups = [args.data, getattr(args, "train_data", None) or args.data]
    for group in groups:
        for path in group or sample_files():
            if Path(path) not in files:
                files.append(Path(path))
    if args.benchmark:
        files.append(Path(args.benchmark))
    record.add_data(files)


def _finish_record(
    record: RunRecord, args: argparse.Namespace, paths: dict[str, Path], out: Path
) -> None:
    """Data hashes and outputs into the record; ``run.json`` into the output folder."""
    _record_data(record, args)
    record.outputs = [str(p.resolve()) for p in paths.values()]
    _say(f"record of the run: {record.write(out / 'run.json').resolve()}")


def _print_table(table: pd.DataFrame) -> None:
    from metabt.evaluate.report import format_table

    _say(format_table(table))


#: Columns of a judged table printed as the second ("evidence") block.
EVIDENCE = (
    "ic",
    "ic_pooled",
    "ic_t",
    "rank_ic",
    "rank_ic_t",
    "ic_tradable",
    "ic_tradable_t",
    "cs_ic",
    "cs_ic_t",
    "psr",
    "dsr",
    "sharpe_vs_best",
    "sharpe_vs_best_lo",
    "sharpe_vs_best_hi",
    "block",
    "fragile",
    "p_stepm",
    "untrained",
)
#: Judged columns kept to compare.csv (the intervals at half and twice the block: the
#: printed ``fragile`` says whether they disagree).
CSV_ONLY = (
    "sharpe_vs_best_lo_half",
    "sharpe_vs_best_hi_half",
    "sharpe_vs_best_lo_double",
    "sharpe_vs_best_hi_double",
)


def _print_split(table: pd.DataFrame) -> None:
    """A wide judged table as two blocks: performance, then evidence (sd columns in CSV)."""
    shown = table[[c for c in table.columns if not str(c).endswith("_sd") and c not in CSV_ONLY]]
    evidence = [c for c in EVIDENCE if c in shown.columns]
    _say()
    _print_table(shown.drop(columns=evidence))
    _say()
    _print_table(shown[evidence])


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_output(out, "--out", kind="file")
    partial = out.with_name(out.name + ".partial")
    frames = _load_frames(args.data, args.benchmark)
    from metabt.experiments.parts import train_learner

    if args.resume and not partial.is_file():
        _say(f"note: no unfinished run at {partial}; starting afresh")
    cfg = config_of(args)
    record = _record(args, cfg)
    trained = train_learner(
        frames,
        cfg,
        end=args.train_end,
        checkpoint=partial,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        progress=not args.quiet,
    )
    for line in trained.summary(cfg, list(frames)):
        _say(line)
    path = trained.learner.save(out)
    partial.unlink(missing_ok=True)
    _record_data(record, args)
    record.add_checkpoint(path, role="written")
    run_json = record.write(path.with_name(path.name + ".run.json"))
    _say(f"checkpoint written to {path}")
    _say(f"record of the run: {run_json}")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    _check_output(Path(args.report), "--report", kind="file")
    settings = _settings(args)
    from metabt.experiments.compare import main_backtest, rejection_warnings
    from metabt.learn.learner import MetaLearner

    record = _record(args, settings.cfg)
    learner = MetaLearner.load(args.model) if args.model else None
    cache = _training_cache(args) if learner is None and args.cache else None
    run = main_backtest(settings, learner, progress=not args.quiet, log=_say, cache=cache)
    trained = run.learner  # the checkpoint's, or the one trained now
    record.config["learner"] = {
        "algorithm": trained.algorithm,
        "feature_spec": None if trained.feature_spec is None else trained.feature_spec.to_dict(),
        "train_range": trained.train_range,
        "train_config": trained.train_config,
    }
    from metabt.experiments.scheduler import ledger_count

    count = ledger_count(settings, run.results, "backtest", seed=settings.cfg.seed)
    lines = run.summary() + rejection_warnings(run.results)
    if count is not None:
        lines.append(
            f"{count.describe()}, counted in the trial ledger (`metabt ledger` lists it); "
            "compare deflates its Sharpe over them"
        )
        record.config["trials"] = {
            "ledger_evaluations": count.evaluations,
            "ledger_runs": count.runs,
            "effective_trials": count.effective,
        }
    for line in lines:
        _say(line)
    _print_main(run)
    report = Path(args.report)
    paths: dict[str, Path] = {}
    if args.capacity:  # written first, so that a tearsheet may link its figure
        from metabt.experiments.capacity import capacity_curve

        curve = capacity_curve(settings, args.capacity, learner=trained)
        _say()
        for line in curve.lines():
            _say(line)
        _print_table(curve.table.rename(index=lambda cash: f"{cash:,.0f}"))
        paths.update(curve.write(report.with_name(report.stem)))
    paths.update(run.write(report))
    _record_data(record, args)
    if args.model:
        record.add_checkpoint(args.model)
    record.outputs = [str(p.resolve()) for p in paths.values()]
    run_json = record.write(report.with_name(report.stem + ".run.json"))
    _say(f"\ntearsheet written to {paths['tearsheet'].resolve()}")
    _say(f"per-asset results written to {paths['assets'].resolve()}")
    _say(f"adaptation diagnostics written to {paths['diagnostics'].resolve()}")
    _say(f"interactive chart written to {paths['chart'].resolve()}")
    if args.capacity:
        _say(
            f"capacity curve written to {paths['capacity_csv'].resolve()} and "
            f"{paths['capacity_png'].resolve()}"
        )
    _say(f"record of the run: {run_json.resolve()}")
    return 0


def _print_main(run: Any) -> None:
    """The main run's table (and its per-asset table for several assets)."""
    _say()
    _print_table(run.table)
    if len(run.settings.frames) > 1:
        _say(f"\n{run.meta.name} per asset (contribution: P&L before costs / starting cash)")
        _print_table(run.meta.assets)


def cmd_paper(args: argparse.Namespace) -> int:
    from metabt.errors import ConfigError

    if args.end is not None:
        raise ConfigError("metabt paper runs forward: use --until DATE instead of --end")
    if args.train_data:
        raise ConfigError("metabt paper trades a trained --model; --train-data is for training")
    if args.benchmark:
        raise ConfigError(
            "metabt paper follows the --data files only: --benchmark is not followed; add to "
            "each file the benchmark's close as an extra column, appended with its bars"
        )
    model = Path(args.model)
    if not model.is_file():
        raise ConfigError(f"--model {model}: no such checkpoint; train one with `metabt train`")
    settings = _settings(args)  # the bars known now: the checks and the calibration
    import dataclasses

    from metabt.experiments.compare import main_backtest
    from metabt.experiments.paper import paper_settings, run_paper
    from metabt.experiments.record import file_sha256
    from metabt.learn.learner import MetaLearner

    learner = MetaLearner.load(model)
    paper = paper_settings(
        settings,
        learner,
        data=args.data,
        state=args.state,
        model_sha256=file_sha256(model),
        until=args.until,
        poll=args.poll,
        stagger_timeout=args.stagger_timeout,
        report_every=args.report_every,
        accept_broker=args.accept_broker,
        log=_say,
    )
    _say(
        f"paper trading {paper.name} on {len(paper.data)} followed file(s) from "
        f"{settings.start.date()}, state in {paper.state}"
        + (f", until {args.until.date()}" if args.until is not None else " (Ctrl-C stops)")
    )
    run = run_paper(paper, log=_say)
    state = paper.state.resolve()
    _say(
        f"processed {run.bars} new bar(s)"
        + (f" after replaying {run.replayed}" if run.restart else "")
        + (f"; last bar {run.last_bar}" if run.last_bar is not None else "")
        + (f"; {len(run.refused)} row(s) refused" if run.refused else "")
        + ("; stopped on request" if run.stopped else "")
    )
    if run.result is None:
        _say(f"no bar on or after {settings.start.date()} yet; the state is in {state}")
        return 0
    same_bars = dataclasses.replace(
        settings, frames=run.frames, train_frames=run.frames, end=run.last_bar
    )
    main = main_backtest(same_bars, learner, progress=False, log=_say, traded=run.result)
    for line in main.summary():
        _say(line)
    _print_main(main)
    _say(f"\nstate, order log, tearsheet and chart in {state}")
    return 0


def _check_out_dir(args: argparse.Namespace) -> None:
    """The output folder can be written, and metabt may replace it (before any work)."""
    from metabt._util import check_replaceable_dir

    _check_output(Path(args.out), "--out", kind="dir")
    check_replaceable_dir(args.out, force=args.force)


def cmd_compare(args: argparse.Namespace) -> int:
    _check_out_dir(args)
    settings = _settings(args)
    from metabt.experiments.compare import compare, rejection_warnings

    record = _record(args, settings.cfg)
    store = _unit_store(args)
    result = compare(
        settings,
        seeds=args.seeds,
        executor=_executor(args),
        progress=not args.quiet,
        log=_say,
        store=store,
    )
    paths = result.write(Path(args.out), force=args.force)
    _resumed(store)
    _say()
    for line in result.notes + rejection_warnings(result.results):
        _say(line)
    _print_split(result.table)
    _say()
    for line in result.verdicts:
        _say(line)
    _say(f"\ntable: {paths['csv'].resolve()} and {paths['markdown'].resolve()}")
    if "seeds" in paths:
        _say(f"every seed: {paths['seeds'].resolve()}")
    _say(f"per asset: {paths['assets_csv'].resolve()} and {paths['assets_markdown'].resolve()}")
    _say(f"index of tearsheets: {paths['html'].resolve()}")
    _say(f"MetaStrategy adaptation diagnostics: {paths['diagnostics'].resolve()}")
    if "chart" in paths:
        _say(f"MetaStrategy interactive chart: {paths['chart'].resolve()}")
    _ledger_record(record, [r.verdict for r in result.runs], len(result.results))
    _finish_record(record, args, paths, Path(args.out))
    return 0


def cmd_walkforward(args: argparse.Namespace) -> int:
    _check_out_dir(args)
    settings = _settings(args)
    from metabt.experiments.walkforward import walkforward

    record = _record(args, settings.cfg)
    store = _unit_store(args)
    result = walkforward(
        settings,
        fold_years=args.fold_years,
        train_years=args.train_years,
        seeds=args.seeds,
        executor=_executor(args),
        progress=not args.quiet,
        log=_say,
        store=store,
        cv=args.cv,
        cv_groups=args.cv_groups,
        cv_test_groups=args.cv_test_groups,
    )
    paths = result.write(Path(args.out), force=args.force)
    _resumed(store)
    overall = result.metrics()
    stitched = result.returns
    first_seed = result.table[result.table["seed"] == result.table["seed"].iloc[0]]
    folds = first_seed.pivot(index="fold", columns="strategy", values="sharpe")
    _say("\nSharpe per fold (after costs)")
    _say(folds[list(result.stitched)].to_string(float_format=lambda v: f"{v:.2f}"))
    _say(
        f"\nstitched out-of-sample {stitched.index[0].date()} to {stitched.index[-1].date()} "
        f"({len(stitched):,} {result.stitched['MetaStrategy'].frequency.name} bars, "
        f"{result.costs.describe()}); MetaStrategy: sharpe "
        f"{overall['sharpe']:.2f}, cagr {overall['cagr']:.2%}, max drawdown "
        f"{overall['max_drawdown']:.2%}"
    )
    _print_split(result.summary)
    _say()
    for line in result.verdicts:
        _say(line)
    _say(f"\nfold table: {paths['folds'].resolve()}\nsummary: {paths['summary'].resolve()}")
    _say(f"tearsheet: {paths['tearsheet'].resolve()}")
    _say(
        f"per fold and asset: {paths['assets'].resolve()}\n"
        f"diagnostics: {paths['diagnostics'].resolve()}"
    )
    _ledger_record(record, [result.verdict], len(result.stitched))
    _finish_record(record, args, paths, Path(args.out))
    return 0


def _space(args: argparse.Namespace) -> dict[str, Any]:
    """The search space: --space FILE, else the config file's ``space`` table."""
    from metabt.errors import ConfigError

    if isinstance(args.space, dict):
        return dict(args.space)
    if args.space:
        import tomllib

        from metabt._checks import read_small_text

        text = read_small_text(args.space, f"--space {args.space}")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--space {args.space}: not a valid TOML file ({exc})") from exc
        space = raw.get("space", raw)
        if not isinstance(space, dict):
            raise ConfigError(
                f"--space {args.space}: `space` must be a table of setting = [values], "
                f"got {type(space).__name__}"
            )
        return dict(space)
    raise ConfigError(
        "metabt sweep needs a search space: --space space.toml (e.g. inner_lr = [0.01, 0.05]) "
        "or a [sweep.space] table in --config"
    )


def _sweep_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The data files (absolute paths, so ``best.toml`` runs from any folder; with their
    SHA-256), period end, cash and costs of a sweep, for its ``best.toml``."""
    from metabt.data.ohlcv import sample_files
    from metabt.experiments.record import file_sha256

    def absolute(paths: Any) -> list[str] | None:
        return None if not paths else [str(Path(p).resolve()) for p in paths]

    costs = costs_of(args)
    data = absolute(args.data) or [str(p.resolve()) for p in sample_files()]
    train = absolute(args.train_data)
    benchmark = str(Path(args.benchmark).resolve()) if args.benchmark else None
    files = [*data, *(train or []), *([benchmark] if benchmark else [])]
    return {
        "data": data,
        "train_data": train,
        "benchmark": benchmark,
        "sha256": {path: file_sha256(path) for path in dict.fromkeys(files)},
        "end": None if args.end is None else args.end.date(),
        "cash": args.cash,
        # the costs as resolved (the asset class's, flags over them), so best.toml runs
        # with the same costs whatever its reader's defaults
        "asset_class": args.asset_class,
        "commission": costs.commission_bps,
        "spread": costs.spread_bps,
        "slippage": costs.slippage_bps,
        "borrow": costs.borrow_bps,
        "impact": costs.impact,
        "participation": costs.participation,
    }


def cmd_sweep(args: argparse.Namespace) -> int:
    _check_output(Path(args.out), "--out", kind="dir")
    space = _space(args)
    settings = _settings(args)
    from metabt.experiments.sweep import sweep

    record = _record(args, settings.cfg)
    result = sweep(
        settings,
        space=space,
        out=Path(args.out),
        sampler=args.sampler,
        n_trials=args.trials,
        val_folds=args.val_folds,
        executor=_executor(args),
        cv=args.cv,
        progress=not args.quiet,
        inputs=_sweep_inputs(args),
    )
    out = Path(args.out)
    paths = {name: out / name for name in ("trials.csv", "trials.md", "best.toml", "sweep.json")}
    summary = result.summary()
    _say()
    shown = result.table.drop(columns=["error"], errors="ignore").set_index("number")
    _say(shown.to_string(float_format=lambda v: f"{v:.4g}"))  # 0.005, not 0.01; 30, not 30.00
    from metabt.experiments.sweep import TABLE_NOTES

    _say(f"({TABLE_NOTES})")
    _say(
        f"\n{summary['n_trials']} trials ({summary['n_complete']} complete, "
        f"{summary['n_failed']} failed); best validation Sharpe {summary['best_value']:.3f} "
        f"(trial {summary['best_number']}): {summary['best_params']}"
    )
    dsr = summary["validation_dsr"]
    shown = "n/a" if dsr is None else f"{dsr:.3f}"
    _say(f"validation DSR {shown} ({summary['validation_dsr_note']}); {summary['pbo_note']}")
    _say(f"validation folds: {summary['validation_folds']}; {summary['held_out']}")
    _say(f"best config: {paths['best.toml'].resolve()}")
    _say(
        f"next: metabt backtest --config {Path(args.out) / 'best.toml'} (the held-out period "
        f"from {settings.start.date()}), and deflate its Sharpe for {result.n_trials} trials"
    )
    _finish_record(record, args, paths, out)
    return 0


def _progress_line(line: str) -> None:
    """A progress line of the pricing study, on stderr."""
    _say(f"[pricing] {line}", stderr=True)


def cmd_pricing(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_output(out, "--out", kind="dir")
    from metabt.experiments.log import silent
    from metabt.experiments.pricing import PricingSettings, pricing_study

    record = _record(args)
    settings = PricingSettings(
        ks=tuple(args.ks),
        train_end=args.train_end,
        test_end=args.test_end,
        algorithm=args.algorithm,
        steps=args.steps,
        portfolios=args.portfolios,
        nonlinear=args.nonlinear,
    )
    study = pricing_study(
        settings,
        seeds=list(args.seeds),
        executor=_executor(args),
        log=silent if args.quiet else _progress_line,
    )
    paths = study.write(out)
    _say()
    for line in study.main_lines():
        _say(line)
    record.outputs = [str(Path(p).resolve()) for p in paths]
    from metabt.experiments.record import package_versions

    record.data.append(
        {"dataset": "linearmodels.datasets.french", **package_versions(["linearmodels"])}
    )
    _say(f"\ntable and plot: {out.resolve()}")
    _say(f"record of the run: {record.write(out / 'run.json').resolve()}")
    return 0


#: sub-command -> the function that runs it (each returns the exit code, 0).
COMMANDS = {
    "train": cmd_train,
    "backtest": cmd_backtest,
    "paper": cmd_paper,
    "compare": cmd_compare,
    "walkforward": cmd_walkforward,
    "sweep": cmd_sweep,
    "pricing": cmd_pricing,
}


def run(args: argparse.Namespace) -> int:
    """Run the sub-command ``args.command`` with its resolved arguments.

    Args:
        args: the parsed options, merged with ``--config``.

    Returns:
        The exit code (0).

    Raises:
        MetabtError: bad input (the CLI turns it into exit code 2).
    """
    return COMMANDS[args.command](args)
