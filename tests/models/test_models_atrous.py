"""AtrousConv2d computes exactly nn.Conv2d's function, skipping taps that only read padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from seqablate.models.atrous import AtrousConv2d, collapse_atrous
from seqablate.models.backbones import head


def _pair(dilation: int, kernel: int = 3, bias: bool = False) -> tuple[nn.Conv2d, AtrousConv2d]:
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 5, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=bias)
    fast = collapse_atrous(nn.Sequential(ref))[0]
    assert isinstance(fast, AtrousConv2d) and fast.weight is ref.weight
    return ref, fast


@pytest.mark.parametrize(
    "size, dilation, kernel",
    [
        ((8, 8), 12, 3),  # both axes collapse (64 x 64 input at output stride 8, rate 12)
        ((12, 12), 12, 3),  # d == size: still only padding off-centre
        ((8, 40), 12, 3),  # only H collapses
        ((40, 8), 36, 3),  # only W collapses
        ((13, 13), 12, 3),  # d < size: nothing collapses (plain path)
        ((6, 9), 7, 5),  # 5x5 kernel, H collapses
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_same_outputs_and_gradients_as_conv2d(size, dilation, kernel, bias):
    ref, fast = _pair(dilation, kernel, bias)
    x = torch.randn(2, 4, *size, dtype=torch.float64, requires_grad=True)
    ref, fast = ref.double(), fast.double()
    y_ref = ref(x)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, ref.weight])
    y_fast = fast(x)
    g_fast = torch.autograd.grad(y_fast.square().sum(), [x, fast.weight])
    assert y_fast.shape == y_ref.shape == (2, 5, *size)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_skipped_taps_get_zero_gradient():
    _, fast = _pair(12)
    x = torch.randn(1, 4, 8, 8)
    fast(x).sum().backward()
    g = fast.weight.grad
    assert g is not None and g[:, :, 1, 1].abs().sum() > 0
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1, 1] = False
    assert g[:, :, mask].abs().sum() == 0


def test_head_swaps_only_the_atrous_convs_and_keeps_the_state_dict():
    torch.manual_seed(0)
    ref = DeepLabHead(64, 1).eval()
    ours = head(64, 1).eval()
    ours.load_state_dict(ref.state_dict())  # same keys and shapes
    swapped = [m for m in ours.modules() if isinstance(m, AtrousConv2d)]
    assert sorted(m.dilation[0] for m in swapped) == [12, 24, 36]  # the three ASPP branches only
    for size in (8, 32):  # 64 and 256 pixel inputs at output stride 8
        x = torch.randn(2, 64, size, size)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_ineligible_convs_are_left_alone():
    strided = nn.Conv2d(3, 3, 3, stride=2, padding=2, dilation=2)
    odd_pad = nn.Conv2d(3, 3, 3, padding=1, dilation=2)
    reflect = nn.Conv2d(3, 3, 3, padding=2, dilation=2, padding_mode="reflect")
    plain = nn.Conv2d(3, 3, 3, padding=1)
    seq = collapse_atrous(nn.Sequential(strided, odd_pad, reflect, plain))
    assert not any(isinstance(m, AtrousConv2d) for m in seq)
