"""The few points where Ray touches the training loop, behind one small interface.

The training loop (:mod:`seqablate.trainables.loop`) is one plain function. It talks to its
runtime only through a :class:`Session`: who am I (rank, world size, device), wrap the model
and loader for DDP, report metrics with an optional checkpoint, and give me the checkpoint to
resume from. :class:`RaySession` maps these onto Ray Train V2 (``ray.train.report``,
``ray.train.get_checkpoint``, ``ray.train.torch.prepare_model``/``prepare_data_loader``);
:class:`LocalSession` implements them with plain files so ``seqablate train`` runs the very
same loop without Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from seqablate.folders import sweep_temp, temp_name


class Session(Protocol):
    """What the loop needs from its runtime (Ray Train worker or a plain process)."""

    world_rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def prepare_data_loader(self, loader: Any) -> Any: ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None: ...

    def resume_checkpoint(self) -> contextlib.AbstractContextManager[Path | None]: ...


def _device(use_gpu: bool) -> torch.device:
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


class LocalSession:
    """A single-process session: checkpoints are folders under ``storage``.

    ``report`` copies the checkpoint folder to ``storage/checkpoint_<n>`` (via a temporary
    folder and ``os.replace``, so a crash never leaves half a checkpoint) and keeps only the
    ``keep`` newest. ``resume_checkpoint`` yields the newest complete one, so re-running a
    killed ``fit_trial`` on the same storage continues where it stopped.
    """

    def __init__(self, storage: str | Path, *, use_gpu: bool = True, keep: int = 1) -> None:
        self.storage = Path(storage)
        self.storage.mkdir(parents=True, exist_ok=True)
        self.world_rank = 0
        self.world_size = 1
        self.device = _device(use_gpu)
        self.keep = keep
        self.reported: list[dict[str, Any]] = []  # every metrics dict, in order
        sweep_temp(self.storage)  # half-copied checkpoints of a killed run

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def prepare_data_loader(self, loader: Any) -> Any:
        return loader

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return sorted(p for p in self.storage.glob("checkpoint_*") if p.is_dir())

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        self.reported.append(dict(metrics))
        if checkpoint_dir is None:
            return
        n = len(self.checkpoints())
        last = self.checkpoints()[-1].name if n else "checkpoint_-1"
        index = int(last.rsplit("_", 1)[1]) + 1
        tmp = self.storage / temp_name("ckpt")
        try:
            shutil.copytree(checkpoint_dir, tmp)
            (tmp / "metrics.json").write_text(json.dumps(metrics, default=float))
            os.replace(tmp, self.storage / f"checkpoint_{index:06d}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half checkpoint behind
            raise
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def resume_checkpoint(self) -> Iterator[Path | None]:
        ckpts = self.checkpoints()
        yield ckpts[-1] if ckpts else None


class RaySession:
    """A Ray Train V2 worker: the only place the loop's Ray calls live."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.world_rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        import ray.train.torch

        # Ray picks the worker's GPU (CUDA_VISIBLE_DEVICES); CPU when the trial has none.
        self.device = ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        # Moves to the worker's device and wraps in DDP when world_size > 1.
        return ray.train.torch.prepare_model(model)

    def prepare_data_loader(self, loader: Any) -> Any:
        import ray.train.torch

        # Our sampler is already distributed-aware (each rank draws its own shard with its own
        # seeded generator), so Ray must not swap in a DistributedSampler; the loop moves each
        # batch to its device itself (with non_blocking copies of what it uses).
        return ray.train.torch.prepare_data_loader(
            loader, add_dist_sampler=False, move_to_device=False
        )

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    @contextlib.contextmanager
    def resume_checkpoint(self) -> Iterator[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as d:
            yield Path(d)
