"""The platform's one inference path: evaluation, validation, ``predict`` and the report's
overlays all predict through :class:`Predictor` (or, for raw tensors, :func:`predict_logits`).

It owns every decision that must not differ between those callers: the presence rule (absent
and censored sequences zeroed, the present ones scaled by S / S_present), which BatchNorm
statistics a patient gets (``stored``, or the statistics of the sequence subset the patient
actually has: :mod:`seqablate.models.norm_stats`), batching, and the autocast decision
(:func:`use_bf16`). Prepared models are eval copies with BatchNorm folded into the
convolutions, in inference mode, channels_last on CUDA.

bfloat16 autocast and channels_last are used on CUDA only unless forced: on a CPU without
native bf16 (AVX2-only) oneDNN emulates bf16 many times SLOWER than fp32, channels_last did not
help fp32 there (``benchmarks/RESULTS.md``), and where a CPU does compute bf16 natively a
study's numbers would still change with the machine that evaluates them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from tqdm.auto import tqdm


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (so autocast pays off).

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: oneDNN available and the CPU has
    AVX-512 BF16 or AMX tiles (checked through ``torch.cpu``'s capability probes).
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def use_bf16(device: torch.device | str, setting: str = "auto") -> bool:
    """The autocast decision, for training and inference alike (``train.amp``).

    ``auto``: bfloat16 autocast on CUDA GPUs that support it, never on a CPU: a study's numbers
    must not depend on which CPU evaluates them (bf16 shifts probabilities by ~1e-2, which
    moves lesions across the 0.1 threshold), even where the CPU has native bf16
    (:func:`native_bf16`). ``bf16``: always (slower and less exact where emulated); ``off``:
    never.
    """
    if setting == "off":
        return False
    if setting == "bf16":
        return True
    if setting != "auto":
        raise ValueError(f"train.amp: unknown value {setting!r}; valid choices: ['auto', 'bf16', 'off']")
    return torch.device(device).type == "cuda" and native_bf16(device)


def _fold_pairs(module: nn.Module, pairs: Iterator[tuple[str, str]]) -> None:
    for conv_name, bn_name in pairs:
        conv, bn = module._modules.get(conv_name), module._modules.get(bn_name)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
            module._modules[bn_name] = nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d that feeds it, in place; returns ``model``.

    Only pairs whose execution order is known are folded: consecutive children of ordered
    containers (``nn.Sequential``, torchvision's ``IntermediateLayerGetter``) and the
    ``conv{i}``/``bn{i}`` pairs of torchvision ResNet blocks. ``model`` must be in eval mode.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (BatchNorm uses running stats)")
    for m in list(model.modules()):
        if isinstance(m, nn.Sequential | IntermediateLayerGetter):
            names = list(m._modules)
            _fold_pairs(m, zip(names, names[1:], strict=False))
        elif isinstance(m, Bottleneck | BasicBlock | ResNet):
            _fold_pairs(m, ((f"conv{i}", f"bn{i}") for i in (1, 2, 3)))
    return model


def inference_model(
    model: nn.Module,
    *,
    device: torch.device | str | None = None,
    channels_last: bool | None = None,
    fold_bn: bool = True,
    in_place: bool = False,
) -> nn.Module:
    """An eval-mode COPY of ``model`` prepared for fast inference (the original is untouched).

    ``device``: where to put it (default: where ``model`` is). ``channels_last``: None = on
    CUDA. ``fold_bn``: fold BatchNorm into convolutions (same function, fewer memory passes).
    ``in_place``: prepare ``model`` itself instead of a copy (for a copy the caller already
    made). The result keeps the ``forward(image, present)`` contract; do not train it.
    """
    fast = (model if in_place else copy.deepcopy(model)).eval()
    if device is not None:
        fast = fast.to(device)
    dev = next(fast.parameters()).device
    if fold_bn:
        fold_batchnorm(fast)
    if channels_last is None:
        channels_last = dev.type == "cuda"
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


def predict_logits(
    model: nn.Module,
    image: Tensor | np.ndarray,
    present: Tensor | np.ndarray,
    *,
    batch_size: int = 32,
    amp: bool | None = None,
    progress: bool = False,
) -> Tensor:
    """Logits of ``model`` for ``image[N, S, K, H, W]`` / ``present[N, S]`` in batches.

    Runs under ``torch.inference_mode`` (and bfloat16 autocast when ``amp`` is True; None =
    :func:`use_bf16` of the model's device). Inputs may live anywhere (moved batch by
    batch). Returns float32 ``logits[N, 1, H, W]`` on the CPU. The model's train/eval mode is
    restored afterwards. For repeated calls, prepare the model once with
    :func:`inference_model`. ``N == 0`` gives an empty ``[0, 1, H, W]`` tensor.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image = torch.as_tensor(image)
    present = torch.as_tensor(present)
    dev = next(model.parameters()).device
    if amp is None:
        amp = use_bf16(dev)
    n = image.shape[0]
    if n == 0:
        return torch.zeros((0, 1, *image.shape[-2:]), dtype=torch.float32)
    was_training = model.training
    model.eval()
    outs: list[Tensor] = []
    try:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            for start in tqdm(range(0, n, batch_size), desc="predict", disable=not progress, leave=False):
                x = image[start : start + batch_size].to(dev, dtype=torch.float32, non_blocking=True)
                p = present[start : start + batch_size].to(dev, non_blocking=True)
                outs.append(model(x, p).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs)


class Predictor:
    """Probability volumes of patients from one trained model: the one inference path.

    Args:
        model: a :class:`~seqablate.models.deployed.DeployedModel` (its statistics policy is
            used), or a bare ``SeqSegModel`` (stored statistics). Not modified, not moved:
            each statistics key gets its own prepared copy on ``device``.
        device, batch_size: where and how many 2.5D stacks per forward pass.
        amp: ``train.amp`` setting for :func:`use_bf16` (``auto``, ``bf16``, ``off``).
        fold_bn: fold BatchNorm into the convolutions of the prepared copies (same function).

    Each patient has one sequence subset (what it has on disk, minus what is censored), so
    all its stacks go through the network prepared with that subset's statistics
    (:meth:`net`). :attr:`used` records ``(patient id, statistics key)`` of
    every prediction ("stored" for the training statistics).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        amp: str = "auto",
        fold_bn: bool = True,
    ) -> None:
        from seqablate.models.deployed import DeployedModel

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.deployed = model if isinstance(model, DeployedModel) else DeployedModel(model)
        self.sequences = self.deployed.sequences
        self.slices = self.deployed.slices
        self.batch_size = int(batch_size)
        self.amp = use_bf16(self.device, amp)
        self.fold_bn = fold_bn
        self.used: list[tuple[str, str]] = []
        self._nets: dict[str, nn.Module] = {}

    def net(self, key: str) -> nn.Module:
        """The network with statistics ``key`` ("stored" or a subset key), prepared for
        inference on this predictor's device, made once per key."""
        if key not in self._nets:
            self._nets[key] = inference_model(self.deployed.network(key), device=self.device,
                                              fold_bn=self.fold_bn, in_place=True)
        return self._nets[key]

    def predict_cached(self, patient: Any, censor: Iterable[str] = ()) -> np.ndarray:
        """Probability volume float32[Z, H, W] of a cached patient on the *cache* grid.

        Every axial 2.5D stack goes through the model in batches. Sequences in ``censor`` and
        sequences the patient lacks are zeroed and the present ones rescaled by S_total /
        S_present (``apply_presence``, the same rule as in training). Raises ValueError naming
        the patient when no sequence is left, or a censored name the model does not know.
        """
        from seqablate.data.dataset import patient_stacks
        from seqablate.data.dropout import apply_presence, keep_vector
        from seqablate.data.geometry import anchored_pad

        seqs = self.sequences
        if tuple(patient.sequences) != seqs:
            raise ValueError(
                f"patient {patient.patient_id} was preprocessed for sequences {list(patient.sequences)}, "
                f"the model takes {list(seqs)}"
            )
        keep = torch.from_numpy(keep_vector(censor, seqs))  # canonical names or aliases
        present = torch.as_tensor(np.asarray(patient.present, dtype=bool))
        actual = present & keep
        if not bool(actual.any()):
            raise ValueError(
                f"patient {patient.patient_id}: no sequence left to predict from "
                f"(present: {[s for s, p in zip(seqs, present.tolist(), strict=True) if p]}, "
                f"censored: {[s for s, k in zip(seqs, keep.tolist(), strict=True) if not k]})"
            )
        key = self.deployed.stats_key(actual)
        self.used.append((str(patient.patient_id), key))
        net = self.net(key)
        stacks = patient_stacks(patient, self.slices)  # float32[Z, S, K, H, W]
        z, h, w = stacks.shape[0], stacks.shape[-2], stacks.shape[-1]
        # Resampled slices (physical-space geometry) have any size: padded with zeros (the
        # background, and the absent value) to the networks' output stride, from the world
        # lattice (anchored_pad), so the same head meets the strided layers alike in any field of
        # view; resized slices are used as they are.
        grid = getattr(patient, "grid", None)
        if grid is not None:
            ah, aw = grid.anchor(patient.affine)
            (top, bottom), (left, right) = anchored_pad(h, ah), anchored_pad(w, aw)
        else:
            (top, bottom), (left, right) = (0, 0), (0, 0)
        out = np.empty((z, h, w), dtype=np.float32)
        dev = self.device
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
            for i in range(0, z, self.batch_size):
                x = torch.as_tensor(np.ascontiguousarray(stacks[i : i + self.batch_size])).to(dev)
                b = x.shape[0]
                x, p = apply_presence(x, present.expand(b, -1).to(dev), keep.expand(b, -1).to(dev))
                if top or bottom or left or right:
                    x = torch.nn.functional.pad(x, (left, right, top, bottom))
                prob = torch.sigmoid(net(x, p).float())[:, 0]
                out[i : i + b] = prob[:, top : top + h, left : left + w].cpu().numpy()
        return out

    def predict_volume(self, patient: Any, censor: Iterable[str] = ()) -> np.ndarray:
        """Probability volume float32[X, Y, Z] on the patient's original (RAS) grid:
        :meth:`predict_cached`, then the preprocessing's resampling or resize undone (linear)."""
        from seqablate.data.cache import to_original_grid

        return to_original_grid(self.predict_cached(patient, censor), patient)
