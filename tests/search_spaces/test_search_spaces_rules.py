from __future__ import annotations

import pytest

from seqablate.config import TrialConfig, with_overrides
from seqablate.search_spaces import RULES, model_problems


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"model.integration": "input", "model.sharing": "shared"}, "input-no-sharing"),
        ({"model.integration": "end", "model.fusion": "mean"}, "fusion-mid-only"),
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
