"""config: the run configuration, importable without torch, names equal the registries."""

from __future__ import annotations

import subprocess
import sys

from metabt.algorithms import ALGORITHMS, ENGINES
from metabt.config import ALGORITHM_NAMES, DEMO, ENGINE_NAMES, MODEL_TYPES
from metabt.models import MODEL_TYPES as BUILT_MODELS


def test_config_names_are_the_registries():
    assert ALGORITHM_NAMES == ALGORITHMS and ENGINE_NAMES == ENGINES
    assert MODEL_TYPES == BUILT_MODELS


def test_config_imports_without_torch_and_describes_itself():
    code = "import sys, metabt.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    described = DEMO.describe()
    assert described["spec"]["horizon"] == DEMO.spec.horizon and described["support"] == 60
    assert DEMO.with_(support=120).strategy_kwargs()["support"] == 120
    assert (
        DEMO.model_config()["type"] == "mlp"
        and DEMO.with_(model_type="gru").model_config()["window"] == DEMO.gru_window
    )
