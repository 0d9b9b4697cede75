"""The vocabulary is declared once: the config, the implementations, the search spaces and the
report agree with it, and its rules match the paper's constraints written out by hand."""

from __future__ import annotations

import itertools

import pytest
import torch
from pydantic import ValidationError

from seqablate import vocabulary as V
from seqablate.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from seqablate.models import backbones, build_model, fusion, integration
from seqablate.search_spaces import get_space
from seqablate.sequences import PAPER_SEQUENCES


@pytest.mark.parametrize(("model", "field", "declared"), [
    (ModelConfig, "integration", V.INTEGRATIONS),
    (ModelConfig, "integration_point", V.INTEGRATION_POINTS),
    (ModelConfig, "fusion", V.FUSIONS),
    (ModelConfig, "sharing", V.SHARING_MODES),
    (ModelConfig, "backbone", V.BACKBONES),
    (ModelConfig, "norm", V.NORMS),
    (TrainConfig, "dropout_mode", V.DROPOUT_MODES),
    (EvalConfig, "norm_stats", V.NORM_STATS),
    (DataConfig, "intensity", V.INTENSITIES),
])
def test_config_accepts_exactly_the_declared_values(model, field, declared):
    for value in declared:
        assert getattr(model.model_validate({field: value}), field) == value
    with pytest.raises(ValidationError, match=field):
        model.model_validate({field: "not-a-" + field})


def test_implementations_cover_the_vocabulary():
    assert sorted(fusion.FUSIONS.names()) == sorted(V.FUSIONS)
    assert sorted(integration.INTEGRATIONS.names()) == sorted(V.INTEGRATIONS)
    assert sorted(backbones.BACKBONES) == sorted(V.BACKBONES)
    # Every integration point is a stage a mid-level model can stop its branches after.
    for point in V.INTEGRATION_POINTS:
        model = build_model({"integration": "mid", "integration_point": point, "backbone": "tiny",
                             "sequences": ["t1_gre_post", "flair"], "slices": 1}, seed=0)
        logits = model.eval()(torch.zeros(1, 2, 1, 32, 32), torch.ones(1, 2, dtype=torch.bool))
        assert logits.shape == (1, 1, 32, 32), point
    assert set(V.INTEGRATION_LABELS) == set(V.INTEGRATIONS)
    assert set(V.SHARING_LABELS) == set(V.SHARING_MODES)


def _paper_valid(integration, point, fusion_, sharing, tie_lambda):
    """The paper's constraints, written out without the vocabulary's rule table."""
    if integration == "input" and (point, fusion_, sharing) != ("layer4", "concat", "independent"):
        return False
    if integration == "end" and (point, fusion_) != ("layer4", "concat"):
        return False
    if fusion_ == "subtract" and sharing != "shared":
        return False
    if sharing == "l2_tied":
        return tie_lambda > 0
    return tie_lambda == 0


def test_rules_agree_with_the_constraints_by_hand():
    combos = itertools.product(V.INTEGRATIONS, V.INTEGRATION_POINTS, V.FUSIONS, V.SHARING_MODES, (0.0, 1e-3))
    n_valid = 0
    for integ, point, fus, share, lam in combos:
        model = {"integration": integ, "integration_point": point, "fusion": fus, "sharing": share,
                 "sequences": list(PAPER_SEQUENCES)}
        valid = not V.model_problems(model, tie_lambda=lam)
        assert valid == _paper_valid(integ, point, fus, share, lam), model | {"tie_lambda": lam}
        n_valid += valid
    # input: 1; end: 3 sharings; mid: 5 points x (concat/mean x 3 sharings + subtract x shared)
    assert n_valid == 1 + 3 + 5 * (2 * 3 + 1)


def test_search_spaces_draw_from_the_vocabulary():
    points = get_space("paper-table1").grid(seeds=1) + get_space("dropout-sweep").grid(seeds=1)
    assert points
    for p in points:
        for key, declared in (("model.integration", V.INTEGRATIONS), ("model.sharing", V.SHARING_MODES),
                              ("model.fusion", V.FUSIONS), ("model.integration_point", V.INTEGRATION_POINTS),
                              ("train.dropout_mode", V.DROPOUT_MODES)):
            if key in p:
                assert p[key] in declared, (key, p)
