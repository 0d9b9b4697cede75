"""The report's Findings: claims (a)-(e) worded from paired differences computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqablate.analysis.consistency import SaliencyTrace, consistency_difference

PATIENTS = [f"p{i}" for i in range(8)]


def _tables(found: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per condition: 8 patients with 2 truth lesions each; ``found[cond]`` of them detected
    (one prediction each, score 0.9, a true positive) in every patient."""
    pat, les = [], []
    for cond, k in found.items():
        for p in PATIENTS:
            pat.append({"condition": cond, "patient": p, "n_truth": 2, "n_pred": k, "n_tp": k, "voxel_dice": 0.5})
            for j in range(k):
                les.append({"condition": cond, "patient": p, "lesion": j + 1, "score": 0.9, "centre_x_mm": 0.0,
                            "centre_y_mm": 0.0, "centre_z_mm": 0.0, "volume_mm3": 1.0, "distance_mm": 0.0,
                            "matched_lesion": j + 1, "dice": 0.5, "is_tp": True})
    return pd.DataFrame(pat), pd.DataFrame(les)


def _write_study(root: Path, name: str, extra: dict, found_of, *, drop_patient: str | None = None,
                 saliency: bool = False) -> Path:
    """A study of 3 + 3 seeds (input, dropout 0 and 0.25) whose runs log the tables of
    :func:`_tables` with ``found_of(p)`` lesions found per condition; ``drop_patient`` is left
    out of the censored condition's tables (a patient it could not score)."""
    import os

    from seqablate import tracking
    from seqablate.config import TrialConfig, with_overrides

    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with tracking.study_run(name, storage=str(root)) as st:
            for p in (0.0, 0.25):
                for seed in range(3):
                    ov = {"model.integration": "input", "train.dropout_p": p, "train.seed": seed, **extra}
                    with tracking.trial_run(st.ref, with_overrides(TrialConfig(), ov), overrides=ov) as log:
                        found = found_of(p)
                        pat, les = _tables(found)
                        if drop_patient is not None:
                            pat = pat[~((pat["condition"] == "test.censor_t1_gre_post") & (pat["patient"] == drop_patient))]
                            les = les[~((les["condition"] == "test.censor_t1_gre_post") & (les["patient"] == drop_patient))]
                        log.log_table(pat, "eval/patients.csv")
                        log.log_table(les, "eval/lesions.csv")
                        log.log_metrics({f"{c}.mAP": k / 2 for c, k in found.items()}, step=10)
                        for step in (10, 20, 30) if saliency else ():
                            log.log_metrics({f"saliency.cumulative.sequence.{s}": float(step * (i + 1))
                                             for i, s in enumerate(("t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"))},
                                            step=step)
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return root


@pytest.fixture(scope="module", params=["stored", "per_subset"])
def study(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """3 seeds without dropout (full: all found; t1_gre_post censored: none; oslo: none) and
    3 seeds with dropout (everything found everywhere); identical saliency for every run.
    GroupNorm models: each logs only its own metrics, whatever its ``eval.norm_stats``."""
    return _write_study(tmp_path_factory.mktemp("findings"), "pairs",
                        {"model.norm": "group", "eval.norm_stats": request.param},
                        lambda p: {"test.full": 2, "test.censor_t1_gre_post": 0 if p == 0 else 2,
                                   "external.oslo": 0 if p == 0 else 2}, saliency=True)


def _findings(root: Path) -> dict[str, object]:
    from seqablate.analysis.findings import build_findings
    from seqablate.analysis.runs import group_by_config
    from seqablate.analysis.study import load_study
    from seqablate.analysis.traces import collect_traces

    data = load_study(str(root))
    traces = collect_traces(data, group_by_config(data.runs), progress=False)
    return {f.claim: f for f in build_findings(data, data.runs, traces)}


def test_claims_worded_from_the_numbers(study: Path) -> None:
    found = _findings(study)
    assert set(found) == {"a", "b", "c", "d", "e"}
    # (a) no dropout: mAP 100 -> 0 when censored; every seed and patient identical, so both
    # intervals are the point; the contrast censored - 0.5 full = -0.5 with SE 0: p = 0.
    a = found["a"]
    assert "mAP 100.0 -> 0.0" in a.text and "+100.0 points" in a.text
    assert "these trained networks (3 seeds, 8 patients)" in a.text and "the training recipe" in a.text
    assert a.holds is True and a.test.outcome == "holds" and a.test.p_value == 0.0
    # (b) with dropout the censored mAP equals the full one: within d = max(20 % of 100, 3) = 20 points
    assert found["b"].holds is True and "margin d = 20.0 points" in found["b"].text
    assert found["c"].holds is True and "margin d = 20.0 points" in found["c"].text
    assert found["e"].holds is True and "ratio 0 %" in found["e"].text
    # (d) identical saliency: the one-sided exact permutation p is 1 (every split ties); 3 + 3
    # seeds have a floor of 1/20; (d) has the largest p, so Holm tests it at 0.05 / 1.
    d = found["d"]
    assert d.holds is False and "p = 1" in d.text and "floor 0.05" in d.text
    # Holm over the four claims with p = 0 and (d): levels 0.01, 0.0125, 0.0167, 0.025, 0.05
    assert sorted(round(f.test.alpha, 4) for f in found.values()) == [0.01, 0.0125, 0.0167, 0.025, 0.05]
    # group norm: no statistics policy to compare
    assert "stored statistics" not in a.text and "Depends on" not in a.text


@pytest.fixture(scope="module")
def bn_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BatchNorm runs configured with stored statistics, logging both policies: without
    dropout, censoring loses everything under stored statistics and nothing under per-subset
    ones; the dropout arm finds everything everywhere."""
    return _write_study(tmp_path_factory.mktemp("findings-bn"), "bn", {"eval.norm_stats": "stored"},
                        lambda p: {"test.full": 2, "test.censor_t1_gre_post": 0 if p == 0 else 2,
                                   "test_per_subset.full": 2, "test_per_subset.censor_t1_gre_post": 2})


def test_the_configured_policy_is_the_headline_and_disagreement_is_named(bn_study: Path) -> None:
    found = _findings(bn_study)
    a = found["a"]
    assert a.headline == "stored" and set(a.tests) == {"stored", "per_subset"}
    assert a.tests["stored"].outcome == "holds" and a.tests["per_subset"].outcome == "does not hold"
    assert a.holds is True  # the configured policy decides
    assert "Depends on the BatchNorm statistics policy: holds under stored statistics (configured), " \
           "does not hold under per-subset statistics." in a.text
    assert "[stored statistics, configured]" in a.text and "[per-subset statistics:" in a.text
    # (b), (c): the same under both policies: no disagreement sentence
    assert "Depends on" not in found["b"].text and "Depends on" not in found["c"].text


def trace(shares: list[float]) -> SaliencyTrace:
    """A saliency trace over three sequences, the same shares at steps 1 and 2."""
    return SaliencyTrace(("a", "b", "c"), np.array([1, 2]), np.array([shares, shares]) * np.array([[1.0], [2.0]]))


def test_consistency_difference_exact_one_sided_permutation() -> None:
    same = [trace([0.5, 0.3, 0.2]) for _ in range(4)]
    varied = [trace([0.7, 0.2, 0.1]), trace([0.2, 0.7, 0.1]), trace([0.1, 0.2, 0.7]), trace([0.4, 0.4, 0.2])]
    res = consistency_difference(same, varied)
    # 4 + 4 seeds: C(8, 4) = 70 splits; only the observed one puts all identical seeds in A,
    # so it alone has the lowest difference: one-sided p = 1/70, the floor.
    assert res.difference < 0 and res.p_value == pytest.approx(1 / 70) and res.min_p == pytest.approx(1 / 70)
    assert res.exact
    # The other direction: B more consistent than A is the least extreme outcome: p = 1
    assert consistency_difference(varied, same).p_value == pytest.approx(1.0)
    null = consistency_difference(same[:3], same[:3])
    assert null.difference == 0.0 and null.p_value == 1.0 and null.min_p == pytest.approx(1 / 20)
    with pytest.raises(ValueError, match=">= 2 seeds"):
        consistency_difference(same[:1], same)


def test_seeds_needed_for_a_holm_level() -> None:
    from math import comb

    from seqablate.analysis.consistency import permutation_floor, seeds_needed

    assert permutation_floor(3, 3) == pytest.approx(1 / 20) and permutation_floor(5, 5) == pytest.approx(1 / 252)
    # Holm's strictest level for five claims is 0.05 / 5 = 0.01: 4 + 4 seeds floor at 1/70 = 0.0143,
    # 5 + 5 at 1/252 = 0.004.
    assert seeds_needed(0.01) == 5 and 1 / comb(8, 4) > 0.01 >= 1 / comb(10, 5)
    assert seeds_needed(0.05) == 3 and seeds_needed(0.0125) == 5 and seeds_needed(0.1) == 3 and seeds_needed(0.2) == 2  # 1/C(4, 2) = 0.167


def test_consistency_difference_unequal_arms_and_sampled_permutations() -> None:
    same = [trace([0.5, 0.3, 0.2]) for _ in range(3)]
    varied = [trace([0.7, 0.2, 0.1]), trace([0.2, 0.7, 0.1]), trace([0.1, 0.2, 0.7]), trace([0.4, 0.4, 0.2])]
    # 3 against 4: C(7, 3) = 35 splits, floor 1/35; p counted here by a literal loop.
    from itertools import combinations

    from seqablate.analysis.consistency import consistency

    seeds = [*same, *varied]

    def diff(idx: tuple[int, ...]) -> float:
        rest = [i for i in range(7) if i not in idx]
        return consistency([seeds[i] for i in idx]).spread - consistency([seeds[i] for i in rest]).spread

    observed = diff((0, 1, 2))
    hits = sum(diff(s) <= observed + 1e-12 for s in combinations(range(7), 3))
    res = consistency_difference(same, varied)
    assert res.min_p == pytest.approx(1 / 35) and res.p_value == pytest.approx(hits / 35) and hits >= 1
    # Sampled permutations (max 10 of the 35): the observed split counts once, p >= 1/11.
    sampled = consistency_difference(same, varied, max_permutations=10)
    assert sampled.min_p == pytest.approx(1 / 11) and sampled.p_value >= 1 / 11 and not sampled.exact


def test_forest_plot_and_compact_table(bn_study: Path, tmp_path: Path) -> None:
    from seqablate.analysis.forest import findings_table, forest_rows, plot_forest

    found = [f for f in _findings(bn_study).values() if f.claim != "vs"]  # the claims, not baselines
    rows = forest_rows(found)
    # (a), (b), (c) under two policies each: six rows; (d) has no saliency here, no (e)
    assert len(rows) == 6 and {r["policy"] for r in rows} == {"stored", "per-subset"}
    a_stored = next(r for r in rows if r["label"].startswith("(a)") and r["policy"] == "stored")
    a_subset = next(r for r in rows if r["label"].startswith("(a)") and r["policy"] == "per-subset")
    assert a_stored["headline"] and not a_subset["headline"]
    assert a_stored["effect"] == pytest.approx(100.0) and a_subset["effect"] == pytest.approx(0.0)
    assert a_stored["recipe"] == pytest.approx((100.0, 100.0)) and a_stored["outcome"] == "holds"
    path = plot_forest(found, tmp_path / "forest.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = findings_table(found)
    assert list(table.columns) == ["claim", "comparison", "effect", "recipe CI", "verdict"]
    a = table[table["claim"] == "a"].iloc[0]
    assert a["comparison"] == "Input: no dropout, full - censored" and a["effect"] == "+100.0 points" and a["verdict"] == "holds (depends on the statistics policy)"
    assert a["recipe CI"].endswith("CI +100.0 to +100.0")


def test_an_outside_baseline_is_a_row_of_table_i_and_a_paired_comparison(bn_study: Path) -> None:
    """A baseline (another tool's predictions) finding 1 of each patient's 2 lesions at score 0.9:
    mAP 0.5 by hand; the no-dropout arm finds both (1.0): +50 points on the same 8 patients."""
    from seqablate import tracking
    from seqablate.analysis.detections import StudyDetections
    from seqablate.analysis.study import load_study
    from seqablate.analysis.tables import build_tables

    ref = tracking.resolve_study(str(bn_study))
    if not len(tracking.list_baselines(ref)):
        tags = {tracking.TAG_KIND: tracking.KIND_BASELINE, tracking.TAG_BASELINE: "nnunet-2d",
                tracking.TAG_PARENT: ref.parent_run_id}
        run_id = tracking.create_run(ref.tracking_uri, ref.experiment_id, run_name="nnunet-2d", tags=tags)
        log = tracking.RunLogger(ref.tracking_uri, run_id)
        pat, les = _tables({"test.full": 1})
        log.log_table(pat, "eval/patients.csv")
        log.log_table(les, "eval/lesions.csv")
        log.log_metrics({"test.full.mAP": 0.5})
        log.finish()
    data = load_study(str(bn_study))
    assert [b.name for b in data.baselines] == ["nnunet-2d"] and len(data.runs) == 6  # not a trial
    with StudyDetections(data) as det:
        tables = {t.id: t for t in build_tables(data.runs, intervals=det.mean_interval, baselines=data.baselines)}
    row = next(r for r in tables["I"].rows if r.labels[0] == "Outside: nnunet-2d")
    assert row.section == "Outside baselines" and row.cells[0].main == "50.0" and row.labels[-1] == "1/1"
    vs = [f for f in _findings(bn_study).values() if f.claim == "vs"]
    assert vs and "+50.0 points" in vs[0].text and "no verdict" in vs[0].text and vs[0].holds is None


def test_findings_use_the_common_patients_and_say_how_many_were_left_out(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A patient a condition could not score (here p7 is absent from the censored tables, as
    a patient with only t1_gre_post would be) is left out of the paired comparison on both
    sides, and the finding says so; pairing never raises."""
    root = _write_study(tmp_path_factory.mktemp("findings-dropped"), "dropped", {"model.norm": "group"},
                        lambda p: {"test.full": 2, "test.censor_t1_gre_post": 0 if p == 0 else 2}, drop_patient="p7")
    found = _findings(root)
    assert found["a"].holds is True and found["a"].dropped_patients == 1
    assert "(1 patient(s) left out: a condition could not score them.)" in found["a"].text
    assert "7 patients" in found["a"].text  # 8 minus the one the censored condition could not score
