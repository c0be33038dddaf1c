"""metabt.models: seeded initialisation, config round trips and the model-type registry."""

from __future__ import annotations

import pytest
import torch

from metabt.errors import ConfigError
from metabt.models import GRU, MLP, MODEL_TYPES, build_model


def test_model_types_are_the_ones_build_model_knows():
    assert MODEL_TYPES == ("mlp", "gru")
    assert [build_model(m.config()).config()["type"] for m in (MLP(3), GRU(3))] == ["mlp", "gru"]
    with pytest.raises(ConfigError, match="model type 'lstm' is unknown"):
        build_model({"type": "lstm"})
    with pytest.raises(ConfigError, match="does not fit"):
        build_model({"type": "mlp", "n_features": 3, "window": 2})


@pytest.mark.parametrize("model", [MLP(5, (7, 3), seed=4), GRU(2, 6, window=3, seed=4)])
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
