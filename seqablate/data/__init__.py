"""The data layer: cohort layouts, validated volumes, preprocessing cache, 2.5D datasets,
sequence dropout, synthetic phantom cohorts, nnU-Net datasets and other tools' predictions.

Public names are re-exported lazily (PEP 562) so that importing e.g. ``seqablate.data.cache``
in a preprocessing worker does not import torch (only ``dataset`` and ``dropout`` need it).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DataError": "errors",
    "LAYOUTS": "layouts",
    "Cohort": "layouts",
    "PatientFiles": "layouts",
    "detect_layout": "layouts",
    "discover": "layouts",
    "Volume": "volumes",
    "load_patient": "volumes",
    "PreprocessParams": "preprocess",
    "preprocess_volume": "preprocess",
    "CachedPatient": "cache",
    "preprocess_cohort": "cache",
    "load_entry": "cache",
    "to_original_grid": "cache",
    "SliceDataset": "dataset",
    "Split": "dataset",
    "slice_weights": "dataset",
    "split_patients": "dataset",
    "patient_stacks": "dataset",
    "SequenceDropout": "dropout",
    "apply_presence": "dropout",
    "censor": "dropout",
    "keep_vector": "dropout",
    "presence_weights": "dropout",
    "make_phantom_cohort": "phantom",
    "inspect_cohort": "inspection",
    "count_lesions": "inspection",
    "export_nnunet": "nnunet",
    "find_predictions": "predictions",
    "load_prediction": "predictions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"seqablate.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'seqablate.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
