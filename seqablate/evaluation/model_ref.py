"""A trained model from any reference a user may give: run id, URI, registered model, folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from seqablate.config import TrialConfig, stored_trial


def load_model(ref: str | Path, *, tracking_uri: str | None = None, device: Any = "cpu") -> tuple[Any, TrialConfig]:
    """``(DeployedModel, TrialConfig)`` of ``ref``.

    ``ref``: an MLflow run id, ``runs:/<id>/model``, ``models:/<name>/<version>``, an MLflow
    model folder (holding ``MLmodel``), or a training checkpoint folder (``config.yaml`` +
    ``model.pt``, with its per-subset statistics when it has them). Raises ValueError naming
    the reference when it cannot be resolved or is not a seqablate model.
    """
    from seqablate import tracking
    from seqablate.evaluation.checkpoint import load_best_model, read_norm_stats
    from seqablate.models.deployed import DeployedModel

    folder = tracking.download_model(ref, tracking_uri=tracking_uri)
    if (folder / "MLmodel").is_file():
        deployed = tracking.load_deployed(folder)
        cfg = stored_trial(deployed.config, source=f"{folder} (model config)")
        deployed.config = cfg.model_dump(mode="json")  # a pre-geometry config says so from now on
    elif (folder / "model.pt").is_file() and (folder / "config.yaml").is_file():
        model, cfg = load_best_model(folder)
        deployed = DeployedModel(model, norm_stats=read_norm_stats(folder), policy=cfg.eval.norm_stats,
                                 config=cfg.model_dump(mode="json"))
    else:
        raise ValueError(
            f"--model {ref}: {folder} is neither an MLflow model folder (MLmodel) nor a seqablate "
            "checkpoint folder (config.yaml + model.pt)"
        )
    # Whatever the cohort's voxel size or field of view, inputs are brought to the model's own
    # geometry: say which, so a user handing it another hospital's scans sees it.
    print(f"model geometry: {deployed.describe_geometry()}", file=sys.stderr)
    return deployed.to(device), cfg
