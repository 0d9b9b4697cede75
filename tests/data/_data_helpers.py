"""Helpers shared by the data tests (tiny hand-made volumes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (12, 10, 6)  # X, Y, Z of the hand-made cohorts
AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


def write_nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def volume(seed: int, shape: Sequence[int] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)


def lesion_mask(shape: Sequence[int] = SHAPE, value: int = 1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[2:5, 2:5, 1:3] = value  # one 3x3x2 lesion
    m[8:10, 6:8, 4] = value  # a second one, far away
    return m
