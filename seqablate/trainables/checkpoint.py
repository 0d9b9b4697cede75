"""What a training checkpoint holds, and how it is written and read.

A checkpoint folder holds:

- ``model.pt``: the current weights (what training resumes from);
- ``best_model.pt``: the weights with the best validation mAP so far (what is evaluated);
- ``optimizer.pt``: optimiser + LR-scheduler state;
- ``state.json``: ``step`` (optimiser steps done), ``best_metric``, ``best_step``;
- ``saliency.pt``: the cumulative saliency accumulator (so traces continue on resume);
- ``config.yaml``: the resolved :class:`~seqablate.config.TrialConfig` (``predict`` needs it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from seqablate.config import TrialConfig, load_yaml, to_yaml


@dataclass
class TrainState:
    """Scalar bookkeeping saved with every checkpoint."""

    step: int = 0  # optimiser steps completed
    best_metric: float = float("-inf")  # best validation mAP so far
    best_step: int = -1  # step at which best_metric was reached (-1: none yet)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP (``module``), so state dicts load anywhere."""
    return getattr(model, "module", model)


def save_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    cfg: TrialConfig,
    saliency: Any = None,
) -> Path:
    """Write a checkpoint into ``folder`` (created); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model_state = _unwrap(model).state_dict()
    torch.save(model_state, folder / "model.pt")
    torch.save(best_state if best_state is not None else model_state, folder / "best_model.pt")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, folder / "optimizer.pt")
    if saliency is not None:
        torch.save(saliency, folder / "saliency.pt")
    (folder / "state.json").write_text(json.dumps(asdict(state)))
    (folder / "config.yaml").write_text(to_yaml(cfg))
    return folder


def read_state(folder: Path) -> TrainState:
    """The :class:`TrainState` of a checkpoint folder."""
    return TrainState(**json.loads((folder / "state.json").read_text()))


def load_best_model(folder: str | Path, *, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrialConfig]:
    """Build the model of a checkpoint (or exported model) folder and load its best weights.

    ``folder`` must hold ``config.yaml`` and ``best_model.pt`` (a checkpoint folder or the
    ``model`` artifact of an MLflow run). Returns the model in eval mode and its config.
    """
    from seqablate.models import build_model

    folder = Path(folder)
    for name in ("config.yaml", "best_model.pt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: not a seqablate model folder (missing {name})")
    cfg = load_yaml(folder / "config.yaml", TrialConfig)
    model = build_model(cfg.model)
    model.load_state_dict(torch.load(folder / "best_model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval(), cfg
