"""One stem convolution for many presence conditions: the shared stem and predict_conditions.

The shared path must give what running the whole network once per condition gives (up to
float32 summation order): checked against a float64 convolution of the weighted input by hand,
and against the per-condition path on tiny models, under per-subset and stored statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from seqablate.data.cache import CachedPatient
from seqablate.models import build_model
from seqablate.models.deployed import DeployedModel
from seqablate.models.inference import Predictor, predict_conditions
from seqablate.models.norm_stats import estimate_bn_stats, subset_key
from seqablate.models.stem import SharedStem
from seqablate.sequences import subsets

SEQS = ("t1_gre_post", "t1_fse_pre", "flair")


def _bn(c: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    bn.running_mean = torch.randn(c, generator=g)
    bn.running_var = torch.rand(c, generator=g) + 0.5
    bn.weight.data = torch.randn(c, generator=g)
    bn.bias.data = torch.randn(c, generator=g)
    return bn.eval()


@pytest.mark.parametrize("bias", [False, True])
def test_shared_stem_equals_the_convolution_of_the_weighted_input(bias: bool) -> None:
    s, k, c = 3, 2, 5
    torch.manual_seed(0)
    conv = nn.Conv2d(s * k, c, kernel_size=3, stride=2, padding=1, bias=bias)
    x = torch.randn(4, s, k, 12, 10)
    stem = SharedStem(conv, s, k)
    parts = stem.partials(x)
    assert parts.shape == (4, s * c, 6, 5)
    norms = {"batch": _bn(c, 1), "group": nn.GroupNorm(1, c).eval()}
    for weights in ([1.0, 1.0, 1.0], [1.5, 0.0, 1.5], [0.0, 3.0, 0.0]):
        w = torch.tensor(weights)
        # by hand, in float64: the convolution of the weighted input, then the normalisation
        xw = (x.double() * w.double()[None, :, None, None, None]).flatten(1, 2)
        ref = F.conv2d(xw, conv.weight.double(), None if conv.bias is None else conv.bias.double(),
                       conv.stride, conv.padding)
        for name, norm in norms.items():
            want = norm.double()(ref).float()
            norm.float()
            got = stem.combine(parts, w, norm)
            torch.testing.assert_close(got.contiguous(), want, rtol=1e-5, atol=1e-5, msg=name)


def test_shared_stem_refuses_what_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="S\\*K = 6 channels"):
        SharedStem(nn.Conv2d(5, 4, 3), 3, 2)
    with pytest.raises(ValueError, match="groups"):
        SharedStem(nn.Conv2d(6, 4, 3, groups=2), 3, 2)
    stem = SharedStem(nn.Conv2d(6, 4, 3), 3, 2)
    parts = stem.partials(torch.randn(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="at least one present sequence"):
        stem.combine(parts, torch.zeros(3), nn.Identity())
    with pytest.raises(ValueError, match="S=3, K=2"):
        stem.partials(torch.randn(1, 2, 2, 8, 8))


def _patient(pid: str, present: list[bool], seed: int) -> CachedPatient:
    rng = np.random.default_rng(seed)
    image = rng.random((len(SEQS), 5, 24, 24)).astype(np.float32) * np.asarray(present, np.float32)[:, None, None, None]
    return CachedPatient(pid, image, np.asarray(present), None, (1.0, 1.0, 1.0), (24, 24, 5), np.eye(4), SEQS)


def _stats(model: nn.Module) -> dict:
    """Per-subset statistics of every subset, from random batches that differ by subset."""
    out = {}
    for sub in subsets(SEQS):
        keep = torch.tensor([q in sub for q in SEQS])
        g = torch.Generator().manual_seed(len(sub))
        batches = []
        for _ in range(2):
            x = torch.rand(4, len(SEQS), 3, 24, 24, generator=g) + torch.arange(len(SEQS)).view(1, -1, 1, 1, 1)
            batches.append((x * keep.view(1, -1, 1, 1, 1) * len(SEQS) / len(sub), keep.expand(4, -1)))
        out[subset_key(keep.tolist(), SEQS)] = estimate_bn_stats(model, batches)
    return out


@pytest.mark.parametrize("fold_bn", [True, False])
def test_predict_conditions_matches_one_condition_at_a_time(fold_bn: bool) -> None:
    model = build_model({"integration": "input", "backbone": "tiny", "sequences": list(SEQS), "slices": 3}, seed=0).eval()
    stats = _stats(model)
    own = DeployedModel(model, norm_stats=stats, policy="per_subset")
    stored = DeployedModel(model, norm_stats=stats, policy="stored")
    censors = [(), ("flair",), ("t1_gre_post", "t1_fse_pre"), ("t1_fse_pre",), ("flair",)]  # one repeated
    for patient in (_patient("all", [True, True, True], 0), _patient("no_gre", [False, True, True], 1)):
        shared = [Predictor(own, fold_bn=fold_bn, batch_size=2), Predictor(stored, fold_bn=fold_bn, batch_size=2)]
        plain = [Predictor(own, fold_bn=fold_bn, share_stem=False), Predictor(stored, fold_bn=fold_bn, share_stem=False)]
        assert all(p.share_stem for p in shared)
        jobs = [(i, c) for i in range(2) for c in censors]
        got = predict_conditions(patient, [(shared[i], c) for i, c in jobs])
        want = [plain[i].predict_cached(patient, c) for i, c in jobs]
        for (i, c), g, w in zip(jobs, got, want, strict=True):
            assert g.shape == (5, 24, 24)
            np.testing.assert_allclose(g, w, rtol=0, atol=2e-5, err_msg=f"policy {i}, censored {c}")
        # the statistics each job used are recorded as the per-condition path records them
        assert [u for p in shared for u in p.used] == [u for p in plain for u in p.used]
        # the repeated condition is computed once and returned as its own array
        assert np.array_equal(got[1], got[4]) and got[1] is not got[4]
    # and the per-subset statistics made a difference (the test can tell the policies apart)
    p = _patient("all", [True, True, True], 0)
    a = Predictor(own).predict_cached(p, ("flair",))
    b = Predictor(stored).predict_cached(p, ("flair",))
    assert np.abs(a - b).max() > 1e-3


def test_branch_models_predict_every_condition_without_a_shared_stem() -> None:
    model = build_model({"integration": "mid", "integration_point": "layer2", "sharing": "shared", "backbone": "tiny",
                         "sequences": list(SEQS), "slices": 3}, seed=0).eval()
    pred = Predictor(model, batch_size=3)
    assert not pred.share_stem
    patient = _patient("p", [True, True, True], 2)
    censors = [(), ("flair",), ("t1_gre_post",)]
    got = pred.predict_many(patient, censors)
    for c, g in zip(censors, got, strict=True):
        np.testing.assert_allclose(g, Predictor(model, share_stem=False).predict_cached(patient, c), atol=1e-6)


def test_predict_conditions_refuses_jobs_it_cannot_run() -> None:
    model = build_model({"integration": "input", "backbone": "tiny", "sequences": list(SEQS), "slices": 3}, seed=0)
    pred = Predictor(model)
    only_flair = _patient("p_flair", [False, False, True], 3)
    with pytest.raises(ValueError, match="p_flair: no sequence left"):
        predict_conditions(only_flair, [(pred, ()), (pred, ("flair",))])
    other = build_model({"integration": "input", "backbone": "tiny", "sequences": list(SEQS), "slices": 1}, seed=0)
    with pytest.raises(ValueError, match="same sequences, slices"):
        predict_conditions(_patient("p", [True, True, True], 4), [(pred, ()), (Predictor(other), ())])
    assert predict_conditions(only_flair, []) == []
