"""Normalisation as an ablation axis, the tiny backbone, per-subset BatchNorm statistics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabV3

from seqablate.models import backbones as bb
from seqablate.models import build_model
from seqablate.models.deployed import DeployedModel
from seqablate.models.inference import Predictor
from seqablate.models.norm_stats import apply_stats, estimate_bn_stats, stats_of, subset_key

SEQS = ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"]
MODES = [
    {"integration": "input"},
    {"integration": "mid", "integration_point": "layer4", "sharing": "shared"},
    {"integration": "mid", "integration_point": "layer2", "sharing": "independent", "fusion": "mean"},
    {"integration": "mid", "integration_point": "stem", "sharing": "l2_tied"},
    {"integration": "mid", "sharing": "shared", "fusion": "subtract"},
    {"integration": "end", "sharing": "shared"},
    {"integration": "end", "sharing": "l2_tied"},
]


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(str(v) for v in m.values()))
@pytest.mark.parametrize("norm", ["group", "instance"])
def test_norm_replaces_every_batchnorm(mode: dict, norm: str) -> None:
    cfg = {**mode, "backbone": "tiny", "sequences": SEQS, "slices": 3}
    batch = build_model({**cfg, "norm": "batch"}, seed=0)
    other = build_model({**cfg, "norm": norm}, seed=0)
    n_bn = _count(batch, nn.BatchNorm2d)
    assert n_bn > 0 and _count(other, nn.BatchNorm2d) == 0
    if norm == "group":
        assert _count(other, nn.GroupNorm) == n_bn
        assert all(m.num_channels % m.num_groups == 0 and m.num_channels // m.num_groups >= 2
                   for m in other.modules() if isinstance(m, nn.GroupNorm))
    else:
        # The ASPP's pooled 1 x 1 branch cannot take InstanceNorm: GroupNorm with one group there.
        pooled = [m for m in other.modules() if isinstance(m, nn.GroupNorm)]
        assert pooled and all(m.num_groups == 1 for m in pooled)
        assert _count(other, nn.InstanceNorm2d) + len(pooled) == n_bn
    x = torch.rand(2, 4, 3, 32, 32)
    present = torch.tensor([[True, True, True, True], [False, True, True, True]])
    other.train()
    assert other(x, present).shape == (2, 1, 32, 32)


def test_group_norm_refuses_widths_that_do_not_divide() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        bb.norm_layer("group")(70)


def test_tiny_backbone_shapes_and_parameters() -> None:
    for mode in MODES:
        model = build_model({**mode, "backbone": "tiny", "sequences": SEQS, "slices": 5}, seed=0).eval()
        with torch.no_grad():
            y = model(torch.rand(2, 4, 5, 64, 64), torch.ones(2, 4, dtype=torch.bool))
        assert y.shape == (2, 1, 64, 64)
    n = sum(p.numel() for p in build_model({"integration": "input", "backbone": "tiny", "sequences": SEQS,
                                             "slices": 5}).parameters())
    assert n == 691_937  # stem 32, Bottleneck stages of 32/64/128/256 channels, 64-channel ASPP


def test_tiny_single_sequence_is_a_plain_torchvision_deeplabv3() -> None:
    """S = 1: the model is torchvision's DeepLabV3 (IntermediateLayerGetter + ASPP head) with
    the same weights, as for the other backbones."""
    ours = build_model({"integration": "input", "backbone": "tiny", "sequences": ["flair"], "slices": 3}, seed=0).eval()
    net = bb.TinyResNet(stem=32, planes=(8, 16, 32, 64))
    net.conv1 = nn.Conv2d(3, 32, kernel_size=7, stride=2, padding=3, bias=False)
    ref = DeepLabV3(IntermediateLayerGetter(net, {"layer4": "out"}), bb.head(256, 1, width=64), None)
    ref.load_state_dict(ours.net.model.state_dict(), strict=True)
    ref.eval()
    x = torch.randn(2, 1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x, torch.ones(2, 1, dtype=torch.bool)), ref(x[:, 0])["out"])
    # dilated, output stride 8, as torchvision's DeepLabv3 builders
    assert net.layer3[0].conv2.dilation == (1, 1) and net.layer4[0].conv2.dilation == (2, 2)
    assert net.layer3[0].conv2.stride == (1, 1) and net.layer4[0].conv2.stride == (1, 1)


def _toy() -> nn.Module:
    return build_model({"integration": "input", "backbone": "tiny", "sequences": ["t1_gre_post", "flair"],
                        "slices": 1}, seed=0)


def _batches(keep: list[bool], n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches whose inputs differ by subset: t1_gre_post ~ U(0, 2), flair ~ U(0, 1) + 3."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x = torch.stack([2 * torch.rand(4, 1, 16, 16, generator=gen), torch.rand(4, 1, 16, 16, generator=gen) + 3], 1)
        present = torch.tensor(keep).expand(4, 2)
        scale = 2 / sum(keep)
        out.append((x * present[:, :, None, None, None] * scale, present))
    return out


def _stem_stats_by_hand(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """The stem BatchNorm's statistics by hand: the stem conv in float64 on each batch, the
    mean and the unbiased variance per channel, averaged over batches (cumulative average)."""
    w = model.net.model.backbone.conv1.weight.detach().double()
    means, variances = [], []
    for x, present in batches:
        z = F.conv2d((x * present[:, :, None, None, None]).flatten(1, 2).double(), w, stride=2, padding=3)
        means.append(z.mean(dim=(0, 2, 3)).numpy())
        variances.append(z.var(dim=(0, 2, 3), unbiased=True).numpy())
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def test_per_subset_statistics_equal_a_hand_computation_and_differ_by_subset() -> None:
    model = _toy()
    before = copy.deepcopy(model.state_dict())
    stats = {}
    for keep in ([True, True], [False, True], [True, False]):
        key = subset_key(keep, ["t1_gre_post", "flair"])
        batches = _batches(keep)
        stats[key] = estimate_bn_stats(model, batches)
        mean, var = _stem_stats_by_hand(model, batches)
        np.testing.assert_allclose(stats[key]["net.model.backbone.bn1.running_mean"].numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats[key]["net.model.backbone.bn1.running_var"].numpy(), var, rtol=1e-4, atol=1e-5)
    # the inputs' means differ by subset, and so do the statistics
    a, b = stats["t1_gre_post+flair"], stats["flair"]
    assert not torch.allclose(a["net.model.backbone.bn1.running_mean"], b["net.model.backbone.bn1.running_mean"])
    # the model itself is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_predictor_uses_the_statistics_of_the_patients_subset() -> None:
    from seqablate.data.cache import CachedPatient

    model = _toy().eval()
    seqs = ("t1_gre_post", "flair")
    stats = {subset_key(k, seqs): estimate_bn_stats(model, _batches(k)) for k in ([True, True], [False, True])}
    deployed = DeployedModel(model, norm_stats=stats, policy="per_subset")
    image = np.random.default_rng(0).random((2, 6, 16, 16)).astype(np.float32)
    lacking = CachedPatient("p_no_gre", image * np.array([0, 1], np.float32)[:, None, None, None],
                            np.array([False, True]), None, (1.0, 1.0, 1.0), (16, 16, 6), np.eye(4), seqs)
    predictor = Predictor(deployed, fold_bn=False, batch_size=4)
    got = predictor.predict_cached(lacking)
    assert predictor.used == [("p_no_gre", "flair")]
    used = predictor.net("flair")
    buffers = stats_of(used)
    for name, tensor in stats["flair"].items():
        torch.testing.assert_close(buffers[name], tensor)  # the subset's buffers, not the stored
    # and the prediction is that network's: same numbers as a hand-made copy with those stats
    ref = apply_stats(copy.deepcopy(model).eval(), stats["flair"])
    from seqablate.data.dataset import patient_stacks
    from seqablate.data.dropout import apply_presence

    x = torch.as_tensor(np.ascontiguousarray(patient_stacks(lacking, 1)))
    x, p = apply_presence(x, torch.tensor([[False, True]]).expand(6, 2))
    with torch.no_grad():
        np.testing.assert_allclose(got, torch.sigmoid(ref(x, p))[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    # the stored policy ignores the per-subset statistics
    stored = Predictor(DeployedModel(model, norm_stats=stats, policy="stored"), fold_bn=False)
    stored.predict_cached(lacking)
    assert stored.used == [("p_no_gre", "stored")]


def test_deployed_forward_groups_a_mixed_batch_by_subset() -> None:
    model = _toy().eval()
    seqs = ("t1_gre_post", "flair")
    stats = {subset_key(k, seqs): estimate_bn_stats(model, _batches(k)) for k in ([True, True], [False, True])}
    deployed = DeployedModel(model, norm_stats=stats, policy="per_subset")
    x = torch.rand(3, 2, 1, 32, 32)
    present = torch.tensor([[True, True], [False, True], [True, False]])
    with torch.no_grad():
        y = deployed(x, present)
        for i, key in enumerate(["t1_gre_post+flair", "flair", None]):
            net = apply_stats(copy.deepcopy(model).eval(), stats[key]) if key else copy.deepcopy(model).eval()
            xi = x[i : i + 1] * present[i : i + 1, :, None, None, None] * (2 / int(present[i].sum()))
            torch.testing.assert_close(y[i : i + 1], net(xi, present[i : i + 1]))


@pytest.mark.parametrize("mode", [MODES[0], MODES[1]], ids=["input", "mid-layer4"])
def test_statistics_of_many_conditions_from_one_draw_equal_one_condition_at_a_time(
        mode: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """estimate_bn_stats_many (one draw, a shared stem for the input-level network) gives each
    condition the statistics estimate_bn_stats gives on the same slices put through the
    presence rule; a batch where a sample lacks a kept sequence takes the plain path."""
    from seqablate.data.dropout import apply_presence
    from seqablate.models.norm_stats import estimate_bn_stats_many

    model = build_model({**mode, "backbone": "tiny", "sequences": SEQS, "slices": 3}, seed=0)
    g = torch.Generator().manual_seed(1)
    batches = []
    for b in range(3):
        x = torch.rand(4, len(SEQS), 3, 32, 32, generator=g) + torch.arange(len(SEQS)).view(1, -1, 1, 1, 1)
        present = torch.ones(4, len(SEQS), dtype=torch.bool)
        if b == 2:
            present[1, 3] = False  # flair absent in one sample: conditions keeping flair go plain
            x[1, 3] = 0
        batches.append((x, present))
    conditions = {"all": [True] * 4, "no_gre": [False, True, True, True], "gre_flair": [True, False, False, True],
                  "fse_pre": [False, True, False, False]}
    from seqablate.models.stem import SharedStem

    combined = []
    original = SharedStem.combine

    def counting(self, parts, weights, norm):  # noqa: ANN001, ANN202
        combined.append(tuple(weights.tolist()))
        return original(self, parts, weights, norm)

    monkeypatch.setattr(SharedStem, "combine", counting)
    many = estimate_bn_stats_many(model, batches, conditions)
    # the input-level network shares its stem: 2 complete batches x 4 conditions, then only
    # the condition without flair on the batch with a sample lacking it; the mid network never
    assert len(combined) == (9 if mode["integration"] == "input" else 0)
    for name, keep in conditions.items():
        k = torch.tensor(keep)
        one = estimate_bn_stats(model, [apply_presence(x, p, k.expand_as(p)) for x, p in batches])
        assert set(many[name]) == set(one)
        for buf, want in one.items():
            torch.testing.assert_close(many[name][buf], want, rtol=1e-4, atol=1e-5, msg=f"{name} {buf}")
    with pytest.raises(ValueError, match="keeps no sequence"):
        estimate_bn_stats_many(model, batches, {"none": [False] * 4})
    with pytest.raises(ValueError, match="no batch"):
        estimate_bn_stats_many(model, [], conditions)


def test_subsets_are_grouped_by_the_patients_who_can_provide_them() -> None:
    from types import SimpleNamespace

    from seqablate.evaluation.norm import eligible_groups

    seqs = ("a", "b", "c")
    pts = [SimpleNamespace(present=[True, True, True]), SimpleNamespace(present=[True, False, True]),
           SimpleNamespace(present=[False, True, True])]
    groups, skipped = eligible_groups(pts, seqs, ["a+b+c", "a+c", "c", "a", "b", "a+b", "a+c"])
    # by hand: a+b+c and a+b only patient 0; a+c and a patients 0, 1; b patients 0, 2; c all
    assert groups == {(0,): ["a+b+c", "a+b"], (0, 1): ["a+c", "a"], (0, 1, 2): ["c"], (0, 2): ["b"]}
    assert skipped == []
    groups, skipped = eligible_groups(pts[1:2], seqs, ["a+b", "a"])
    assert groups == {(0,): ["a"]} and skipped == ["a+b"]
