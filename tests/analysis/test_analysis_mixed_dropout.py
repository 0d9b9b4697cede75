"""A study mixing one dropout p for every sequence with per-sequence probabilities: runs read
back from MLflow, tables, the no-dropout twin of both, findings, seed picking and the HPO view."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqablate.analysis.runs import Run

from .test_analysis_findings import _tables

SEQS = ("t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair")
# arm (train.dropout_p override) -> lesions found of 2 per patient, per condition
ARMS = {
    "none": (0.0, {"test.full": 2, "test.censor_t1_gre_post": 0}),
    "all": (0.25, {"test.full": 2, "test.censor_t1_gre_post": 2}),
    "bravo": ({"t1_gre_post": 0.5}, {"test.full": 1, "test.censor_t1_gre_post": 2}),
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 seeds per arm, GroupNorm, each run logging its tables, test mAPs (found / 2) and a
    validation objective that ranks the seeds (0.1 x seed, + 0.5 for the per-sequence arm)."""
    import os

    from seqablate import tracking
    from seqablate.config import TrialConfig, with_overrides

    root = tmp_path_factory.mktemp("mixed")
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with tracking.study_run("mixed", storage=str(root)) as st:
            for arm, (p, found) in ARMS.items():
                for seed in range(3):
                    ov = {"model.integration": "input", "model.norm": "group", "train.dropout_p": p, "train.seed": seed}
                    with tracking.trial_run(st.ref, with_overrides(TrialConfig(), ov), overrides=ov) as log:
                        pat, les = _tables(found)
                        log.log_table(pat, "eval/patients.csv")
                        log.log_table(les, "eval/lesions.csv")
                        best = 0.1 * seed + (0.5 if arm == "bravo" else 0.0)
                        log.log_metrics({**{f"{c}.mAP": k / 2 for c, k in found.items()},
                                         "val.best_objective": best, "val.best_mAP": best}, step=10)
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return root


def test_runs_read_scalar_and_mapping_back(mixed: Path) -> None:
    from seqablate.analysis.study import load_study

    runs = load_study(str(mixed)).runs
    by_p = {r.params["train.dropout_p"] for r in runs}
    assert by_p == {"0.0", "0.25", "t1_gre_post=0.5"}
    per_seq = [r for r in runs if r.params["train.dropout_p"] == "t1_gre_post=0.5"]
    assert len(per_seq) == 3 and all(r.dropout_p == {"t1_gre_post": 0.5} and r.has_dropout for r in per_seq)
    assert per_seq[0].name == "input-p_t1_gre_post=0.5-normgroup-seed0" and per_seq[0].tags["dropout"] == "t1_gre_post=0.5"
    assert sorted(r.dropout_label for r in runs if r.has_dropout) == ["p t1_gre_post=0.5"] * 3 + ["p=0.25"] * 3


def test_tables_pair_both_dropout_kinds_with_the_no_dropout_twin(mixed: Path) -> None:
    from seqablate.analysis.study import load_study
    from seqablate.analysis.tables import table_censored, table_integration

    runs = load_study(str(mixed)).runs
    t1 = table_integration(runs, dropout=False)
    assert [r.labels[:2] for r in t1.rows] == [["Input", "-"]] and t1.rows[0].cells[0].main == "100.0"
    t2 = table_integration(runs, dropout=True)
    rows = {r.labels[1]: r.cells[0] for r in t2.rows}
    # one p sorts before per-sequence probabilities; the label says which row is which
    assert [r.labels[1] for r in t2.rows] == ["- [p=0.25]", "- [p t1_gre_post=0.5]"]
    assert rows["- [p=0.25]"].main == "100.0" and rows["- [p=0.25]"].detail.endswith(" (+0.0%)")
    assert rows["- [p t1_gre_post=0.5]"].main == "50.0"
    assert rows["- [p t1_gre_post=0.5]"].detail.endswith(" (-50.0%)")  # (50 - 100) / 100 against the twin
    t4 = table_censored(runs, dropout=True)
    assert [(r.labels[1], r.cells[0].main) for r in t4.rows] == [("- [p=0.25]", "100.0"),
                                                                 ("- [p t1_gre_post=0.5]", "100.0")]


def test_findings_and_seed_picking_with_per_sequence_dropout(mixed: Path) -> None:
    from seqablate.analysis.figures import best_runs
    from seqablate.analysis.findings import _pairs, build_findings
    from seqablate.analysis.runs import group_by_config
    from seqablate.analysis.study import load_study
    from seqablate.analysis.traces import collect_traces

    data = load_study(str(mixed))
    pairs = _pairs(data.runs)
    assert sorted(pr.drop.label for pr in pairs) == ["Input, dropout p t1_gre_post=0.5", "Input, dropout p=0.25"]
    assert {pr.base.label for pr in pairs} == {"Input"}  # the same no-dropout twin for both
    findings = build_findings(data, data.runs, collect_traces(data, group_by_config(data.runs), progress=False))
    per_seq = {f.claim: f for f in findings if f.configuration == "Input, dropout p t1_gre_post=0.5"}
    # (c): with minus without dropout on the full protocol, 50 - 100, every seed and patient alike
    assert "mAP 50.0 with vs 100.0 without dropout" in per_seq["c"].text
    best = best_runs(data.runs)
    assert best["dropout"].name == "input-p_t1_gre_post=0.5-normgroup-seed2"  # the highest val.best_objective
    assert best["no dropout"].name == "input-normgroup-seed2"


def test_hpo_view_spreads_per_sequence_probabilities(mixed: Path) -> None:
    from seqablate.analysis.hpo import searchable, searched_params, trial_frame
    from seqablate.analysis.study import load_study

    runs = load_study(str(mixed)).runs
    params = searched_params(runs)
    assert [p for p in params if p.startswith("train.dropout_p")] == [f"train.dropout_p.{s}" for s in sorted(SEQS)]
    views = searchable(runs)
    one = next(r for r in runs if r.params["train.dropout_p"] == "0.25")
    assert {s: views[one.run_id][f"train.dropout_p.{s}"] for s in SEQS} == dict.fromkeys(SEQS, "0.25")
    frame = trial_frame(runs, "val.best_objective", params).set_index("run")
    assert frame.loc["input-p_t1_gre_post=0.5-normgroup-seed1", "train.dropout_p.t1_gre_post"] == 0.5
    assert frame.loc["input-p_t1_gre_post=0.5-normgroup-seed1", "train.dropout_p.flair"] == 0


def test_a_mapping_of_zeros_is_the_no_dropout_twin() -> None:
    from seqablate.analysis.tables import table_integration

    def run(i: int, p: str, m: float) -> Run:
        return Run(f"id{i}", f"r{i}", "FINISHED", {"model.integration": "input", "train.dropout_p": p,
                                                    "train.seed": "0"}, {}, {"test.full.mAP": m})

    zeros, drop = run(0, "t1_gre_post=0.0,flair=0.0", 0.4), run(1, "flair=0.3", 0.3)
    assert not zeros.has_dropout and zeros.dropout_label == "" and drop.dropout_label == "p flair=0.3"
    assert [r.labels[0] for r in table_integration([zeros, drop], dropout=False).rows] == ["Input"]
    (row,) = table_integration([zeros, drop], dropout=True).rows
    assert row.cells[0].detail.endswith(" (-25.0%)")  # (0.3 - 0.4) / 0.4
    with pytest.raises(ValueError, match=r"run idx \(x\): train.dropout_p .*'flair=lots'"):
        _ = Run("idx", "x", "FINISHED", {"train.dropout_p": "flair=lots"}).dropout_p
