"""Pooled ranking of predicted lesions: cumulative TP/FP counts, AP, PR curve, FROC points.

All functions take the predictions of a whole cohort pooled together (``scores`` and
``is_tp`` concatenated over patients) and optionally a weight per prediction and resample,
``weights[B, N]``, so that the bootstrap evaluates B patient resamples in one vectorised pass:
a patient drawn c times contributes each of its predictions with weight c, which is exactly
pooling c copies of it (copies tie in score, and ties are evaluated together).
"""

from __future__ import annotations

import numpy as np

# FP-per-patient rates of the FROC summary (the usual CPM operating points).
FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def cumulative_counts(
    scores: np.ndarray, is_tp: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative TP and FP counts at each distinct score, highest score first.

    Args:
        scores: float[N], one score per predicted lesion (pooled over patients).
        is_tp: bool[N], whether each prediction is a true positive (duplicates are False).
        weights: optional float[B, N] (or [N]) multiplicity of each prediction per resample.

    Returns:
        (thresholds float64[G], tp float64[B, G] or [G], fp float64[B, G] or [G]) where
        G is the number of distinct scores and column g counts every prediction with
        score >= thresholds[g] (ties enter together, as in scikit-learn).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_tp = np.asarray(is_tp, dtype=bool).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    # Last position of each run of equal scores: the operating points of the ranking.
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.zeros(0, dtype=np.int64)
    tp_sorted = is_tp[order].astype(np.float64)
    if weights is None:
        w = np.ones_like(tp_sorted)
    else:
        w = np.asarray(weights, dtype=np.float64)[..., order]
    tp = np.cumsum(w * tp_sorted, axis=-1)[..., ends]
    fp = np.cumsum(w * (1.0 - tp_sorted), axis=-1)[..., ends]
    return s[ends], tp, fp


def ap_from_counts(tp: np.ndarray, fp: np.ndarray, n_truth: np.ndarray | float) -> np.ndarray:
    """AP = sum_k (R_k - R_{k-1}) P_k over operating points, recall over ALL truth lesions.

    Args:
        tp, fp: float[..., G] cumulative counts from :func:`cumulative_counts`.
        n_truth: number of truth lesions (scalar or float[...]).

    Returns:
        float64[...]; NaN where n_truth == 0, 0 where there are truth lesions but no
        predictions (G == 0).
    """
    n_truth = np.asarray(n_truth, dtype=np.float64)
    denom = tp + fp
    precision = np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / n_truth[..., None]
    d_recall = np.diff(recall, axis=-1, prepend=0.0)
    ap = np.sum(d_recall * precision, axis=-1)
    return np.where(n_truth > 0, ap, np.nan)


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_truth: int) -> float:
    """Lesion-level AP of pooled predictions (see :func:`ap_from_counts`)."""
    _, tp, fp = cumulative_counts(scores, is_tp)
    return float(ap_from_counts(tp, fp, n_truth))


def pr_curve(
    scores: np.ndarray, is_tp: np.ndarray, n_truth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at each distinct score.

    Returns:
        (precision float64[G], recall float64[G], thresholds float64[G]) with thresholds in
        DESCENDING order (recall non-decreasing): the operating point "predictions with
        score >= thresholds[g]". Recall is over all truth lesions (NaN if n_truth == 0).
        No end point (recall 0, precision 1) is appended, unlike scikit-learn.
    """
    thresholds, tp, fp = cumulative_counts(scores, is_tp)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = tp / n_truth if n_truth > 0 else np.full_like(tp, np.nan)
    return precision, recall, thresholds


def froc_from_counts(
    tp: np.ndarray,
    fp: np.ndarray,
    n_truth: np.ndarray | float,
    n_patients: int,
    rates: tuple[float, ...] = FROC_RATES,
) -> np.ndarray:
    """Sensitivity at each FP-per-patient rate: float64[..., len(rates)].

    The sensitivity at rate r is that of the lowest threshold (most predictions) whose
    false positives per patient are <= r; 0 if even the highest-scoring group exceeds r.
    Both cumulative counts are non-decreasing along the ranking, so this is the recall at
    the last operating point within the FP budget. NaN where n_truth == 0.
    """
    n_truth = np.asarray(n_truth, dtype=np.float64)
    budget = np.asarray(rates, dtype=np.float64) * n_patients  # allowed FP counts [R]
    # Number of operating points within each budget: [..., R]; tolerance for float budgets.
    k = np.sum(fp[..., None, :] <= budget[:, None] + 1e-9, axis=-1)
    if tp.shape[-1] == 0:
        sens = np.zeros(k.shape)
    else:
        tp_at = np.take_along_axis(tp, np.maximum(k - 1, 0), axis=-1)
        sens = np.where(k > 0, tp_at, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sens / n_truth[..., None]
    return np.where(n_truth[..., None] > 0, out, np.nan)
