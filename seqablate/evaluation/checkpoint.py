"""What a training checkpoint holds, and how it is written and read.

A checkpoint folder holds:

- ``model.pt``: the current weights (what training resumes from);
- ``best_model.pt``: the weights with the best validation objective so far, only when they differ
  from the current ones (``state.best_step != state.step``): best weights are stored once;
- ``optimizer.pt``: optimiser + LR-scheduler state (only the latest checkpoint is kept, so
  there is one copy of it per trial);
- ``state.json``: ``step`` (optimiser steps done), ``best_metric``, ``best_step``, and for a
  multi-objective trial ``selected`` / ``bests`` (each objective at the best step / its own best),
  and ``timing`` (the trial driver's start and the seconds per phase up to the checkpoint, so a
  worker Ray Train restarts keeps them: :meth:`~seqablate.timing.PhaseTimer.resume`);
- ``saliency.pt``: the cumulative saliency accumulator (so traces continue on resume);
- ``norm_stats.pt``: per-subset BatchNorm statistics of the selected weights (written with
  the final checkpoint of a BatchNorm model, see :mod:`seqablate.models.norm_stats`);
- ``config.yaml``: the resolved :class:`~seqablate.config.TrialConfig` (``predict`` needs it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqablate.config import TrialConfig, load_yaml, to_yaml


@dataclass
class TrainState:
    """Scalar bookkeeping saved with every checkpoint."""

    step: int = 0  # optimiser steps completed
    best_metric: float = float("-inf")  # best validation objective (train.objective) so far
    best_step: int = -1  # step at which best_metric was reached (-1: none yet)
    # multi-objective trials (train.objectives), one entry per objective, empty before a validation:
    # each objective's value at best_step (what the selected model does) ...
    selected: list[float] = field(default_factory=list)
    # ... and each objective's own best so far (NaN while it was never defined)
    bests: list[float] = field(default_factory=list)
    # where the trial's time went up to this checkpoint (timing.PhaseTimer.snapshot; {} in older ones)
    timing: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A checkpoint read back (tensors on the requested device, ``best`` on the CPU)."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best: dict[str, torch.Tensor] | None
    state: TrainState
    saliency: Any
    norm_stats: dict[str, dict[str, torch.Tensor]] | None


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
    norm_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a checkpoint into ``folder`` (created); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(_unwrap(model).state_dict(), folder / "model.pt")
    if best_state is not None and state.best_step != state.step:
        torch.save(best_state, folder / "best_model.pt")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, folder / "optimizer.pt")
    if saliency is not None:
        torch.save(saliency, folder / "saliency.pt")
    if norm_stats is not None:
        torch.save(norm_stats, folder / "norm_stats.pt")
    (folder / "state.json").write_text(json.dumps(asdict(state)))
    (folder / "config.yaml").write_text(to_yaml(cfg))
    return folder


def read_state(folder: Path) -> TrainState:
    """The :class:`TrainState` of a checkpoint folder."""
    return TrainState(**json.loads((folder / "state.json").read_text()))


def read_checkpoint(folder: Path, *, device: torch.device | str = "cpu") -> Checkpoint:
    """Everything :func:`save_checkpoint` wrote; ``best`` is the current weights when the best
    step is the current one, None before any validation."""
    state = read_state(folder)
    model = torch.load(folder / "model.pt", map_location=device, weights_only=True)
    optimizer = torch.load(folder / "optimizer.pt", map_location=device, weights_only=False)
    if (folder / "best_model.pt").is_file():
        best = torch.load(folder / "best_model.pt", map_location="cpu", weights_only=True)
    elif state.best_step >= 0 and state.best_step == state.step:
        best = {k: v.detach().cpu().clone() for k, v in model.items()}
    else:
        best = None
    saliency = torch.load(folder / "saliency.pt", weights_only=False) if (folder / "saliency.pt").is_file() else None
    norm = (folder / "norm_stats.pt")
    norm_stats = torch.load(norm, map_location="cpu", weights_only=True) if norm.is_file() else None
    return Checkpoint(model, optimizer, best, state, saliency, norm_stats)


def selected_weights(folder: Path, cfg: TrialConfig) -> Path:
    """The weights file a checkpoint's model is evaluated with (``train.select``)."""
    if cfg.train.select == "best" and (folder / "best_model.pt").is_file():
        return folder / "best_model.pt"
    return folder / "model.pt"


def load_best_model(folder: str | Path, *, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrialConfig]:
    """Build the model of a checkpoint folder and load its selected weights (``train.select``).

    ``folder`` must hold ``config.yaml`` and ``model.pt``. Returns the model in eval mode and
    its config; per-subset norm statistics, when present, are read by
    :func:`read_norm_stats`.
    """
    from seqablate.models import build_model

    folder = Path(folder)
    for name in ("config.yaml", "model.pt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: not a seqablate checkpoint folder (missing {name})")
    cfg = load_yaml(folder / "config.yaml", TrialConfig, stored=True)
    model = build_model(cfg.model)
    model.load_state_dict(torch.load(selected_weights(folder, cfg), map_location="cpu", weights_only=True))
    return model.to(device).eval(), cfg


def read_norm_stats(folder: str | Path) -> dict[str, dict[str, torch.Tensor]] | None:
    """The per-subset BatchNorm statistics stored in a checkpoint folder, or None."""
    p = Path(folder) / "norm_stats.pt"
    return torch.load(p, map_location="cpu", weights_only=True) if p.is_file() else None
