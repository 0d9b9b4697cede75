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


@pytest.fixture(scope="module", params=["stored", "per_subset"])
def study(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """3 seeds without dropout (full: all found; t1_gre_post censored: none; oslo: none) and
    3 seeds with dropout (everything found everywhere); identical saliency for every run.
    GroupNorm models: each logs only its own metrics, whatever its ``eval.norm_stats``."""
    import os

    from seqablate import tracking
    from seqablate.config import TrialConfig, with_overrides

    root = tmp_path_factory.mktemp("findings")
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with tracking.study_run("pairs", storage=str(root)) as st:
            for p in (0.0, 0.25):
                for seed in range(3):
                    ov = {"model.integration": "input", "train.dropout_p": p, "train.seed": seed,
                          "model.norm": "group", "eval.norm_stats": request.param}
                    with tracking.trial_run(st.ref, with_overrides(TrialConfig(), ov), overrides=ov) as log:
                        found = ({"test.full": 2, "test.censor_t1_gre_post": 0, "external.oslo": 0} if p == 0
                                 else {"test.full": 2, "test.censor_t1_gre_post": 2, "external.oslo": 2})
                        pat, les = _tables(found)
                        log.log_table(pat, "eval/patients.csv")
                        log.log_table(les, "eval/lesions.csv")
                        log.log_metrics({f"{c}.mAP": k / 2 for c, k in found.items()}, step=10)
                        for step in (10, 20, 30):
                            log.log_metrics({f"saliency.cumulative.sequence.{s}": float(step * (i + 1))
                                             for i, s in enumerate(("t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"))},
                                            step=step)
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return root


def test_claims_worded_from_the_numbers(study: Path) -> None:
    from seqablate.analysis.findings import build_findings
    from seqablate.analysis.runs import group_by_config
    from seqablate.analysis.study import load_study
    from seqablate.analysis.traces import collect_traces

    data = load_study(str(study))
    traces = collect_traces(data, group_by_config(data.runs), progress=False)
    found = {f.claim: f for f in build_findings(data, data.runs, traces)}
    assert set(found) == {"a", "b", "c", "d", "e"}
    # (a) no dropout: mAP 100 -> 0 when censored: lower by 100 points, the CI a single point
    assert "mAP 100.0 -> 0.0" in found["a"].text and "higher by 100.0 points (95 % CI +100.0 to +100.0)" in found["a"].text
    assert found["a"].holds is True
    assert "no detectable difference" in found["b"].text and found["b"].holds is True
    assert "no detectable difference" in found["c"].text and found["c"].holds is True
    assert "higher by 100.0 points" in found["e"].text and found["e"].holds is True
    # (d) 3 seeds against 3: an exact permutation test cannot go below p = 2/20
    assert found["d"].holds is None and "0.10" in found["d"].text
    # group norm: no statistics policy to compare
    assert "stored statistics" not in found["a"].text


def test_consistency_difference_permutation_and_bootstrap() -> None:
    names = ("a", "b", "c")
    steps = np.array([1, 2])

    def trace(shares: list[float]) -> SaliencyTrace:
        return SaliencyTrace(names, steps, np.array([shares, shares]) * np.array([[1.0], [2.0]]))

    same = [trace([0.5, 0.3, 0.2]) for _ in range(4)]
    varied = [trace([0.7, 0.2, 0.1]), trace([0.2, 0.7, 0.1]), trace([0.1, 0.2, 0.7]), trace([0.4, 0.4, 0.2])]
    res = consistency_difference(same, varied, n_boot=200)
    assert res.difference < 0 and res.p_value == pytest.approx(2 / 70)  # only the observed split and its mirror
    assert res.min_p == pytest.approx(2 / 70)
    null = consistency_difference(same[:3], same[:3], n_boot=50)
    assert null.difference == 0.0 and null.p_value == 1.0 and null.min_p == pytest.approx(0.1)
    with pytest.raises(ValueError, match=">= 2 seeds"):
        consistency_difference(same[:1], same)
