"""Schedules, sampler, losses, evaluation conditions, lesion table, grid round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqablate.config import TrainConfig, TrialConfig
from seqablate.evaluation.evaluate import evaluation_conditions
from seqablate.evaluation.predict import _to_input_grid, lesion_table
from seqablate.trainables.losses import segmentation_loss, soft_dice_loss
from seqablate.trainables.sampling import DistributedWeightedSampler
from seqablate.trainables.schedule import lr_factor


def test_lr_factor_warmup_then_cosine_and_poly() -> None:
    cfg = TrainConfig(steps=12, warmup_steps=2, schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.5)  # (0 + 1) / 2
    assert lr_factor(1, cfg) == pytest.approx(1.0)
    assert lr_factor(2, cfg) == pytest.approx(1.0)  # t = 0
    assert lr_factor(7, cfg) == pytest.approx(0.5)  # t = 5/10 -> (1 + cos(pi/2)) / 2
    assert lr_factor(12, cfg) == pytest.approx(0.0)
    poly = TrainConfig(steps=10, schedule="poly")
    assert lr_factor(5, poly) == pytest.approx(0.5**0.9)
    assert lr_factor(3, TrainConfig(steps=10, schedule="constant")) == 1.0


def test_sampler_oversamples_by_weight_and_ranks_differ() -> None:
    w = np.array([10.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # slice 0 holds lesion: 10 / 15 of draws
    draws = np.array(list(_take(DistributedWeightedSampler(w, rank=0, seed=3), 30000)))
    assert np.mean(draws == 0) == pytest.approx(10 / 15, abs=0.01)
    other = list(_take(DistributedWeightedSampler(w, rank=1, seed=3), 200))
    same = list(_take(DistributedWeightedSampler(w, rank=0, seed=3), 200))
    assert same == list(draws[:200])  # reproducible
    assert other != same  # each rank its own stream
    resumed = list(_take(DistributedWeightedSampler(w, rank=0, seed=3, start=100), 200))
    assert resumed != same  # a resumed run does not replay step 0's batches
    with pytest.raises(ValueError, match="non-negative"):
        DistributedWeightedSampler(np.array([1.0, -1.0]))


def _take(it, n):  # noqa: ANN001, ANN202
    for i, x in enumerate(it):
        if i == n:
            return
        yield x


def test_losses_by_hand() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert float(segmentation_loss(logits, target)) == pytest.approx(math.log(2))
    # soft Dice: 1 - (2 * 0.5 + 1) / (2.0 + 1 + 1) = 0.5
    assert float(soft_dice_loss(logits, target)) == pytest.approx(0.5)
    assert float(segmentation_loss(logits, target, dice_weight=2.0)) == pytest.approx(math.log(2) + 1.0)


def test_evaluation_conditions_full_first_no_duplicates() -> None:
    cfg = TrialConfig()
    names = [n for n, _ in evaluation_conditions(cfg)]
    assert names == ["full", "censor_t1_gre_post", "censor_t1_fse_pre", "censor_t1_fse_post", "censor_flair"]
    only = TrialConfig(eval={"each_sequence": False})
    assert evaluation_conditions(only) == [("full", ()), ("censor_t1_gre_post", ("t1_gre_post",))]
    subs = TrialConfig(data={"sequences": ["t1_gre_post", "flair"]}, eval={"each_sequence": False, "censor": [], "all_subsets": True})
    assert evaluation_conditions(subs) == [("full", ()), ("subset_t1_gre_post", ("flair",)), ("subset_flair", ("t1_gre_post",))]
    three = TrialConfig(data={"sequences": ["t1_gre_post", "t1_fse_pre", "flair"]},
                        eval={"each_sequence": False, "censor": [], "all_subsets": True})
    assert [n for n, _ in evaluation_conditions(three)][:4] == [
        "full", "subset_t1_gre_post-t1_fse_pre", "subset_t1_gre_post-flair", "subset_t1_fse_pre-flair"]


def test_lesion_table_by_hand() -> None:
    probs = np.zeros((6, 6, 6), np.float32)
    probs[1:3, 1:3, 1:3] = 0.8  # 8 voxels, centre voxel (1.5, 1.5, 1.5)
    probs[5, 5, 5] = 0.3  # 1 voxel
    probs[4, 0, 0] = 0.05  # below threshold: not a lesion
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [10.0, 0.0, -5.0]
    df = lesion_table(probs, affine, threshold=0.1)
    assert len(df) == 2
    big = df.sort_values("voxels").iloc[-1]
    assert (big.x_mm, big.y_mm, big.z_mm) == pytest.approx((13.0, 3.0, -0.5))
    assert big.volume_mm3 == pytest.approx(8 * 12.0) and big.score == pytest.approx(0.8)
    assert lesion_table(np.zeros((3, 3, 3), np.float32), affine, 0.1).empty


def test_to_input_grid_undoes_reorientation() -> None:
    import nibabel as nib

    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    las = np.diag([-1.0, 1.0, 1.0, 1.0])  # file stored L->R flipped
    ras = nib.as_closest_canonical(nib.Nifti1Image(data, las))
    back = _to_input_grid(np.asarray(ras.dataobj), las)
    np.testing.assert_array_equal(back, data)
