"""Paper tables from a real (SQLite) MLflow study written with seqablate.tracking.

Expected cells are computed by hand from conftest.TRIALS (values in percent, one decimal):
Table I, Input: mAP seeds 0.40 / 0.50 -> mean 45.0, sample std sqrt(2 * 0.05^2 / 1) = 7.07 ->
7.1; no CI without per-patient detections (the mean of the seeds' bounds is not a CI of the
mean: tests/analysis/test_analysis_table_intervals.py checks the seed-aware one).
"""

from __future__ import annotations

import pytest

from seqablate import tracking
from seqablate.analysis.render import table_html, table_markdown
from seqablate.analysis.runs import Run, runs_from_frame
from seqablate.analysis.tables import build_tables, table_censored, table_integration


@pytest.fixture(scope="module")
def tables(toy_study):
    runs = runs_from_frame(tracking.list_trials(str(toy_study)))
    return {t.id: t for t in build_tables(runs)}


def _row(table, *labels):
    for r in table.rows:
        if tuple(r.labels[: len(labels)]) == labels:
            return r
    raise AssertionError(f"no row {labels} in table {table.id}: {[r.labels for r in table.rows]}")


def test_table1_numbers_rows_and_marks(tables):
    t = tables["I"]
    inp = _row(t, "Input", "-")
    assert inp.labels[2] == "2/2"  # both seeds aggregated
    m, sens, dice = inp.cells
    assert (m.main, m.detail) == ("45.0", " ± 7.1")
    assert (sens.main, sens.detail) == ("85.0", " ± 7.1")
    assert (dice.main, dice.detail) == ("71.0", " ± 1.4")
    mid = _row(t, "Mid (layer4)", "Fully Shared")
    assert mid.cells[0].main == "60.0" and mid.cells[0].detail == ""  # one seed: no spread, no CI
    # mAP: mid 60.0 best, input 45.0 second; sensitivity: input 85.0 best, mid 70.0 second.
    assert (mid.cells[0].emphasis, m.emphasis) == ("best", "second")
    assert (sens.emphasis, mid.cells[1].emphasis) == ("best", "second")
    # TP Dice of a model without true positives is undefined, not missing and not zero.
    assert mid.cells[2].main == "-" and mid.cells[2].emphasis is None
    md = table_markdown(t)
    assert "| Input | - | 2/2 | <u>45.0</u> ± 7.1 | **85.0** ± 7.1 | **71.0** ± 1.4 |" in md
    assert "| Mid (layer4) | Fully Shared | 1/1 | **60.0** | <u>70.0</u> | - (no true positives) |" in md
    html = table_html(t)
    assert "<td><u>45.0</u> ± 7.1</td>" in html and "<td><b>60.0</b></td>" in html


def test_missing_runs_are_reported_not_zero(tables):
    t = tables["I"]
    end = _row(t, "End", "Fully Ind.")
    assert [c.main for c in end.cells] == ["missing"] * 3
    assert all(c.value is None and c.emphasis is None for c in end.cells)
    assert any("end-independent-seed0" in m and "FAILED" in m for m in t.missing)
    assert "| End | Fully Ind. | 0/1 | missing | missing | missing |" in table_markdown(t)
    # A row the study never evaluated under the censored condition is named in Table III.
    t3 = tables["III"]
    assert [c.main for c in _row(t3, "Mid (layer4)", "Fully Shared").cells] == ["missing"] * 3
    assert any("mid@layer4-shared-seed0" in m and "test.censor_t1_gre_post.mAP" in m for m in t3.missing)
    # No cell anywhere shows 0.0 for something that was not logged.
    for table in tables.values():
        for r in table.rows:
            for c in r.cells:
                assert not (c.value is None and c.main not in ("missing", "-"))


def test_table2_relative_change_against_twin(tables):
    t = tables["II"]
    assert len(t.rows) == 1
    m, sens, dice = t.rows[0].cells
    # dropout 0.45 vs no-dropout 0.45 -> +0.0 %; dice 0.72 vs 0.71 -> +1.4 %
    assert (m.main, m.detail) == ("45.0", " ± 1.4 (+0.0%)")
    assert sens.detail == " ± 0.0 (+0.0%)"
    assert dice.detail == " ± 1.4 (+1.4%)"
    assert m.emphasis == "best"  # a single row is the best of its column


def test_tables3_4_censored_and_exact_subset(tables):
    t3 = tables["III"]
    inp = _row(t3, "Input", "-")
    assert inp.section is None and inp.cells[0].main == "3.0"  # (0.02 + 0.04) / 2
    exact = [r for r in t3.rows if r.section == "Trained without t1_gre_post"]
    assert len(exact) == 1 and exact[0].cells[0].main == "30.0"
    assert exact[0].cells[0].emphasis == "best" and inp.cells[0].emphasis == "second"
    t4 = tables["IV"]
    assert [r.cells[0].main for r in t4.rows] == ["39.0"]  # (0.38 + 0.40) / 2


def test_table5_rows_per_subset(tables):
    t = tables["V"]
    # full protocol, flair censored, t1_gre_post censored: in subsets() order (largest first,
    # then by position), marks per sequence column.
    assert [r.labels[:4] for r in t.rows] == [
        ["✓", "✓", "✓", "✓"],
        ["✓", "✓", "✓", "✗"],
        ["✗", "✓", "✓", "✓"],
    ]
    assert [r.cells[0].main for r in t.rows] == ["45.0", "44.0", "39.0"]
    assert [r.cells[0].emphasis for r in t.rows] == ["best", "second", None]
    assert any("3 of the 15" in n for n in t.notes)


def test_table6_external(tables):
    t = tables["VI"]
    first = t.rows[0]
    assert first.labels[:3] == ["Input", "-", "dropout p=0.25"] and first.cells[0].main == "61.0"
    nodrop = _row(t, "Input", "-", "all sequences")
    assert nodrop.cells[0].main == "6.0" and nodrop.cells[0].emphasis == "second"
    sub = _row(t, "Input", "-", "without t1_gre_post")
    assert sub.cells[0].main == "missing"


def _run(i, integration="input", p=0.0, metrics=None, seqs="t1_gre_post,t1_fse_pre,t1_fse_post,flair"):
    return Run(f"id{i}", f"r{i}", "FINISHED",
               {"model.integration": integration, "train.dropout_p": str(p), "train.seed": str(i),
                "data.sequences": seqs}, {}, metrics or {})


def test_unavailable_tables_say_why():
    runs = [_run(0, metrics={"test.full.mAP": 0.5})]
    t2 = table_integration(runs, dropout=True)
    assert not t2.available and "dropout" in t2.reason
    t4 = table_censored(runs, dropout=True)
    assert not t4.available and "t1_gre_post" in t4.reason
    t3 = table_censored(runs, dropout=False)  # no-dropout run exists but no censored condition
    assert not t3.available
    assert any("censor_t1_gre_post" in m for m in t3.missing)
    assert "Not available" in table_markdown(t2) and "Not available" in table_html(t2)


def test_ties_share_the_mark_and_missing_twin():
    runs = [
        _run(0, metrics={"test.full.mAP": 0.5}),
        _run(1, integration="end", metrics={"test.full.mAP": 0.5}),
        _run(2, integration="mid", metrics={"test.full.mAP": 0.4}),
        _run(3, integration="mid", p=0.25, metrics={"test.full.mAP": 0.3}),
    ]
    t = table_integration(runs, dropout=False)
    assert [r.cells[0].emphasis for r in t.rows] == ["best", "second", "best"]  # input, mid, end
    # An input-level dropout run whose only no-dropout relative has another fusion: no twin.
    odd = Run("x", "x", "FINISHED", {"model.integration": "input", "model.fusion": "mean",
                                     "train.dropout_p": "0.25", "train.seed": "0"}, {},
              {"test.full.mAP": 0.1})
    t2 = table_integration(runs + [odd], dropout=True)
    details = {r.labels[0]: r.cells[0].detail for r in t2.rows}
    assert details["Mid (layer4)"] == " (-25.0%)"  # (0.3 - 0.4) / 0.4
    assert details["Input"] == " (no twin)"  # its twin differs by fusion too
