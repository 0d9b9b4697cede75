"""Saliency aggregates on models whose input gradient is known analytically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seqablate.saliency import (
    SaliencyAccumulator,
    SaliencyStep,
    reduce_saliency,
    saliency_aggregates,
    slice_offsets,
)


class PixelLinear(nn.Module):
    """logits[b, 0, h, w] = sum_{s,k} W[s, k] * x[b, s, k, h, w] (+ a BatchNorm buffer to watch).

    It does NOT mask absent sequences, so any zero saliency for them comes from the function.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bn = nn.BatchNorm1d(1)

    def forward(self, image: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        self.bn(image.mean(dim=(1, 2, 3, 4))[:, None])  # updates running stats in train mode
        return torch.einsum("sk,bskhw->bhw", self.weight, image)[:, None]


def sum_loss(logits, target):
    # L = sum(logits * target)  =>  dL/dx[b,s,k,h,w] = W[s,k] * target[b,h,w]
    return (logits * target).sum()


W = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])  # S = 2, K = 3


def batch():
    torch.manual_seed(0)
    image = torch.randn(2, 2, 3, 4, 4)
    mask = torch.zeros(2, 4, 4)
    mask[0, 1:3, 1:3] = 1  # 4 target pixels in sample 0
    mask[1, 0, :] = 1  # 4 target pixels in sample 1
    return image, mask


def test_linear_model_gradient_by_hand():
    image, mask = batch()
    present = torch.ones(2, 2, dtype=torch.bool)
    r = saliency_aggregates(PixelLinear(W), image, present, mask, sum_loss)
    # |dL/dx| = |W[s,k]| * target; 8 target pixels over the batch.
    # per_sequence[s] = 8 * sum_k |W[s,k]|: s0 = 8*3.5 = 28, s1 = 8*4 = 32
    # per_slice[k] = 8 * sum_s |W[s,k]|: k0 = 8*1 = 8, k1 = 8*5 = 40, k2 = 8*1.5 = 12
    np.testing.assert_allclose(r.per_sequence, [28.0, 32.0])
    np.testing.assert_allclose(r.per_slice, [8.0, 40.0, 12.0])
    assert r.per_sequence.dtype == np.float64 and r.per_slice.dtype == np.float64
    # loss = sum over target pixels of sum_{s,k} W x
    expected = float((torch.einsum("sk,bskhw->bhw", W, image) * mask).sum())
    assert r.loss == pytest.approx(expected, rel=1e-6)


def test_absent_sequence_has_zero_saliency():
    image, mask = batch()
    image[:, 1] = 0.0
    present = torch.tensor([[True, False], [True, False]])
    r = saliency_aggregates(PixelLinear(W), image, present, mask[:, None], sum_loss)
    np.testing.assert_allclose(r.per_sequence, [28.0, 0.0])
    np.testing.assert_allclose(r.per_slice, [8.0, 16.0, 4.0])  # 8 * |W[0, k]|
    # Absent in sample 1 only: sequence 1 keeps sample 0's 4 pixels -> 4 * 4 = 16.
    present = torch.tensor([[True, True], [True, False]])
    r = saliency_aggregates(PixelLinear(W), image, present, mask, sum_loss)
    np.testing.assert_allclose(r.per_sequence, [28.0, 16.0])


@pytest.mark.parametrize("train", [True, False])
def test_no_parameter_grads_mode_and_buffers_untouched(train):
    model = PixelLinear(W).train(train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image, mask = batch()
    saliency_aggregates(model, image, torch.ones(2, 2, dtype=torch.bool), mask, sum_loss)
    assert model.training is train
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running stats restored


def test_bad_shapes_raise():
    image, mask = batch()
    present = torch.ones(2, 2, dtype=torch.bool)
    model = PixelLinear(W)
    with pytest.raises(ValueError, match="mask must be"):
        saliency_aggregates(model, image, present, mask[:, :3], sum_loss)
    with pytest.raises(ValueError, match="image must be"):
        saliency_aggregates(model, image[0], present, mask, sum_loss)
    with pytest.raises(ValueError, match="scalar"):
        saliency_aggregates(model, image, present, mask, lambda lg, t: lg * t)
    with pytest.raises(ValueError, match="present must be"):
        reduce_saliency(torch.zeros(2, 2, 3, 4, 4), torch.ones(2, 3))


def test_accumulator_sums_history_and_metric_names():
    acc = SaliencyAccumulator(["t1_gre_post", "flair"], slices=5)
    assert slice_offsets(5) == [-2, -1, 0, 1, 2]
    assert acc.to_metrics() == {
        **{f"saliency.cumulative.sequence.{n}": 0.0 for n in ("t1_gre_post", "flair")},
        **{f"saliency.cumulative.slice.{o}": 0.0 for o in (-2, -1, 0, 1, 2)},
    }
    acc.update(SaliencyStep(np.array([1.0, 2.0]), np.array([1.0, 0, 0, 0, 2.0]), 0.5), step=10)
    acc.update(SaliencyStep(np.array([0.5, 4.0]), np.array([0, 0, 3.0, 0, 1.5]), 0.4), step=20)
    np.testing.assert_allclose(acc.cumulative_sequence, [1.5, 6.0])
    np.testing.assert_allclose(acc.cumulative_slice, [1.0, 0, 3.0, 0, 3.5])
    assert [h[0] for h in acc.history] == [10, 20]
    np.testing.assert_allclose(acc.history[0][1], [1.0, 2.0])
    m = acc.to_metrics()
    assert m["saliency.sequence.flair"] == 4.0 and m["saliency.slice.0"] == 3.0 and m["saliency.slice.-2"] == 0.0
    assert m["saliency.cumulative.sequence.flair"] == 6.0 and m["saliency.cumulative.slice.2"] == 3.5
    assert len(m) == 2 * (2 + 5)
    restored = SaliencyAccumulator(["t1_gre_post", "flair"], slices=5)
    restored.load_state_dict(acc.state_dict())
    np.testing.assert_allclose(restored.cumulative_slice, acc.cumulative_slice)
    assert [h[0] for h in restored.history] == [10, 20]


def test_accumulator_rejects_bad_updates():
    acc = SaliencyAccumulator(["a", "b"], slices=3)
    with pytest.raises(ValueError, match="expected"):
        acc.update(SaliencyStep(np.zeros(3), np.zeros(3), 0.0), step=1)
    acc.update(SaliencyStep(np.zeros(2), np.zeros(3), 0.0), step=1)
    with pytest.raises(ValueError, match="not after"):
        acc.update(SaliencyStep(np.zeros(2), np.zeros(3), 0.0), step=1)
    with pytest.raises(ValueError, match="duplicate"):
        SaliencyAccumulator(["a", "a"], slices=3)
    with pytest.raises(ValueError, match="not"):
        SaliencyAccumulator(["x", "b"], slices=3).load_state_dict(acc.state_dict())
