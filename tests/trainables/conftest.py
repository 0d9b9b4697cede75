"""Shared tiny inputs for the trainables tests: 32 x 32 x 12 phantom cohorts, tiny configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 6-patient 'stanford' and a 3-patient 'oslo' phantom (no t1_gre_post), 32x32x12."""
    from seqablate.data import make_phantom_cohort

    root = tmp_path_factory.mktemp("cohorts")
    return {
        "stanford": make_phantom_cohort(root / "stanford", site="stanford", patients=6, seed=0, shape=(32, 32, 12)),
        "oslo": make_phantom_cohort(root / "oslo", site="oslo", patients=3, seed=1, shape=(32, 32, 12)),
    }


def tiny_trial(cohort: Path, **train: Any) -> dict[str, Any]:
    """A TrialConfig mapping that trains in seconds on 2 CPU cores."""
    return {
        "name": "tiny",
        "data": {"cohort": str(cohort), "image_size": 32, "slices": 3, "val_patients": 1, "test_fraction": 0.34},
        "model": {"backbone": "compact", "integration": "input"},
        "train": {"steps": 6, "batch_size": 2, "val_every": 2, "saliency_every": 2, "lr": 1e-3, **train},
        "eval": {"bootstrap": 20, "each_sequence": False},
    }
