"""Percentile bootstrap confidence intervals over patients (the paper's "46 (44, 47)").

Each resample draws as many patients as the cohort has, with replacement, and recomputes the
metric on the POOLED resample: a patient drawn c times contributes c copies of its lesions.
For the built-in metrics all resamples are evaluated at once: the pooled ranking is sorted
once and each resample is a row of per-prediction weights (copies tie in score, and ties are
evaluated together, so weighting equals copying exactly). A callable metric is evaluated on
each resample's list of patients instead (slower, but any function works).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from seqablate.metrics.detection import DetectionResult, PatientDetection
from seqablate.metrics.froc import as_patients
from seqablate.metrics.ranking import (
    FROC_RATES,
    ap_from_counts,
    cumulative_counts,
    froc_from_counts,
)

METRICS = ("mAP", "max_sensitivity", "tp_dice", "froc", "voxel_dice")

# Resamples per vectorised block: bounds the [block, n_predictions] weight matrices.
_BLOCK_ELEMENTS = 4_000_000

MetricFn = Callable[[Sequence[PatientDetection]], float]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def vectorised_metric(pts: tuple[PatientDetection, ...], metric: str, counts: np.ndarray) -> np.ndarray:
    """Metric of each resample given patient multiplicities ``counts[B, P]``."""
    counts = counts.astype(np.float64)
    n_truth = counts @ np.array([p.n_truth for p in pts], dtype=np.float64)  # [B]
    if metric == "max_sensitivity":
        return _ratio(counts @ np.array([p.n_tp for p in pts], dtype=np.float64), n_truth)
    if metric == "tp_dice":
        dice_sum = counts @ np.array([p.tp_dice_sum for p in pts], dtype=np.float64)
        return _ratio(dice_sum, counts @ np.array([p.n_tp for p in pts], dtype=np.float64))
    if metric == "voxel_dice":
        vd = np.array([p.voxel_dice for p in pts], dtype=np.float64)
        ok = np.isfinite(vd)
        return _ratio(counts @ np.where(ok, vd, 0.0), counts @ ok.astype(np.float64))
    # Ranking metrics: weights of each prediction = multiplicity of its patient.
    scores = np.concatenate([p.scores for p in pts])
    is_tp = np.concatenate([p.is_tp for p in pts])
    owner = np.concatenate([np.full(p.n_pred, i, dtype=np.int64) for i, p in enumerate(pts)])
    out = np.empty(counts.shape[0], dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // max(scores.size, 1))
    for start in range(0, counts.shape[0], block):  # blocks of resamples, not of voxels
        c = counts[start : start + block]
        _, tp, fp = cumulative_counts(scores, is_tp, c[:, owner])
        nt = n_truth[start : start + block]
        if metric == "mAP":
            out[start : start + block] = ap_from_counts(tp, fp, nt)
        else:  # froc: every resample has len(pts) patients
            out[start : start + block] = froc_from_counts(tp, fp, nt, len(pts), FROC_RATES).mean(-1)
    return out


def bootstrap_distribution(
    per_patient_results: DetectionResult | Sequence[PatientDetection],
    metric: str | MetricFn,
    n: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """The metric on ``n`` patient resamples: float64[n] (NaN where undefined).

    Args:
        per_patient_results: a :class:`DetectionResult` or its ``per_patient`` sequence.
        metric: one of :data:`METRICS` ("froc" = mean FROC sensitivity), or a callable
            taking the resampled list of :class:`PatientDetection` and returning a float.
        n: number of resamples (>= 1).
        seed: seed of the resampling RNG (numpy default_rng; no global state).
    """
    pts = as_patients(per_patient_results)
    if not pts:
        raise ValueError("bootstrap needs at least one patient")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"bootstrap n must be a positive integer, got {n!r}")
    if not callable(metric) and metric not in METRICS:
        raise ValueError(f"unknown bootstrap metric {metric!r}; valid: {list(METRICS)}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pts), size=(n, len(pts)))  # [n, P] drawn patient indices
    if callable(metric):
        return np.array([float(metric([pts[i] for i in row])) for row in idx], dtype=np.float64)
    flat = (np.arange(n)[:, None] * len(pts) + idx).reshape(-1)
    counts = np.bincount(flat, minlength=n * len(pts)).reshape(n, len(pts))  # multiplicities
    return vectorised_metric(pts, metric, counts)


def bootstrap_ci(
    per_patient_results: DetectionResult | Sequence[PatientDetection],
    metric: str | MetricFn,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI ``(lo, hi)`` of a pooled metric over patient resamples.

    Resamples where the metric is undefined (NaN, e.g. no truth lesion drawn) are left out;
    if all are, ``(nan, nan)``. See :func:`bootstrap_distribution` for the arguments.
    """
    if not (0.0 < float(level) < 1.0):
        raise ValueError(f"bootstrap level must be in (0, 1), got {level!r}")
    return percentile_interval(bootstrap_distribution(per_patient_results, metric, n=n, seed=seed), level)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Two-sided percentile interval at ``level`` of the finite ``values`` (NaN, NaN if none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(finite, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedDifference:
    """``mean over A's seeds - mean over B's seeds`` of a pooled metric, with its bootstrap.

    ``difference``: on the observed patients; ``lo``/``hi``: percentile CI over patient
    resamples; ``distribution``: float64[n] resampled differences (NaN where undefined);
    ``n_patients``: patients resampled jointly.
    """

    metric: str
    difference: float
    lo: float
    hi: float
    level: float
    n_patients: int
    distribution: np.ndarray = field(repr=False)

    @property
    def contains_zero(self) -> bool:
        return bool(self.lo <= 0.0 <= self.hi)


def align_patients(groups: Sequence[Sequence[PatientDetection]]) -> list[tuple[PatientDetection, ...]]:
    """Every seed's patients ordered by one shared id list; ValueError if the sets differ."""
    ids = None
    out = []
    for pts in groups:
        by_id = {p.patient_id: p for p in as_patients(pts)}
        if ids is None:
            ids = sorted(by_id)
        elif sorted(by_id) != ids:
            extra, missing = sorted(set(by_id) - set(ids)), sorted(set(ids) - set(by_id))
            raise ValueError(
                f"paired comparison needs the same patients everywhere; a run has extra {extra[:5]} "
                f"and lacks {missing[:5]}"
            )
        out.append(tuple(by_id[i] for i in ids))
    return out


def paired_bootstrap(
    a: Sequence[DetectionResult | Sequence[PatientDetection]],
    b: Sequence[DetectionResult | Sequence[PatientDetection]],
    metric: str = "mAP",
    *,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Difference of two configurations evaluated on the same patients, with a paired CI.

    ``a`` and ``b`` hold one evaluation per seed (each a :class:`DetectionResult` or its
    per-patient list) of configurations A and B, all on the same patients. Each resample
    draws patients with replacement, jointly for every run; on it each seed's pooled metric
    is recomputed, the seeds are averaged per configuration, and the difference A - B is
    taken. Resamples where it is undefined (NaN) are left out of the percentile CI.

    The seeds are fixed: this is the interval of *these* trained networks. For what a new seed
    of the same training recipe would do, use :func:`seqablate.metrics.recipe.recipe_contrast`.
    """
    if not a or not b:
        raise ValueError("paired_bootstrap needs at least one run of each configuration")
    if metric not in METRICS:
        raise ValueError(f"unknown bootstrap metric {metric!r}; valid: {list(METRICS)}")
    if not (0.0 < float(level) < 1.0):
        raise ValueError(f"bootstrap level must be in (0, 1), got {level!r}")
    runs = align_patients([*a, *b])
    n_pat = len(runs[0])
    if n_pat == 0:
        raise ValueError("paired_bootstrap needs at least one patient")
    observed = np.ones((1, n_pat))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_pat, size=(n, n_pat))
    flat = (np.arange(n)[:, None] * n_pat + idx).reshape(-1)
    counts = np.bincount(flat, minlength=n * n_pat).reshape(n, n_pat)

    def per_config(group: list[tuple[PatientDetection, ...]], c: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.mean([vectorised_metric(pts, metric, c) for pts in group], axis=0)

    ga, gb = runs[: len(a)], runs[len(a):]
    diff = float((per_config(ga, observed) - per_config(gb, observed))[0])
    dist = per_config(ga, counts) - per_config(gb, counts)
    finite = dist[np.isfinite(dist)]
    alpha = (1.0 - level) / 2.0
    if finite.size == 0:
        lo = hi = float("nan")
    else:
        lo, hi = (float(v) for v in np.percentile(finite, [100.0 * alpha, 100.0 * (1.0 - alpha)]))
    return PairedDifference(metric, diff, lo, hi, float(level), n_pat, dist)
