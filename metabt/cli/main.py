"""The ``metabt`` command's entry point: parse, merge ``--config``, trust, run, exit codes.

Exit codes: 0 success; 2 bad input or usage (one line on stderr, no traceback); 1 an
unexpected failure. Library errors name parameters (`start`); :func:`flag_message` maps
them to this command's flags (``--start``) in one place.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

from metabt.cli.parser import _build_parser
from metabt.errors import MetabtError

__all__ = [
    "CLI_PHRASES",
    "MEMORY_SETTINGS",
    "OPTION_OF_PARAMETER",
    "REQUIRED",
    "flag_message",
    "main",
    "memory_message",
]

#: Library parameters whose option has another name (its ``dest``): parameter -> dest.
OPTION_OF_PARAMETER = {"meta_steps": "steps", "n_trials": "trials"}
#: Library phrases the command line says in its own words.
CLI_PHRASES = {
    "the config template (metabt.config.files.example) lists every setting": (
        "`metabt config --example` lists every setting"
    ),
}


def flag_message(message: str, parser: argparse.ArgumentParser) -> str:
    """A library message in the command line's words: parameters become flags.

    The library names parameters in backticks, as in "`end` is before `start`"; each that
    is an option of ``parser``'s command (directly, or through :data:`OPTION_OF_PARAMETER`)
    becomes its flag ("--end is before --start"); other backticked names stay as they are.
    The phrases of :data:`CLI_PHRASES` are replaced too. This is the one place the CLI
    maps the library's parameter names to its flags.

    Args:
        message: the library's message (e.g. a :class:`~metabt.errors.MetabtError`'s).
        parser: the sub-command's parser (its options are the ones mapped).

    Returns:
        The message with flags.
    """
    import re

    flags = {}
    for action in parser._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long:
            flags[action.dest] = long[0]
    for phrase, words in CLI_PHRASES.items():
        message = message.replace(phrase, words)

    def flag(match: re.Match[str]) -> str:
        name = match.group(1)
        return flags.get(OPTION_OF_PARAMETER.get(name, name), match.group(0))

    return re.sub(r"`([a-z][a-z0-9_]*)`", flag, message)


def _limit_threads(n: int) -> Any:
    """Use ``n`` threads in torch and in every BLAS/OpenMP pool; returns the BLAS limiter.

    torch's default of one thread per core oversubscribes a busy machine for models this
    small; NumPy's BLAS (OpenBLAS) is limited through ``threadpoolctl``.
    """
    import os

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)  # read by torch's thread pools when it is imported
    if "torch" in sys.modules:  # already imported (metabt.cli.main.main called from Python)
        sys.modules["torch"].set_num_threads(n)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n)


#: Options that must be given, by flag or config file, per command.
REQUIRED = {"train": ("data", "train_end", "out"), "paper": ("data", "model", "state")}


def _convert(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    """A config-file value through the flag's own converter and choices."""
    import json

    from metabt._checks import did_you_mean
    from metabt.errors import ConfigError

    where = f"--config {path}: {key}"
    if action.nargs == 0:  # a switch such as --quiet
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise ConfigError(f"{where}: takes one value, got the list {value!r}")
    out = []
    for item in items:
        text = json.dumps(item) if isinstance(item, dict) else str(item)
        try:
            converted = action.type(text) if callable(action.type) else text
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if action.choices is not None and converted not in action.choices:
            raise ConfigError(
                f"{where}: {converted!r} is not one of {', '.join(map(str, action.choices))}"
                f"{did_you_mean(str(converted), map(str, action.choices))}"
            )
        out.append(converted)
    return out if many else out[0]


def _apply_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]
) -> argparse.Namespace:
    """Merge ``--config``: the file's settings become the defaults, flags win; re-parse.

    Raises:
        ConfigError: a bad file, a setting the command does not have, or a bad value
            (checked by the same converters as the flags).
    """
    sub: argparse.ArgumentParser = args.subparsers[args.command]
    if args.config:
        from metabt.config.files import load_config, options_for
        from metabt.errors import ConfigError

        values = options_for(load_config(args.config), args.command)
        actions = {a.dest: a for a in sub._actions}
        defaults: dict[str, Any] = {}
        for key, value in values.items():
            action = actions.get(key)
            if action is None:
                raise ConfigError(
                    f"--config {args.config}: `metabt {args.command}` has no setting {key!r}; "
                    "put it under the [table] of a command that has it"
                )
            if key == "space" and isinstance(value, dict):  # an inline search space
                defaults[key] = value
                continue
            defaults[key] = _convert(action, key, value, args.config)
        sub.set_defaults(**defaults)
        args = parser.parse_args(argv)  # flags on the command line override the file
    for key in REQUIRED.get(args.command, ()):
        if getattr(args, key) is None:
            flag = "--" + key.replace("_", "-")
            sub.error(f"{flag} is required (give the flag, or {key} in the --config file)")
    return args


def _check_counts(sub: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse list options with more values than :data:`metabt.config.defaults.LIST_LIMITS`
    (argparse checks each value, not how many)."""
    from metabt.config.defaults import LIST_LIMITS

    for key, most in LIST_LIMITS.items():
        values = getattr(args, key, None)
        if isinstance(values, list) and len(values) > most:
            flag = "--" + key.replace("_", "-")
            sub.error(f"{flag} takes at most {most} values, got {len(values)}; give fewer")


#: The settings that size a run's memory, named when it runs out (those its command has).
MEMORY_SETTINGS = ("batch_size", "support", "query", "hidden", "workers", "trials")

#: The part of an allocation failure's text that says what was too big.
_ALLOCATION = re.compile(
    r"(?:DefaultCPUAllocator: can't allocate memory: you tried to allocate \d+ bytes"
    r"|CUDA out of memory. Tried to allocate [\d.]+ \w+"
    r"|Unable to allocate [\d.]+ \w+ for an array with shape \([\d, ]*\))"
)


def memory_message(exc: BaseException, parser: argparse.ArgumentParser) -> str | None:
    """One line for an allocation failure, or None if ``exc`` is not one.

    A ``MemoryError`` (NumPy's "Unable to allocate ..." included) or torch's
    ``RuntimeError`` from its allocators ("DefaultCPUAllocator: can't allocate memory",
    "CUDA out of memory") means a setting or the data asked for more memory than the
    machine has; the line says how much (when the error says) and names the options of
    ``parser``'s command that size the run.

    Args:
        exc: the exception.
        parser: the sub-command's parser.

    Returns:
        The message, or None.
    """
    text = " ".join(str(exc).split())
    found = _ALLOCATION.search(text)
    if not isinstance(exc, MemoryError) and found is None:
        return None
    detail = found.group(0) if found is not None else (text[:200] or "MemoryError")
    dests = {action.dest for action in parser._actions}
    names = [f"`{name}`" for name in MEMORY_SETTINGS if name in dests]
    lower = f"lower {', '.join(names)}" if names else "use smaller settings"
    return flag_message(
        f"out of memory ({detail}): the run needs more memory than this machine has; "
        f"{lower}, or give shorter or fewer data files",
        parser,
    )


def _trust_command_line(args: argparse.Namespace) -> None:
    """Trust ``--trust`` modules and the modules the user named on the command line
    (``--model-type``, ``--algorithm``, ``--feature`` import paths).

    Called before the config file is merged, so a module named only in a config file is not
    trusted. The working directory, where a user's own model or feature module often lives,
    goes at the *end* of ``sys.path``: an installed package is never shadowed by a file there.
    """
    import os

    from metabt._trust import trust

    named = list(getattr(args, "trust", []) or [])
    for named_path in (getattr(args, "model_type", None), getattr(args, "algorithm", None)):
        if isinstance(named_path, str) and ":" in named_path:  # a user model or family
            named.append(named_path.partition(":")[0])
    for feature in getattr(args, "features", []) or []:
        path = str(feature).split("{", 1)[0]
        if ":" in path:
            named.append(path.partition(":")[0].strip())
    if named:
        trust(*named)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _ledger_command(args: argparse.Namespace) -> int:
    """``metabt ledger``: one line per test window, or ``--reset``; errors as one line."""
    from metabt.cli.commands import ledger_path
    from metabt.evaluate.ledger import Ledger

    try:
        path = ledger_path(args.ledger)
        if path is None:
            print("metabt ledger: the ledger is off (METABT_LEDGER=off)", file=sys.stderr)
            return 2
        ledger = Ledger(path)
        if args.reset:
            print(f"deleted {ledger.reset()} evaluations from {path}")
            return 0
        windows = ledger.windows()
    except MetabtError as exc:
        print(f"metabt ledger: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if windows.empty:
        print(f"the trial ledger {path} holds no evaluation")
        return 0
    print(f"trial ledger {path}: {len(windows)} test window(s)")
    for w in windows.itertuples():
        count = ledger.count(w.window)
        print(
            f"{w.first_bar} to {w.last_bar} (window {w.window[:12]}): {count.describe()}; "
            f"last {w.last}"
        )
    return 0


def _example_config() -> str:
    """The template of ``metabt config --example``, from the flags' own defaults."""
    from metabt.config.files import Options, example

    parser = _build_parser()
    subparsers = parser.parse_args(["config"]).subparsers
    skip = {"help", "config", "version"}
    defaults: dict[str, dict[str, Any]] = {}
    for name, sub in subparsers.items():
        values: dict[str, Any] = {}
        for action in sub._actions:
            if action.dest in skip or action.dest not in Options.model_fields:
                continue
            default = action.default
            if action.dest == "smooth" and default is None:  # unset: the run's own default
                from metabt.config.defaults import DEMO

                default = DEMO.smooth
            if hasattr(default, "date"):  # a pd.Timestamp
                default = str(default.date())
            values[action.dest] = default
        defaults[name] = values
    return example(defaults)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metabt`` console script.

    Args:
        argv: arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit code: 0 success, 2 bad input, 1 unexpected failure.
    """
    try:
        parser = _build_parser()
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        if isinstance(exc.code, str):  # e.g. a bad METABT_THREADS
            print(exc.code, file=sys.stderr)
            return 2
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("metabt: interrupted", file=sys.stderr)
        return 130
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "config":
        if not args.example:
            print("metabt config: use --example to print a template", file=sys.stderr)
            return 2
        print(_example_config(), end="")
        return 0
    if args.command == "ledger":
        return _ledger_command(args)
    _trust_command_line(args)
    try:
        args = _apply_config(parser, args, list(sys.argv[1:] if argv is None else argv))
        _check_counts(args.subparsers[args.command], args)
        with _limit_threads(args.threads):
            from metabt.cli.commands import run

            return run(args)
    except SystemExit as exc:  # a required option missing after merging the config file
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except MetabtError as exc:
        message = " ".join(str(exc).split())  # one line, whatever a library put in it
        message = flag_message(message, args.subparsers[args.command])
        from metabt._trust import UntrustedModuleError

        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, UntrustedModuleError):
            cause = cause.__cause__
        if isinstance(cause, UntrustedModuleError):
            message += f", or on the command line: --trust {cause.module.split('.')[0]}"
        print(f"metabt {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metabt: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:
        line = memory_message(exc, args.subparsers[args.command])
        if line is None:
            raise
        print(f"metabt {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
