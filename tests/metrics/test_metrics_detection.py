"""Lesion-level detection metrics on tiny volumes whose answers are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score

from seqablate.metrics import LESION_COLUMNS, detection_metrics

NAN = float("nan")


def vol(truth=(), preds=(), shape=(8, 16, 16)):
    """(prob float64, truth uint8): truth = index/slice tuples; preds = (where, prob) pairs."""
    t = np.zeros(shape, dtype=np.uint8)
    p = np.zeros(shape, dtype=np.float64)
    for where in truth:
        t[where] = 1
    for where, prob in preds:
        p[where] = prob
    return p, t


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# (name, patients = [(prob, truth, spacing)], expected mAP, max_sensitivity, tp_dice, n_truth, n_pred, n_tp)
CASES = [
    # 3x3x3 truth cube, predicted exactly: centroid (3,3,3) IS a truth voxel -> distance 0, TP.
    # AP: one point P=1, R=1/1 -> 1. Dice = 2*27/(27+27) = 1.
    ("hit exactly", [(*vol([np.s_[2:5, 2:5, 2:5]], [(np.s_[2:5, 2:5, 2:5], 0.8)]), (1, 1, 1))],
     1.0, 1.0, 1.0, 1, 1, 1),
    # Truth voxel (2,4,4); predicted voxels (2,4,4),(2,4,5): centroid z = 4.5 lies on the face of
    # the truth voxel's box (z 3.5..4.5) -> distance 0, TP (2.0 mm from its centre: the centre
    # reading would call it a FP however fine the match). Dice = 2*1/(2+1) = 2/3.
    ("centroid on the annotation's face (sz=5.0)", [(*vol([(2, 4, 4)], [(np.s_[2, 4, 4:6], 0.5)]), (0.5, 0.5, 5.0))],
     1.0, 1.0, 2 / 3, 1, 1, 1),
    # Prediction (2,4,5) next to truth (2,4,4) along z: its centre is 0.5 voxel outside the box ->
    # 0.5 * 2.0 = 1.0 mm <= 1.0 -> TP (no overlap: Dice 0).
    ("1.0 mm from the box along z (sz=2.0)", [(*vol([(2, 4, 4)], [((2, 4, 5), 0.5)]), (0.5, 0.5, 2.0))],
     1.0, 1.0, 0.0, 1, 1, 1),
    # Same voxels, sz = 2.02 -> 0.5 * 2.02 = 1.01 mm > 1.0 -> FP; 1 truth lesion missed: AP 0.
    ("1.01 mm from the box along z (sz=2.02)", [(*vol([(2, 4, 4)], [((2, 4, 5), 0.5)]), (0.5, 0.5, 2.02))],
     0.0, 0.0, NAN, 1, 1, 0),
    # Prediction 3 voxels away along axis 0 with sx = 0.4: (3 - 0.5) * 0.4 = 1.0 mm -> TP (Dice 0).
    ("1.0 mm along x (sx=0.4)", [(*vol([(2, 4, 4)], [((5, 4, 4), 0.5)]), (0.4, 1.0, 2.0))],
     1.0, 1.0, 0.0, 1, 1, 1),
    # Same offset but the spacing of axis 0 is 2.0 -> 5.0 mm -> FP (axes follow `spacings`).
    ("axis order matters", [(*vol([(2, 4, 4)], [((5, 4, 4), 0.5)]), (2.0, 1.0, 0.4))],
     0.0, 0.0, NAN, 1, 1, 0),
    # Truth bar x=2..6 (5 voxels). Fragment F1 x=2..3 (p .9, centroid x=2.5 -> 0.5 mm), F2 x=6
    # (p .6, on the bar). F1 ranks first: TP; F2 same lesion: duplicate FP.
    # Ranking: (P=1,R=1), (P=1/2,R=1) -> AP = 1*1 + 0 = 1. TP Dice = Dice(F1) = 2*2/(2+5) = 4/7.
    ("two fragments, one duplicate",
     [(*vol([np.s_[2:7, 4, 4]], [(np.s_[2:4, 4, 4], 0.9), ((6, 4, 4), 0.6)]), (1, 1, 1))],
     1.0, 1.0, 4 / 7, 1, 2, 1),
    # Scores swapped: F2 (p .9) is the TP, Dice(F2) = 2*1/(1+5) = 1/3; F1 the duplicate.
    ("two fragments, other wins",
     [(*vol([np.s_[2:7, 4, 4]], [(np.s_[2:4, 4, 4], 0.6), ((6, 4, 4), 0.9)]), (1, 1, 1))],
     1.0, 1.0, 1 / 3, 1, 2, 1),
    # Truth voxels (2,4,4) and (6,4,4); one bar x=2..6: centroid x=4, 1.5 mm from both boxes -> FP.
    ("one prediction spanning two lesions, far",
     [(*vol([(2, 4, 4), (6, 4, 4)], [(np.s_[2:7, 4, 4], 0.5)]), (1, 1, 1))],
     0.0, 0.0, NAN, 2, 1, 0),
    # Bar x=2..5 with sx=0.5: centroid x=3.5 -> (1.5-0.5)*0.5 = 0.5 mm from (2,4,4)'s box, 1.0 mm
    # from (6,4,4)'s: both within 1 mm, the nearest (lesion 1) is matched. AP = P 1 * R 1/2 = 0.5;
    # Dice = 2*1/(4+1) = 0.4.
    ("one prediction spanning two lesions, near one",
     [(*vol([(2, 4, 4), (6, 4, 4)], [(np.s_[2:6, 4, 4], 0.5)]), (0.5, 1, 1))],
     0.5, 0.5, 0.4, 2, 1, 1),
    # Lesions L1 = cube [1:3]^3 (predicted exactly, p .7) and L2 = (6,12,12) (missed); FP at (6,0,0)
    # with p .9. Ranking: FP (P=0,R=0), TP (P=1/2,R=1/2) -> AP = 1/2 * 1/2 = 0.25 (sklearn,
    # whose recall ignores the missed lesion, would say 0.5).
    ("missed lesion caps recall",
     [(*vol([np.s_[1:3, 1:3, 1:3], (6, 12, 12)], [(np.s_[1:3, 1:3, 1:3], 0.7), ((6, 0, 0), 0.9)]),
       (1, 1, 1))],
     0.25, 0.5, 1.0, 2, 2, 1),
    # No truth lesion at all: AP, sensitivity and TP Dice undefined.
    ("empty truth", [(*vol([], [((3, 3, 3), 0.9)]), (1, 1, 1))], NAN, NAN, NAN, 0, 1, 0),
    ("empty truth and prediction", [(*vol([], []), (1, 1, 1))], NAN, NAN, NAN, 0, 0, 0),
    # Truth but nothing above threshold (0.1 is not > 0.1): AP 0, sensitivity 0, Dice NaN.
    ("empty prediction", [(*vol([(3, 3, 3)], [((3, 3, 3), 0.1)]), (1, 1, 1))], 0.0, 0.0, NAN, 1, 0, 0),
    # Ties across patients. Patient A: truth (1,1,1),(1,8,8); preds .9 on (1,1,1), .5 on (1,8,8).
    # Patient B: truth (1,1,1); preds .5 on it, .5 FP at (6,12,12). n_truth 3.
    # Distinct scores: .9 -> tp1 fp0 (P 1, R 1/3); .5 -> tp3 fp1 (P 3/4, R 1).
    # AP = 1/3*1 + 2/3*3/4 = 5/6 (any order inside the tie would give 1 or 0.8056 instead).
    ("ties in score",
     [(*vol([(1, 1, 1), (1, 8, 8)], [((1, 1, 1), 0.9), ((1, 8, 8), 0.5)]), (1, 1, 1)),
      (*vol([(1, 1, 1)], [((1, 1, 1), 0.5), ((6, 12, 12), 0.5)]), (1, 1, 1))],
     5 / 6, 1.0, 1.0, 3, 4, 3),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hand_computed_cases(case):
    _, patients, m_ap, sens, tp_dice, n_truth, n_pred, n_tp = case
    r = detection_metrics(*zip(*patients, strict=True))
    assert same(r.mAP, m_ap), r.mAP
    assert same(r.max_sensitivity, sens), r.max_sensitivity
    assert same(r.tp_dice, tp_dice), r.tp_dice
    assert (r.n_truth, r.n_pred, r.n_tp) == (n_truth, n_pred, n_tp)
    assert list(r.lesions.columns) == list(LESION_COLUMNS)
    assert len(r.lesions) == n_pred and int(r.lesions["is_tp"].sum()) == n_tp


def test_score_is_mean_probability_and_table_fields():
    # 3x3x3 cube at 0.5 with its centre voxel at 0.95: score = (26*0.5 + 0.95)/27.
    p, t = vol([np.s_[2:5, 2:5, 2:5]], [(np.s_[2:5, 2:5, 2:5], 0.5), ((3, 3, 3), 0.95), ((6, 12, 12), 0.3)])
    r = detection_metrics([p], [t], [(0.5, 1.0, 2.0)], patient_ids=["pat-7"])
    first, second = r.lesions.iloc[0], r.lesions.iloc[1]
    assert first["score"] == pytest.approx((26 * 0.5 + 0.95) / 27)
    assert (first["centre_x_mm"], first["centre_y_mm"], first["centre_z_mm"]) == (1.5, 3.0, 6.0)
    assert first["volume_mm3"] == pytest.approx(27 * 1.0)  # 27 voxels of 0.5*1*2 mm^3
    assert first["patient"] == "pat-7" and first["matched_lesion"] == 1 and first["is_tp"]
    assert first["distance_mm"] == 0.0 and first["dice"] == 1.0
    # FP at (6,12,12): nearest truth voxel (4,4,4), box half-size (.25,.5,1) mm ->
    # sqrt((2*.5 - .25)^2 + (8*1 - .5)^2 + (8*2 - 1)^2) = sqrt(.5625 + 56.25 + 225).
    assert second["matched_lesion"] == -1 and not second["is_tp"] and math.isnan(second["dice"])
    assert second["distance_mm"] == pytest.approx(math.sqrt(0.5625 + 56.25 + 225))
    assert r.truth_lesions.to_dict("list") == {
        "patient": ["pat-7"], "lesion": [1], "volume_mm3": [27.0], "detected": [True]
    }
    # PR curve at the distinct scores, highest first: (P 1, R 1) then (P 1/2, R 1).
    prec, rec, thr = r.pr_curve()
    np.testing.assert_allclose(prec, [1.0, 0.5])
    np.testing.assert_allclose(rec, [1.0, 1.0])
    np.testing.assert_allclose(thr, [(26 * 0.5 + 0.95) / 27, 0.3])
    # voxel Dice of the thresholded mask: 2*27/(28+27)
    assert r.voxel_dice == pytest.approx(54 / 55)


def test_threshold_and_distance_arguments():
    # Component of p .3 next to the lesion: at threshold .4 it disappears.
    p, t = vol([(2, 4, 4)], [((2, 4, 4), 0.3)])
    assert detection_metrics([p], [t], [(1, 1, 1)], threshold=0.4).n_pred == 0
    # Prediction 2 voxels from the truth voxel = 1.5 mm from its box: FP at 1 mm, TP at 2 mm.
    p, t = vol([(2, 4, 4)], [((2, 4, 6), 0.9)])
    assert detection_metrics([p], [t], [(1, 1, 1)]).n_tp == 0
    assert detection_metrics([p], [t], [(1, 1, 1)], max_distance_mm=2.0).n_tp == 1


def _random_patient(rng, n_lesions, shape=(12, 24, 24)):
    """Lesions of 1-8 voxels, each predicted (maybe fragmented) plus random FPs."""
    p = np.zeros(shape)
    t = np.zeros(shape, np.uint8)
    for i in range(n_lesions):
        x, y = 2 + 5 * (i % 4), 2 + 5 * (i // 4)
        t[2:4, x : x + 2, y : y + 2] = rng.random((2, 2, 2)) < 0.8
        t[2, x, y] = 1
        p[2:4, x : x + 2, y : y + 2] = np.where(t[2:4, x : x + 2, y : y + 2], rng.uniform(0.2, 1), 0)
        if rng.random() < 0.3:  # a duplicate fragment next to it
            p[2, x, y + 3] = rng.uniform(0.15, 1)
    for _ in range(rng.integers(0, 4)):
        p[9, rng.integers(0, 24), rng.integers(0, 24)] = rng.uniform(0.11, 1)
    return p, t


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_when_every_lesion_is_predicted(seed):
    rng = np.random.default_rng(seed)
    pats = [_random_patient(rng, rng.integers(1, 8)) for _ in range(3)]
    sp = [(1.0, 1.0, 1.0)] * 3
    r = detection_metrics([a for a, _ in pats], [b for _, b in pats], sp, max_distance_mm=1.5)
    assert r.n_tp == r.n_truth  # precondition: every truth lesion is found
    ref = average_precision_score(r.lesions["is_tp"].to_numpy(), r.lesions["score"].to_numpy())
    assert r.mAP == pytest.approx(ref, abs=1e-12)


def _naive_detection(probs, truths, spacings, threshold=0.1, max_distance=1.0):
    """Independent reference: per-component loops, brute-force distances, sequential ranking."""
    rows, n_truth = [], 0
    for prob, truth, sp in zip(probs, truths, spacings, strict=True):
        sp = np.asarray(sp, float)
        plab, n_p = ndimage.label(prob > threshold, structure=np.ones((3, 3, 3)))
        tlab, n_t = ndimage.label(truth, structure=np.ones((3, 3, 3)))
        n_truth += n_t
        tvox = np.argwhere(truth > 0)
        for j in range(1, n_p + 1):
            vox = np.argwhere(plab == j)
            centre = vox.mean(axis=0) * sp
            lesion, dice = -1, NAN
            if len(tvox):
                # distance to each truth voxel's box (centre +- half a voxel), clamped per axis
                d = np.array([math.dist(centre, np.clip(centre, (v - 0.5) * sp, (v + 0.5) * sp)) for v in tvox])
                k = int(np.argmin(d))
                if d[k] <= max_distance + 1e-6:
                    lesion = (id(truth), tlab[tuple(tvox[k])])
                    comp_t = tlab == tlab[tuple(tvox[k])]
                    dice = 2 * np.sum(comp_t & (plab == j)) / (comp_t.sum() + len(vox))
            rows.append((prob[plab == j].mean(), lesion, dice))
    rows.sort(key=lambda r: -r[0])
    seen, flags, dices = set(), [], []
    for _, lesion, dice in rows:
        tp = lesion != -1 and lesion not in seen
        seen.add(lesion)
        flags.append(tp)
        if tp:
            dices.append(dice)
    scores = np.array([r[0] for r in rows])
    ap, prev_r = 0.0, 0.0
    for s in np.unique(scores)[::-1]:
        sel = scores >= s
        tp = sum(f for f, k in zip(flags, sel, strict=True) if k)
        rec, prec = tp / n_truth, tp / sel.sum()
        ap += (rec - prev_r) * prec
        prev_r = rec
    return ap, sum(flags) / n_truth, float(np.mean(dices)) if dices else NAN


@pytest.mark.parametrize("seed", range(4))
def test_matches_naive_reference_with_misses_and_anisotropy(seed):
    rng = np.random.default_rng(100 + seed)
    probs, truths = [], []
    for _ in range(3):
        p = rng.random((10, 14, 14)) * 0.12  # speckle just above/below threshold
        t = np.zeros(p.shape, np.uint8)
        for _ in range(rng.integers(1, 5)):
            c = rng.integers(1, 9, 3)
            t[c[0] : c[0] + 2, c[1] : c[1] + 2, c[2]] = 1
            if rng.random() < 0.7:  # predicted, possibly shifted by one voxel
                s = c + rng.integers(-1, 2, 3)
                s = np.clip(s, 0, 8)
                p[s[0] : s[0] + 2, s[1] : s[1] + 2, s[2]] = rng.uniform(0.2, 1)
        probs.append(p)
        truths.append(t)
    sp = [tuple(rng.uniform(0.4, 1.2, 3)) for _ in range(3)]
    r = detection_metrics(probs, truths, sp)
    ap, sens, dice = _naive_detection(probs, truths, sp)
    assert r.mAP == pytest.approx(ap, abs=1e-12)
    assert r.max_sensitivity == pytest.approx(sens, abs=1e-12)
    assert same(r.tp_dice, dice)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(truths=[np.zeros((4, 4, 5))]), "patient '0'.*truth shape"),
        (dict(probs=[np.full((4, 4, 4), 1.5)]), "patient '0'.*\\[0, 1\\]"),
        (dict(probs=[np.full((4, 4, 4), np.nan)]), "patient '0'.*finite"),
        (dict(probs=[np.zeros((4, 4, 4), dtype=np.int64)]), "floating"),
        (dict(probs=[np.zeros((4, 4))], truths=[np.zeros((4, 4))]), "3D"),
        (dict(truths=[np.full((4, 4, 4), 2, np.uint8)]), "patient '0'.*binary"),
        (dict(spacings=[(1.0, 0.0, 1.0)]), "patient '0'.*spacing"),
        (dict(spacings=[(1.0, 1.0)]), "spacing"),
        (dict(spacings=[]), "one entry per patient"),
        (dict(threshold=1.0), "threshold"),
        (dict(max_distance_mm=-1.0), "max_distance_mm"),
        (dict(patient_ids=["a", "b"]), "patient_ids has 2"),
    ],
)
def test_bad_input_raises_naming_the_problem(kwargs, match):
    args = dict(probs=[np.zeros((4, 4, 4))], truths=[np.zeros((4, 4, 4), np.uint8)], spacings=[(1, 1, 1)])
    args.update(kwargs)
    probs, truths, spacings = args.pop("probs"), args.pop("truths"), args.pop("spacings")
    with pytest.raises(ValueError, match=match):
        detection_metrics(probs, truths, spacings, **args)


def test_duplicate_patient_ids_rejected():
    z = np.zeros((3, 3, 3))
    with pytest.raises(ValueError, match="unique.*'a'"):
        detection_metrics([z, z], [z, z], [(1, 1, 1)] * 2, patient_ids=["a", "a"])


def test_empty_cohort_and_table_types():
    r = detection_metrics([], [], [])
    assert math.isnan(r.mAP) and r.n_pred == 0 and isinstance(r.lesions, pd.DataFrame)
    assert r.as_dict()["n_truth"] == 0.0
