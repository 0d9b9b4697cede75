"""Segmentation overlap: voxel-level Dice and the BraTS 2023 lesion-wise Dice (METS rules)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from seqablate.metrics.lesions import components, dilate_flat, from_flat

# BraTS 2023 dilates with scipy's generate_binary_structure(3, 2): the 18-neighbourhood.
BRATS_DILATION = ndimage.generate_binary_structure(3, 2)


def _binary(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3D mask, got shape {a.shape}")
    return a != 0


def voxel_dice(pred: np.ndarray, truth: np.ndarray, *, empty_score: float = float("nan")) -> float:
    """Voxel-level Dice 2|P & T| / (|P| + |T|) of two binary masks of equal shape.

    Nonzero voxels are foreground. When both masks are empty the Dice is undefined and
    ``empty_score`` is returned (NaN by default, so cohort means skip such patients; BraTS's
    "legacy Dice" uses 1.0). One empty and one non-empty mask gives 0.
    """
    p = np.asarray(pred) != 0
    t = np.asarray(truth) != 0
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} != truth shape {t.shape}")
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return float(empty_score)
    return 2.0 * int(np.count_nonzero(p & t)) / total


@dataclass(frozen=True)
class BratsLesionDice:
    """BraTS 2023 lesion-wise Dice of one case.

    Attributes:
        score: sum of the Dice of the kept ground-truth lesions / (kept GT lesions + FP
            predicted lesions); 1.0 when that is 0 / 0 (nothing to find, nothing found).
        n_tp: kept GT lesions touched by some predicted lesion.
        n_fn: kept GT lesions touched by none (they count Dice 0).
        n_fp: predicted lesions touching no GT lesion's dilation (they count Dice 0).
        lesions: DataFrame per GT lesion (after merging by dilation): lesion, volume,
            dice, n_pred (predicted components matched), kept.
    """

    score: float
    n_tp: int
    n_fn: int
    n_fp: int
    lesions: pd.DataFrame = field(repr=False)


def brats_lesion_dice(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    dilation_iterations: int = 1,
    min_volume: float = 2.0,
) -> BratsLesionDice:
    """BraTS 2023 lesion-wise Dice with the METS parameters (dilation 1, volume threshold 2).

    Follows the challenge's reference implementation (BraTS-2023-Metrics):

    1. GT and prediction are split into 26-connected components.
    2. The GT mask is dilated ``dilation_iterations`` times with the 18-neighbourhood; GT
       components inside one connected component of the dilated mask are merged into one
       GT lesion (nearby fragments are one lesion).
    3. A predicted component is matched to every GT lesion whose dilation it touches; the
       lesion's Dice is Dice(union of its matched predicted components, the GT lesion), 0 if
       none matched (a false negative).
    4. Predicted components touching no GT dilation are false positives.
    5. GT lesions with volume <= ``min_volume`` are ignored (neither scored nor FN; a
       prediction touching them is not an FP). Volume is in voxels when ``spacing`` is None
       (BraTS data are 1 mm isotropic), else in mm^3 as the reference computes it.
    6. score = sum(Dice of kept GT lesions) / (kept GT lesions + FPs); 0 / 0 gives 1.0.

    Args:
        pred, truth: binary masks [X, Y, Z] of equal shape (nonzero = foreground).
    """
    p = _binary(pred, "pred")
    t = _binary(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} != truth shape {t.shape}")
    if dilation_iterations < 0:
        raise ValueError(f"dilation_iterations must be >= 0, got {dilation_iterations}")
    voxel = 1.0 if spacing is None else float(np.prod(np.asarray(spacing, dtype=np.float64)))
    shape = tuple(int(s) for s in p.shape)

    pc = components(p)
    gt_flat = np.flatnonzero(t).astype(np.int64)
    # Merged GT lesions = components of the dilated GT mask; each GT voxel takes the label
    # of the dilated component containing it, and that component is the lesion's dilation.
    dil = from_flat(dilate_flat(gt_flat, shape, BRATS_DILATION, dilation_iterations), shape)
    gt_labels = dil.label_at(gt_flat)
    n_gt = dil.n
    gt_sizes = np.bincount(gt_labels, minlength=n_gt + 1)[1:]

    # (predicted component, GT lesion) pairs where the component touches the dilation.
    pred_in_dil = dil.label_at(pc.flat)
    hit = pred_in_dil > 0
    pairs = np.unique(pc.labels[hit] * (n_gt + 1) + pred_in_dil[hit])
    pair_pred, pair_gt = pairs // (n_gt + 1), pairs % (n_gt + 1)
    pred_sizes = pc.sizes
    union = np.bincount(pair_gt, weights=pred_sizes[pair_pred - 1], minlength=n_gt + 1)[1:]
    n_matched = np.bincount(pair_gt, minlength=n_gt + 1)[1:]
    # GT voxels inside the prediction: any such predicted voxel's component touches this
    # lesion, so it is part of the matched union.
    inter = np.bincount(gt_labels[pc.label_at(gt_flat) > 0], minlength=n_gt + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(gt_sizes + union > 0, 2.0 * inter / (gt_sizes + union), 0.0)
    volume = gt_sizes * voxel
    kept = volume > min_volume
    n_fp = int(pc.n - np.unique(pair_pred).size)
    denom = int(kept.sum()) + n_fp
    score = float(dice[kept].sum() / denom) if denom else 1.0
    table = pd.DataFrame(
        {
            "lesion": np.arange(1, n_gt + 1),
            "volume": volume,
            "dice": dice,
            "n_pred": n_matched,
            "kept": kept,
        }
    )
    return BratsLesionDice(
        score=score,
        n_tp=int(np.sum(kept & (n_matched > 0))),
        n_fn=int(np.sum(kept & (n_matched == 0))),
        n_fp=n_fp,
        lesions=table,
    )
