"""A trained model from any reference a user may give: run id, URI, registered model, folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqablate.config import TrialConfig, parse


def load_model(ref: str | Path, *, tracking_uri: str | None = None, device: Any = "cpu") -> tuple[Any, TrialConfig]:
    """``(DeployedModel, TrialConfig)`` of ``ref``.

    ``ref``: an MLflow run id, ``runs:/<id>/model``, ``models:/<name>/<version>``, an MLflow
    model folder (holding ``MLmodel``), or a training checkpoint folder (``config.yaml`` +
    ``model.pt``, with its per-subset statistics when it has them). Raises ValueError naming
    the reference when it cannot be resolved or is not a seqablate model.
    """
    from seqablate import tracking
    from seqablate.models.deployed import DeployedModel
    from seqablate.trainables.checkpoint import load_best_model, read_norm_stats

    folder = tracking.download_model(ref, tracking_uri=tracking_uri)
    if (folder / "MLmodel").is_file():
        deployed = tracking.load_deployed(folder)
        cfg = parse(TrialConfig, deployed.config, source=f"{folder} (model config)")
    elif (folder / "model.pt").is_file() and (folder / "config.yaml").is_file():
        model, cfg = load_best_model(folder)
        deployed = DeployedModel(model, norm_stats=read_norm_stats(folder), policy=cfg.eval.norm_stats,
                                 config=cfg.model_dump(mode="json"))
    else:
        raise ValueError(
            f"--model {ref}: {folder} is neither an MLflow model folder (MLmodel) nor a seqablate "
            "checkpoint folder (config.yaml + model.pt)"
        )
    return deployed.to(device), cfg
