"""A CPCV split's training: every part honours the excluded spans, checked and recorded.

The strongest test: the roster parts are trained for one split twice, on the original
prices and with every price inside the split's excluded spans changed; the trained θ of
the MAML learner, the linear baselines' selected values and scores, and LightGBM's kept
rounds are bit-identical.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from metabt.config.defaults import DEMO
from metabt.errors import ConfigError
from metabt.experiments.parts import (
    check_excluded,
    train_part,
    validation_split,
)
from tests.synthetic import perturbed_inside

CFG = DEMO.with_(
    meta_steps=3, hidden=(8,), batch_size=4, support=20, query=5, inner_steps=1, val_years=0.5
)
#: one split's test groups, widened by the purge before and the embargo after
SPANS = (
    (pd.Timestamp("2009-03-02"), pd.Timestamp("2009-07-31")),
    (pd.Timestamp("2010-06-01"), pd.Timestamp("2010-10-29")),
)
END = pd.Timestamp("2012-01-01")  # the day after the last bar: bars after the tests are used


def perturbed(frames, spans):
    """Every price inside ``spans`` scaled by a factor in [0.6, 1.4)."""
    return perturbed_inside(frames, spans, seed=11, low=0.6, high=1.4)


@pytest.fixture(scope="module")
def both(sample_frames):
    return sample_frames, perturbed(sample_frames, SPANS)


def test_meta_learner_theta_ignores_every_test_price(both):
    a, b = both
    ta, _ = train_part(a, CFG, END, "meta", progress=False, exclude=SPANS)
    tb, _ = train_part(b, CFG, END, "meta", progress=False, exclude=SPANS)
    sa, sb = ta.learner.model.state_dict(), tb.learner.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert ta.fit.steps == 3 and ta.val_loss == tb.val_loss
    # recorded, checked, and trained after the tests too
    assert ta.learner.train_config["excluded"] == [[str(x), str(y)] for x, y in SPANS]
    assert pd.Timestamp(ta.learner.train_range[1]) > SPANS[-1][1]
    check_excluded(ta.learner, SPANS)
    # the perturbation is real: without the exclusion θ differs
    ua, _ = train_part(a, CFG, END, "meta", progress=False)
    ub, _ = train_part(b, CFG, END, "meta", progress=False)
    assert "excluded" not in ua.learner.train_config
    assert any(
        not torch.equal(x, y)
        for x, y in zip(
            ua.learner.model.state_dict().values(), ub.learner.model.state_dict().values()
        )
    )


def test_linear_selection_and_gbm_ignore_every_test_price(both, sample_frames):
    a, b = both
    cfg = CFG.with_(val_years=1.0)  # a year of validation: RLS's 200-bar tasks fit in it
    (alpha_a, lam_a, scores_a), _ = train_part(a, cfg, END, "linear", exclude=SPANS)
    (alpha_b, lam_b, scores_b), _ = train_part(b, cfg, END, "linear", exclude=SPANS)
    assert (alpha_a, lam_a) == (alpha_b, lam_b)
    assert scores_a == scores_b and scores_a["rls_forgetting"]  # every grid value, exactly
    ga, _ = train_part(a, CFG, END, "gbm", exclude=SPANS)
    gb, _ = train_part(b, CFG, END, "gbm", exclude=SPANS)
    assert ga.learner.rounds == gb.learner.rounds
    assert list(ga.learner.val_curve) == list(gb.learner.val_curve)
    assert ga.excluded == SPANS
    # a test group inside the validation hold-out: excluded, the ridge scores are the
    # same bit for bit; not excluded, they move
    spans = (*SPANS, (pd.Timestamp("2011-03-01"), pd.Timestamp("2011-04-15")))
    c = perturbed(sample_frames, spans)
    (_, _, with_a), _ = train_part(a, CFG, END, "linear", exclude=spans)
    (_, _, with_c), _ = train_part(c, CFG, END, "linear", exclude=spans)
    assert with_a == with_c
    (_, _, plain_a), _ = train_part(a, CFG, END, "linear")
    (_, _, plain_c), _ = train_part(c, CFG, END, "linear")
    assert plain_a["ridge_alpha"] != plain_c["ridge_alpha"]


def test_check_excluded_refuses_and_accepts(small_learner):
    from types import SimpleNamespace

    record = {"excluded": [["2009-03-02", "2009-07-31"], ["2009-07-31", "2009-09-30"]]}
    stub = SimpleNamespace(train_range=("2005-01-03", "2011-12-30"), train_config=record)
    check_excluded(stub, [("2009-03-02", "2009-09-30")])  # touching spans are joined
    check_excluded(stub, [("2009-04-01", "2009-05-01")])
    with pytest.raises(ConfigError, match="does not cover the test span"):
        check_excluded(stub, [("2009-03-01", "2009-05-01")])  # one bar too early
    with pytest.raises(ConfigError, match="does not cover the test span"):
        check_excluded(stub, [("2009-04-01", "2009-05-01"), ("2010-01-04", "2010-02-01")])
    stub.train_config = {}  # no record: only a learner trained before the test passes
    with pytest.raises(ConfigError, match="no excluded spans recorded"):
        check_excluded(stub, [("2009-04-01", "2009-05-01")])
    check_excluded(small_learner, [("2010-06-01", "2010-07-01")])  # trained before 2010


def test_validation_hold_out_skips_the_excluded_spans(sample_frames):
    cfg = DEMO.with_(val_years=0.5)
    plain = validation_split(sample_frames, cfg, END)
    assert validation_split(sample_frames, cfg, END, None) == plain
    # a span inside the hold-out pushes the split back by its length
    span = (pd.Timestamp("2011-09-01"), pd.Timestamp("2011-10-01"))
    assert validation_split(sample_frames, cfg, END, (span,)) == plain - (span[1] - span[0])
    # a span before it changes nothing
    early = (pd.Timestamp("2009-01-01"), pd.Timestamp("2009-02-01"))
    assert validation_split(sample_frames, cfg, END, (early,)) == plain
