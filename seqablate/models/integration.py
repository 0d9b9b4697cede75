"""Where pulse sequences meet: input, mid (at any backbone stage) or end (paper IV-A).

Every model implements one contract, whatever its integration point, so training, evaluation
and saliency never branch on it:

    forward(image: float[B, S, K, H, W], present: bool[B, S]) -> logits: float[B, 1, H, W]

``image`` follows the study's sequence order (``model.sequences``); an absent sequence is zeros
with ``present`` False, and every sample needs at least one present sequence. Strategies are
registered by name in :data:`INTEGRATIONS` (duplicates refused) and built from a
:class:`ModelSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from seqablate.models import backbones as bb
from seqablate.models.fusion import FUSIONS
from seqablate.models.registry import Registry
from seqablate.models.sharing import Branches


@dataclass(frozen=True)
class ModelSpec:
    """A fully resolved, validated model description (see ``build_model``)."""

    integration: str  # 'input' | 'mid' | 'end'
    integration_point: str  # last stage run per sequence (mid only)
    fusion: str  # mid only
    sharing: str  # mid/end only
    backbone: str  # 'resnet50' | 'resnet101' | 'compact' | 'tiny'
    sequences: tuple[str, ...]  # S names, study order
    slices: int  # K
    norm: str = "batch"  # 'batch' | 'group' | 'instance'


#: Integration name -> builder ``(spec) -> SeqSegModel``.
INTEGRATIONS: Registry[Callable[[ModelSpec], SeqSegModel]] = Registry("model.integration")


class SeqSegModel(nn.Module):
    """Base of every integration strategy: input checks, ``sequences``, ``tie_penalty``."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.sequences: tuple[str, ...] = spec.sequences
        self.slices: int = spec.slices

    def forward(self, image: Tensor, present: Tensor) -> Tensor:
        """``image[B, S, K, H, W]``, ``present[B, S]`` (bool, or 0/1) -> ``logits[B, 1, H, W]``.

        Raises ``ValueError`` on wrong shapes or a sample without any present sequence.
        """
        present = self._check(image, present)
        return self._forward(image, present)

    def _forward(self, image: Tensor, present: Tensor) -> Tensor:
        raise NotImplementedError

    def stem(self) -> tuple[nn.Conv2d, nn.Module] | None:
        """``(conv, norm)`` when this model's first layer is ONE convolution of the whole
        presence-weighted input (all S*K channels, sequence-major ``s*K + k``) followed by a
        normalisation layer, else None.

        Such a stem is linear in each sequence's slices, so inference under many presence
        conditions can convolve each sequence once and combine (``seqablate.models.stem``);
        :meth:`forward_from_stem` runs the rest. Models with per-sequence branches return None.
        """
        return None

    def forward_from_stem(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        """The network after its stem's normalisation: ``y[B, C, H/2, W/2]`` (the normalised
        stem output) -> ``logits[B, 1, *size]``. Only for models whose :meth:`stem` is not None."""
        raise NotImplementedError(f"{type(self).__name__} has no shared stem")

    def tie_penalty(self) -> Tensor:
        """L2 tie penalty over parallel branches (scalar); a 0 tensor unless ``l2_tied``."""
        branches = getattr(self, "branches", None)
        if isinstance(branches, Branches):
            return branches.tie_penalty()
        return next(self.parameters()).new_zeros(())

    def _check(self, image: Tensor, present: Tensor) -> Tensor:
        s, k = len(self.sequences), self.slices
        if image.dim() != 5 or image.shape[1] != s or image.shape[2] != k:
            raise ValueError(
                f"image must be [B, S={s}, K={k}, H, W] (sequences {list(self.sequences)}), "
                f"got shape {tuple(image.shape)}"
            )
        if tuple(present.shape) != (image.shape[0], s):
            raise ValueError(
                f"present must be [B={image.shape[0]}, S={s}], got shape {tuple(present.shape)}"
            )
        present = present.to(device=image.device, dtype=torch.bool)
        empty = (~present.any(1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"batch sample(s) {empty} have no present sequence; every sample needs at least "
                "one of " + str(list(self.sequences))
            )
        return present


def _mask(present: Tensor, like: Tensor) -> Tensor:
    """``present[B, S]`` as ``like``'s dtype, shaped ``[B, S, 1, 1, 1]`` for broadcasting."""
    return present.to(like.dtype).view(*present.shape, 1, 1, 1)


class _Logits(nn.Module):
    """A torchvision segmentation model returning its ``'out'`` tensor instead of a dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


@INTEGRATIONS.register("input")
class InputIntegration(SeqSegModel):
    """The paper's baseline: one DeepLabv3 on the S*K channels, sequence-major (``s*K + k``).

    ``self.net`` is a plain torchvision ``DeepLabV3`` (its state dict loads into torchvision's
    ``deeplabv3_*`` model with the same stem width). Absent sequences are zeroed here too, so
    the zero-fill contract holds even if a caller forgot it.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.net = _Logits(bb.deeplabv3(spec.backbone, len(spec.sequences) * spec.slices, norm=spec.norm))

    def _forward(self, image: Tensor, present: Tensor) -> Tensor:
        x = (image * _mask(present, image)).flatten(1, 2)  # [B, S*K, H, W], channel s*K + k
        return self.net(x)

    def stem(self) -> tuple[nn.Conv2d, nn.Module]:
        """The backbone's ``conv1`` (on all S*K channels) and ``bn1``."""
        body = self.net.model.backbone
        return body.conv1, body.bn1

    def forward_from_stem(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        """torchvision's ``DeepLabV3.forward`` from the stem's normalised output on: the backbone
        children after ``bn1`` in order (``relu``, ``maxpool``, ``layer1``..``layer4``), the
        classifier, bilinear upsampling to ``size``."""
        dl = self.net.model
        x = y
        for name, module in dl.backbone.named_children():
            if name not in ("conv1", "bn1"):
                x = module(x)
        return F.interpolate(dl.classifier(x), size=size, mode="bilinear", align_corners=False)


@INTEGRATIONS.register("mid")
class MidIntegration(SeqSegModel):
    """Per-sequence branches up to ``integration_point``, fusion, rest of the backbone, ASPP head.

    With ``integration_point='layer4'`` this is the paper's mid-level network (fusion right
    before ASPP); earlier points are this platform's generalisation.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        point = spec.integration_point
        self.branches = Branches(
            spec.sequences,
            lambda: bb.stages(bb.resnet(spec.backbone, spec.slices, spec.norm), "stem", point),
            spec.sharing,
        )
        self.fusion = FUSIONS.get(spec.fusion)(spec.sequences)
        widths = bb.stage_channels(spec.backbone)
        width = self.fusion.out_channels(widths[point])
        i = bb.STAGES.index(point)
        if i + 1 < len(bb.STAGES):
            # Remaining stages of a fresh ResNet; its first block now takes the fused width.
            late = bb.stages(bb.resnet(spec.backbone, 3, spec.norm), bb.STAGES[i + 1], "layer4")
            bb.widen_first_block(getattr(late, bb.STAGES[i + 1]), width, spec.norm)
            head_in = widths["layer4"]
        else:
            late = nn.Sequential()  # fused right before ASPP
            head_in = width
        self.late = late
        self.head = bb.head(head_in, 1, norm=spec.norm, width=bb.BACKBONES[spec.backbone].head_width)

    def _forward(self, image: Tensor, present: Tensor) -> Tensor:
        feats = self.branches(image, present)  # [B, S, C, h, w], zeros where absent
        x = self.head(self.late(self.fusion(feats, present)))  # [B, 1, H/8, W/8]
        # Same upsampling as torchvision's DeepLabV3.forward.
        return F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)


def mean_probability_logits(logits: Tensor, present: Tensor) -> Tensor:
    """Logit of the mean of ``sigmoid(logits)`` over present sequences.

    ``logits[B, S, 1, H, W]``, ``present: bool[B, S]`` (>= 1 True per row) -> ``[B, 1, H, W]``
    (float32). Computed in log space, so it neither overflows nor loses saturated branches:
    with ``p = mean_s sigmoid(z_s)``, ``log p = LSE_s logsigmoid(z_s) - log n`` and
    ``log(1-p) = LSE_s logsigmoid(-z_s) - log n``; the ``log n`` cancels in the logit.
    Absent entries enter as ``-inf`` (zero weight, zero gradient).
    """
    z = logits.float()
    keep = present.view(*present.shape, 1, 1, 1)
    neg_inf = torch.tensor(float("-inf"), dtype=z.dtype, device=z.device)
    log_p = torch.where(keep, F.logsigmoid(z), neg_inf).logsumexp(1)
    log_q = torch.where(keep, F.logsigmoid(-z), neg_inf).logsumexp(1)
    return log_p - log_q


@INTEGRATIONS.register("end")
class EndIntegration(SeqSegModel):
    """One whole DeepLabv3 per sequence; probability = mean over present sequences' branch
    probabilities, returned as logits (see :func:`mean_probability_logits`)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.branches = Branches(
            spec.sequences, lambda: _Logits(bb.deeplabv3(spec.backbone, spec.slices, norm=spec.norm)), spec.sharing
        )

    def _forward(self, image: Tensor, present: Tensor) -> Tensor:
        z = self.branches(image, present)  # [B, S, 1, H, W]
        return mean_probability_logits(z, present)
