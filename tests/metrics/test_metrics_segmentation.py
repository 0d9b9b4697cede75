"""Voxel Dice and BraTS 2023 lesion-wise Dice by hand, plus a loop-based reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from seqablate.metrics import brats_lesion_dice, voxel_dice


def test_voxel_dice_by_hand():
    p = np.zeros((3, 3, 3), bool)
    t = np.zeros((3, 3, 3), np.uint8)
    p[0, 0, 0:3] = True
    p[1, 0, 0] = True  # |P| = 4
    t[0, 0, 0:3] = 1
    t[2, 2, 0:3] = 1  # |T| = 6, overlap 3 -> 2*3/(4+6) = 0.6
    assert voxel_dice(p, t) == pytest.approx(0.6)
    z = np.zeros((3, 3, 3))
    assert math.isnan(voxel_dice(z, z))
    assert voxel_dice(z, z, empty_score=1.0) == 1.0
    assert voxel_dice(p, z) == 0.0
    with pytest.raises(ValueError, match="shape"):
        voxel_dice(p, np.zeros((3, 3, 4)))


def brats_case():
    t = np.zeros((12, 12, 12), np.uint8)
    p = np.zeros((12, 12, 12), np.uint8)
    t[2:5, 2:5, 2:5] = 1  # A: 27 voxels
    p[2:5, 2:5, 3:6] = 1  # overlaps A in 3x3x2 = 18 -> Dice 2*18/(27+27) = 2/3
    t[9, 9, 9] = 1  # B: 1 voxel <= 2 -> ignored ...
    p[9, 9, 10] = 1  # ... and the prediction touching it is not an FP
    t[8:10, 2:4, 2:4] = 1  # C: 8 voxels, missed -> FN, Dice 0
    p[0, 11, 11] = 1  # FP far away -> counts Dice 0
    return p, t


def test_brats_lesion_dice_by_hand():
    # score = (2/3 + 0) / (2 kept GT lesions + 1 FP) = 2/9
    r = brats_lesion_dice(*brats_case())
    assert r.score == pytest.approx(2 / 9)
    assert (r.n_tp, r.n_fn, r.n_fp) == (1, 1, 1)
    assert r.lesions["kept"].tolist() == [True, True, False]


def test_brats_gt_fragments_merge_through_dilation():
    # GT fragments x=2..3 and x=5..6 (gap at 4): dilations touch -> ONE lesion of 4 voxels.
    # Prediction x=2..3 -> Dice 2*2/(4+2) = 2/3 (two separate lesions would give (1+0)/2).
    t = np.zeros((9, 5, 5), np.uint8)
    t[2:4, 2, 2] = t[5:7, 2, 2] = 1
    p = np.zeros_like(t)
    p[2:4, 2, 2] = 1
    r = brats_lesion_dice(p, t)
    assert r.score == pytest.approx(2 / 3) and len(r.lesions) == 1


@pytest.mark.parametrize(
    "offset, n_fp, score",
    [
        # Face/edge neighbours of the GT lie in its 18-neighbourhood dilation: matched, no
        # overlap -> Dice 0, not an FP: 0 / (1 + 0).
        ((0, 0, 1), 0, 0.0),
        ((0, 1, 1), 0, 0.0),
        # A corner neighbour is outside the 18-neighbourhood: an FP -> 0 / (1 + 1).
        ((1, 1, 1), 1, 0.0),
    ],
)
def test_brats_dilation_is_18_connected(offset, n_fp, score):
    t = np.zeros((7, 7, 7), np.uint8)
    t[2:4, 2:4, 2:4] = 1  # 8 voxels, kept
    p = np.zeros_like(t)
    p[tuple(np.array([3, 3, 3]) + offset)] = 1
    r = brats_lesion_dice(p, t)
    assert r.n_fp == n_fp and r.score == score


def test_brats_empty_rules_and_spacing():
    z = np.zeros((4, 4, 4), np.uint8)
    one = z.copy()
    one[1, 1, 1] = 1
    assert brats_lesion_dice(z, z).score == 1.0  # nothing to find, nothing found
    assert brats_lesion_dice(one, z).score == 0.0  # one FP
    assert brats_lesion_dice(z, one).score == 1.0  # only a 1-voxel GT lesion: ignored
    two = z.copy()
    two[1, 1, 1:3] = 1  # 2 voxels: ignored at 1 mm^3, kept at 2 mm^3 voxels (4 mm^3 > 2)
    assert brats_lesion_dice(z, two).score == 1.0
    assert brats_lesion_dice(z, two, spacing=(1, 1, 2)).score == 0.0
    with pytest.raises(ValueError, match="shape"):
        brats_lesion_dice(z, np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="3D"):
        brats_lesion_dice(np.zeros((4, 4)), np.zeros((4, 4)))


def _brats_reference(pred, gt, min_volume=2.0):
    """Loop-per-lesion re-statement of the BraTS 2023 reference with scipy.ndimage."""
    s26 = np.ones((3, 3, 3))
    s18 = ndimage.generate_binary_structure(3, 2)
    pred_cc, _ = ndimage.label(pred, structure=s26)
    dil_cc, n_dil = ndimage.label(ndimage.binary_dilation(gt, s18), structure=s26)
    gt_cc = dil_cc * (gt > 0)
    tp, dices = set(), []
    for c in range(1, n_dil + 1):
        g = gt_cc == c
        inter_cc = set(np.unique(pred_cc[ndimage.binary_dilation(g, s18)])) - {0}
        tp |= inter_cc
        pu = np.isin(pred_cc, list(inter_cc))
        if g.sum() > min_volume:
            dices.append(2 * np.sum(pu & g) / (pu.sum() + g.sum()))
    n_fp = len(set(np.unique(pred_cc)) - {0} - tp)
    den = len(dices) + n_fp
    return sum(dices) / den if den else 1.0


@pytest.mark.parametrize("seed", range(4))
def test_brats_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (16, 16, 12)
    gt = ndimage.binary_dilation(rng.random(shape) < 0.006) | (rng.random(shape) < 0.004)
    # Prediction: the GT shifted by one voxel, partly eroded, plus stray voxels and blobs.
    pred = np.roll(gt, 1, axis=int(rng.integers(0, 3))) & (rng.random(shape) < 0.8)
    pred |= ndimage.binary_dilation(rng.random(shape) < 0.002) | (rng.random(shape) < 0.002)
    assert brats_lesion_dice(pred, gt).score == pytest.approx(_brats_reference(pred, gt), abs=1e-12)
