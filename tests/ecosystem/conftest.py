"""Fixtures of the ecosystem tests: a phantom, a model trained on it, the phantom in each layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

SHAPE = (32, 32, 12)


@pytest.fixture(scope="session")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seqablate.data import make_phantom_cohort

    return make_phantom_cohort(tmp_path_factory.mktemp("eco") / "stanford", site="stanford", patients=6, seed=0,
                               shape=SHAPE)


def trial(cohort: Path, sequences: list[str] | None = None, **data: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "eco",
        "data": {"cohort": str(cohort), "image_size": 32, "slices": 3, "val_patients": 1, "test_fraction": 0.34, **data},
        "model": {"backbone": "tiny", "integration": "input"},
        "train": {"steps": 4, "batch_size": 2, "val_every": 2, "saliency_every": 0, "lr": 3e-3},
        "eval": {"bootstrap": 20, "each_sequence": True, "norm_batches": 2, "norm_batch_size": 4},
    }
    if sequences:
        cfg["data"]["sequences"] = sequences
    return cfg


def train(root: Path, cfg: dict[str, Any]) -> Path:
    """``seqablate train`` on ``cfg``; returns the run folder (its mlflow.db holds the run)."""
    from seqablate.cli import main

    root.mkdir(parents=True, exist_ok=True)
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        assert main(["train", str(root / "run.yaml"), "--out", str(root / "run"), "--cpu"]) == 0
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return root / "run"


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, phantom: Path) -> Path:
    return train(tmp_path_factory.mktemp("trained"), trial(phantom))
