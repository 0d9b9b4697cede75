"""Run records: frames from MLflow, conditions, metric names, seed grouping."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from seqablate.analysis.runs import (
    Run,
    group_by_config,
    runs_from_frame,
    study_sequences,
)
from seqablate.metric_names import condition_subset, parse_metric

SEQS = ("t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair")


@pytest.mark.parametrize(
    "cond, expected",
    [
        ("full", SEQS),
        ("censor_t1_gre_post", ("t1_fse_pre", "t1_fse_post", "flair")),
        ("censor_flair", ("t1_gre_post", "t1_fse_pre", "t1_fse_post")),
        ("subset_t1_fse_pre+flair", ("t1_fse_pre", "flair")),
        ("subset_t1_fse_pre-t1_fse_post", ("t1_fse_pre", "t1_fse_post")),
        ("censor_t1_fse_pre__t1_fse_post", ("t1_gre_post", "flair")),
        ("censor_t2", None),  # not a study sequence
        ("subset_flair_and_t2", None),  # leftover text: unknown shape
        ("noise", None),
    ],
)
def test_condition_subset(cond, expected):
    assert condition_subset(cond, SEQS) == expected


def test_parse_metric():
    p = parse_metric("test.censor_t1_gre_post.mAP_lo")
    assert (p.split, p.condition, p.metric, p.bound) == ("test", "censor_t1_gre_post", "mAP", "_lo")
    assert parse_metric("test.full.tp_dice").metric == "tp_dice"
    e = parse_metric("external.oslo.max_sensitivity")
    assert (e.cohort, e.condition, e.metric, e.bound) == ("oslo", "full", "max_sensitivity", None)
    assert parse_metric("external.oslo.censor_flair.mAP").condition == "censor_flair"
    assert parse_metric("val.mAP") is None


def test_runs_from_frame_drops_nan_and_needs_run_id():
    df = pd.DataFrame([
        {"run_id": "a", "run_name": "x", "status": "FINISHED", "params.train.seed": "0",
         "metrics.test.full.mAP": 0.5, "metrics.test.full.tp_dice": math.nan, "tags.seed": "0"},
    ])
    (r,) = runs_from_frame(df)
    assert r.metrics == {"test.full.mAP": 0.5}  # NaN = not logged
    assert r.name == "x" and r.seed == "0" and r.usable
    with pytest.raises(ValueError, match="run_id"):
        runs_from_frame(pd.DataFrame({"x": [1]}))


def test_grouping_by_seed_and_disambiguation():
    def run(i, seed, lr):
        return Run(f"id{i}", f"r{i}", "FINISHED",
                   {"model.integration": "input", "train.seed": str(seed), "train.lr": lr})
    groups = group_by_config([run(0, 0, "0.001"), run(1, 1, "0.001"), run(2, 0, "0.01")])
    assert [len(g.runs) for g in groups] == [2, 1]
    assert [g.label for g in groups] == ["Input [lr=0.001]", "Input [lr=0.01]"]
    bad = Run("z", "z", "FINISHED", {"train.dropout_p": "lots"})
    with pytest.raises(ValueError, match="dropout_p"):
        _ = bad.dropout_p


def test_study_sequences_is_the_longest_list():
    a = Run("a", "a", "FINISHED", {"data.sequences": "t1_fse_pre,flair"})
    b = Run("b", "b", "FINISHED", {"data.sequences": ",".join(SEQS)})
    assert study_sequences([a, b]) == SEQS
