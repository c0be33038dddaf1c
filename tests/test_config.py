"""config: the run configuration, importable without torch, names equal the registries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metabt.config.defaults import ALGORITHM_NAMES, DEMO, ENGINE_NAMES, MODEL_TYPES
from metabt.learn.algorithms import ALGORITHMS, ENGINES
from metabt.learn.models import MODEL_TYPES as BUILT_MODELS


def test_config_names_are_the_registries():
    assert ALGORITHM_NAMES == ALGORITHMS and ENGINE_NAMES == ENGINES
    assert MODEL_TYPES == BUILT_MODELS


def test_config_imports_without_torch_and_describes_itself():
    code = "import sys, metabt.config.defaults; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    described = DEMO.describe()
    assert described["spec"]["horizon"] == DEMO.spec.horizon and described["support"] == 60
    assert DEMO.with_(support=120).strategy_kwargs()["support"] == 120
    assert (
        DEMO.model_config()["type"] == "mlp"
        and DEMO.with_(model_type="gru").model_config()["window"] == DEMO.gru_window
    )


def test_cavia_gets_its_own_inner_rate_unless_one_is_given():
    """CAVIA's context starts at 0: at the network's 0.02 it would barely move (1e-5)."""
    from metabt.config.defaults import INNER_LR, default_inner_lr

    assert DEMO.inner_lr is None and DEMO.inner_rate == INNER_LR == 0.02
    cavia = DEMO.with_(algorithm="cavia")
    assert cavia.inner_rate == default_inner_lr("cavia") == 1.0
    assert cavia.describe()["inner_lr"] == 1.0  # run.json records the rate used
    assert cavia.with_(inner_lr=0.3).inner_rate == 0.3
    assert DEMO.with_(algorithm="anil").inner_rate == 0.02


def test_model_kwargs_for_a_built_in_model_or_non_finite_ones_are_refused():
    from metabt.config.defaults import DEMO
    from metabt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model_kwargs \['hiden'\] apply to a user model"):
        DEMO.with_(model_kwargs={"hiden": [8]}).model_config()
    user = DEMO.with_(model_type="pkg.mod:Net")
    with pytest.raises(ConfigError, match=r"model_kwargs\['sizes'\]\[1\] is inf"):
        user.with_(model_kwargs={"sizes": [8, float("inf")]}).model_config()
    assert user.with_(model_kwargs={"sizes": [8, 4]}).model_config()["sizes"] == [8, 4]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"batch_size": 2**63 - 1}, r"`batch_size` must be an integer from 1 to 100,000 tasks"),
        ({"support": 2**63 - 1}, r"`support` must be an integer from 1 to 100,000 bars"),
        ({"val_years": 1e308}, r"`val_years` must be a number above 0, at most 100 years"),
        ({"hidden": (2_000_000_000,)}, r"`hidden` must be an integer from 1 to 65,536 units"),
        ({"hidden": (8,) * 65}, r"`hidden` has 65 values, at most 64"),
        ({"meta_steps": 10**8}, r"`meta_steps` must be an integer from 1 to 10,000,000"),
        ({"query": 2.5}, r"`query` must be an integer"),
        ({"meta_lr": float("nan")}, r"`meta_lr` must be a number above 0"),
        ({"smooth_grid": (5, 0)}, r"`smooth_grid` must be an integer from 1"),
        ({"seed": 2**32}, r"`seed` must be an integer from 0 to 4,294,967,295"),
    ],
)
def test_run_config_refuses_values_outside_the_limits(changes, needle):
    """A library caller or a sweep trial reaches RunConfig without the schema or the flags."""
    from metabt.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        DEMO.with_(**changes)


def test_every_numeric_setting_of_the_schema_is_bounded_by_the_limits_and_documented():
    """Each int or float setting of the config-file schema has a finite upper bound, the one
    of LIMITS, and its description states the range."""
    from metabt.config.defaults import LIMITS, LIST_LIMITS
    from metabt.config.files import Options

    numeric = []
    for name, field in Options.model_fields.items():
        text = repr(field.annotation)
        if "int" in text or "float" in text:
            numeric.append(name)
            assert name in LIMITS, name
            assert LIMITS[name].describe() in (field.description or ""), name
            if name in LIST_LIMITS:
                assert f"at most {LIST_LIMITS[name]}" in (field.description or "")
    assert {"support", "batch_size", "val_years", "hidden", "cash", "threads"} <= set(numeric)
    for name in numeric:  # the schema refuses the first value above the limit
        limit = LIMITS[name]
        above = int(limit.high) + 1 if limit.integer else limit.high * 2
        value = [above] if name in LIST_LIMITS else above
        with pytest.raises(Exception, match="less than or equal"):
            Options.model_validate({name: value})
        at = int(limit.high) if limit.integer else limit.high
        Options.model_validate({name: [at] if name in LIST_LIMITS else at})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("batch_size = 9223372036854775807", r"batch_size: .*100000.*allowed for batch_size:"),
        ("support = 9223372036854775807", r"support: .*100000.*from 1 to 100,000 bars"),
        ("val_years = 1e308", r"val_years: .*less than or equal to 100 \(got 1e\+308\)"),
        ("[train]\nhidden = [2000000000]", r"train.hidden.0: .*65,536 units"),
        ("seeds = [0, 4294967296]", r"seeds.1: .*from 0 to 4,294,967,295"),
        ("smooth_grid = [" + "1, " * 101 + "1]", r"at most 100 items.*allowed for smooth_grid"),
    ],
)
def test_config_file_values_out_of_range_are_one_line_naming_the_key_and_range(
    tmp_path, text, needle
):
    from metabt.config.files import load_config
    from metabt.errors import ConfigError

    path = tmp_path / "run.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["backtest", "--hidden", "2000000000"], "--hidden: '2000000000' is out of range"),
        (["train", "--batch-size", str(2**63 - 1)], "from 1 to 100,000 tasks"),
        (["backtest", "--val-years", "1e308"], "above 0, at most 100 years"),
        (["compare", "--cash", "inf"], "--cash: 'inf' is out of range"),
        (["walkforward", "--commission", "nan"], "--commission: 'nan' is out of range"),
        (["pricing", "--ks", "6", "99999"], "--ks: '99999' is out of range"),
        (["backtest", "--hidden", *["8"] * 65], "--hidden takes at most 64 values, got 65"),
    ],
)
def test_flags_out_of_range_exit_2_with_one_line(capsys, argv, needle):
    from metabt.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
