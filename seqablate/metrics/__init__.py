"""Lesion-level detection and segmentation metrics with bootstrap CIs (paper section IV-G).

Pure numpy/scipy functions, numpy in and out:

* :func:`detection_metrics` -- mAP, max sensitivity, TP Dice and per-lesion tables;
* :func:`bootstrap_ci` -- percentile CIs resampling patients;
* :func:`paired_bootstrap` -- the difference of two configurations on the same patients
  (these trained networks: patients resampled, seeds fixed);
* :func:`recipe_contrast`, :class:`RecipeData` -- any contrast of configuration means with the
  interval of these networks and of the training recipe (seed as a random factor);
* :func:`froc` -- sensitivity at 1/8 .. 8 false positives per patient;
* :func:`voxel_dice`, :func:`brats_lesion_dice` -- voxel and BraTS 2023 lesion-wise Dice.
"""

from __future__ import annotations

from seqablate.metrics.bootstrap import (
    METRICS,
    PairedDifference,
    bootstrap_ci,
    bootstrap_distribution,
    paired_bootstrap,
)
from seqablate.metrics.detection import (
    LESION_COLUMNS,
    PATIENT_COLUMNS,
    DetectionResult,
    PatientDetection,
    detect_patient,
    detection_metrics,
    detections_from_tables,
    patient_table,
)
from seqablate.metrics.froc import FrocResult, froc
from seqablate.metrics.lesions import Components, components
from seqablate.metrics.ranking import FROC_RATES, average_precision, pr_curve
from seqablate.metrics.recipe import Arm, RecipeData, RecipeEstimate, recipe_contrast
from seqablate.metrics.segmentation import BratsLesionDice, brats_lesion_dice, voxel_dice

__all__ = [
    "Arm",
    "RecipeData",
    "RecipeEstimate",
    "recipe_contrast",
    "FROC_RATES",
    "LESION_COLUMNS",
    "METRICS",
    "PATIENT_COLUMNS",
    "BratsLesionDice",
    "Components",
    "DetectionResult",
    "FrocResult",
    "PairedDifference",
    "PatientDetection",
    "average_precision",
    "bootstrap_ci",
    "bootstrap_distribution",
    "brats_lesion_dice",
    "components",
    "detect_patient",
    "detection_metrics",
    "detections_from_tables",
    "froc",
    "paired_bootstrap",
    "patient_table",
    "pr_curve",
    "voxel_dice",
]
