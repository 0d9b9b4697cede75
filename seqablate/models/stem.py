"""One stem convolution for every presence condition of the same slices.

An input-level network starts with one convolution of the presence-weighted input
``x'[b, s*K + k] = w_s * x[b, s, k]`` (``w_s = S / S_present`` for a kept sequence, 0 for an
absent or censored one: :func:`seqablate.data.dropout.presence_weights`). The convolution is
linear, so with ``P_s = conv(x_s, W[:, sK:(s+1)K])`` (no bias) the stem of ANY condition is

    conv(x') = sum_s w_s * P_s + bias

and every condition of a batch of slices (all 15 sequence subsets, under any BatchNorm
statistics: they act after the convolution) can share the ``P_s``: one grouped convolution
(``groups=S``) instead of one full convolution per condition. On the demo's model the stem is
about half of a forward pass (a 7 x 7 convolution of S*K = 20 channels at half resolution),
so this is where evaluating many conditions saves most (``benchmarks/RESULTS.md``, "Trial
time"). The result equals the plain forward pass up to float32 summation order (logits within
~1e-4).

A BatchNorm after the stem (eval mode) is an affine map per channel and is fused into the
combination; any other normalisation module is applied to the combined sum as it is.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class SharedStem:
    """The stem convolution of a model, split by sequence.

    Args:
        conv: the model's first convolution, ``in_channels == sequences * slices``
            (sequence-major) and ``groups == 1``; its weights are copied (not tracked).
        sequences, slices: S and K.
        channels_last: keep the grouped weights (hence the partial outputs) channels-last.

    Raises ValueError when ``conv`` does not take S*K channels in one group.
    """

    def __init__(self, conv: nn.Conv2d, sequences: int, slices: int, *, channels_last: bool = True) -> None:
        s, k = int(sequences), int(slices)
        if conv.groups != 1 or conv.in_channels != s * k:
            raise ValueError(
                f"a shared stem needs one convolution of S*K = {s * k} channels in one group, got "
                f"{conv.in_channels} channels in {conv.groups} groups"
            )
        w = conv.weight.detach()
        c = w.shape[0]
        # [C, S*K, kh, kw] -> [S*C, K, kh, kw]: group s holds sequence s's K input channels.
        grouped = w.reshape(c, s, k, *w.shape[2:]).transpose(0, 1).reshape(s * c, k, *w.shape[2:])
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = grouped.contiguous(memory_format=fmt)
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.sequences, self.slices, self.channels = s, k, c
        self.memory_format = fmt

    def to(self, device: torch.device | str) -> SharedStem:
        """Move the weights to ``device`` (in place); returns self."""
        self.weight = self.weight.to(device)
        self.bias = None if self.bias is None else self.bias.to(device)
        return self

    def same_weights(self, other: SharedStem) -> bool:
        """Whether ``other`` convolves with exactly these weights (so partials can be shared)."""
        return (self.weight.shape == other.weight.shape and torch.equal(self.weight, other.weight)
                and (self.bias is None) == (other.bias is None)
                and (self.bias is None or torch.equal(self.bias, other.bias))  # type: ignore[arg-type]
                and (self.stride, self.padding, self.dilation) == (other.stride, other.padding, other.dilation))

    def partials(self, image: Tensor) -> Tensor:
        """``image[B, S, K, H, W]`` (unweighted) -> ``P[B, S*C, h, w]``: channels
        ``s*C .. (s+1)*C`` are sequence s's contribution to the stem, without bias."""
        b, s, k, h, w = image.shape
        if (s, k) != (self.sequences, self.slices):
            raise ValueError(f"image must be [B, S={self.sequences}, K={self.slices}, H, W], got {tuple(image.shape)}")
        x = image.reshape(b, s * k, h, w).contiguous(memory_format=self.memory_format)
        return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, groups=s)

    def combine(self, parts: Tensor, weights: Tensor, norm: nn.Module) -> Tensor:
        """The normalised stem output of one condition: ``norm(sum_s weights[s] * P_s + bias)``.

        ``parts``: :meth:`partials`; ``weights``: float[S], the condition's presence weights
        (zeros skip a sequence); ``norm``: the normalisation after the convolution, with the
        statistics the condition uses (an eval-mode ``BatchNorm2d`` is fused in). Returns
        ``[B, C, h, w]``. At least one weight must be non-zero.
        """
        c = self.channels
        dev, dt = parts.device, parts.dtype
        bn = isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None
        if bn:
            scale = norm.running_var.to(dev, torch.float32).add(norm.eps).rsqrt()
            if norm.weight is not None:
                scale = scale * norm.weight.to(dev, torch.float32)
            shift = -norm.running_mean.to(dev, torch.float32) * scale
            if norm.bias is not None:
                shift = shift + norm.bias.to(dev, torch.float32)
        else:
            scale = torch.ones(c, device=dev)
            shift = torch.zeros(c, device=dev)
        if self.bias is not None:
            shift = shift + self.bias.to(dev, torch.float32) * scale
        y: Tensor | None = None
        for s, w in enumerate(weights.tolist()):
            if w == 0:
                continue
            coef = (scale * w).to(dt).view(1, c, 1, 1)
            part = parts[:, s * c : (s + 1) * c]
            y = part * coef if y is None else y.addcmul_(part, coef)
        if y is None:
            raise ValueError("a condition needs at least one present sequence (all presence weights are 0)")
        y = y.add_(shift.to(dt).view(1, c, 1, 1))
        return y if bn else norm(y)
