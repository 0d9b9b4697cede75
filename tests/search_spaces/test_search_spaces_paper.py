"""The paper grids, checked against the paper's tables written out by hand."""

from __future__ import annotations

from seqablate.config import TrialConfig, with_overrides
from seqablate.search_spaces import get_space, model_problems, run_name, validate_space


def _rows(name: str) -> list[tuple]:
    return [
        (
            p["model.integration"],
            p["model.integration_point"],
            p["model.fusion"],
            p["model.sharing"],
            p["train.tie_lambda"] > 0,
            p["train.dropout_p"],
        )
        for p in get_space(name).grid()
    ]


def test_table1_is_the_papers_eight_rows() -> None:
    assert _rows("paper-table1") == [
        ("input", "layer4", "concat", "independent", False, 0.0),
        ("mid", "layer4", "concat", "independent", False, 0.0),
        ("mid", "layer4", "concat", "shared", False, 0.0),
        ("mid", "layer4", "concat", "l2_tied", True, 0.0),
        ("end", "layer4", "concat", "independent", False, 0.0),
        ("end", "layer4", "concat", "shared", False, 0.0),
        ("end", "layer4", "concat", "l2_tied", True, 0.0),
        ("mid", "layer4", "subtract", "shared", False, 0.0),
    ]


def test_table2_is_table1_with_dropout_minus_subtraction() -> None:
    rows = _rows("paper-table2")
    assert len(rows) == 7
    t1 = [r[:5] for r in _rows("paper-table1") if r[2] != "subtract"]
    assert [r[:5] for r in rows] == t1
    assert {r[5] for r in rows} == {0.25}
    assert all(p["train.dropout_mode"] == "bernoulli" for p in get_space("paper-table2").grid())


def test_dropout_sweep() -> None:
    pts = get_space("dropout-sweep").grid()
    got = sorted((p["train.dropout_p"], p["train.dropout_mode"]) for p in pts)
    expected = [(0.0, "bernoulli")] + [
        (p, m) for p in (0.1, 0.25, 0.4, 0.5) for m in ("bernoulli", "uniform")
    ]
    assert got == sorted(expected)
    assert {p["model.integration"] for p in pts} == {"input"}


def test_every_grid_point_is_a_valid_distinct_trial_with_seeds() -> None:
    for name in ("paper-table1", "paper-table2", "dropout-sweep"):
        points = validate_space(get_space(name), seeds=3)
        assert len(points) == 3 * len(get_space(name).grid())
        names = [run_name(p) for p in points]
        assert len(set(names)) == len(names), name  # run names say what differs


def test_points_do_not_inherit_stray_base_values() -> None:
    # A base with shared branches, dropout and a tie strength must not leak into grid rows.
    base = with_overrides(
        TrialConfig(),
        {"model.sharing": "l2_tied", "model.integration": "end", "train.tie_lambda": 0.5,
         "train.dropout_p": 0.4, "model.fusion": "concat"},
    )
    first = get_space("paper-table1").grid()[0]
    cfg = with_overrides(base, first)
    assert (cfg.model.integration, cfg.model.sharing, cfg.train.tie_lambda, cfg.train.dropout_p) == (
        "input", "independent", 0.0, 0.0,
    )
    assert model_problems(cfg) == []
    validate_space(get_space("paper-table1"), base)
