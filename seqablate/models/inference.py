"""The platform's one inference path: evaluation, validation, ``predict`` and the report's
overlays all predict through :class:`Predictor` and :func:`predict_conditions` (or, for raw
tensors, :func:`predict_logits`).

It owns every decision that must not differ between those callers: the presence rule (absent
and censored sequences zeroed, the present ones scaled by S / S_present), which BatchNorm
statistics a patient gets (``stored``, or the statistics of the sequence subset the patient
actually has: :mod:`seqablate.models.norm_stats`), batching, and the autocast decision
(:func:`use_bf16`). Prepared models are eval copies with BatchNorm folded into the
convolutions, in inference mode. A patient asked for under several conditions at once is
read once per batch of slices, and an input-level network convolves its stem once for all
of them (:mod:`seqablate.models.stem`).

Memory layout: channels_last, on CUDA and on the CPU (oneDNN: the demo's tiny networks run
1.35-1.4x faster channels-last at every integration depth, the input-level 7 x 7 stem over
S*K channels 2.5x and the max-pool after it 8x; ``benchmarks/RESULTS.md``, "Trial time").
bfloat16 autocast is used on CUDA only unless forced: on a CPU without native bf16 (AVX2-only) oneDNN emulates bf16
many times SLOWER than fp32, and where a CPU does compute bf16 natively a study's numbers would
still change with the machine that evaluates them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
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

    ``device``: where to put it (default: where ``model`` is). ``channels_last``: None = yes
    (faster on CUDA and the CPU alike). ``fold_bn``: fold BatchNorm into convolutions (same
    function, fewer memory passes).
    ``in_place``: prepare ``model`` itself instead of a copy (for a copy the caller already
    made). The result keeps the ``forward(image, present)`` contract; do not train it.
    """
    fast = (model if in_place else copy.deepcopy(model)).eval()
    if device is not None:
        fast = fast.to(device)
    if fold_bn:
        fold_batchnorm(fast)
    if channels_last is None:
        channels_last = True
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
        share_stem: for a model with one stem convolution over all sequences
            (``SeqSegModel.stem``), convolve each sequence once per batch of slices and
            combine it for every condition asked for together (:mod:`seqablate.models.stem`);
            False runs the whole network per condition (same numbers up to float32 summation
            order).

    Each patient has one sequence subset per condition (what it has on disk, minus what is
    censored), so its stacks go through the network prepared with that subset's statistics
    (:meth:`net`). :attr:`used` records ``(patient id, statistics key)`` of every prediction
    ("stored" for the training statistics). :func:`predict_conditions` predicts one patient
    under many conditions (and several predictors of the same network) in one pass.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        amp: str = "auto",
        fold_bn: bool = True,
        share_stem: bool = True,
        channels_last: bool | None = None,
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
        self.channels_last = channels_last
        self.used: list[tuple[str, str]] = []
        self._nets: dict[str, nn.Module] = {}
        self._stem_norms: dict[str, nn.Module] = {}
        self._stem: Any = None
        self.share_stem = bool(share_stem) and getattr(self.deployed.net, "stem", lambda: None)() is not None

    def net(self, key: str) -> nn.Module:
        """The network with statistics ``key`` ("stored" or a subset key), prepared for
        inference on this predictor's device, made once per key."""
        if key not in self._nets:
            net = self.deployed.network(key)
            if self.share_stem:
                # The stem's own normalisation, kept before folding removes it (stem.combine).
                self._stem_norms[key] = copy.deepcopy(net.stem()[1]).eval().to(self.device)  # type: ignore[operator]
            self._nets[key] = inference_model(net, device=self.device, fold_bn=self.fold_bn, in_place=True,
                                              channels_last=self.channels_last)
        return self._nets[key]

    def stem(self) -> Any:
        """The model's :class:`~seqablate.models.stem.SharedStem` (unfolded stem weights), made once."""
        from seqablate.models.stem import SharedStem

        if self._stem is None:
            conv, _ = self.deployed.net.stem()  # type: ignore[operator]
            self._stem = SharedStem(conv, len(self.sequences), self.slices).to(self.device)
        return self._stem

    def predict_cached(self, patient: Any, censor: Iterable[str] = ()) -> np.ndarray:
        """Probability volume float32[Z, H, W] of a cached patient on the *cache* grid.

        Every axial 2.5D stack goes through the model in batches. Sequences in ``censor`` and
        sequences the patient lacks are zeroed and the present ones rescaled by S_total /
        S_present (``apply_presence``, the same rule as in training). Raises ValueError naming
        the patient when no sequence is left, or a censored name the model does not know.
        """
        return predict_conditions(patient, [(self, censor)])[0]

    def predict_many(self, patient: Any, censors: Sequence[Iterable[str]]) -> list[np.ndarray]:
        """:meth:`predict_cached` of one patient under each of ``censors``, in one pass."""
        return predict_conditions(patient, [(self, c) for c in censors])

    def predict_volume(self, patient: Any, censor: Iterable[str] = ()) -> np.ndarray:
        """Probability volume float32[X, Y, Z] on the patient's original (RAS) grid:
        :meth:`predict_cached`, then the preprocessing's resampling or resize undone (linear)."""
        from seqablate.data.cache import to_original_grid

        return to_original_grid(self.predict_cached(patient, censor), patient)


def predict_conditions(patient: Any, jobs: Sequence[tuple[Predictor, Iterable[str]]]) -> list[np.ndarray]:
    """Probability volumes float32[Z, H, W] (cache grid) of one cached patient, one per job.

    ``jobs``: ``(predictor, censored sequences)`` pairs; the predictors must take the same
    sequences and slices (e.g. one network under two statistics policies). Each job is
    predicted exactly as :meth:`Predictor.predict_cached` would; the patient's slices are read
    and padded once per batch, a job repeated by the same predictor is computed once, and
    where every predictor shares one stem convolution (:class:`~seqablate.models.stem.SharedStem`
    with equal weights) and two or more distinct jobs remain, the stem is convolved once per
    batch for all of them. Raises ValueError naming the patient when a job leaves no sequence,
    or the predictors disagree.
    """
    from seqablate.data.dataset import patient_stacks
    from seqablate.data.geometry import anchored_pad

    if not jobs:
        return []
    first = jobs[0][0]
    seqs, k = first.sequences, first.slices
    pid = str(patient.patient_id)
    if tuple(patient.sequences) != seqs:
        raise ValueError(
            f"patient {pid} was preprocessed for sequences {list(patient.sequences)}, the model takes {list(seqs)}"
        )
    present = torch.as_tensor(np.asarray(patient.present, dtype=bool))
    # One group per distinct (predictor, statistics key, sequences actually used).
    groups: dict[tuple[int, str, tuple[bool, ...]], list[int]] = {}
    plan: list[tuple[Predictor, str, Tensor, Tensor]] = []  # per group: predictor, key, keep, actual
    for j, (pred, censor) in enumerate(jobs):
        if pred.sequences != seqs or pred.slices != k or pred.device != first.device:
            raise ValueError("predict_conditions: all predictors must take the same sequences, slices and device")
        # The model decides what a condition means: the presence rule and the statistics.
        keep, actual, key = pred.deployed.condition(present, censor)
        if not bool(actual.any()):
            raise ValueError(
                f"patient {pid}: no sequence left to predict from "
                f"(present: {[s for s, p in zip(seqs, present.tolist(), strict=True) if p]}, "
                f"censored: {[s for s, kk in zip(seqs, keep.tolist(), strict=True) if not kk]})"
            )
        pred.used.append((pid, key))
        gk = (id(pred), key, tuple(actual.tolist()))
        if gk not in groups:
            groups[gk] = []
            plan.append((pred, key, keep, actual))
        groups[gk].append(j)
    preds = list(dict.fromkeys(p for p, _, _, _ in plan))
    # One condition gains nothing from sharing: its own (folded) stem is one convolution.
    shared = (len(plan) > 1 and all(p.share_stem for p in preds)
              and all(p.stem().same_weights(preds[0].stem()) for p in preds[1:]))
    nets = [pred.net(key) for pred, key, _, _ in plan]
    stacks = patient_stacks(patient, k)  # float32[Z, S, K, H, W]
    z, h, w = stacks.shape[0], stacks.shape[-2], stacks.shape[-1]
    # Resampled slices (physical-space geometry) have any size: padded with zeros (the
    # background, and the absent value) to the networks' output stride, from the world
    # lattice (anchored_pad), so the same head meets the strided layers alike in any field of
    # view; resized slices are used as they are. Zero padding commutes with the presence
    # weights, so the slices are padded once for every job.
    grid = getattr(patient, "grid", None)
    if grid is not None:
        ah, aw = grid.anchor(patient.affine)
        (top, bottom), (left, right) = anchored_pad(h, ah), anchored_pad(w, aw)
    else:
        (top, bottom), (left, right) = (0, 0), (0, 0)
    outs = [np.empty((z, h, w), dtype=np.float32) for _ in plan]
    dev, amp, step = first.device, any(p.amp for p in preds), first.batch_size
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(0, z, step):
            x = torch.as_tensor(np.ascontiguousarray(stacks[i : i + step])).to(dev)
            b = x.shape[0]
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
            size = (x.shape[-2], x.shape[-1])
            parts = preds[0].stem().partials(x) if shared else None
            for g, (pred, key, keep, actual) in enumerate(plan):
                if parts is not None:
                    y = pred.stem().combine(parts, pred.deployed.sequence_weights(actual), pred._stem_norms[key])
                    logits = nets[g].forward_from_stem(y, size)  # type: ignore[operator]
                else:
                    xg, pg = pred.deployed.presence(x, present.expand(b, -1).to(dev), keep.expand(b, -1).to(dev))
                    logits = nets[g](xg, pg)
                prob = torch.sigmoid(logits.float())[:, 0]
                outs[g][i : i + b] = prob[:, top : top + h, left : left + w].cpu().numpy()
    result: list[np.ndarray] = [np.empty(0)] * len(jobs)
    for g, members in enumerate(groups.values()):
        for n, j in enumerate(members):
            result[j] = outs[g] if n == 0 else outs[g].copy()
    return result
