"""torchvision ResNet backbones and DeepLabv3 pieces, wrapped (not forked).

Every network here is assembled from torchvision's own classes: ``ResNet``/``Bottleneck``,
``IntermediateLayerGetter``, ``DeepLabV3`` and ``DeepLabHead``, exactly as
``torchvision.models.segmentation.deeplabv3_resnet50`` wires them (output stride 8: layer3 and
layer4 use dilation instead of stride). We change only what the study needs:

- the stem convolution takes any number of input channels (K slices, or S*K for input-level);
- for mid-level integration, the first block after the fusion point takes the fused width
  (its ``conv1`` and the ``downsample`` projection are rebuilt with more input channels).

Random initialisation only: nothing is ever downloaded (``weights=None``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn as nn
from torchvision.models import ResNet, resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import Bottleneck
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

from seqablate.models.atrous import collapse_atrous

#: Backbone stages in execution order; a mid-level integration point names the last one run
#: per sequence.
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")

#: Output channels of each stage for Bottleneck ResNets (all our backbones).
STAGE_CHANNELS: dict[str, int] = {
    "stem": 64,
    "layer1": 256,
    "layer2": 512,
    "layer3": 1024,
    "layer4": 2048,
}

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

#: Backbone name -> builder of a randomly initialised torchvision ResNet (3 input channels).
BACKBONES: dict[str, Callable[[], ResNet]] = {
    "resnet50": lambda: resnet50(weights=None, replace_stride_with_dilation=_DILATION),
    "resnet101": lambda: resnet101(weights=None, replace_stride_with_dilation=_DILATION),
    # One Bottleneck per stage: same widths, strides and dilations as resnet50 (so every
    # integration point and the 2048-channel ASPP input are unchanged), ~24 M parameters
    # with the DeepLab head. For CPU tests and the demo.
    "compact": lambda: ResNet(Bottleneck, [1, 1, 1, 1], replace_stride_with_dilation=_DILATION),
}


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


def resnet(backbone: str, in_channels: int) -> ResNet:
    """A randomly initialised, dilated (output stride 8) torchvision ResNet.

    ``in_channels``: channels of the stem convolution (torchvision's is 3).
    Raises ``ValueError`` for an unknown backbone name (valid names in the message).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone: unknown value {backbone!r}; valid choices: {list(BACKBONES)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    net = BACKBONES[backbone]()
    if in_channels != net.conv1.in_channels:
        net.conv1 = _conv_like(net.conv1, in_channels)
    return net


def deeplabv3(backbone: str, in_channels: int, num_classes: int = 1) -> DeepLabV3:
    """torchvision DeepLabV3 (ResNet backbone, ASPP head, no aux head) on ``in_channels``.

    Identical wiring to torchvision's ``_deeplabv3_resnet``: ``forward(x[B, C, H, W])`` returns
    ``{"out": logits[B, num_classes, H, W]}`` (bilinear upsampling to the input size).
    """
    body = IntermediateLayerGetter(resnet(backbone, in_channels), return_layers={"layer4": "out"})
    return DeepLabV3(body, head(STAGE_CHANNELS["layer4"], num_classes), None)


def stages(net: ResNet, first: str, last: str) -> nn.Sequential:
    """Stages ``first..last`` (inclusive, names from :data:`STAGES`) of ``net`` as a Sequential.

    Child names are torchvision's (``conv1``, ``bn1``, ..., ``layer4``), so state-dict keys
    read like the backbone's own. ``first`` after ``last`` gives an empty Sequential (identity).
    """
    i, j = STAGES.index(first), STAGES.index(last)
    parts = [p for stage in STAGES[i : j + 1] for p in _STAGE_PARTS[stage]]
    return nn.Sequential(OrderedDict((p, getattr(net, p)) for p in parts))


def widen_first_block(layer: nn.Sequential, in_channels: int) -> nn.Sequential:
    """Make a ResNet stage (``layerN``: Sequential of Bottlenecks) accept ``in_channels``.

    The first Bottleneck of every stage of our backbones has a ``downsample`` projection
    (its input width differs from its output width), so widening its ``conv1`` and the
    projection conv is enough; the rest of the stage is untouched.
    """
    block = layer[0]
    if not isinstance(block, Bottleneck) or block.downsample is None:
        raise TypeError("expected a torchvision ResNet stage whose first Bottleneck has a downsample")
    block.conv1 = _conv_like(block.conv1, in_channels)
    block.downsample[0] = _conv_like(block.downsample[0], in_channels)
    return layer


def head(in_channels: int, num_classes: int = 1) -> DeepLabHead:
    """torchvision's DeepLabv3 head (ASPP with rates 12/24/36, 3x3 conv, 1x1 classifier).

    Its atrous convolutions skip the taps that can only read padding on feature maps no
    larger than their rate (:mod:`seqablate.models.atrous`: same function, fewer FLOPs).
    """
    return collapse_atrous(DeepLabHead(in_channels, num_classes))  # type: ignore[return-value]
