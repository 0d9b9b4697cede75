"""2.5D slice datasets over cached patients, the lesion oversampling weights, patient splits.

A sample (DESIGN.md contract) is ``{"image": float32[S, K, H, W], "present": bool[S],
"mask": uint8[H, W], "patient": str, "slice": int}``: K neighbouring axial slices centred on
``slice`` for each of the study's S sequences, edge slices padded by repetition. A sequence
missing on disk is zeros with ``present`` False. Images are NOT yet scaled by
S_total / S_present: pass samples through :class:`~seqablate.data.dropout.SequenceDropout`
(p = 0 is fine) or batches through :func:`~seqablate.data.dropout.apply_presence`, the one
place that rule lives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from seqablate.data.cache import CachedPatient


def stack_indices(z: int | np.ndarray, n_slices: int, slices: int) -> np.ndarray:
    """Slice indices of the K-stacks centred on ``z`` (edges repeated): int64[..., K]."""
    if slices < 1 or slices % 2 == 0:
        raise ValueError(f"slices (K) must be odd and >= 1, got {slices}")
    r = slices // 2
    offsets = np.arange(-r, r + 1)
    return np.clip(np.asarray(z)[..., None] + offsets, 0, n_slices - 1)


class SliceDataset(Dataset):
    """Every axial slice of every patient as a 2.5D sample (index order: patient, then z).

    ``patients``: cached patients (all with the same ``sequences`` and H, W); ``slices``: K,
    odd; ``transform``: optional callable applied to each sample dict (e.g. SequenceDropout).
    Reads K slices per sequence straight from the memmaps: no volume is re-read.
    """

    def __init__(
        self,
        patients: Sequence[CachedPatient],
        slices: int = 5,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if slices < 1 or slices % 2 == 0:
            raise ValueError(f"slices (K) must be odd and >= 1, got {slices}")
        self.patients = list(patients)
        self.slices = slices
        self.transform = transform
        if self.patients:
            seqs = {p.sequences for p in self.patients}
            sizes = {tuple(p.image.shape[2:]) for p in self.patients}
            if len(seqs) > 1 or len(sizes) > 1:
                raise ValueError(f"patients differ in sequences {sorted(seqs)} or slice size {sorted(sizes)}")
        counts = np.array([p.n_slices for p in self.patients], dtype=np.int64)
        self._patient = np.repeat(np.arange(len(self.patients)), counts)
        self._z = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64)
        self._lesion = (
            np.concatenate([p.lesion_slices() for p in self.patients]) if self.patients else np.zeros(0, bool)
        )

    @property
    def sequences(self) -> tuple[str, ...]:
        return self.patients[0].sequences if self.patients else ()

    @property
    def lesion(self) -> np.ndarray:
        """bool[N]: which samples' centre slice contains lesion."""
        return self._lesion

    def index(self, i: int) -> tuple[int, int]:
        """(patient position, slice z) of sample ``i``."""
        return int(self._patient[i]), int(self._z[i])

    def __len__(self) -> int:
        return int(self._patient.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        p = self.patients[self._patient[i]]
        z = int(self._z[i])
        zs = stack_indices(z, p.n_slices, self.slices)
        # np.take on the memmap copies only the S*K needed slices (faster than fancy indexing).
        image = np.take(p.image, zs, axis=1).astype(np.float32, copy=False)
        if p.mask is not None:
            mask = np.array(p.mask[z], dtype=np.uint8)
        else:
            mask = np.zeros(p.image.shape[2:], dtype=np.uint8)
        sample = {
            "image": torch.from_numpy(image),
            "present": torch.from_numpy(np.array(p.present, dtype=bool)),
            "mask": torch.from_numpy(mask),
            "patient": p.patient_id,
            "slice": z,
        }
        return self.transform(sample) if self.transform is not None else sample


def slice_weights(dataset: SliceDataset, oversample: float = 10.0) -> np.ndarray:
    """float64[N] sampling weights: ``oversample`` for slices with lesion, 1 otherwise.

    Feed to ``torch.utils.data.WeightedRandomSampler(weights, num_samples, replacement=True)``.
    """
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    return np.where(dataset.lesion, float(oversample), 1.0).astype(np.float64)


@dataclass(frozen=True)
class Split:
    """Patient-level split: disjoint id tuples (each sorted)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def split_patients(
    ids: Sequence[str],
    *,
    val: int | None = 2,
    test_fraction: float = 0.25,
    seed: int = 0,
    folds: int = 1,
    fold: int | None = None,
    lesions: Mapping[str, int] | None = None,
    val_fraction: float = 0.15,
    val_min_lesions: int = 10,
) -> Split:
    """Split patient ids into train / val / test, reproducibly from ``seed``.

    ``folds == 1``: ``round(test_fraction * n)`` test patients; ``folds > 1``: the shuffled
    ids are cut into ``folds`` nearly equal parts and part ``fold`` is the test set (so every
    patient is tested exactly once over the folds). Validation patients come from the rest,
    in shuffled order: exactly ``val`` of them, or with ``val=None`` as many as it takes to
    hold at least ``val_fraction`` of all patients AND ``val_min_lesions`` lesions (counted in
    ``lesions``, id -> lesion count), but never more than half of the non-test patients
    (check :attr:`Split.val` against the target when the cohort is small). The result does
    not depend on the order of ``ids``. Raises ValueError if no training patient would remain.
    """
    uniq = sorted(set(ids))
    if len(uniq) != len(ids):
        dup = sorted({i for i in ids if list(ids).count(i) > 1})
        raise ValueError(f"duplicate patient ids {dup}")
    if (val is not None and val < 0) or not 0 <= test_fraction < 1:
        raise ValueError(f"need val >= 0 and 0 <= test_fraction < 1, got val={val}, test_fraction={test_fraction}")
    perm = [uniq[i] for i in np.random.default_rng(seed).permutation(len(uniq))]
    n = len(perm)
    if folds > 1:
        if fold is None or not 0 <= fold < folds:
            raise ValueError(f"fold must be in 0..{folds - 1} with folds={folds}, got {fold}")
        if n < folds:
            raise ValueError(f"cannot make {folds} folds from {n} patients")
        parts = np.array_split(np.arange(n), folds)
        test_idx = set(parts[fold].tolist())
        test = [perm[i] for i in sorted(test_idx)]
        rest = [perm[i] for i in range(n) if i not in test_idx]
    else:
        if fold not in (None, 0):
            raise ValueError(f"fold={fold} needs folds > 1")
        n_test = int(np.floor(test_fraction * n + 0.5))
        test, rest = perm[:n_test], perm[n_test:]
    if val is None:
        need_n = int(np.ceil(val_fraction * n))
        counts = dict(lesions or {})
        val, got = 0, 0
        while val < len(rest) // 2 and (val < need_n or got < val_min_lesions):
            got += int(counts.get(rest[val], 0))
            val += 1
    valid, train = rest[:val], rest[val:]
    if not train:
        raise ValueError(
            f"no training patient left: {n} patients, {len(test)} test, {len(valid)} validation "
            "(lower data.val_patients or data.test_fraction)"
        )
    return Split(train=tuple(sorted(train)), val=tuple(sorted(valid)), test=tuple(sorted(test)))


def patient_stacks(patient: CachedPatient, slices: int) -> np.ndarray:
    """All 2.5D stacks of one patient: float32[Z, S, K, H, W], for 3D inference.

    A read-only strided view over one edge-padded copy of the patient (one volume's worth of
    memory, not K times it): take a batch ``stacks[i:i + B]`` and ``np.ascontiguousarray``
    it to copy just that batch. Stack ``z`` equals ``SliceDataset``'s sample at ``z``.
    """
    if slices < 1 or slices % 2 == 0:
        raise ValueError(f"slices (K) must be odd and >= 1, got {slices}")
    r = slices // 2
    img = np.asarray(patient.image, dtype=np.float32)
    padded = np.concatenate([img[:, :1]] * r + [img] + [img[:, -1:]] * r, axis=1)  # [S, Z+2r, H, W]
    win = np.lib.stride_tricks.sliding_window_view(padded, slices, axis=1)  # [S, Z, H, W, K]
    return win.transpose(1, 0, 4, 2, 3)  # [Z, S, K, H, W]
