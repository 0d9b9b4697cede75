"""Made-up per-patient lesion detections for tests of the metrics and the analysis."""

from __future__ import annotations

import numpy as np

from seqablate.metrics import PatientDetection


def detection(pid: str, scores: list[float], tp: list[bool], n_truth: int) -> PatientDetection:
    """One patient: predicted lesions with ``scores``, true positives where ``tp``, ``n_truth``
    annotated lesions (unit volumes, centres at the origin, Dice 0.5 for a true positive)."""
    n = len(scores)
    return PatientDetection(
        patient_id=pid, scores=np.asarray(scores, float), centres_mm=np.zeros((n, 3)), volumes_mm3=np.ones(n),
        distances_mm=np.zeros(n), candidates=np.where(tp, 1, -1), is_tp=np.asarray(tp, bool),
        dice=np.where(tp, 0.5, np.nan), truth_volumes_mm3=np.ones(n_truth), truth_detected=np.zeros(n_truth, bool),
        voxel_dice=0.5,
    )


def cohort(rng: np.random.Generator, n: int, p_tp: float, width: int = 0) -> list[PatientDetection]:
    """``n`` patients of 1-3 predicted lesions each, scored U(0.1, 1), each a true positive with
    probability ``p_tp``; ids ``p<i>`` (zero-padded to ``width`` digits)."""
    out = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        tp = list(rng.random(k) < p_tp)
        out.append(detection(f"p{i:0{width}d}", list(rng.random(k) * 0.9 + 0.1), tp, n_truth=max(1, sum(tp))))
    return out
