"""Config files: TOML through the pydantic schema, unknown keys with a hint, flags win."""

from __future__ import annotations

import re
import tomllib

import pytest

from metabt.cli.commands import config_of as _config
from metabt.cli.main import _apply_config, _example_config
from metabt.cli.parser import _build_parser
from metabt.config.files import COMMANDS, Options, load_config, options_for
from metabt.errors import ConfigError


def _write(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def _parse(argv):
    parser = _build_parser()
    args = parser.parse_args(argv)
    return _apply_config(parser, args, argv)


def test_top_level_and_command_tables_merge_and_flags_win(tmp_path):
    path = _write(
        tmp_path,
        'support = 40\nsteps = 30\nalgorithm = "fomaml"\n'
        "[compare]\nsupport = 80\nseeds = [1, 2]\nstart = 2010-01-04\n",
    )
    config = load_config(path)
    assert options_for(config, "compare")["support"] == 80
    assert options_for(config, "backtest")["support"] == 40
    args = _parse(["compare", "--config", str(path), "--steps", "7"])
    assert args.support == 80 and args.seeds == [1, 2]
    assert args.steps == 7  # the flag wins over the file
    assert args.algorithm == "fomaml"
    assert str(args.start.date()) == "2010-01-04"
    cfg = _config(args)
    assert cfg.support == 80 and cfg.meta_steps == 7 and cfg.algorithm == "fomaml"


def test_sizer_settings_reach_the_runs_sizer_from_a_file_or_a_flag(tmp_path):
    from metabt.config.defaults import DEMO

    path = _write(tmp_path, "deadband = 0.1\n[backtest]\nrebalance_band = 0.25\n")
    args = _parse(["backtest", "--config", str(path), "--signal-scale", "0.5"])
    cfg = _config(args)
    assert cfg.sizer == {**DEMO.sizer, "deadband": 0.1, "rebalance_band": 0.25, "signal_scale": 0.5}
    assert _config(_parse(["backtest"])).sizer == DEMO.sizer  # no flag: the demo's sizer
    with pytest.raises(ConfigError, match="rebalance_band"):
        load_config(_write(tmp_path, "rebalance_band = 1.0\n"))
    with pytest.raises(SystemExit):
        _parse(["backtest", "--rebalance-band", "1.5"])


def test_unknown_key_names_the_closest_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"'supprt'.*did you mean 'support'"):
        load_config(_write(tmp_path, "supprt = 40\n"))
    with pytest.raises(ConfigError, match=r"\[train\] has no setting 'stpes'.*'steps'"):
        load_config(_write(tmp_path, "[train]\nstpes = 4\n"))


@pytest.mark.parametrize(
    "text, needle",
    [
        ("support = 0\n", "support"),
        ('support = "many"\n', "support"),
        ("commission = -1\n", "commission"),
        ("seeds = [1, -2]\n", "seeds"),
        ("support = \n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(_write(tmp_path, text))


def test_values_pass_the_flags_own_converters(tmp_path):
    path = _write(tmp_path, '[compare]\nalgorithm = "mam"\n')
    with pytest.raises(ConfigError, match="did you mean 'maml'"):
        _parse(["compare", "--config", str(path)])
    path = _write(tmp_path, '[backtest]\nstart = "2008-13-45"\n')
    with pytest.raises(ConfigError, match=r"start.*not a date"):
        _parse(["backtest", "--config", str(path)])


def test_a_setting_the_command_lacks_is_refused(tmp_path):
    path = _write(tmp_path, "[backtest]\nfold_years = 2\n")
    with pytest.raises(ConfigError, match="backtest` has no setting 'fold_years'"):
        _parse(["backtest", "--config", str(path)])


def test_missing_file_and_required_settings(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    path = _write(tmp_path, '[train]\ndata = ["a.csv"]\nout = "m.pt"\n')
    with pytest.raises(SystemExit):
        _parse(["train", "--config", str(path)])
    assert "--train-end is required" in capsys.readouterr().err


def test_every_flag_is_a_setting_and_the_example_is_valid():
    parser = _build_parser()
    subparsers = parser.parse_args(["config"]).subparsers
    # command-line only: a file may neither trust modules nor force replacing a folder
    skip = {"help", "config", "resume", "trust", "force"}
    for name, sub in subparsers.items():
        assert name in COMMANDS
        for action in sub._actions:
            if action.dest not in skip:
                assert action.dest in Options.model_fields, (name, action.dest)
    text = _example_config()
    assert tomllib.loads(text) == {c: {} for c in subparsers}  # everything commented out
    uncommented = "\n".join(
        line[2:] if re.match(r"# [a-z_]+ = ", line) else line for line in text.splitlines()
    )
    config = tomllib.loads(uncommented)
    Options.model_validate({k: v for k, v in config.items() if k not in COMMANDS})
    tables = {c: Options.model_validate(config[c]) for c in subparsers}
    merged = {**{k: v for k, v in config.items() if k not in COMMANDS}, **config["backtest"]}
    assert merged["support"] == 60 and merged["algorithm"] == "maml"
    assert tables["pricing"].ks == [6, 12, 24, 36]
    # every command's table is a field of the file schema (a [paper] table loads)
    from metabt.config.files import ConfigFile

    assert set(COMMANDS) <= set(ConfigFile.model_fields)
    assert tables["paper"].poll == 5.0 and tables["paper"].report_every == 20
