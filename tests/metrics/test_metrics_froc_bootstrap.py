"""FROC by hand, and the bootstrap: vectorised resampling vs explicit pooling, CI behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seqablate.metrics import (
    METRICS,
    DetectionResult,
    bootstrap_ci,
    bootstrap_distribution,
    detection_metrics,
    froc,
)


def single_voxel_patient(truth, preds, shape=(4, 16, 16)):
    """Lesions and predictions are single voxels >= 2 apart (never 26-connected)."""
    t = np.zeros(shape, np.uint8)
    p = np.zeros(shape)
    for v in truth:
        t[v] = 1
    for v, prob in preds:
        p[v] = prob
    return p, t


def froc_cohort():
    # Patient 1: lesions L1 (1,2,2), L2 (1,2,8) (missed); preds .9 on L1, FPs .8 and .5.
    # Patient 2: lesions L3 (1,2,2), L4 (1,8,8); preds .7 on L3, FP .6, .4 on L4.
    a = single_voxel_patient([(1, 2, 2), (1, 2, 8)], [((1, 2, 2), 0.9), ((3, 14, 14), 0.8), ((3, 10, 14), 0.5)])
    b = single_voxel_patient([(1, 2, 2), (1, 8, 8)], [((1, 2, 2), 0.7), ((3, 14, 14), 0.6), ((1, 8, 8), 0.4)])
    return detection_metrics([a[0], b[0]], [a[1], b[1]], [(1, 1, 1)] * 2)


def test_froc_by_hand():
    # Pooled ranking .9 TP, .8 FP, .7 TP, .6 FP, .5 FP, .4 TP; 4 lesions, 2 patients.
    # FP/patient after each: 0, .5, .5, 1, 1.5, 1.5; sensitivity 1/4, 1/4, 2/4, 2/4, 2/4, 3/4.
    # rate 1/8 and 1/4: only the first point fits -> 1/4; 1/2 -> up to .7 -> 2/4; 1 -> up to .6
    # -> 2/4; 2, 4, 8 -> all -> 3/4. Mean = (.25+.25+.5+.5+.75*3)/7 = 3.75/7.
    f = froc(froc_cohort())
    assert f.sensitivity == {0.125: 0.25, 0.25: 0.25, 0.5: 0.5, 1.0: 0.5, 2.0: 0.75, 4.0: 0.75, 8.0: 0.75}
    assert f.mean == pytest.approx(3.75 / 7)
    np.testing.assert_allclose(f.fps_per_patient, [0, 0.5, 0.5, 1, 1.5, 1.5])
    np.testing.assert_allclose(f.curve_sensitivity, [0.25, 0.25, 0.5, 0.5, 0.5, 0.75])


def test_froc_first_group_over_budget_and_empty_cases():
    # One patient, FP at .9 before the TP at .5: at 1/8 FP per patient nothing fits -> 0.
    p, t = single_voxel_patient([(1, 2, 2)], [((1, 2, 2), 0.5), ((3, 14, 14), 0.9)])
    f = froc(detection_metrics([p], [t], [(1, 1, 1)]))
    assert f.sensitivity[0.125] == 0.0 and f.sensitivity[1.0] == 1.0
    p, t = single_voxel_patient([], [((1, 2, 2), 0.5)])
    assert math.isnan(froc(detection_metrics([p], [t], [(1, 1, 1)])).mean)
    p, t = single_voxel_patient([(1, 2, 2)], [])
    assert froc(detection_metrics([p], [t], [(1, 1, 1)])).mean == 0.0
    with pytest.raises(ValueError, match="at least one patient"):
        froc([])
    with pytest.raises(ValueError, match="PatientDetection"):
        froc([1, 2])


def random_cohort(n_patients, seed=0):
    rng = np.random.default_rng(seed)
    probs, truths = [], []
    for _ in range(n_patients):
        cells = [(1 + 3 * (i % 5), 1 + 3 * (i // 5)) for i in range(25)]
        picks = rng.permutation(25)
        n_les = rng.integers(0, 5)
        truth = [(1, *cells[i]) for i in picks[:n_les]]
        preds = [(v, rng.uniform(0.15, 1)) for v in truth if rng.random() < 0.7]
        preds += [((3, *cells[i]), rng.uniform(0.11, 0.9)) for i in picks[: rng.integers(0, 4)]]
        p, t = single_voxel_patient(truth, preds)
        for _, y, x in truth[:2]:  # some hits are 2 voxels (Dice 2/3; centroid 0.5 mm away)
            if p[1, y, x] > 0 and rng.random() < 0.5:
                p[0, y, x] = p[1, y, x]
        probs.append(p)
        truths.append(t)
    return detection_metrics(probs, truths, [(1, 1, 1)] * n_patients)


@pytest.mark.parametrize("metric", METRICS)
def test_vectorised_bootstrap_equals_pooling_resampled_patients(metric):
    # Second method: the callable path literally pools the drawn patients (with repeats).
    r = random_cohort(12, seed=3)

    def pooled(pts):
        res = DetectionResult.from_patients(pts)
        return froc(res).mean if metric == "froc" else getattr(res, metric)

    fast = bootstrap_distribution(r, metric, n=30, seed=5)
    slow = bootstrap_distribution(r.per_patient, pooled, n=30, seed=5)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_ci_contains_estimate_and_narrows_with_more_patients():
    small = random_cohort(10, seed=1)
    # Four copies of the cohort: same point estimate, a quarter of the resampling variance.
    big = DetectionResult.from_patients(list(small.per_patient) * 4)
    assert big.mAP == pytest.approx(small.mAP)
    for metric in ("mAP", "max_sensitivity", "tp_dice"):
        est = getattr(small, metric)
        lo, hi = bootstrap_ci(small, metric, n=1000, seed=0)
        assert lo <= est <= hi, (metric, lo, est, hi)
        lo4, hi4 = bootstrap_ci(big, metric, n=1000, seed=0)
        assert lo4 <= est <= hi4
        assert hi4 - lo4 < 0.75 * (hi - lo), metric
    # A wider level gives a wider interval; the same seed the same interval.
    a = bootstrap_ci(small, "mAP", level=0.5)
    b = bootstrap_ci(small, "mAP", level=0.95)
    assert b[0] <= a[0] and a[1] <= b[1]
    assert bootstrap_ci(small, "mAP", seed=7) == bootstrap_ci(small, "mAP", seed=7)


def test_bootstrap_undefined_and_bad_arguments():
    p, t = single_voxel_patient([], [((1, 2, 2), 0.5)])
    no_truth = detection_metrics([p], [t], [(1, 1, 1)])
    lo, hi = bootstrap_ci(no_truth, "mAP", n=20)
    assert math.isnan(lo) and math.isnan(hi)
    r = random_cohort(3)
    with pytest.raises(ValueError, match="unknown bootstrap metric 'auc'"):
        bootstrap_ci(r, "auc")
    with pytest.raises(ValueError, match="positive integer"):
        bootstrap_ci(r, "mAP", n=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(r, "mAP", level=1.5)
    with pytest.raises(ValueError, match="at least one patient"):
        bootstrap_ci([], "mAP")
