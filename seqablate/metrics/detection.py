"""Lesion-level detection metrics (paper section IV-G): mAP, max sensitivity, TP Dice.

Definitions (also in :func:`detection_metrics`'s docstring, which is the reference):

* predicted lesion = 3D 26-connected component of voxels with ``prob > threshold``;
* its score = mean probability over its voxels;
* its centre = unweighted centroid of its voxels, in mm (voxel index x spacing);
* it is a true positive candidate if the Euclidean distance in mm from its centre to the
  ground-truth annotation is <= ``max_distance_mm``; the annotation is the region its voxels
  cover (each voxel the box ``index +- 0.5`` times the spacing), so a centre inside an
  annotated voxel is at distance 0. It then matches the truth lesion (26-connected
  component of the truth mask) holding the nearest voxel;
* predictions of all patients are ranked together by descending score; a prediction whose
  truth lesion was already matched by a higher-scoring prediction is a false positive
  (duplicate);
* AP = sum_k (R_k - R_{k-1}) P_k over the distinct scores (ties together, as scikit-learn),
  with recall over ALL truth lesions; max sensitivity = matched / all truth lesions;
  TP Dice = mean Dice(predicted component, matched truth component) over true positives.

Why voxel extents and not voxel centres: the paper says "within 1 mm of a ground truth
annotation", an annotated region. On its ~1 mm grid the two readings differ by at most a
half voxel diagonal (0.87 mm); on coarse grids (5 mm slices) the centre reading turns into a
lottery: a predicted lesion covering exactly the annotated slices 10 and 11 has its centre at
z = 10.5, 2.6 mm from every truth voxel centre, and would be a false positive.

The nearest truth voxel is found exactly with a k-d tree over the truth voxel centres (in mm):
every voxel whose box lies within ``max_distance_mm`` of a centroid has its centre within
``max_distance_mm`` + half the voxel diagonal, so a ball query of that radius holds all the
candidates and the box distance is then computed exactly. (A Euclidean distance transform
gives distances from voxel centres, not from a sub-voxel centroid, and costs ~2.5 s on a
256x256x150 volume.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from seqablate.metrics.lesions import components, overlap_counts
from seqablate.metrics.ranking import (
    ap_from_counts,
    cumulative_counts,
    pr_curve,
)

# Float slack on the distance test: centroids are means of integers times spacings, so a
# distance meant to be exactly max_distance_mm may come out a few ulps above it.
DISTANCE_TOLERANCE_MM = 1e-6

LESION_COLUMNS = (
    "patient",
    "lesion",
    "score",
    "centre_x_mm",
    "centre_y_mm",
    "centre_z_mm",
    "volume_mm3",
    "distance_mm",
    "matched_lesion",
    "dice",
    "is_tp",
)


@dataclass(frozen=True)
class PatientDetection:
    """One patient's predicted and truth lesions: everything the pooled metrics need.

    Attributes (P predicted lesions, T truth lesions; labels are 1-based component ids):
        patient_id: the patient's id.
        scores: float64[P] mean probability per predicted lesion (label i + 1 at index i).
        centres_mm: float64[P, 3] unweighted centroids in mm (index x spacing).
        volumes_mm3: float64[P] predicted lesion volumes.
        distances_mm: float64[P] distance from centroid to the nearest annotated voxel's
            extent, 0 inside it (exact up to ``max_distance_mm``, an upper bound beyond; inf
            if the patient has no truth voxel).
        candidates: int64[P] truth lesion within max_distance_mm (its label), else -1.
        is_tp: bool[P] true positive after duplicate removal (highest score wins; equal
            scores: lower predicted label wins -- AP does not depend on this choice).
        dice: float64[P] Dice(predicted component, candidate truth lesion); NaN if no candidate.
        truth_volumes_mm3: float64[T] truth lesion volumes.
        truth_detected: bool[T] whether some prediction matched the lesion.
        voxel_dice: Dice of the whole thresholded mask vs the truth mask (NaN if both empty).
    """

    patient_id: str
    scores: np.ndarray
    centres_mm: np.ndarray
    volumes_mm3: np.ndarray
    distances_mm: np.ndarray
    candidates: np.ndarray
    is_tp: np.ndarray
    dice: np.ndarray
    truth_volumes_mm3: np.ndarray
    truth_detected: np.ndarray
    voxel_dice: float

    @property
    def n_truth(self) -> int:
        return int(self.truth_volumes_mm3.size)

    @property
    def n_pred(self) -> int:
        return int(self.scores.size)

    @property
    def n_tp(self) -> int:
        return int(self.is_tp.sum())

    @property
    def tp_dice_sum(self) -> float:
        return float(self.dice[self.is_tp].sum())

    def table(self) -> pd.DataFrame:
        """Per predicted lesion rows with :data:`LESION_COLUMNS`."""
        return pd.DataFrame(
            {
                "patient": [self.patient_id] * self.n_pred,
                "lesion": np.arange(1, self.n_pred + 1, dtype=np.int64),
                "score": self.scores,
                "centre_x_mm": self.centres_mm[:, 0],
                "centre_y_mm": self.centres_mm[:, 1],
                "centre_z_mm": self.centres_mm[:, 2],
                "volume_mm3": self.volumes_mm3,
                "distance_mm": self.distances_mm,
                "matched_lesion": self.candidates,
                "dice": self.dice,
                "is_tp": self.is_tp,
            },
            columns=list(LESION_COLUMNS),
        )


def _check_inputs(
    prob: np.ndarray, truth: np.ndarray, spacing: Sequence[float], patient_id: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prob = np.asarray(prob)
    truth = np.asarray(truth)
    if prob.ndim != 3:
        raise ValueError(f"patient {patient_id!r}: probs must be 3D, got shape {prob.shape}")
    if truth.shape != prob.shape:
        raise ValueError(
            f"patient {patient_id!r}: truth shape {truth.shape} != probs shape {prob.shape}"
        )
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"patient {patient_id!r}: probs must be floating point, got {prob.dtype}")
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size != 3 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(
            f"patient {patient_id!r}: spacing must be 3 positive finite mm values, got {spacing!r}"
        )
    if prob.size:
        lo, hi = float(prob.min()), float(prob.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"patient {patient_id!r}: probs must be finite probabilities in [0, 1], "
                f"got range [{lo}, {hi}] (NaN means a non-finite value)"
            )
    if truth.dtype != bool:
        if not (np.issubdtype(truth.dtype, np.integer) or np.issubdtype(truth.dtype, np.floating)):
            raise ValueError(f"patient {patient_id!r}: truth must be a binary mask, got {truth.dtype}")
        if truth.size and (truth.min() < 0 or truth.max() > 1):
            raise ValueError(
                f"patient {patient_id!r}: truth must be a binary mask (0/1), got values in "
                f"[{truth.min()}, {truth.max()}]"
            )
    return prob, truth, sp


def _box_distance(point: np.ndarray, centres: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Euclidean distance float64[N] from ``point`` (mm) to N axis-aligned voxel boxes
    (``centres`` [N, 3] in mm, half-sizes ``half`` [3]); 0 for a point inside a box."""
    return np.sqrt((np.maximum(np.abs(centres - point) - half, 0.0) ** 2).sum(axis=1))


def _nearest_annotation(
    points: np.ndarray, centres: np.ndarray, half: np.ndarray, max_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each point [P, 3] (mm): distance to the nearest truth voxel box and that voxel's row.

    Exact whenever the distance is <= ``max_distance``. Beyond it (a false positive anyway)
    the distance is to the box of the voxel with the nearest centre, an upper bound within
    half a voxel diagonal of the exact one: enough for the per-lesion table.
    """
    tree = cKDTree(centres)
    _, nearest = tree.query(points)
    nearest = np.asarray(nearest, dtype=np.int64)
    distances = np.sqrt((np.maximum(np.abs(centres[nearest] - points) - half, 0.0) ** 2).sum(axis=1))
    reach = max_distance + float(np.linalg.norm(half)) + DISTANCE_TOLERANCE_MM
    for i, rows in enumerate(tree.query_ball_point(points, r=reach)):
        if rows:
            rows = np.asarray(rows, dtype=np.int64)
            d = _box_distance(points[i], centres[rows], half)
            k = int(np.argmin(d))
            if d[k] < distances[i]:
                distances[i], nearest[i] = d[k], rows[k]
    return distances, nearest


def detect_patient(
    prob: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float],
    *,
    threshold: float = 0.1,
    max_distance_mm: float = 1.0,
    patient_id: str = "0",
) -> PatientDetection:
    """Extract, score and match one patient's predicted lesions (see module docstring).

    Args:
        prob: float[X, Y, Z] probabilities in [0, 1].
        truth: bool/uint8[X, Y, Z] binary lesion mask (same shape).
        spacing: (sx, sy, sz) voxel size in mm, axes in the order of ``prob``.
    """
    prob, truth, sp = _check_inputs(prob, truth, spacing, patient_id)
    voxel_mm3 = float(np.prod(sp))
    pred = components(prob > threshold)
    gt = components(truth != 0)

    sizes = pred.sizes
    scores = pred.sums(prob) / np.maximum(sizes, 1)
    centres_mm = pred.centroids() * sp
    distances = np.full(pred.n, np.inf)
    candidates = np.full(pred.n, -1, dtype=np.int64)
    if pred.n and gt.n:
        distances, nearest = _nearest_annotation(centres_mm, gt.coords() * sp, 0.5 * sp, max_distance_mm)
        within = distances <= max_distance_mm + DISTANCE_TOLERANCE_MM
        candidates = np.where(within, gt.labels[nearest], -1)

    # Duplicates: within a patient, the highest-scoring prediction of each truth lesion
    # wins. Truth lesions belong to one patient, so this equals the global ranking's rule.
    order = np.argsort(-scores, kind="stable")
    is_tp = np.zeros(pred.n, dtype=bool)
    ranked = candidates[order]
    hit_pos = np.flatnonzero(ranked > 0)
    _, first = np.unique(ranked[hit_pos], return_index=True)
    is_tp[order[hit_pos[first]]] = True

    # Dice of each prediction with its candidate lesion, from pairwise overlap counts.
    la, lb, counts = overlap_counts(pred, gt)
    inter = np.zeros(pred.n, dtype=np.float64)
    if la.size and pred.n:
        code_pairs = la * (gt.n + 1) + lb
        code_query = np.arange(1, pred.n + 1) * (gt.n + 1) + np.maximum(candidates, 0)
        pos = np.minimum(np.searchsorted(code_pairs, code_query), code_pairs.size - 1)
        inter = np.where(code_pairs[pos] == code_query, counts[pos], 0).astype(np.float64)
    gt_sizes = gt.sizes
    dice = np.full(pred.n, np.nan)
    has = candidates > 0
    dice[has] = 2.0 * inter[has] / (sizes[has] + gt_sizes[candidates[has] - 1])

    detected = np.zeros(gt.n, dtype=bool)
    detected[candidates[is_tp] - 1] = True
    total = pred.flat.size + gt.flat.size
    common = float(counts.sum()) if counts.size else 0.0
    voxel_dice = 2.0 * common / total if total else float("nan")

    return PatientDetection(
        patient_id=str(patient_id),
        scores=scores,
        centres_mm=centres_mm,
        volumes_mm3=sizes * voxel_mm3,
        distances_mm=np.asarray(distances, dtype=np.float64),
        candidates=candidates,
        is_tp=is_tp,
        dice=dice,
        truth_volumes_mm3=gt_sizes * voxel_mm3,
        truth_detected=detected,
        voxel_dice=float(voxel_dice),
    )


@dataclass(frozen=True)
class DetectionResult:
    """Pooled lesion-level metrics of a cohort.

    Attributes:
        mAP: lesion-level average precision (NaN without truth lesions; 0 with truth lesions
            but no predictions).
        max_sensitivity: matched truth lesions / all truth lesions (same NaN/0 rules).
        tp_dice: mean Dice over true positives (NaN without true positives).
        n_truth, n_pred, n_tp: lesion counts over the cohort.
        voxel_dice: mean over patients of the voxel-level Dice of the thresholded mask
            (patients where both masks are empty are skipped; NaN if all are).
        lesions: (property, built on first use) DataFrame, one row per predicted lesion
            (:data:`LESION_COLUMNS`), sorted by descending score (the global ranking; ties
            in patient order).
        truth_lesions: (property) DataFrame, one row per truth lesion: patient, lesion,
            volume_mm3, detected.
        per_patient: the :class:`PatientDetection` of each patient, for the bootstrap.
        threshold, max_distance_mm: the settings used.
    """

    mAP: float
    max_sensitivity: float
    tp_dice: float
    n_truth: int
    n_pred: int
    n_tp: int
    voxel_dice: float
    per_patient: tuple[PatientDetection, ...] = field(repr=False)
    threshold: float = 0.1
    max_distance_mm: float = 1.0

    @classmethod
    def from_patients(
        cls,
        per_patient: Sequence[PatientDetection],
        *,
        threshold: float = 0.1,
        max_distance_mm: float = 1.0,
    ) -> DetectionResult:
        """Pool per-patient detections into cohort metrics (also used on resamples)."""
        pts = tuple(per_patient)
        scores = np.concatenate([p.scores for p in pts]) if pts else np.zeros(0)
        is_tp = np.concatenate([p.is_tp for p in pts]) if pts else np.zeros(0, dtype=bool)
        n_truth = sum(p.n_truth for p in pts)
        n_tp = int(is_tp.sum())
        _, tp, fp = cumulative_counts(scores, is_tp)
        m_ap = float(ap_from_counts(tp, fp, n_truth))
        sens = n_tp / n_truth if n_truth else float("nan")
        tp_dice = sum(p.tp_dice_sum for p in pts) / n_tp if n_tp else float("nan")
        vd = np.array([p.voxel_dice for p in pts], dtype=np.float64)
        voxel_dice = float(np.nanmean(vd)) if np.any(np.isfinite(vd)) else float("nan")

        return cls(
            mAP=m_ap,
            max_sensitivity=float(sens),
            tp_dice=float(tp_dice),
            n_truth=int(n_truth),
            n_pred=int(scores.size),
            n_tp=n_tp,
            voxel_dice=voxel_dice,
            per_patient=pts,
            threshold=threshold,
            max_distance_mm=max_distance_mm,
        )

    @cached_property
    def lesions(self) -> pd.DataFrame:
        """One row per predicted lesion (:data:`LESION_COLUMNS`), by descending score."""
        tables = [p.table() for p in self.per_patient]
        if not tables:
            return pd.DataFrame(columns=list(LESION_COLUMNS))
        lesions = pd.concat(tables, ignore_index=True)
        return lesions.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)

    @cached_property
    def truth_lesions(self) -> pd.DataFrame:
        """One row per truth lesion: patient, lesion, volume_mm3, detected."""
        pts = self.per_patient
        return pd.DataFrame(
            {
                "patient": [p.patient_id for p in pts for _ in range(p.n_truth)],
                "lesion": np.concatenate([np.arange(1, p.n_truth + 1) for p in pts] + [np.zeros(0, np.int64)]),
                "volume_mm3": np.concatenate([p.truth_volumes_mm3 for p in pts] + [np.zeros(0)]),
                "detected": np.concatenate([p.truth_detected for p in pts] + [np.zeros(0, bool)]),
            }
        )

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision, recall, thresholds) at each distinct score, thresholds descending.

        Recall counts all truth lesions, so it ends at ``max_sensitivity``.
        """
        scores = np.concatenate([p.scores for p in self.per_patient]) if self.per_patient else []
        is_tp = np.concatenate([p.is_tp for p in self.per_patient]) if self.per_patient else []
        return pr_curve(np.asarray(scores), np.asarray(is_tp, dtype=bool), self.n_truth)

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics, e.g. for logging to MLflow."""
        return {
            "mAP": self.mAP,
            "max_sensitivity": self.max_sensitivity,
            "tp_dice": self.tp_dice,
            "voxel_dice": self.voxel_dice,
            "n_truth": float(self.n_truth),
            "n_pred": float(self.n_pred),
            "n_tp": float(self.n_tp),
        }


#: Columns of the per-patient table (:func:`patient_table`).
PATIENT_COLUMNS = ("patient", "n_truth", "n_pred", "n_tp", "voxel_dice")


def patient_table(per_patient: Sequence[PatientDetection]) -> pd.DataFrame:
    """One row per patient (:data:`PATIENT_COLUMNS`), in the given order.

    With the per-lesion table (:attr:`DetectionResult.lesions`) it holds everything the
    pooled metrics and the bootstrap need, so a logged evaluation can be re-scored later
    (:func:`detections_from_tables`), e.g. for paired comparisons between runs.
    """
    return pd.DataFrame(
        {
            "patient": [p.patient_id for p in per_patient],
            "n_truth": [p.n_truth for p in per_patient],
            "n_pred": [p.n_pred for p in per_patient],
            "n_tp": [p.n_tp for p in per_patient],
            "voxel_dice": [p.voxel_dice for p in per_patient],
        },
        columns=list(PATIENT_COLUMNS),
    )


def detections_from_tables(patients: pd.DataFrame, lesions: pd.DataFrame) -> list[PatientDetection]:
    """Rebuild per-patient detections from :func:`patient_table` and the lesion table.

    Patients come in the order of ``patients``; their predictions in lesion-id order. Truth
    lesion volumes are not in the tables (NaN), and nothing is detected per truth lesion;
    every pooled metric (mAP, sensitivity, TP Dice, FROC, their bootstraps) is exact. Raises
    ValueError naming a patient whose lesion rows disagree with its counts.
    """
    by_patient = {str(k): g.sort_values("lesion") for k, g in lesions.groupby(lesions["patient"].astype(str))} if len(lesions) else {}
    out = []
    for row in patients.itertuples(index=False):
        pid = str(row.patient)
        g = by_patient.get(pid)
        n = 0 if g is None else len(g)
        if n != int(row.n_pred):
            raise ValueError(f"patient {pid}: the lesion table has {n} predictions, the patient table {int(row.n_pred)}")

        def col(name: str, dtype: type = np.float64, g: pd.DataFrame | None = g) -> np.ndarray:
            return np.zeros(0, dtype) if g is None else g[name].to_numpy(dtype)

        is_tp = col("is_tp", bool)
        if int(is_tp.sum()) != int(row.n_tp):
            raise ValueError(f"patient {pid}: {int(is_tp.sum())} true positives in the lesion table, {int(row.n_tp)} in the patient table")
        centres = np.stack([col("centre_x_mm"), col("centre_y_mm"), col("centre_z_mm")], axis=1) if n else np.zeros((0, 3))
        out.append(PatientDetection(
            patient_id=pid, scores=col("score"), centres_mm=centres, volumes_mm3=col("volume_mm3"),
            distances_mm=col("distance_mm"), candidates=col("matched_lesion", np.int64), is_tp=is_tp,
            dice=col("dice"), truth_volumes_mm3=np.full(int(row.n_truth), np.nan),
            truth_detected=np.zeros(int(row.n_truth), dtype=bool), voxel_dice=float(row.voxel_dice),
        ))
    return out


def detection_metrics(
    probs: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    spacings: Sequence[Sequence[float]],
    *,
    threshold: float = 0.1,
    max_distance_mm: float = 1.0,
    patient_ids: Sequence[str] | None = None,
) -> DetectionResult:
    """Lesion-level detection and segmentation metrics of a cohort (paper section IV-G).

    Args:
        probs: one float[X, Y, Z] probability volume per patient, values in [0, 1].
        truths: one binary (bool/0-1 integer) lesion mask per patient, same shape as its probs.
        spacings: one (sx, sy, sz) voxel size in mm per patient, axes in the order of probs.
        threshold: voxels with prob > threshold (strictly) form predicted lesions.
        max_distance_mm: centroid-to-truth distance for a true positive (inclusive).
        patient_ids: ids for the tables (default "0", "1", ...); must be unique.

    Definitions:
        * predicted lesion: a 3D 26-connected component of voxels with prob > threshold;
        * score: the mean probability over the component's voxels (so >= threshold);
        * centre: the unweighted centroid of its voxels, in mm as voxel index x spacing;
        * true positive: the Euclidean distance in mm from the centre to the region the truth
          voxels cover (each voxel the box index +- 0.5 voxel, so 0 inside an annotated voxel)
          is <= max_distance_mm; the prediction then matches the truth lesion (26-connected
          component of the truth mask) that holds the nearest voxel;
        * ranking: the predictions of all patients are ranked together by descending score;
          a prediction whose truth lesion was already matched by a higher-scoring prediction
          is a false positive (duplicate);
        * AP (``mAP``) = sum_k (R_k - R_{k-1}) * P_k over the distinct scores, highest first,
          where P_k, R_k are precision and recall of all predictions scoring >= the k-th
          distinct score (ties enter together, as in scikit-learn), R_0 = 0 and recall is
          over ALL truth lesions, so lesions never predicted cap it;
        * max sensitivity = matched truth lesions / all truth lesions;
        * TP Dice = mean over true positives of Dice(predicted component, matched truth
          component) = 2|P & T| / (|P| + |T|).
        * No truth lesion in the cohort: mAP, max_sensitivity and tp_dice are NaN. Truth
          lesions but no prediction: mAP and max_sensitivity are 0, tp_dice NaN.

    Returns:
        :class:`DetectionResult` (mAP, max_sensitivity, tp_dice, n_truth, n_pred, n_tp,
        voxel_dice, lesions table, truth_lesions table, per_patient, pr_curve()); FROC from it
        with :func:`seqablate.metrics.froc`.

    Raises:
        ValueError: naming the patient, for mismatched lengths or shapes, non-3D volumes,
            probabilities outside [0, 1] or non-finite, non-binary masks, bad spacings,
            threshold outside [0, 1), negative max_distance_mm, or duplicate patient ids.
    """
    n = len(probs)
    if len(truths) != n or len(spacings) != n:
        raise ValueError(
            f"probs, truths and spacings must have one entry per patient, got "
            f"{n}, {len(truths)} and {len(spacings)}"
        )
    if not (0.0 <= float(threshold) < 1.0):
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    if not (np.isfinite(max_distance_mm) and max_distance_mm >= 0):
        raise ValueError(f"max_distance_mm must be a finite number >= 0, got {max_distance_mm!r}")
    ids = [str(i) for i in range(n)] if patient_ids is None else [str(p) for p in patient_ids]
    if len(ids) != n:
        raise ValueError(f"patient_ids has {len(ids)} entries for {n} patients")
    if len(set(ids)) != n:
        dup = sorted({p for p in ids if ids.count(p) > 1})
        raise ValueError(f"patient_ids must be unique, duplicated: {dup}")
    per_patient = [
        detect_patient(
            p, t, s, threshold=threshold, max_distance_mm=max_distance_mm, patient_id=pid
        )
        for p, t, s, pid in zip(probs, truths, spacings, ids, strict=True)
    ]
    return DetectionResult.from_patients(
        per_patient, threshold=threshold, max_distance_mm=max_distance_mm
    )
