from __future__ import annotations

import pytest

from seqablate.config import TrialConfig, with_overrides
from seqablate.search_spaces import RULES, model_problems


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"model.integration": "input", "model.sharing": "shared"}, "input-no-sharing"),
        ({"model.integration": "end", "model.fusion": "mean"}, "fusion-mid-only"),
        ({"model.integration": "input", "model.integration_point": "stem"}, "point-mid-only"),
        ({"model.integration": "input", "model.fusion": "mean"}, "fusion-mid-only"),
        ({"model.integration": "mid", "model.fusion": "subtract", "model.sharing": "independent"}, "subtract-needs-shared"),
        ({"model.integration": "mid", "model.fusion": "subtract", "model.sharing": "shared",
          "data.sequences": ["t1_gre_post", "flair"]}, "subtract-needs-pair"),
        ({"model.integration": "mid", "model.sharing": "shared", "train.tie_lambda": 0.1}, "tie-lambda-needs-l2-tied"),
        ({"model.integration": "end", "model.sharing": "l2_tied"}, "l2-tied-needs-lambda"),
    ],
)
def test_each_rule_catches_its_case(overrides: dict, rule: str) -> None:
    problems = model_problems(with_overrides(TrialConfig(), overrides))
    assert [p.split(":")[0] for p in problems] == [rule]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"model.integration": "mid", "model.fusion": "subtract", "model.sharing": "shared"},
        {"model.integration": "mid", "model.fusion": "mean", "model.sharing": "l2_tied", "train.tie_lambda": 1e-3},
        {"model.integration": "end", "model.sharing": "shared"},
        {"model.integration": "mid", "model.fusion": "subtract", "model.sharing": "shared",
         "data.sequences": ["t1_pre", "t1_post", "flair"]},
    ],
)
def test_valid_combinations_pass(overrides: dict) -> None:
    assert model_problems(with_overrides(TrialConfig(), overrides)) == []


def test_rule_names_unique() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))


def test_rules_agree_with_the_model_builder() -> None:
    """Every model rule here is one the builder enforces, and every valid point builds."""
    pytest.importorskip("torch")
    from seqablate.models.build import resolve_spec
    from seqablate.search_spaces import get_space, validate_space

    model_rules = {"input-no-sharing", "point-mid-only", "fusion-mid-only", "subtract-needs-shared", "subtract-needs-pair"}
    cases = [
        {"model.integration": "input", "model.sharing": "shared"},
        {"model.integration": "end", "model.integration_point": "layer2"},
        {"model.integration": "end", "model.fusion": "mean"},
        {"model.integration": "mid", "model.fusion": "subtract", "model.sharing": "l2_tied", "train.tie_lambda": 0.1},
        {"model.integration": "mid", "model.fusion": "subtract", "model.sharing": "shared", "data.sequences": ["flair", "t2"]},
    ]
    for overrides in cases:
        cfg = with_overrides(TrialConfig(), overrides)
        names = {p.split(":")[0] for p in model_problems(cfg, check_builder=False)}
        assert names and names <= model_rules, overrides
        with pytest.raises(ValueError):
            resolve_spec(cfg.model)
    grid_points = [p for n in ("paper-table1", "paper-table2", "dropout-sweep") for p in get_space(n).grid()]
    for point in grid_points + validate_space(get_space("hpo"), samples=100):
        resolve_spec(with_overrides(TrialConfig(), point).model)  # builds without complaint
