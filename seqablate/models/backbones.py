"""torchvision ResNet backbones and DeepLabv3 pieces, wrapped (not forked).

Every network here is assembled from torchvision's own classes: ``ResNet``/``Bottleneck``,
``IntermediateLayerGetter``, ``DeepLabV3``, ``DeepLabHead`` and ``ASPP``, exactly as
``torchvision.models.segmentation.deeplabv3_resnet50`` wires them (output stride 8: layer3 and
layer4 use dilation instead of stride). We change only what the study needs:

- the stem convolution takes any number of input channels (K slices, or S*K for input-level);
- for mid-level integration, the first block after the fusion point takes the fused width
  (its ``conv1`` and the ``downsample`` projection are rebuilt with more input channels);
- the normalisation layers (``model.norm``): torchvision's ``norm_layer`` for the backbone;
  ``DeepLabHead``/``ASPP`` hard-code ``BatchNorm2d``, so theirs are swapped module by module
  (:func:`swap_norms`). ``instance`` cannot normalise the ASPP's pooled 1 x 1 branch (one
  value per channel has no spatial statistics: the output would be the bias alone), so that
  branch gets ``GroupNorm`` with one group (a layer norm over its channels) instead;
- ``tiny``: the same dilated Bottleneck ResNet + ASPP at a fraction of the width, for CPUs.

Random initialisation only: nothing is ever downloaded (``weights=None``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn
from torchvision.models import ResNet, resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import Bottleneck
from torchvision.models.segmentation.deeplabv3 import ASPP, ASPPPooling, DeepLabHead, DeepLabV3

from seqablate import vocabulary as V
from seqablate.models.atrous import collapse_atrous

#: Backbone stages in execution order; a mid-level integration point names the last one run
#: per sequence (the vocabulary's integration points).
STAGES: tuple[str, ...] = V.INTEGRATION_POINTS

#: Normalisation layers (``model.norm``).
NORMS: tuple[str, ...] = V.NORMS

#: GroupNorm uses this many groups, or ``width // 2`` on layers narrower than 64 channels (at
#: least two channels per group); a width must be a multiple of its group count.
GROUPS = 32

#: Torchvision attribute names that make up each stage.
_STAGE_PARTS: dict[str, tuple[str, ...]] = {
    "stem": ("conv1", "bn1", "relu", "maxpool"),
    "layer1": ("layer1",),
    "layer2": ("layer2",),
    "layer3": ("layer3",),
    "layer4": ("layer4",),
}

# Output stride 8, as torchvision's DeepLabv3 builders do.
_DILATION = [False, True, True]

NormLayer = Callable[[int], nn.Module]


def group_count(width: int) -> int:
    """GroupNorm groups for a layer of ``width`` channels (see :data:`GROUPS`)."""
    g = GROUPS if width >= 2 * GROUPS else max(1, width // 2)
    if width % g:
        raise ValueError(f"model.norm='group': a width of {width} channels does not divide into {g} groups")
    return g


def norm_layer(norm: str) -> NormLayer:
    """torchvision-style ``norm_layer(num_features) -> module`` for ``model.norm``.

    ``batch``: ``BatchNorm2d``; ``group``: ``GroupNorm`` (:func:`group_count` groups);
    ``instance``: ``InstanceNorm2d`` with a learned affine and no running statistics.
    """
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return lambda c: nn.GroupNorm(group_count(c), c)
    if norm == "instance":
        return lambda c: nn.InstanceNorm2d(c, affine=True)
    raise ValueError(f"model.norm: unknown value {norm!r}; valid choices: {list(NORMS)}")


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: its builder and the output width of each stage (and of the ASPP)."""

    build: Callable[[NormLayer], ResNet]
    widths: dict[str, int]  # stage -> output channels
    head_width: int = 256  # ASPP / head channels (torchvision's DeepLabHead: 256)


class TinyResNet(ResNet):
    """torchvision's ResNet (Bottleneck blocks, dilated to output stride 8) at reduced width.

    torchvision's ``ResNet.__init__`` fixes the stage widths (64 .. 2048 channels), so this
    subclass sets the attributes ``ResNet._make_layer`` reads and builds the stages with it;
    ``forward``, the stem, the Bottleneck blocks and the initialisation are torchvision's.
    ``planes`` are the Bottlenecks' inner widths (each stage outputs ``4 * planes``).
    """

    def __init__(
        self,
        *,
        stem: int = 32,
        planes: tuple[int, int, int, int] = (8, 16, 32, 64),
        blocks: tuple[int, int, int, int] = (1, 1, 1, 1),
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        nn.Module.__init__(self)
        self._norm_layer = norm_layer
        self.inplanes, self.dilation, self.groups, self.base_width = stem, 1, 1, 64
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, planes[0], blocks[0])
        self.layer2 = self._make_layer(Bottleneck, planes[1], blocks[1], stride=2, dilate=_DILATION[0])
        self.layer3 = self._make_layer(Bottleneck, planes[2], blocks[2], stride=2, dilate=_DILATION[1])
        self.layer4 = self._make_layer(Bottleneck, planes[3], blocks[3], stride=2, dilate=_DILATION[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(4 * planes[3], 1000)
        for m in self.modules():  # as ResNet.__init__ initialises
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm) and m.affine:
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


_RESNET_WIDTHS = {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
_TINY_PLANES = (8, 16, 32, 64)

#: Backbone name -> :class:`BackboneSpec` (randomly initialised, 3 input channels).
BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(
        lambda nl: resnet50(weights=None, replace_stride_with_dilation=_DILATION, norm_layer=nl), _RESNET_WIDTHS
    ),
    "resnet101": BackboneSpec(
        lambda nl: resnet101(weights=None, replace_stride_with_dilation=_DILATION, norm_layer=nl), _RESNET_WIDTHS
    ),
    # One Bottleneck per stage: same widths, strides and dilations as resnet50 (so every
    # integration point and the 2048-channel ASPP input are unchanged), ~24 M parameters
    # with the DeepLab head. For CPU tests.
    "compact": BackboneSpec(
        lambda nl: ResNet(Bottleneck, [1, 1, 1, 1], replace_stride_with_dilation=_DILATION, norm_layer=nl),
        _RESNET_WIDTHS,
    ),
    # One narrow Bottleneck per stage (32 .. 256 channels) and a 64-channel ASPP: DeepLabv3's
    # structure at ~0.7 M parameters (input-level, 4 sequences x 5 slices), for the CPU demo
    # (benchmarks/bench_train_step.py).
    "tiny": BackboneSpec(
        lambda nl: TinyResNet(stem=32, planes=_TINY_PLANES, norm_layer=nl),
        {"stem": 32, **{f"layer{i + 1}": 4 * p for i, p in enumerate(_TINY_PLANES)}},
        head_width=64,
    ),
}

def stage_channels(backbone: str) -> dict[str, int]:
    """Output channels of each stage of ``backbone``."""
    return dict(_spec(backbone).widths)


def _spec(backbone: str) -> BackboneSpec:
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone: unknown value {backbone!r}; valid choices: {list(BACKBONES)}")
    return BACKBONES[backbone]


def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh conv with ``conv``'s geometry but ``in_channels`` inputs, initialised as
    torchvision's ResNet initialises convolutions (Kaiming normal, fan_out, ReLU)."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def resnet(backbone: str, in_channels: int, norm: str = "batch") -> ResNet:
    """A randomly initialised, dilated (output stride 8) torchvision ResNet.

    ``in_channels``: channels of the stem convolution (torchvision's is 3); ``norm``: one of
    :data:`NORMS`. Raises ``ValueError`` for an unknown backbone or norm (valid names in the
    message).
    """
    spec = _spec(backbone)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    net = spec.build(norm_layer(norm))
    if in_channels != net.conv1.in_channels:
        net.conv1 = _conv_like(net.conv1, in_channels)
    return net


def deeplabv3(backbone: str, in_channels: int, num_classes: int = 1, norm: str = "batch") -> DeepLabV3:
    """torchvision DeepLabV3 (ResNet backbone, ASPP head, no aux head) on ``in_channels``.

    Identical wiring to torchvision's ``_deeplabv3_resnet``: ``forward(x[B, C, H, W])`` returns
    ``{"out": logits[B, num_classes, H, W]}`` (bilinear upsampling to the input size).
    """
    body = IntermediateLayerGetter(resnet(backbone, in_channels, norm), return_layers={"layer4": "out"})
    spec = _spec(backbone)
    return DeepLabV3(body, head(spec.widths["layer4"], num_classes, norm=norm, width=spec.head_width), None)


def stages(net: ResNet, first: str, last: str) -> nn.Sequential:
    """Stages ``first..last`` (inclusive, names from :data:`STAGES`) of ``net`` as a Sequential.

    Child names are torchvision's (``conv1``, ``bn1``, ..., ``layer4``), so state-dict keys
    read like the backbone's own. ``first`` after ``last`` gives an empty Sequential (identity).
    """
    i, j = STAGES.index(first), STAGES.index(last)
    parts = [p for stage in STAGES[i : j + 1] for p in _STAGE_PARTS[stage]]
    return nn.Sequential(OrderedDict((p, getattr(net, p)) for p in parts))


def widen_first_block(layer: nn.Sequential, in_channels: int, norm: str = "batch") -> nn.Sequential:
    """Make a ResNet stage (``layerN``: Sequential of Bottlenecks) accept ``in_channels``.

    Its first Bottleneck's ``conv1`` is rebuilt with ``in_channels`` inputs, and so is its
    ``downsample`` projection; a block without one (input and output widths were equal, as
    in ``tiny``'s layer1) gets torchvision's projection (1x1 conv, stride of the block, then
    a ``norm`` layer), since the residual no longer matches. The rest is untouched.
    """
    block = layer[0]
    if not isinstance(block, Bottleneck):
        raise TypeError("expected a torchvision ResNet stage of Bottleneck blocks")
    block.conv1 = _conv_like(block.conv1, in_channels)
    if block.downsample is None:
        out = block.conv3.out_channels
        conv = nn.Conv2d(in_channels, out, kernel_size=1, stride=block.stride, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        block.downsample = nn.Sequential(conv, norm_layer(norm)(out))
    else:
        block.downsample[0] = _conv_like(block.downsample[0], in_channels)
    return layer


def swap_norms(module: nn.Module, norm: str) -> nn.Module:
    """Replace, in place, every ``BatchNorm2d`` under ``module`` by ``norm``'s layer.

    For ``instance``, a norm inside torchvision's ``ASPPPooling`` (a 1 x 1 map) becomes
    ``GroupNorm(1, C)`` instead (see the module docstring). ``batch`` changes nothing.
    """
    if norm == "batch":
        return module
    make = norm_layer(norm)
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            pooled = isinstance(module, ASPPPooling)
            setattr(module, name, nn.GroupNorm(1, c) if norm == "instance" and pooled else make(c))
        else:
            swap_norms(child, norm)
    return module


def head(in_channels: int, num_classes: int = 1, *, norm: str = "batch", width: int = 256) -> nn.Sequential:
    """torchvision's DeepLabv3 head (ASPP with rates 12/24/36, 3x3 conv, 1x1 classifier).

    ``width`` 256 is torchvision's ``DeepLabHead`` itself; another width builds the same
    Sequential (same children and state-dict keys) around torchvision's ``ASPP(...,
    out_channels=width)``. Its atrous convolutions skip the taps that can only read padding on
    feature maps no larger than their rate (:mod:`seqablate.models.atrous`: same function,
    fewer FLOPs); its norms follow ``norm`` (:func:`swap_norms`).
    """
    if width == 256:
        net: nn.Sequential = DeepLabHead(in_channels, num_classes)
    else:
        net = nn.Sequential(
            ASPP(in_channels, [12, 24, 36], out_channels=width),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )
    return swap_norms(collapse_atrous(net), norm)  # type: ignore[return-value]
