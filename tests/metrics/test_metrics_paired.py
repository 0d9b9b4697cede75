"""Paired bootstrap of two configurations on the same patients, and the tables it rebuilds from."""

from __future__ import annotations

import numpy as np
import pytest

from seqablate.metrics import (
    DetectionResult,
    PatientDetection,
    detection_metrics,
    detections_from_tables,
    paired_bootstrap,
    patient_table,
)
from tests._detections import cohort, detection


def _pooled_map(pts: list[PatientDetection]) -> float:
    return DetectionResult.from_patients(pts).mAP


def test_matches_a_literal_loop() -> None:
    a = [cohort(np.random.default_rng(s), 6, 0.7, width=2) for s in (1, 2)]  # two seeds of A
    b = [cohort(np.random.default_rng(s), 6, 0.4, width=2) for s in (3,)]  # one seed of B
    res = paired_bootstrap(a, b, "mAP", n=200, seed=5)
    # The literal procedure: draw patient indices, rebuild every run's pooled mAP, average seeds.
    ids = sorted(p.patient_id for p in a[0])
    idx = np.random.default_rng(5).integers(0, len(ids), size=(200, len(ids)))
    by = lambda run: {p.patient_id: p for p in run}  # noqa: E731
    literal = []
    for row in idx:
        ma = np.mean([_pooled_map([by(r)[ids[i]] for i in row]) for r in a])
        mb = np.mean([_pooled_map([by(r)[ids[i]] for i in row]) for r in b])
        literal.append(ma - mb)
    np.testing.assert_allclose(res.distribution, literal, rtol=1e-12, atol=1e-12)
    assert res.difference == pytest.approx(np.mean([_pooled_map(r) for r in a]) - _pooled_map(b[0]))
    assert (res.lo, res.hi) == pytest.approx(tuple(np.percentile(literal, [2.5, 97.5])))


def test_identical_configurations_contain_zero() -> None:
    runs = [cohort(np.random.default_rng(s), 20, 0.6, width=2) for s in range(3)]
    res = paired_bootstrap(runs, runs, "mAP", n=500)
    assert res.difference == 0.0 and res.contains_zero and res.lo == res.hi == 0.0


def test_a_known_shift_is_recovered() -> None:
    """A: every truth lesion found with the highest scores (mAP 1); B: the same patients with
    half the lesions missed (mAP 0.5 by construction); the difference is 0.5, CI tight."""
    a, b = [], []
    for i in range(30):
        a.append(detection(f"p{i}", [0.9, 0.8], [True, True], 2))
        b.append(detection(f"p{i}", [0.9], [True], 2))
    res = paired_bootstrap([a], [b], "mAP", n=300)
    assert res.difference == pytest.approx(0.5)
    assert res.lo == pytest.approx(0.5) and res.hi == pytest.approx(0.5)
    sens = paired_bootstrap([a], [b], "max_sensitivity", n=300)
    assert sens.difference == pytest.approx(0.5)


def test_different_patients_are_refused() -> None:
    a = [detection("p1", [0.5], [True], 1)]
    b = [detection("p2", [0.5], [True], 1)]
    with pytest.raises(ValueError, match="same patients"):
        paired_bootstrap([a], [b])


def test_tables_round_trip_to_the_same_metrics() -> None:
    rng = np.random.default_rng(3)
    probs, truths = [], []
    for _ in range(5):
        t = np.zeros((16, 16, 8), np.uint8)
        t[3:6, 3:6, 2:4] = 1
        t[10:13, 9:12, 5:7] = rng.integers(0, 2)
        p = np.clip(t * rng.uniform(0.3, 0.9) + rng.random(t.shape) * 0.12, 0, 1).astype(np.float32)
        probs.append(p)
        truths.append(t)
    res = detection_metrics(probs, truths, [(1.0, 1.0, 2.0)] * 5)
    back = DetectionResult.from_patients(detections_from_tables(patient_table(res.per_patient), res.lesions))
    assert back.mAP == pytest.approx(res.mAP) and back.n_truth == res.n_truth
    assert back.max_sensitivity == pytest.approx(res.max_sensitivity)
    assert back.tp_dice == pytest.approx(res.tp_dice, nan_ok=True)
