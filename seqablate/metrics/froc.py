"""FROC: lesion sensitivity at fixed numbers of false positives per patient."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seqablate.metrics.detection import DetectionResult, PatientDetection
from seqablate.metrics.ranking import FROC_RATES, cumulative_counts, froc_from_counts


@dataclass(frozen=True)
class FrocResult:
    """FROC summary of a cohort.

    Attributes:
        sensitivity: {rate: sensitivity} at each FP-per-patient rate.
        mean: mean of those sensitivities (the "CPM" score); NaN without truth lesions.
        fps_per_patient: float64[G] FPs per patient at each distinct score (descending).
        curve_sensitivity: float64[G] sensitivity at the same operating points.

    The curve is what reports plot (an evaluation logs it as ``froc.csv``), so the figure and
    the logged ``froc_mean`` come from this one computation.
    """

    sensitivity: dict[float, float]
    mean: float
    fps_per_patient: np.ndarray
    curve_sensitivity: np.ndarray


def as_patients(
    results: DetectionResult | Sequence[PatientDetection],
) -> tuple[PatientDetection, ...]:
    """Accept a :class:`DetectionResult` or its ``per_patient`` list."""
    if isinstance(results, DetectionResult):
        return results.per_patient
    pts = tuple(results)
    for p in pts:
        if not isinstance(p, PatientDetection):
            raise ValueError(
                f"expected PatientDetection entries (DetectionResult.per_patient), got {type(p).__name__}"
            )
    return pts


def froc(
    results: DetectionResult | Sequence[PatientDetection],
    *,
    rates: tuple[float, ...] = FROC_RATES,
) -> FrocResult:
    """Sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 false positives per patient, and their mean.

    Predictions are pooled and ranked by descending score as for mAP; at each distinct score
    the operating point has (FP count / number of patients, TP / all truth lesions), where
    duplicates count as FPs and patients without lesions or predictions still count in the
    denominator. The sensitivity at rate r is that of the lowest threshold whose FPs per
    patient are <= r (0 if none is). With no truth lesions every value is NaN; with no
    patients a ValueError is raised.
    """
    pts = as_patients(results)
    if not pts:
        raise ValueError("froc needs at least one patient")
    if any(r <= 0 for r in rates):
        raise ValueError(f"FROC rates must be positive, got {rates!r}")
    scores = np.concatenate([p.scores for p in pts])
    is_tp = np.concatenate([p.is_tp for p in pts])
    n_truth = sum(p.n_truth for p in pts)
    _, tp, fp = cumulative_counts(scores, is_tp)
    sens = froc_from_counts(tp, fp, n_truth, len(pts), rates)
    curve = tp / n_truth if n_truth else np.full_like(tp, np.nan)
    return FrocResult(
        sensitivity={float(r): float(s) for r, s in zip(rates, sens, strict=True)},
        mean=float(np.mean(sens)),
        fps_per_patient=fp / len(pts),
        curve_sensitivity=curve,
    )
