"""metabt.learn.models: seeded initialisation, config round trips and the model-type registry."""

from __future__ import annotations

import pytest
import torch

from metabt.errors import ConfigError
from metabt.learn.models import CNP, GRU, MLP, MODEL_TYPES, CaviaMLP, ProtoNet, build_model


def test_model_types_are_the_ones_build_model_knows():
    assert MODEL_TYPES == ("mlp", "gru", "cnp", "protonet", "cavia")
    assert [build_model(m.config()).config()["type"] for m in (MLP(3), GRU(3))] == ["mlp", "gru"]
    with pytest.raises(ConfigError, match="model type 'lstm' is unknown"):
        build_model({"type": "lstm"})
    with pytest.raises(ConfigError, match="does not fit"):
        build_model({"type": "mlp", "n_features": 3, "window": 2})


@pytest.mark.parametrize(
    "model",
    [
        MLP(5, (7, 3), seed=4),
        GRU(2, 6, window=3, seed=4),
        CNP(5, 6, seed=4),
        ProtoNet(5, (7,), embed=3, seed=4),
        CaviaMLP(5, (7, 3), context=2, seed=4),
    ],
)
def test_config_rebuilds_the_same_seeded_weights_and_forward_with_equals_forward(model):
    rebuilt = build_model(model.config())
    for (name, a), (_, b) in zip(model.named_parameters(), rebuilt.named_parameters()):
        assert torch.equal(a, b), name
    x = torch.randn(4, model.n_features, generator=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    torch.testing.assert_close(model.forward_with(params, x), model(x), rtol=0, atol=0)
    assert model(x).shape == (4,)
    assert set(model.head_names) <= set(params)


def test_sizes_must_be_positive_integers():
    with pytest.raises(ConfigError, match="n_features"):
        MLP(0)
    with pytest.raises(ConfigError, match="window"):
        GRU(3, window=0)


# ------------------------------------------------------------------ user models
try:  # the repository root is on sys.path under `python -m pytest`
    import tests.nets as nets
except ImportError:  # pragma: no cover - plain `pytest`
    import nets  # type: ignore[no-redef]


def test_user_model_builds_from_an_import_path_and_records_its_config():
    from metabt.learn.models import input_width, model_config_of, user_model

    path = f"{nets.__name__}:TwoLayer"
    model = user_model(path, n_features=3, hidden=5)
    assert type(model) is nets.TwoLayer and model.body.out_features == 5
    assert model_config_of(model) == {"type": path, "n_features": 3, "hidden": 5}
    assert input_width(model) == 3
    same = build_model(model_config_of(model))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))
    assert model_config_of(user_model(nets.TwoLayer, n_features=3))["type"] == path
    assert model_config_of(MLP(3)) == MLP(3).config()
    assert model_config_of(nets.TwoLayer(3)) is None


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"type": "mpl", "n_features": 3}, "did you mean 'mlp'"),
        ({"type": "tests_nets_missing:X", "n_features": 3}, "cannot import module"),
        ({"type": "TwoLayer:", "n_features": 3}, "import path"),
        ({"type": "torch.nn:Linear", "n_features": 3}, "does not fit"),
        ({"type": "NETS:TwoLayer"}, "lacks 'n_features'"),
        ({"type": "NETS:TwoLayer", "n_features": 3, "hidden": object()}, "JSON primitives"),
        ({"type": "NETS:TwoLayer", "n_features": 3, "outputs": 3}, r"TwoLayer returned"),
    ],
)
def test_bad_user_model_configs_raise_config_error(config, match, trusting):
    config = {k: v.replace("NETS", nets.__name__) if k == "type" else v for k, v in config.items()}
    if ":" in config["type"] and config["type"].partition(":")[0]:
        trusting(config["type"].partition(":")[0])
    with pytest.raises(ConfigError, match=match):
        build_model(config)


def test_find_head_takes_the_last_linear_or_the_named_submodule():
    from torch import nn

    from metabt.learn.models import find_head

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    assert find_head(net) == "2" and find_head(net, "0") == "0"
    assert find_head(MLP(3)) == "head" and find_head(GRU(2, window=2)) == "head"
    with pytest.raises(ConfigError, match=r"head '3' is not a submodule.*\['0', '2'\]"):
        find_head(net, "3")
    with pytest.raises(ConfigError, match="has none"):
        find_head(nn.Sequential(nn.Bilinear(3, 3, 1)))
