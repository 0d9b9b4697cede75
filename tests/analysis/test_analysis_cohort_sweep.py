"""A study over cohorts that differ in one phantom parameter: censoring costs and their trend,
computed by hand.

Every patient of a seed and condition is identical (4 truth lesions, k found at score 0.9:
mAP k/4), so the patient variance is 0: a cost's recipe interval is the t interval over the
seeds' paired differences, and the trend's (two independent groups of seeds) is Welch's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from seqablate.analysis.cohort_sweep import (
    SWEEP_PNG,
    censoring_costs,
    sweep_blocks,
    trends,
    varies_cohort,
)
from seqablate.analysis.runs import Run
from seqablate.metrics import PatientDetection
from tests._detections import detection

# (misregistration, dropout) -> found lesions per seed: full protocol, t1_gre_post censored
FOUND = {(0.0, "0.0"): ((4, 4, 3), (3, 3, 3)), (2.0, "0.0"): ((4, 3, 4), (1, 0, 1)),
         (0.0, "0.25"): ((3, 4, 4), (3, 3, 4)), (2.0, "0.25"): ((4, 4, 3), (3, 2, 2))}


class _Detections:
    def __init__(self) -> None:
        self.by_run: dict[str, dict[str, list[PatientDetection]]] = {}

    def get(self, run: Run) -> dict[str, list[PatientDetection]]:
        return self.by_run.get(run.run_id, {})


def _cohorts(root: Path) -> dict[float, Path]:
    out = {}
    for m in (0.0, 2.0):
        folder = root / f"misreg{m:g}"
        folder.mkdir()
        (folder / "phantom.json").write_text(json.dumps({"site": "stanford", "misregistration_mm": m}))
        out[m] = folder
    return out


def _runs(d: _Detections, cohorts: dict[float, Path]) -> list[Run]:
    out = []
    for (m, p), (full, cens) in FOUND.items():
        for s in range(3):
            rid = f"m{m}-p{p}-s{s}"
            d.by_run[rid] = {"test.full": [detection(f"q{i}", [0.9] * full[s], [True] * full[s], 4) for i in range(5)],
                             "test.censor_t1_gre_post": [detection(f"q{i}", [0.9] * cens[s], [True] * cens[s], 4)
                                                         for i in range(5)]}
            metrics = {"test.full.mAP": full[s] / 4, "test.censor_t1_gre_post.mAP": cens[s] / 4}
            params = {"model.integration": "input", "train.dropout_p": p, "train.seed": str(s),
                      "data.cohort": str(cohorts[m])}
            out.append(Run(rid, rid, "FINISHED", params, {}, metrics))
    return out


def _diffs(m: float, p: str) -> np.ndarray:
    full, cens = FOUND[(m, p)]
    return (np.array(full) - np.array(cens)) / 4


def test_costs_and_trend_by_hand(tmp_path: Path) -> None:
    d = _Detections()
    runs = _runs(d, _cohorts(tmp_path))
    assert varies_cohort(runs)
    points, param = censoring_costs(runs, d)
    assert param == "misregistration_mm" and len(points) == 4
    t2 = stats.t.ppf(0.975, 2)
    for pt in points:
        drop = "0.25" if "dropout" in pt.arm else "0.0"
        diffs = _diffs(pt.x, drop)
        mean, se = diffs.mean(), diffs.std(ddof=1) / math.sqrt(3)
        assert pt.estimate == pytest.approx(mean) and pt.kind == "recipe"
        assert pt.interval == pytest.approx((mean - t2 * se, mean + t2 * se))
    table = trends(points, d)
    no_drop = table[~table["arm"].str.contains("dropout")].iloc[0]
    hi, lo = _diffs(2.0, "0.0"), _diffs(0.0, "0.0")
    est = hi.mean() - lo.mean()
    v1, v2 = hi.var(ddof=1) / 3, lo.var(ddof=1) / 3
    df = (v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 2)  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(v1 + v2)
    assert no_drop["change of cost (mAP points)"] == f"{100 * est:+.1f}"
    assert no_drop["95 % interval"] == f"({100 * (est - half):+.1f}, {100 * (est + half):+.1f})"
    assert no_drop["interval"] == "training recipe" and (no_drop["from"], no_drop["to"]) == ("0", "2")
    blocks = sweep_blocks(runs, tmp_path, d)
    assert len(blocks) == 4 and (tmp_path / SWEEP_PNG).stat().st_size > 1000


def test_one_cohort_no_sweep_and_without_tables_the_logged_means(tmp_path: Path) -> None:
    d = _Detections()
    cohorts = _cohorts(tmp_path)
    runs = _runs(d, cohorts)
    one = [r for r in runs if r.params["data.cohort"] == str(cohorts[0.0])]
    assert not varies_cohort(one) and censoring_costs(one, d) == ([], None) and sweep_blocks(one, tmp_path) == []
    points, _ = censoring_costs(runs)
    p = next(p for p in points if p.x == 2.0 and "dropout" not in p.arm)
    assert p.estimate == pytest.approx(_diffs(2.0, "0.0").mean()) and p.interval is None


def test_cohorts_without_shared_patients_give_a_trend_without_interval(tmp_path: Path) -> None:
    """The trend's resampling pairs patients across the two cohorts: with none shared (another
    site's phantom) the row keeps the runs' point estimate and says why it has no interval; with
    some shared, the interval is named as taken on those."""
    for keep, expect in ((0, "none: the two cohorts share no test patients"),
                         (3, "training recipe (on the 3 test patients both cohorts have)")):
        d = _Detections()
        (tmp_path / f"k{keep}").mkdir()
        cohorts = _cohorts(tmp_path / f"k{keep}")
        runs = _runs(d, cohorts)
        for r in runs:  # rename the 2 mm cohort's patients, all but the first `keep`
            if r.params["data.cohort"] == str(cohorts[2.0]):
                for prefix, dets in d.by_run[r.run_id].items():
                    d.by_run[r.run_id][prefix] = [p if i < keep else detection(f"oslo{i}", list(p.scores), list(p.is_tp), 4)
                                                  for i, p in enumerate(dets)]
        points, _ = censoring_costs(runs, d)
        row = trends(points, d).iloc[0]
        assert row["interval"] == expect
        if keep == 0:
            lo, hi = (next(p for p in points if p.x == x and p.arm == row["arm"]) for x in (0.0, 2.0))
            assert row["95 % interval"] == "-"
            assert row["change of cost (mAP points)"] == f"{100 * (hi.estimate - lo.estimate):+.1f}"
        # and the figure draws, whatever side of its estimate an interval lies
        sweep_blocks(runs, tmp_path / f"k{keep}", d)
