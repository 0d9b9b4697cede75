"""SliceDataset contract, edge padding, lesion weights, patient splits, patient_stacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqablate.data import (
    CachedPatient,
    SliceDataset,
    patient_stacks,
    slice_weights,
    split_patients,
)

S, Z, H = 3, 6, 4


def _patient(pid: str, present=(True, True, True), labelled=True, lesion_z=(2,)) -> CachedPatient:
    """image[s, z] is the constant 100*s + z (zeros where absent), so stacks are readable."""
    img = np.zeros((S, Z, H, H), np.float32)
    for s in range(S):
        if present[s]:
            for z in range(Z):
                img[s, z] = 100 * s + z
    mask = None
    if labelled:
        mask = np.zeros((Z, H, H), np.uint8)
        for z in lesion_z:
            mask[z, 1, 1] = 1
    return CachedPatient(pid, img, np.array(present), mask, (1.0, 1.0, 2.0), (H, H, Z), np.eye(4), ("t1_gre_post", "t1_fse_pre", "flair"))


def test_sample_contract_and_order():
    ds = SliceDataset([_patient("a"), _patient("b")], slices=3)
    assert len(ds) == 2 * Z
    s = ds[Z + 2]
    assert s["patient"] == "b" and s["slice"] == 2
    assert s["image"].dtype == torch.float32 and s["image"].shape == (S, 3, H, H)
    assert s["present"].dtype == torch.bool and s["present"].tolist() == [True, True, True]
    assert s["mask"].dtype == torch.uint8 and s["mask"].shape == (H, H) and int(s["mask"].sum()) == 1
    # centre slice 2 with K=3 -> slices 1, 2, 3 of each sequence
    np.testing.assert_array_equal(s["image"][:, :, 0, 0].numpy(), [[1, 2, 3], [101, 102, 103], [201, 202, 203]])
    assert ds[-1]["slice"] == Z - 1
    with pytest.raises(IndexError):
        ds[2 * Z]


@pytest.mark.parametrize("z,expect", [(0, [0, 0, 0, 1, 2]), (1, [0, 0, 1, 2, 3]), (Z - 1, [3, 4, 5, 5, 5])])
def test_edges_padded_by_repetition(z, expect):
    s = SliceDataset([_patient("a")], slices=5)[z]
    np.testing.assert_array_equal(s["image"][0, :, 0, 0].numpy(), expect)


def test_missing_sequence_and_unlabelled():
    s = SliceDataset([_patient("a", present=(True, False, True), labelled=False)], slices=1)[3]
    assert s["present"].tolist() == [True, False, True]
    assert not s["image"][1].any() and s["image"][2, 0, 0, 0] == 203
    assert not s["mask"].any()


def test_even_k_rejected():
    with pytest.raises(ValueError, match="odd"):
        SliceDataset([_patient("a")], slices=4)


def test_slice_weights():
    ds = SliceDataset([_patient("a", lesion_z=(0, 5)), _patient("b", labelled=False)], slices=3)
    w = slice_weights(ds)
    expect = np.ones(2 * Z)
    expect[[0, 5]] = 10.0
    np.testing.assert_array_equal(w, expect)
    np.testing.assert_array_equal(slice_weights(ds, oversample=3.0)[[0, 1]], [3.0, 1.0])
    # Lesion slices drawn with probability 10/(10+1) per pair: 2*10 / (2*10 + 10) = 2/3 overall.
    sampler = torch.utils.data.WeightedRandomSampler(w, 30000, generator=torch.Generator().manual_seed(0))
    frac = np.isin(np.array(list(sampler)), [0, 5]).mean()
    assert frac == pytest.approx(20 / 30, abs=0.01)


def test_patient_stacks_equal_dataset_samples():
    p = _patient("a", present=(True, False, True))
    ds = SliceDataset([p], slices=5)
    stacks = patient_stacks(p, 5)
    assert stacks.shape == (Z, S, 5, H, H)
    for z in range(Z):
        np.testing.assert_array_equal(stacks[z], ds[z]["image"].numpy())


IDS = [f"p{i:02d}" for i in range(20)]


def test_split_disjoint_sizes_reproducible():
    sp = split_patients(IDS, val=2, test_fraction=0.25, seed=1)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (13, 2, 5)
    assert set(sp.train) | set(sp.val) | set(sp.test) == set(IDS)
    assert not (set(sp.train) & set(sp.test)) and not (set(sp.val) & set(sp.test)) and not (set(sp.train) & set(sp.val))
    assert split_patients(list(reversed(IDS)), val=2, seed=1) == sp  # input order does not matter
    assert split_patients(IDS, val=2, seed=2) != sp


def test_k_folds_test_each_patient_once():
    tested = []
    for fold in range(4):
        sp = split_patients(IDS, val=1, seed=0, folds=4, fold=fold)
        assert len(sp.test) == 5 and len(sp.val) == 1 and len(sp.train) == 14
        tested += sp.test
    assert sorted(tested) == IDS


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"folds": 3}, "fold must be in 0..2"),
        ({"folds": 3, "fold": 3}, "fold must be in 0..2"),
        ({"val": 20}, "no training patient left"),
        ({"fold": 1}, "needs folds > 1"),
    ],
)
def test_split_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        split_patients(IDS, **kw)


def test_split_duplicate_ids():
    with pytest.raises(ValueError, match=r"duplicate patient ids \['a'\]"):
        split_patients(["a", "a", "b"])


def test_validation_split_reaches_its_lesion_and_fraction_targets():
    from seqablate.data.dataset import split_patients

    ids = [f"p{i:02d}" for i in range(40)]
    lesions = {p: (1 if i % 4 else 5) for i, p in enumerate(ids)}
    s = split_patients(ids, val=None, test_fraction=0.5, seed=3, lesions=lesions, val_fraction=0.15, val_min_lesions=10)
    assert len(s.test) == 20
    assert len(s.val) >= 6 and sum(lesions[p] for p in s.val) >= 10  # 15 % of 40 = 6 patients
    # the last patient added was needed: one fewer misses a target
    rest = [p for p in s.val]
    assert len(rest) == 6 or sum(lesions[p] for p in rest) - max(lesions[p] for p in rest) < 10
    # small cohorts: never more than half of the non-test patients
    small = split_patients(ids[:6], val=None, test_fraction=0.34, seed=0, lesions={p: 1 for p in ids}, val_min_lesions=10)
    assert len(small.val) == 2 and len(small.train) == 2
    # an explicit count wins
    assert len(split_patients(ids, val=3, test_fraction=0.5, seed=3).val) == 3
