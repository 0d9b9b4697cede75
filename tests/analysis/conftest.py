"""A small MLflow study written with seqablate.tracking: known metrics and saliency traces.

Layout (4 sequences, the paper's): full-protocol configurations
- input, no dropout, seeds 0 and 1 (test.full.mAP 0.40 / 0.50, with CIs; censored mAP 0.02 / 0.04)
- input, dropout p=0.25, seeds 0 and 1 (0.44 / 0.46; censored 0.38 / 0.40; censor_flair, external)
- mid@layer4 shared, no dropout, seed 0 (0.60, max_sensitivity 0.70, tp_dice omitted: n_tp=0)
- end independent, no dropout, seed 0: FAILED (no metrics)
- input trained without t1_gre_post, no dropout, seed 0 (0.30)
Saliency: the no-dropout seeds learn differently, the dropout seeds identically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seqablate.config import TrialConfig, with_overrides
from seqablate.sequences import PAPER_SEQUENCES

STEPS = (10, 20, 30)


def _saliency(logger, weights_per_step):
    """Log per-step and cumulative saliency traces; weights_per_step: float[T, S]."""
    cum = np.cumsum(np.asarray(weights_per_step, dtype=float), axis=0)
    for t, step in enumerate(STEPS):
        m = {}
        for j, name in enumerate(PAPER_SEQUENCES):
            m[f"saliency.sequence.{name}"] = float(weights_per_step[t][j])
            m[f"saliency.cumulative.sequence.{name}"] = float(cum[t, j])
        for off, v in zip((-1, 0, 1), (1.0, 2.0 + t, 1.0), strict=True):
            m[f"saliency.slice.{off}"] = v
        logger.log_metrics(m, step=step)


def _curves(logger, cfg):
    """The evaluation artifacts (lesions, patients, PR and FROC curves) written by the
    trainables' own evaluation code for two conditions of a two-patient toy cohort."""
    import tempfile

    from seqablate.evaluation.evaluate import EvalReport, score_condition

    truth = np.zeros((4, 16, 16), np.uint8)
    truth[1, 2, 2] = truth[1, 10, 10] = 1
    prob = np.zeros((4, 16, 16))
    prob[1, 2, 2], prob[3, 14, 14], prob[1, 10, 10] = 0.9, 0.8, 0.3
    report = EvalReport([score_condition(name, [prob, prob], [truth, truth], [(1.0, 1.0, 1.0)] * 2, ["p1", "p2"], cfg)
                         for name in ("test.full", "test.censor_t1_gre_post")])
    with tempfile.TemporaryDirectory() as tmp:
        for path in report.write_artifacts(tmp):
            logger.log_artifact(path, "eval")


# (overrides, test metrics, saliency weights per step or None, fail?)
TRIALS = [
    ({"model.integration": "input", "train.seed": 0},
     {"test.full.mAP": 0.40, "test.full.mAP_lo": 0.35, "test.full.mAP_hi": 0.45,
      "test.full.max_sensitivity": 0.80, "test.full.tp_dice": 0.70, "test.full.n_tp": 5,
      "test.censor_t1_gre_post.mAP": 0.02, "test.censor_t1_gre_post.max_sensitivity": 0.10,
      "test.censor_t1_gre_post.tp_dice": 0.50, "test.censor_t1_gre_post.n_tp": 1,
      "external.oslo.mAP": 0.05, "external.oslo.max_sensitivity": 0.1, "external.oslo.tp_dice": 0.4,
      "val.best_mAP": 0.41},
     [[4, 1, 1, 1]] * 3, False),
    ({"model.integration": "input", "train.seed": 1},
     {"test.full.mAP": 0.50, "test.full.mAP_lo": 0.45, "test.full.mAP_hi": 0.55,
      "test.full.max_sensitivity": 0.90, "test.full.tp_dice": 0.72, "test.full.n_tp": 6,
      "test.censor_t1_gre_post.mAP": 0.04, "test.censor_t1_gre_post.max_sensitivity": 0.20,
      "test.censor_t1_gre_post.tp_dice": 0.52, "test.censor_t1_gre_post.n_tp": 1,
      "external.oslo.mAP": 0.07, "external.oslo.max_sensitivity": 0.1, "external.oslo.tp_dice": 0.4,
      "val.best_mAP": 0.52},
     [[1, 4, 1, 1]] * 3, False),
    ({"model.integration": "input", "train.dropout_p": 0.25, "train.seed": 0},
     {"test.full.mAP": 0.44, "test.full.mAP_lo": 0.40, "test.full.mAP_hi": 0.48,
      "test.full.max_sensitivity": 0.85, "test.full.tp_dice": 0.71, "test.full.n_tp": 5,
      "test.censor_t1_gre_post.mAP": 0.38, "test.censor_t1_gre_post.max_sensitivity": 0.6,
      "test.censor_t1_gre_post.tp_dice": 0.7, "test.censor_t1_gre_post.n_tp": 4,
      "test.censor_flair.mAP": 0.43, "test.censor_flair.max_sensitivity": 0.8,
      "test.censor_flair.tp_dice": 0.7, "test.censor_flair.n_tp": 4,
      "external.oslo.mAP": 0.60, "external.oslo.max_sensitivity": 0.9, "external.oslo.tp_dice": 0.8,
      "val.best_mAP": 0.45},
     [[2, 2, 2, 1]] * 3, False),
    ({"model.integration": "input", "train.dropout_p": 0.25, "train.seed": 1},
     {"test.full.mAP": 0.46, "test.full.mAP_lo": 0.42, "test.full.mAP_hi": 0.50,
      "test.full.max_sensitivity": 0.85, "test.full.tp_dice": 0.73, "test.full.n_tp": 5,
      "test.full.n_truth": 4,
      "test.censor_t1_gre_post.mAP": 0.40, "test.censor_t1_gre_post.max_sensitivity": 0.6,
      "test.censor_t1_gre_post.tp_dice": 0.7, "test.censor_t1_gre_post.n_tp": 4,
      "test.censor_flair.mAP": 0.45, "test.censor_flair.max_sensitivity": 0.8,
      "test.censor_flair.tp_dice": 0.7, "test.censor_flair.n_tp": 4,
      "external.oslo.mAP": 0.62, "external.oslo.max_sensitivity": 0.9, "external.oslo.tp_dice": 0.8,
      "val.best_mAP": 0.47},
     [[2, 2, 2, 1]] * 3, False),
    ({"model.integration": "mid", "model.sharing": "shared", "train.seed": 0},
     {"test.full.mAP": 0.60, "test.full.max_sensitivity": 0.70, "test.full.n_tp": 0,
      "val.best_mAP": 0.58},
     None, False),
    ({"model.integration": "end", "model.sharing": "independent", "train.seed": 0}, {}, None, True),
    ({"model.integration": "input", "data.sequences": ["t1_fse_pre", "t1_fse_post", "flair"], "train.seed": 0},
     {"test.full.mAP": 0.30, "test.full.max_sensitivity": 0.5, "test.full.tp_dice": 0.6,
      "test.full.n_tp": 3, "val.best_mAP": 0.3},
     None, False),
]


def build_study(root: Path, name: str = "toy") -> Path:
    """Write the toy study into ``root`` (mlflow.db there); returns ``root``."""
    from seqablate import tracking

    base = TrialConfig()
    with tracking.study_run(name, storage=str(root), space="toy grid") as study:
        for overrides, metrics, saliency, fail in TRIALS:
            cfg = with_overrides(base, overrides)
            try:
                with tracking.trial_run(study.ref, cfg, overrides=overrides, study_name=name) as log:
                    if fail:
                        raise RuntimeError("out of memory (simulated)")
                    if saliency is not None:
                        _saliency(log, saliency)
                    log.log_metrics(metrics, step=30)
                    if overrides.get("train.dropout_p") and overrides["train.seed"] == 1:
                        _curves(log, cfg)
            except RuntimeError:
                pass
    return root


@pytest.fixture(scope="session")
def toy_study(tmp_path_factory) -> Path:
    import os

    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        return build_study(tmp_path_factory.mktemp("study"))
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
