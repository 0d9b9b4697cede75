"""Atrous convolutions that skip the taps which can only read zero padding.

DeepLabv3's ASPP uses 3x3 convolutions with dilation 12/24/36 (output stride 8) and
``padding = dilation``. On a feature map no larger than the dilation along an axis, every
off-centre tap of that axis falls into the padding: the convolution IS a 1-wide one with the
centre weights, yet the library still computes all nine taps. That is the common case here:
64 x 64 inputs give 8 x 8 feature maps (all three ASPP branches collapse, ~70 % of the
network's FLOPs), and 256 x 256 inputs give 32 x 32 (the rate-36 branch collapses).

:class:`AtrousConv2d` computes exactly the same function (same parameters, state-dict keys,
outputs and gradients; the skipped weights get zero gradient either way) with only the taps
that can see data. It is swapped into torchvision's head by :func:`collapse_atrous`, so the
network stays torchvision's ``DeepLabHead``.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class AtrousConv2d(nn.Conv2d):
    """``nn.Conv2d`` (odd kernel, stride 1, zero ``padding = dilation * (k // 2)``) that
    drops, per spatial axis, the off-centre taps when ``dilation >= size`` of that axis.

    ``forward(x[B, C, H, W]) -> [B, O, H, W]``, identical to ``nn.Conv2d.forward``.
    """

    def forward(self, x: Tensor) -> Tensor:
        weight, padding, dilation = self.weight, list(self.padding), list(self.dilation)  # type: ignore[arg-type]
        for axis, size in enumerate(x.shape[-2:]):
            if dilation[axis] >= size:  # output i reads i +- d, i +- 2d, ...: all outside [0, size)
                centre = self.kernel_size[axis] // 2
                weight = weight.narrow(2 + axis, centre, 1)
                padding[axis], dilation[axis] = 0, 1
        if weight is self.weight:
            return super().forward(x)
        return F.conv2d(x, weight, self.bias, self.stride, tuple(padding), tuple(dilation), self.groups)


def _eligible(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a 'same'-padded, stride-1, zero-padded conv with odd kernels."""
    k, d, p = conv.kernel_size, conv.dilation, conv.padding
    return (
        not isinstance(conv, AtrousConv2d)
        and isinstance(p, tuple)
        and conv.padding_mode == "zeros"
        and conv.stride == (1, 1)
        and all(ki % 2 == 1 and pi == di * (ki // 2) for ki, di, pi in zip(k, d, p, strict=True))
        and max(d) > 1
    )


def collapse_atrous(module: nn.Module) -> nn.Module:
    """Replace, in place, every eligible dilated ``nn.Conv2d`` inside ``module`` by an
    :class:`AtrousConv2d` holding the same parameter objects; returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and _eligible(child):
            new = AtrousConv2d(
                child.in_channels, child.out_channels, child.kernel_size,  # type: ignore[arg-type]
                stride=1, padding=child.padding, dilation=child.dilation,  # type: ignore[arg-type]
                groups=child.groups, bias=child.bias is not None,
                device=child.weight.device, dtype=child.weight.dtype,
            )
            new.weight = child.weight
            if child.bias is not None:
                new.bias = child.bias
            setattr(module, name, new)
        else:
            collapse_atrous(child)
    return module
