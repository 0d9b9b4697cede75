"""The wrapper IS torchvision's DeepLabv3; sharing modes; L2 tie; inference fast path."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation import deeplabv3_resnet50

from seqablate.models import backbones as bb
from seqablate.models import build_model, inference_model, predict_logits


@pytest.mark.parametrize("k", [3, pytest.param(5, marks=pytest.mark.slow)])
def test_single_sequence_input_equals_torchvision_deeplabv3(k: int) -> None:
    ours = build_model(
        {"integration": "input", "backbone": "resnet50", "sequences": ["flair"], "slices": k}, seed=0
    ).eval()
    ref = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=1, aux_loss=False)
    if k != 3:  # the only change we make: the stem takes K channels
        ref.backbone.conv1 = nn.Conv2d(k, 64, kernel_size=7, stride=2, padding=3, bias=False)
    ref.load_state_dict(ours.net.model.state_dict(), strict=True)
    ref.eval()
    x = torch.randn(1, 1, k, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x, torch.ones(1, 1, dtype=torch.bool)), ref(x[:, 0])["out"])


def test_shared_has_one_branch_of_parameters_independent_differ_l2_tied_equal() -> None:
    cfg = {"integration": "mid", "integration_point": "layer2", "fusion": "mean", "backbone": "compact",
           "sequences": ["t1_gre_post", "flair", "t2"], "slices": 3}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    one_branch = count(bb.stages(bb.resnet("compact", 3), "stem", "layer2"))
    shared = build_model({**cfg, "sharing": "shared"}, seed=0)
    indep = build_model({**cfg, "sharing": "independent"}, seed=0)
    tied = build_model({**cfg, "sharing": "l2_tied"}, seed=0)
    assert count(shared.branches) == one_branch
    assert count(indep.branches) == count(tied.branches) == 3 * one_branch
    assert count(indep) - count(shared) == 2 * one_branch  # late stages + head identical
    w = [indep.branches.nets[s].conv1.weight for s in indep.sequences]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    for a, b in zip(tied.branches.nets["t1_gre_post"].state_dict().values(),
                    tied.branches.nets["t2"].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_l2_tied_penalty_zero_at_init_and_grows_with_training() -> None:
    model = build_model({"integration": "mid", "integration_point": "stem", "sharing": "l2_tied",
                         "backbone": "compact", "sequences": ["t1_pre", "flair"], "slices": 1}, seed=0)
    assert model.tie_penalty().item() == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    penalties = []
    for _ in range(2):
        x = torch.stack([torch.randn(2, 1, 32, 32, generator=gen), 3 * torch.rand(2, 1, 32, 32, generator=gen)], 1)
        y = (torch.rand(2, 1, 32, 32, generator=gen) > 0.8).float()
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(x, torch.ones(2, 2, dtype=torch.bool)), y).backward()
        opt.step()
        penalties.append(model.tie_penalty().item())
    assert 0 < penalties[0] < penalties[-1]
    # Independent check: 2 branches -> ||theta_1 - theta_2||^2 / 2.
    a, b = (nn.utils.parameters_to_vector(model.branches.nets[s].parameters()) for s in model.sequences)
    assert penalties[-1] == pytest.approx((a - b).pow(2).sum().item() / 2, rel=1e-4)
    # Its gradient pulls each branch towards the mean (d/dtheta_1 = 2 (theta_1 - mean) = a - b).
    model.zero_grad()
    model.tie_penalty().backward()
    g = nn.utils.parameters_to_vector(p.grad for p in model.branches.nets["t1_pre"].parameters())
    torch.testing.assert_close(g, (a - b).detach(), rtol=1e-4, atol=1e-6)


def test_end_is_mean_of_branch_probabilities() -> None:
    model = build_model({"integration": "end", "sharing": "independent", "backbone": "compact",
                         "sequences": ["t1_gre_post", "flair", "t2"], "slices": 1}, seed=0).eval()
    x = torch.randn(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    present = torch.tensor([[True, False, True], [False, True, False]])
    with torch.no_grad():
        got = torch.sigmoid(model(x, present))
        probs = torch.stack([torch.sigmoid(model.branches.nets[s](x[:, i])) for i, s in enumerate(model.sequences)], 1)
    torch.testing.assert_close(got[0], (probs[0, 0] + probs[0, 2]) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], probs[1, 1], atol=1e-5, rtol=1e-5)


def test_inference_path_matches_eval_forward_and_restores_mode() -> None:
    model = build_model({"integration": "mid", "integration_point": "layer1", "sharing": "shared",
                         "backbone": "compact", "sequences": ["t1_gre_post", "flair"], "slices": 3}, seed=0)
    x = torch.randn(5, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1]], dtype=torch.bool)
    fast = inference_model(model, channels_last=True)
    assert model.training and not fast.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # all folded
    model.eval()
    with torch.no_grad():
        ref = model(x, present)
    model.train()
    got = predict_logits(fast, x, present, batch_size=2, amp=False)
    assert got.dtype == torch.float32 and got.shape == (5, 1, 32, 32)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    # The unprepared model works too and keeps its training mode.
    torch.testing.assert_close(predict_logits(model, x.numpy(), present.numpy(), batch_size=4, amp=False), ref)
    assert model.training
    assert predict_logits(fast, x[:0], present[:0]).shape == (0, 1, 32, 32)
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(fast, x, present, batch_size=0)


def test_forward_rejects_bad_shapes_and_empty_samples() -> None:
    model = build_model({"integration": "input", "backbone": "compact", "sequences": ["t1_gre_post", "flair"], "slices": 3})
    x = torch.zeros(2, 2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"image must be \[B, S=2, K=3, H, W\].*got shape \(2, 3, 3, 32, 32\)"):
        model(torch.zeros(2, 3, 3, 32, 32), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"present must be \[B=2, S=2\]"):
        model(x, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"batch sample\(s\) \[1\] have no present sequence"):
        model(x, torch.tensor([[True, False], [False, False]]))
