"""Cheap unit tests: fusion operators, branch runner, probability averaging, registries and
every invalid configuration (no DeepLab forward passes here)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from seqablate.config import ConfigError, ModelConfig
from seqablate.models import (
    FUSIONS,
    INTEGRATIONS,
    build_model,
    mean_probability_logits,
    resolve_spec,
)
from seqablate.models.fusion import ConcatFusion, MeanFusion, SubtractFusion
from seqablate.models.registry import Registry
from seqablate.models.sharing import Branches, run_present

SEQS = ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"]


def _feats() -> torch.Tensor:
    # f[b, s, c, 0, 0] = 100*b + 10*s + c: every entry identifiable by hand.
    b, s, c = torch.meshgrid(torch.arange(2), torch.arange(4), torch.arange(2), indexing="ij")
    return (100 * b + 10 * s + c).float().view(2, 4, 2, 1, 1)


def test_concat_is_sequence_major() -> None:
    out = ConcatFusion(SEQS)(_feats(), torch.ones(2, 4, dtype=torch.bool))
    assert out.shape == (2, 8, 1, 1)
    assert out[1, :, 0, 0].tolist() == [100, 101, 110, 111, 120, 121, 130, 131]


def test_mean_over_present_only() -> None:
    f = _feats()
    present = torch.tensor([[True, False, True, False], [True, True, True, True]])
    f = f * present.view(2, 4, 1, 1, 1)  # branches deliver zeros where absent
    out = MeanFusion(SEQS)(f, present)
    assert out[0, :, 0, 0].tolist() == [(0 + 20) / 2, (1 + 21) / 2]
    assert out[1, :, 0, 0].tolist() == [(100 + 110 + 120 + 130) / 4, (101 + 111 + 121 + 131) / 4]


def test_subtract_post_minus_pre_then_others() -> None:
    fusion = SubtractFusion(SEQS)
    assert fusion.pair == ("t1_fse_post", "t1_fse_pre")
    out = fusion(_feats(), torch.ones(2, 4, dtype=torch.bool))
    assert fusion.out_channels(2) == 6
    # [post - pre (s=2 minus s=1) = 10, 10], then t1_gre_post (s=0), flair (s=3)
    assert out[1, :, 0, 0].tolist() == [10, 10, 100, 101, 130, 131]


def test_mean_probability_logits_by_hand() -> None:
    z = torch.tensor([2.0, -1.0, 5.0, 0.0]).view(1, 4, 1, 1, 1)
    present = torch.tensor([[True, True, False, True]])
    p = (1 / (1 + math.exp(-2.0)) + 1 / (1 + math.exp(1.0)) + 0.5) / 3
    got = mean_probability_logits(z, present)
    assert got.shape == (1, 1, 1, 1)
    assert got.item() == pytest.approx(math.log(p / (1 - p)), abs=1e-6)
    # Saturated branches: p = (1 + 0) / 2 -> logit 0; no inf/nan even at +-1e4.
    z = torch.tensor([1e4, -1e4]).view(1, 2, 1, 1, 1).requires_grad_(True)
    out = mean_probability_logits(z, torch.tensor([[True, True]]))
    out.sum().backward()
    assert out.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(z.grad).all()
    # One present sequence: the mean is that branch itself.
    z = torch.tensor([3.0, -7.0]).view(1, 2, 1, 1, 1)
    assert mean_probability_logits(z, torch.tensor([[False, True]])).item() == pytest.approx(-7.0, abs=1e-5)


class _Count(nn.Module):
    """1x1 conv that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.conv(x)


def test_shared_branches_run_present_pairs_in_one_call() -> None:
    br = Branches(["a", "b", "c"], _Count, "shared")
    x = torch.randn(2, 3, 1, 4, 4)
    present = torch.tensor([[True, False, True], [False, True, True]])
    y = br(x, present)
    net = br.branch("a")
    assert net.calls == [4]  # one call, the 4 present (sample, sequence) pairs
    assert y.shape == (2, 3, 2, 4, 4)
    assert torch.all(y[~present] == 0)
    torch.testing.assert_close(y[0, 2], net.conv(x[0, 2:3, :])[0])
    assert sum(p.numel() for p in br.parameters()) == sum(p.numel() for p in _Count().parameters())


def test_independent_branches_skip_absent_and_get_no_gradient() -> None:
    torch.manual_seed(0)
    br = Branches(["a", "b", "c"], _Count, "independent")
    x = torch.randn(3, 3, 1, 4, 4)
    present = torch.tensor([[True, False, True], [True, False, False], [False, False, True]])
    br.eval()
    y = br(x, present)
    assert br.nets["a"].calls == [2] and br.nets["c"].calls == [2] and br.nets["b"].calls == []
    y.sum().backward()
    assert all(p.grad is None for p in br.nets["b"].parameters())
    assert all(p.grad is not None for p in br.nets["a"].parameters())
    assert not torch.equal(br.nets["a"].conv.weight, br.nets["c"].conv.weight)


def test_single_present_row_in_training_runs_whole_batch_masked() -> None:
    net = _Count().train()
    x = torch.randn(3, 1, 4, 4)
    keep = torch.tensor([False, True, False])
    y = run_present(net, x, keep)
    assert net.calls == [3]  # BatchNorm on 1x1 maps needs > 1 row
    assert torch.all(y[0] == 0) and torch.all(y[2] == 0)
    torch.testing.assert_close(y[1], net.conv(x[1:2])[0])
    assert run_present(net, x, torch.zeros(3, dtype=torch.bool)) is None


def test_l2_tied_penalty_matches_pairwise_formula() -> None:
    torch.manual_seed(0)
    br = Branches(["a", "b"], _Count, "l2_tied")
    assert br.tie_penalty().item() == 0.0
    assert torch.equal(br.nets["a"].conv.weight, br.nets["b"].conv.weight)
    with torch.no_grad():
        br.nets["b"].conv.weight.add_(0.5)
        br.nets["b"].conv.bias.sub_(1.0)
    # For two branches, sum_i ||theta_i - mean||^2 = ||theta_a - theta_b||^2 / 2.
    diff = nn.utils.parameters_to_vector(br.nets["a"].parameters()) - nn.utils.parameters_to_vector(
        br.nets["b"].parameters()
    )
    assert br.tie_penalty().item() == pytest.approx(diff.pow(2).sum().item() / 2)
    assert br.tie_penalty().item() == pytest.approx((2 * 0.25 + 2 * 1.0) / 2)


def test_registries_refuse_duplicates() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("x")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(2)
    with pytest.raises(ValueError, match="already registered"):
        INTEGRATIONS.register("mid")(object)
    with pytest.raises(ValueError, match="already registered"):
        FUSIONS.register("concat")(object)
    with pytest.raises(ConfigError, match=r"valid choices: \['concat', 'mean', 'subtract'\]"):
        FUSIONS.get("sum")


BASE = {"backbone": "compact", "sequences": SEQS, "slices": 5}

INVALID = [
    ({"integration": "input", "sharing": "shared"}, r"model\.sharing='shared' does not apply to integration='input'.*default 'independent'.*\['mid', 'end'\]"),
    ({"integration": "input", "fusion": "mean"}, r"model\.fusion='mean' does not apply to integration='input'.*\['mid'\]"),
    ({"integration": "end", "fusion": "subtract", "sharing": "shared"}, r"model\.fusion='subtract' does not apply to integration='end'"),
    ({"integration": "end", "integration_point": "layer2"}, r"model\.integration_point='layer2' does not apply to integration='end'"),
    ({"integration": "input", "integration_point": "stem"}, r"model\.integration_point='stem' does not apply"),
    ({"integration": "mid", "fusion": "subtract", "sharing": "independent"}, r"model\.sharing='independent' cannot be used with fusion='subtract'.*\['shared'\]"),
    ({"integration": "mid", "fusion": "subtract", "sharing": "l2_tied"}, r"model\.sharing='l2_tied' cannot be used with fusion='subtract'"),
    ({"integration": "mid", "fusion": "subtract", "sharing": "shared", "sequences": ["t1_gre_post", "t1_fse_post", "flair"]}, r"model\.fusion='subtract' needs a post/pre-contrast pair.*t1_fse_post"),
    ({"integration": "mid", "fusion": "sum"}, r"\bfusion.*'concat', 'mean' or 'subtract'"),
    ({"integration": "late"}, r"\bintegration.*'input', 'mid' or 'end'"),
    ({"integration": "mid", "integration_point": "layer5"}, r"\bintegration_point.*'stem'"),
    ({"integration": "mid", "sharing": "tied"}, r"\bsharing.*'l2_tied'"),
    ({"backbone": "vgg16"}, r"\bbackbone.*'resnet50', 'resnet101', 'compact' or 'tiny'"),
    ({"fusoin": "mean"}, r"\bfusoin: unknown field \(did you mean 'fusion'\?\)"),
    ({"sequences": None}, r"model\.sequences: not set"),
    ({"slices": None}, r"model\.slices: not set"),
    ({"sequences": ["bravo", "flare"]}, r"unknown pulse sequence 'flare'"),
]


@pytest.mark.parametrize(("overrides", "message"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_configuration_fails_at_build_time(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model({**BASE, **overrides})


def test_model_config_object_accepted_and_aliases_canonicalised() -> None:
    spec = resolve_spec(ModelConfig(integration="mid", sharing="shared", fusion="subtract", backbone="compact", sequences=["bravo", "cube_pre", "cube_post", "flair"], slices=5))
    assert spec.sequences == tuple(SEQS)
    assert spec.integration_point == "layer4" and spec.slices == 5


def test_a_model_without_a_planned_spacing_describes_its_geometry() -> None:
    """A config of the spacing geometry whose spacing was never planned (a model logged by
    hand) still describes itself instead of failing on the missing number."""
    from seqablate.config import TrialConfig
    from seqablate.models import build_model
    from seqablate.models.deployed import DeployedModel

    cfg = TrialConfig().model_dump(mode="json")
    assert cfg["data"]["geometry"] == "spacing" and cfg["data"]["spacing_mm"] is None
    model = build_model({"integration": "input", "backbone": "tiny", "sequences": ["t1_gre_post", "flair"], "slices": 3}, seed=0)
    text = DeployedModel(model, config=cfg).describe_geometry()
    assert "planned from the cohort it is applied to" in text
    cfg["data"].update(spacing_mm=1.5, slice_mm=3.0)
    assert DeployedModel(model, config=cfg).describe_geometry().startswith("resampled to 1.5 x 1.5 x 3 mm")
