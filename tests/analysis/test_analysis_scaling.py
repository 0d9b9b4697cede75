"""Learning curves: per arm and training-set size, the seed mean with the recipe interval by hand.

Every patient of a seed is identical (4 truth lesions, k found at score 0.9: mAP k/4), so the
patient variance is 0 and the recipe interval is the t interval over the seeds' values.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from seqablate.analysis.runs import Run
from seqablate.analysis.scaling import (
    LEARNING_PNG,
    curves_table,
    learning_curves,
    scaling_blocks,
    varies_training_size,
)
from seqablate.metrics import PatientDetection
from tests._detections import detection

# (fraction, dropout) -> found lesions per seed on the full protocol and with t1_gre_post censored
FOUND = {("0.5", "0.0"): ((2, 2, 3), (0, 0, 1)), ("1.0", "0.0"): ((3, 4, 4), (0, 1, 0)),
         ("0.5", "0.25"): ((2, 2, 2), (1, 2, 2)), ("1.0", "0.25"): ((3, 3, 4), (2, 3, 3))}
N_TRAIN = {"0.5": 7.0, "1.0": 14.0}


class _Detections:
    def __init__(self) -> None:
        self.by_run: dict[str, dict[str, list[PatientDetection]]] = {}

    def get(self, run: Run) -> dict[str, list[PatientDetection]]:
        return self.by_run.get(run.run_id, {})

    def mean_interval(self, group, key_of):  # noqa: ANN001 (StudyDetections' signature)
        from seqablate.analysis.detections import StudyDetections

        return StudyDetections._mean_interval(self, group, tuple(key_of(r) for r in group.usable), 2000)


def _runs(d: _Detections) -> list[Run]:
    out = []
    for (frac, p), (full, cens) in FOUND.items():
        for s in range(3):
            rid = f"f{frac}-p{p}-s{s}"
            d.by_run[rid] = {"test.full": [detection(f"q{i}", [0.9] * full[s], [True] * full[s], 4) for i in range(5)],
                             "test.censor_t1_gre_post": [detection(f"q{i}", [0.9] * cens[s], [True] * cens[s], 4)
                                                         for i in range(5)]}
            metrics = {"test.full.mAP": full[s] / 4, "test.censor_t1_gre_post.mAP": cens[s] / 4, "data.n_train": N_TRAIN[frac]}
            params = {"model.integration": "input", "train.dropout_p": p, "train.seed": str(s), "data.train_fraction": frac}
            out.append(Run(rid, rid, "FINISHED", params, {}, metrics))
    return out


def test_points_by_hand_and_the_figure(tmp_path: Path) -> None:
    d = _Detections()
    runs = _runs(d)
    assert varies_training_size(runs)
    points = learning_curves(runs, d)
    assert len(points) == 4 * 2  # arms x sizes x panels
    arms = sorted({p.arm for p in points})
    assert len(arms) == 2 and any("dropout" in a for a in arms) and all("train_fraction" not in a for a in arms)
    t = stats.t.ppf(0.975, 2)
    for p in points:
        frac = "0.5" if p.n_train == 7.0 else "1.0"
        drop = "0.25" if "dropout" in p.arm else "0.0"
        found = FOUND[(frac, drop)][0 if p.panel == "full" else 1]
        vals = np.array(found) / 4
        mean, se = vals.mean(), vals.std(ddof=1) / math.sqrt(3)
        assert p.estimate == pytest.approx(mean) and p.kind == "recipe" and p.seeds == 3
        assert p.interval == pytest.approx((mean - t * se, mean + t * se))
    table = curves_table(points)
    assert list(table["training patients"]) == ["7", "14", "7", "14"]
    assert table.iloc[0]["full"].endswith(")") and "†" not in table.iloc[0]["full"]
    blocks = scaling_blocks(runs, tmp_path, d)
    assert len(blocks) == 3 and (tmp_path / LEARNING_PNG).stat().st_size > 1000


def test_no_size_variation_no_curves_and_without_tables_the_logged_means(tmp_path: Path) -> None:
    d = _Detections()
    runs = _runs(d)
    same = [r for r in runs if r.params["data.train_fraction"] == "1.0"]
    assert not varies_training_size(same) and learning_curves(same, d) == [] and scaling_blocks(same, tmp_path) == []
    points = learning_curves(runs)  # no detections: the seed mean of the logged values, no interval
    p = next(p for p in points if p.panel == "full" and p.n_train == 14.0 and "dropout" not in p.arm)
    assert p.estimate == pytest.approx(np.mean([3, 4, 4]) / 4) and p.interval is None
