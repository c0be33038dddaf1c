"""metabt.learn.algorithms.base: the learner-family hierarchy MetaLearner delegates to."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from synthetic import linear_task_batch as _batch

from metabt.errors import ConfigError
from metabt.learn.algorithms import (
    FAMILIES,
    AnilFamily,
    CaviaFamily,
    CnpFamily,
    ErmFamily,
    GradientFamily,
    LearnerFamily,
    MamlFamily,
    MetaSgdFamily,
    PairedFamily,
    ProtoNetFamily,
    ReptileFamily,
    ScratchFamily,
)
from metabt.learn.learner import MetaLearner
from metabt.learn.models import CNP, MLP


def test_one_class_per_family_under_two_branches():
    expected = {
        "maml": MamlFamily,
        "fomaml": MamlFamily,
        "metasgd": MetaSgdFamily,
        "anil": AnilFamily,
        "reptile": ReptileFamily,
        "erm": ErmFamily,
        "scratch": ScratchFamily,
        "cnp": CnpFamily,
        "protonet": ProtoNetFamily,
        "cavia": CaviaFamily,
    }
    assert {name: type(family) for name, family in FAMILIES.items()} == expected
    assert issubclass(GradientFamily, LearnerFamily) and issubclass(PairedFamily, LearnerFamily)
    assert not issubclass(PairedFamily, GradientFamily)
    with pytest.raises(TypeError):
        LearnerFamily()  # type: ignore[abstract]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAMILIES["maml"].second_order = False  # type: ignore[misc]
    learner = MetaLearner(MLP(4, (6,), seed=0), algorithm="fomaml")
    assert learner.family is FAMILIES["fomaml"]


def test_set_up_hooks_give_the_adapted_names_and_rates():
    model = MLP(4, (6,), seed=0)
    names = tuple(n for n, _ in model.named_parameters())
    assert FAMILIES["maml"].adapt_names(model, None) == names
    assert FAMILIES["anil"].adapt_names(model, None) == ("head.weight", "head.bias")
    assert FAMILIES["maml"].inner_rates(model, names, 0.1) == {}
    rates = FAMILIES["metasgd"].inner_rates(model, names, 0.1)
    assert list(rates) == list(names) and all(bool((r == 0.1).all()) for r in rates.values())
    FAMILIES["anil"].check_head("head")
    with pytest.raises(ConfigError, match="for algorithm 'anil' only"):
        FAMILIES["reptile"].check_head("head")


def test_check_model_names_parameters_not_flags():
    with pytest.raises(ConfigError, match="pass algorithm='cnp'") as paired:
        FAMILIES["maml"].check_model(CNP(4))
    with pytest.raises(ConfigError, match="model_type='cnp'") as own:
        FAMILIES["cnp"].check_model(MLP(4))
    assert "--" not in str(paired.value) + str(own.value)
    FAMILIES["maml"].check_model(MLP(4))
    FAMILIES["cnp"].check_model(CNP(4))


def test_a_subclass_is_a_new_algorithm_and_the_defaults_loop_over_adapt():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Frozen(GradientFamily):
        """Never trains; adapts like MAML (a family outside the registry)."""

        def meta_step(self, learner, xs, ys, xq, yq):
            return learner.evaluate(xs, ys, xq, yq)

    learner = MetaLearner(CNP(4, 8, seed=1).double(), algorithm="cnp")
    xs, ys, xq, yq = _batch()
    loop = LearnerFamily.adapt_batch(FAMILIES["cnp"], learner, xs.numpy(), ys.numpy(), 0)
    assert loop.backend == "loop" and len(loop) == xs.shape[0]
    assert learner.adapt_batch(xs, ys).backend == "loop"  # the paired families' default
    maml = MetaLearner(MLP(4, (6,), seed=0).double(), algorithm="maml", inner_steps=2)
    before = [p.detach().clone() for p in maml.model.parameters()]
    assert Frozen().meta_step(maml, xs, ys, xq, yq) == maml.evaluate(xs, ys, xq, yq)
    assert all(torch.equal(p, b) for p, b in zip(maml.model.parameters(), before))
    assert Frozen().evaluate(maml, xs, ys, xq, yq, 2) == maml.evaluate(xs, ys, xq, yq)
