"""Evaluation: what happens to a trained model, with or without Ray.

Scoring under missing sequences (:mod:`~seqablate.evaluation.evaluate`: conditions, per-patient
detections, the bootstrap), ``seqablate evaluate`` and ``seqablate predict``
(:mod:`~seqablate.evaluation.score`, :mod:`~seqablate.evaluation.predict`), outside predictions
scored like ours (:mod:`~seqablate.evaluation.outside`), model references (a run id, an MLflow
model folder, a checkpoint folder: :mod:`~seqablate.evaluation.model_ref`) and the checkpoint
files they read (:mod:`~seqablate.evaluation.checkpoint`), cohort checks and splits
(:mod:`~seqablate.evaluation.cohort`, :mod:`~seqablate.evaluation.splits`), and the estimation of
per-subset normalisation statistics (:mod:`~seqablate.evaluation.norm`).

Above data, models, metrics and tracking; below :mod:`seqablate.trainables` (which trains
with Ray and calls into this package to validate and evaluate) and :mod:`seqablate.analysis`.
Nothing here imports Ray.
"""

from __future__ import annotations
