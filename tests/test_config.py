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
