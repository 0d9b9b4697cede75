from __future__ import annotations

import hashlib
import json

import pytest

from seqablate.search_spaces import DEFAULT_TIE_LAMBDA, expand_seeds, run_name, trial_key


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({}, "base"),
        ({"model.integration": "input", "train.seed": 0}, "input-seed0"),
        ({"model.integration": "input", "model.sharing": "independent", "train.dropout_p": 0.25, "train.seed": 1}, "input-p0.25-seed1"),
        ({"model.integration": "mid", "model.integration_point": "layer4", "model.sharing": "l2_tied",
          "train.tie_lambda": DEFAULT_TIE_LAMBDA, "train.dropout_p": 0.25, "train.seed": 1}, "mid@layer4-l2_tied-p0.25-seed1"),
        ({"model.integration": "mid", "model.integration_point": "layer2", "model.sharing": "l2_tied",
          "train.tie_lambda": 0.02}, "mid@layer2-l2_tied-lam0.02"),
        ({"model.integration": "mid", "model.sharing": "shared", "model.fusion": "subtract", "train.seed": 0},
         "mid@layer4-shared-subtract-seed0"),
        ({"model.integration": "end", "model.sharing": "independent", "train.dropout_p": 0.4,
          "train.dropout_mode": "uniform", "train.seed": 2}, "end-independent-p0.4-uniform-seed2"),
        ({"model.integration": "input", "train.dropout_p": 0.0, "train.dropout_mode": "uniform"}, "input"),
        ({"model.integration": "input", "train.lr": 0.00031}, "input-lr3.1e-4"),
        ({"train.batch_size": 8, "data.sequences": ["flair", "t1_gre_post"], "train.seed": 3},
         "sequencesflair+t1_gre_post-batch_size8-seed3"),
    ],
)
def test_run_name(overrides: dict, name: str) -> None:
    assert run_name(overrides) == name


def test_trial_key_is_order_free_stable_and_value_sensitive() -> None:
    a = {"model.integration": "mid", "train.seed": 1, "train.dropout_p": 0.25}
    b = {"train.dropout_p": 0.25, "train.seed": 1, "model.integration": "mid"}
    assert trial_key(a) == trial_key(b)
    assert trial_key(a) != trial_key({**a, "train.seed": 2})
    assert trial_key({"x": 0.1 + 0.2}) == trial_key({"x": 0.3})  # float noise does not split keys
    assert trial_key({"x": 1}) != trial_key({"x": "1"})
    # Independently computed: sha256 of the sorted compact JSON, first 16 hex digits.
    payload = json.dumps(b, sort_keys=True, separators=(",", ":"))
    assert trial_key(a) == hashlib.sha256(payload.encode()).hexdigest()[:16]


def test_expand_seeds() -> None:
    out = expand_seeds([{"a": 1}, {"a": 2, "train.seed": 9}], 3)
    assert out == [
        {"a": 1, "train.seed": 0}, {"a": 1, "train.seed": 1}, {"a": 1, "train.seed": 2},
        {"a": 2, "train.seed": 9}, {"a": 2, "train.seed": 10}, {"a": 2, "train.seed": 11},
    ]
    # points naming their seeds (a retrain with seeds a search never saw) keep them
    assert [c["train.seed"] for c in expand_seeds([{"train.seed": s} for s in (1, 2, 3)], 1)] == [1, 2, 3]
    with pytest.raises(ValueError, match="train.seed must be an integer >= 0"):
        expand_seeds([{"train.seed": "1"}], 1)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
            expand_seeds([{}], bad)  # type: ignore[arg-type]
