"""Sequence dropout: the paper's 32/42/21/4.7/0 % distribution, uniform subsets, p = 0 rules,
scaling S_total / S_present, own RNG, and one rule shared by training and inference."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from seqablate.data import SequenceDropout, apply_presence, censor, keep_vector, presence_weights
from seqablate.sequences import PAPER_SEQUENCES

SEQS = PAPER_SEQUENCES


def _sample(present=(True, True, True, True), k=3):
    img = torch.ones(4, k, 2, 2) * torch.arange(1, 5, dtype=torch.float32)[:, None, None, None]
    img = img * torch.tensor(present, dtype=torch.float32)[:, None, None, None]
    return {"image": img, "present": torch.tensor(present), "mask": torch.zeros(2, 2, dtype=torch.uint8), "patient": "p", "slice": 0}


def _expected_bernoulli(p: float, s: int) -> list[float]:
    """Binomial counts of dropped sequences, with the all-dropped mass moved to none dropped."""
    probs = [math.comb(s, k) * p**k * (1 - p) ** (s - k) for k in range(s + 1)]
    probs[0] += probs[s]
    probs[s] = 0.0
    return probs


def test_bernoulli_distribution_matches_paper():
    expect = _expected_bernoulli(0.25, 4)
    np.testing.assert_allclose(expect, [0.3203, 0.4219, 0.2109, 0.0469, 0.0], atol=5e-4)  # paper IV-F
    drop = SequenceDropout(0.25, seed=0)
    n = 20000
    keeps = np.stack([drop.draw(np.ones(4, bool)) for _ in range(n)])
    counts = Counter((~keeps).sum(axis=1).tolist())
    freq = [counts[k] / n for k in range(5)]
    assert counts[4] == 0
    np.testing.assert_allclose(freq, expect, atol=0.01)  # ~3 standard errors
    # the paper: 11 % chance of only BRAVO dropped = 0.25 * 0.75^3
    only_bravo = (keeps == [False, True, True, True]).all(axis=1).mean()
    assert only_bravo == pytest.approx(0.25 * 0.75**3, abs=0.01)


def test_bernoulli_with_a_sequence_missing_on_disk():
    drop = SequenceDropout(0.5, seed=1)
    present = np.array([True, False, True, True])
    n = 10000
    keeps = [drop.draw(present) for _ in range(n)]
    assert not any(k[1] for k in keeps)  # never resurrected
    counts = Counter(int(present.sum() - k.sum()) for k in keeps)
    np.testing.assert_allclose([counts[k] / n for k in range(4)], _expected_bernoulli(0.5, 3), atol=0.015)


def test_uniform_mode_subsets_equally_likely():
    drop = SequenceDropout(mode="uniform", seed=2)
    n = 14000
    present = np.array([True, True, False, True])
    counts = Counter(tuple(drop.draw(present).tolist()) for _ in range(n))
    assert len(counts) == 7  # 2^3 - 1 non-empty subsets of the three present sequences
    assert all(not k[2] for k in counts)
    for c in counts.values():
        assert c / n == pytest.approx(1 / 7, abs=0.012)


def test_p0_full_sample_unchanged():
    s = _sample()
    out = SequenceDropout(0.0, seed=0)(s)
    assert torch.equal(out["image"], s["image"]) and torch.equal(out["present"], s["present"])
    assert out is not s


def test_p0_missing_on_disk_only_scaled():
    s = _sample(present=(True, False, True, True))
    out = SequenceDropout(0.0, seed=0)(s)
    np.testing.assert_allclose(out["image"][:, 0, 0, 0].numpy(), [4 / 3 * 1, 0, 4 / 3 * 3, 4 / 3 * 4], rtol=1e-6)
    assert out["present"].tolist() == [True, False, True, True]


def test_p1_never_drops_everything():
    s = _sample()
    out = SequenceDropout(1.0, seed=0)(s)
    assert torch.equal(out["image"], s["image"])


def test_scaling_after_drop():
    drop = SequenceDropout(0.5, seed=3)
    for _ in range(50):
        out = drop(_sample())
        kept = out["present"].numpy()
        assert 1 <= kept.sum() <= 4
        vals = out["image"][:, 0, 0, 0].numpy()
        np.testing.assert_allclose(vals, np.where(kept, np.arange(1, 5) * 4 / kept.sum(), 0), rtol=1e-6)


def test_own_generator_not_global():
    state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    a = [SequenceDropout(0.25, seed=7).draw(np.ones(4, bool)).tolist() for _ in range(1)]
    d1, d2 = SequenceDropout(0.25, seed=7), SequenceDropout(0.25, seed=7)
    seq1 = [d1.draw(np.ones(4, bool)).tolist() for _ in range(50)]
    seq2 = [d2.draw(np.ones(4, bool)).tolist() for _ in range(50)]
    assert seq1 == seq2 and seq1[0] == a[0]
    np.random.seed(123)  # reseeding the global RNG does not affect the transform
    assert [d1.draw(np.ones(4, bool)).tolist() for _ in range(5)] == [d2.draw(np.ones(4, bool)).tolist() for _ in range(5)]
    np.random.set_state(state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_apply_presence_batched_equals_per_sample_rule():
    samples = [_sample(), _sample(present=(True, False, True, True)), _sample(present=(False, False, False, True))]
    image = torch.stack([s["image"] for s in samples])
    present = torch.stack([s["present"] for s in samples])
    keep = torch.tensor([[True, False, True, True], [True, True, False, True], [True, True, True, True]])
    out, new_present = apply_presence(image, present, keep)
    assert new_present.tolist() == [[True, False, True, True], [True, False, False, True], [False, False, False, True]]
    # by hand: row 0 keeps 3 of 4 -> 4/3; row 1 keeps 2 -> 2; row 2 keeps 1 -> 4
    np.testing.assert_allclose(out[:, :, 0, 0, 0].numpy(), [[4 / 3, 0, 4, 16 / 3], [2, 0, 0, 8], [0, 0, 0, 16]], rtol=1e-6)
    for i, s in enumerate(samples):  # the per-sample path gives the same numbers
        np.testing.assert_allclose(censor(s, [n for n, k in zip(SEQS, keep[i].tolist(), strict=True) if not k], SEQS)["image"].numpy(), out[i].numpy(), rtol=1e-6)


def test_apply_presence_keep_none_and_shape_check():
    s = _sample(present=(True, True, False, True))
    out, pres = apply_presence(s["image"][None], s["present"][None])
    np.testing.assert_allclose(out[0, :, 0, 0, 0].numpy(), [4 / 3, 8 / 3, 0, 16 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, S, K, H, W\]"):
        apply_presence(s["image"], s["present"])


def test_draw_batch_and_presence_weights():
    drop = SequenceDropout(0.25, seed=0)
    present = torch.tensor([[True] * 4, [True, False, True, True]])
    keep = drop.draw_batch(present)
    assert keep.shape == (2, 4) and keep.dtype == torch.bool and not keep[1, 1]
    np.testing.assert_allclose(presence_weights(np.array([True, False, True, True])), [4 / 3, 0, 4 / 3, 4 / 3], rtol=1e-6)
    assert not presence_weights(np.zeros(4, bool)).any()


def test_censor_bravo_like_the_paper():
    out = censor(_sample(), ["bravo"], SEQS)  # alias accepted
    assert out["present"].tolist() == [False, True, True, True]
    np.testing.assert_allclose(out["image"][:, 0, 0, 0].numpy(), [0, 8 / 3, 4, 16 / 3], rtol=1e-6)


def test_censor_errors():
    with pytest.raises(ValueError, match=r"cannot censor 't2'"):
        censor(_sample(), ["t2"], SEQS)
    with pytest.raises(ValueError, match=r"leaves patient p with no sequence"):
        censor(_sample(present=(True, False, False, False)), ["t1_gre_post"], SEQS)
    np.testing.assert_array_equal(keep_vector(["flair"], SEQS), [True, True, True, False])


def test_invalid_parameters():
    with pytest.raises(ValueError, match="p must be in"):
        SequenceDropout(1.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        SequenceDropout(0.2, mode="gaussian")
