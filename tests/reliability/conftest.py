"""Fixtures of the fault-injection suite: a tiny phantom cohort, tiny run configs, a study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-patient 'stanford' phantom at 32 x 32 x 12 (the mask drawn on t1_gre_post)."""
    from seqablate.data import make_phantom_cohort

    return make_phantom_cohort(tmp_path_factory.mktemp("rel") / "stanford", site="stanford", patients=6,
                               seed=0, shape=(32, 32, 12))


def trial_yaml(path: Path, cohort: Path, **train: Any) -> Path:
    """A TrialConfig YAML that trains the tiny backbone in a few seconds."""
    cfg = {
        "name": "rel",
        "data": {"cohort": str(cohort), "image_size": 32, "slices": 3, "val_patients": 1, "test_fraction": 0.34},
        "model": {"backbone": "tiny", "integration": "input"},
        "train": {"steps": 4, "batch_size": 2, "val_every": 2, "saliency_every": 0, "lr": 1e-3, **train},
        "eval": {"bootstrap": 10, "each_sequence": False, "norm_batches": 2, "norm_batch_size": 4},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove nothing was changed or deleted)."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, cohort: Path) -> Path:
    """A finished ``seqablate train`` folder (checkpoint, mlflow.db, artifacts)."""
    from seqablate.cli import main

    root = tmp_path_factory.mktemp("trained")
    cfg = trial_yaml(root / "a.yaml", cohort)
    assert main(["train", str(cfg), "--out", str(root / "run"), "--cpu"]) == 0
    return root / "run"
