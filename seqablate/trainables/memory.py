"""A lower bound of one training step's memory, checked before any preprocessing.

A config such as ``data.image_size: 1024`` with ``train.batch_size: 64`` used to preprocess
the whole cohort for minutes and then die of memory at its first step. The step's memory is
dominated by what autograd keeps for the backward pass, which grows linearly with the pixels
of the batch; :func:`training_step_bytes` multiplies measured per-pixel constants by the
batch's pixels and adds the input batch and the weights with their gradients and optimiser
state. Every term is rounded down, so the figure is a lower bound: a config refused by
:func:`check_training_memory` cannot run, and one accepted may still be tight.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from seqablate.config import TrialConfig

#: Bytes autograd keeps per input pixel and sample for one pass through each backbone
#: (float32, ``model.norm: batch``, parameters excluded), measured with
#: ``torch.autograd.graph.saved_tensors_hooks`` at 32-128 px with S = 4, K = 5 (linear in the
#: pixels to 5 %) and rounded down. Mid- and end-level integration run up to one branch per
#: present sequence; the bound counts one.
SAVED_BYTES_PER_PIXEL: dict[str, int] = {"tiny": 380, "compact": 1800, "resnet50": 4100, "resnet101": 7700}

#: Parameters (millions, rounded down) of each backbone's input-level network.
PARAMETERS_M: dict[str, float] = {"tiny": 0.7, "compact": 24.0, "resnet50": 39.0, "resnet101": 58.0}

GIB = 1024**3


def training_step_bytes(cfg: TrialConfig, *, gpu: bool) -> dict[str, int]:
    """Lower bounds (bytes) of one training step of ``cfg`` on one worker: ``activations``,
    ``input`` (the float32 batch ``[B, S, K, H, W]``), ``weights`` (parameters, gradients and
    the optimiser's state) and their ``total``. bfloat16 autocast (``train.amp`` not ``off``,
    on a GPU) halves the activations. An unknown backbone gives zeros (nothing is refused)."""
    backbone = cfg.model.backbone
    if backbone not in SAVED_BYTES_PER_PIXEL:
        return {"activations": 0, "input": 0, "weights": 0, "total": 0}
    b, hw = cfg.train.batch_size, cfg.data.image_size**2
    s, k = len(cfg.data.sequences), cfg.data.slices
    activations = b * hw * SAVED_BYTES_PER_PIXEL[backbone]
    if gpu and cfg.train.amp != "off":
        activations //= 2
    batch = b * s * k * hw * 4
    copies = 4 if cfg.train.optimizer == "adamw" else 3  # weights, gradients, Adam's two moments / momentum
    weights = int(PARAMETERS_M[backbone] * 1e6) * 4 * copies
    return {"activations": activations, "input": batch, "weights": weights,
            "total": activations + batch + weights}


def _cgroup_room() -> int | None:
    """What the cgroup (v2) still allows this process, or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def _gpu_free() -> tuple[int, str] | None:
    """The most free memory of any GPU, from ``nvidia-smi`` (asking CUDA itself would make
    this process hold a CUDA context, and its memory, for the rest of a study)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free,name", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        rows = [(int(float(free)) * 1024**2, name.strip()) for free, name in
                (line.split(",", 1) for line in out.strip().splitlines() if "," in line)]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not rows:
        return None
    free, name = max(rows)
    return free, f"free on the emptiest GPU ({name})"


def available_bytes(*, gpu: bool) -> tuple[int, str] | None:
    """``(bytes, what)``: the free memory of the emptiest GPU (``gpu``), or the RAM available
    to this process (``MemAvailable``, within a container's cgroup limit); None when unknown."""
    if gpu:
        return _gpu_free()
    room: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            room = None
    cg = _cgroup_room()
    if room is None and cg is None:
        return None
    room = min(x for x in (room, cg) if x is not None)
    return room, "of RAM available (training on the CPU)"


def check_training_memory(cfg: TrialConfig, *, gpu: bool, where: str = "",
                          available: tuple[int, str] | None = None) -> None:
    """Refuse (ValueError naming the fields) a config whose training step needs more memory
    than there is, before any preprocessing.

    ``gpu``: whether the step runs on this machine's GPU (else its RAM). ``where``: a prefix
    for the message (a space point). ``available``: ``(bytes, what)`` instead of measuring
    (:func:`available_bytes`); nothing is refused when it is unknown.
    """
    need = training_step_bytes(cfg, gpu=gpu)
    if need["total"] == 0:
        return
    have = available if available is not None else available_bytes(gpu=gpu)
    if have is None or need["total"] <= have[0]:
        return
    d = cfg.data
    raise ValueError(
        f"{where}train.batch_size {cfg.train.batch_size} x data.image_size {d.image_size} x {d.image_size} "
        f"({len(d.sequences)} sequences x data.slices {d.slices}) with model.backbone {cfg.model.backbone!r} needs "
        f"at least {need['total'] / GIB:.1f} GiB for one training step (activations kept for the backward "
        f"pass {need['activations'] / GIB:.1f} GiB, input batch {need['input'] / GIB:.1f} GiB, weights and "
        f"optimiser state {need['weights'] / GIB:.1f} GiB), but there are {have[0] / GIB:.1f} GiB {have[1]}; "
        "lower train.batch_size or data.image_size (or use a smaller model.backbone)"
    )


def check_study_memory(base: TrialConfig, points: list[dict[str, Any]], *, gpu: bool) -> None:
    """:func:`check_training_memory` for the base config and every grid point over it (points
    that do not parse are left to the space's own validation)."""
    from seqablate.config import ConfigError, with_overrides
    from seqablate.naming import run_name

    have = available_bytes(gpu=gpu)
    if have is None:
        return
    check_training_memory(base, gpu=gpu, available=have)
    for point in points:
        try:
            cfg = with_overrides(base, point)
        except ConfigError:
            continue
        check_training_memory(cfg, gpu=gpu, available=have, where=f"space point {run_name(point)}: ")
