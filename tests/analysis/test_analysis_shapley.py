"""The report's Shapley values: seed means with both intervals, computed by hand.

Every patient of a seed and condition is identical (4 truth lesions, k found at score 0.9, so
mAP = k/4), so resampling patients never moves a seed's value (the networks' interval has zero
width, the patient variance is 0) and the recipe interval is the classic t interval over the
seeds' Shapley values. Two sequences a = t1_gre_post, b = flair:
phi_a = (v(a) + v(ab) - v(b)) / 2, phi_b = (v(b) + v(ab) - v(a)) / 2.

    seed   v(ab)  v(a)  v(b)   phi_a   phi_b
    0      1.00   0.75  0.25   0.750   0.250
    1      1.00   0.75  0.50   0.625   0.375
    2      0.75   0.75  0.25   0.625   0.125
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from seqablate.analysis.runs import Run, group_by_config
from seqablate.analysis.shapley import (
    SHAPLEY_PNG,
    group_values,
    shapley_blocks,
    shapley_table,
    study_values,
)
from seqablate.metrics import PatientDetection
from tests._detections import detection

SEQS = "t1_gre_post,flair"
# condition -> found lesions per seed
FOUND = {"full": (4, 4, 3), "censor_flair": (3, 3, 3), "censor_t1_gre_post": (1, 2, 1)}


class _Detections:
    """Stands in for StudyDetections: each run's per-patient detections by logged prefix."""

    def __init__(self) -> None:
        self.by_run: dict[str, dict[str, list[PatientDetection]]] = {}

    def get(self, run: Run) -> dict[str, list[PatientDetection]]:
        return self.by_run.get(run.run_id, {})


def _patients(k: int) -> list[PatientDetection]:
    return [detection(f"p{i}", [0.9] * k, [True] * k, n_truth=4) for i in range(6)]


def _runs(d: _Detections, seeds: int = 3, dropout: str = "0.25") -> list[Run]:
    out = []
    for s in range(seeds):
        rid = f"r{dropout}-{s}"
        d.by_run[rid] = {}
        metrics = {}
        for cond, found in FOUND.items():
            for head in ("test", "test_stored"):
                d.by_run[rid][f"{head}.{cond}"] = _patients(found[s])
                metrics[f"{head}.{cond}.mAP"] = found[s] / 4
        params = {"model.integration": "input", "train.dropout_p": dropout, "train.seed": str(s),
                  "data.sequences": SEQS, "eval.norm_stats": "per_subset", "model.norm": "batch"}
        out.append(Run(rid, f"{rid}", "FINISHED", params, {}, metrics))
    return out


def test_seed_mean_and_both_intervals_by_hand() -> None:
    d = _Detections()
    (group,) = group_by_config(_runs(d))
    values = group_values(group, d)
    got = {(v.policy, v.sequence): v for v in values}
    assert set(got) == {(p, s) for p in ("per_subset", "stored") for s in ("t1_gre_post", "flair")}
    t = stats.t.ppf(0.975, 2)
    for seq, phis in (("t1_gre_post", [0.75, 0.625, 0.625]), ("flair", [0.25, 0.375, 0.125])):
        v = got[("per_subset", seq)]
        mean, se = np.mean(phis), np.std(phis, ddof=1) / math.sqrt(3)
        assert v.estimate == pytest.approx(mean) and v.seeds == 3
        assert v.networks == pytest.approx((mean, mean))  # identical patients: no patient variance
        assert v.recipe == pytest.approx((mean - t * se, mean + t * se))
    # efficiency: the two values sum to the seeds' mean full-protocol mAP
    assert got[("per_subset", "t1_gre_post")].estimate + got[("per_subset", "flair")].estimate == pytest.approx(
        np.mean([1.0, 1.0, 0.75]))


def test_two_seeds_no_recipe_interval_and_without_tables_the_logged_values(tmp_path: Path) -> None:
    d = _Detections()
    runs = _runs(d, seeds=2)
    (v,) = [x for x in study_values(runs, d) if x.policy == "per_subset" and x.sequence == "flair"]
    assert v.recipe is None and "3" in v.reason and v.networks is not None
    for r in runs:  # the trial logs its own per-seed values; without tables the report averages them
        r.metrics["test.shapley.flair"] = 0.3 if r.run_id.endswith("0") else 0.1
        r.metrics["test.shapley.t1_gre_post"] = 0.5
    (w,) = [x for x in study_values(runs) if x.policy == "per_subset" and x.sequence == "flair"]
    assert w.estimate == pytest.approx(0.2) and w.networks is None and w.recipe is None


def test_a_missing_subset_leaves_the_configuration_out() -> None:
    d = _Detections()
    runs = _runs(d)
    del runs[1].metrics["test.censor_flair.mAP"]
    assert [v.policy for v in study_values(runs, d)] == ["stored", "stored"]


def test_report_blocks_chart_table_and_the_no_dropout_caveat(tmp_path: Path) -> None:
    d = _Detections()
    runs = _runs(d) + _runs(d, dropout="0.0")
    blocks = shapley_blocks(runs, tmp_path, d)
    assert (tmp_path / SHAPLEY_PNG).stat().st_size > 1000
    texts = [getattr(b, "text", "") for b in blocks]
    assert any("fragile" in t and "without sequence dropout" in t for t in texts)
    table = shapley_table(study_values(runs, d))
    assert len(table) == 2 * 2 * 2  # configurations x policies x sequences
    assert set(table["statistics"]) == {"per_subset", "stored"}
    row = table[(table["sequence"] == "t1_gre_post") & (table["statistics"] == "per_subset")].iloc[0]
    assert row["Shapley (mAP points)"] == "+66.7"
    assert shapley_blocks(runs[:0], tmp_path, d) == []
