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

    ``patients``: cached patients (all with the same ``sequences``); ``slices``: K, odd;
    ``transform``: optional callable applied to each sample dict (e.g. SequenceDropout).
    ``patch``: None = whole slices (every patient's slices must then share H, W: the
    ``resize`` geometry); P = a P x P patch of each sample (the ``spacing`` geometry, whose
    slices differ in size): on a slice with lesion the patch holds a lesion pixel drawn at
    random (so lesions are oversampled as the slices are), elsewhere its centre is drawn inside
    the head's box; a slice smaller than P is placed at a random offset and padded with zeros.
    ``seed``: the patch stream (its own ``numpy.random.Generator`` in :attr:`rng`).
    Reads K slices per sequence straight from the memmaps: no volume is re-read.
    """

    def __init__(
        self,
        patients: Sequence[CachedPatient],
        slices: int = 5,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        patch: int | None = None,
        seed: int | None = None,
    ) -> None:
        if slices < 1 or slices % 2 == 0:
            raise ValueError(f"slices (K) must be odd and >= 1, got {slices}")
        if patch is not None and patch < 1:
            raise ValueError(f"patch must be >= 1 pixel, got {patch}")
        self.patients = list(patients)
        self.slices = slices
        self.transform = transform
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        if self.patients:
            seqs = {p.sequences for p in self.patients}
            sizes = {tuple(p.image.shape[2:]) for p in self.patients}
            if len(seqs) > 1 or (patch is None and len(sizes) > 1):
                raise ValueError(f"patients differ in sequences {sorted(seqs)} or slice size {sorted(sizes)} "
                                 "(slices of different sizes need a patch size)")
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
        if p.mask is not None:
            mask = np.array(p.mask[z], dtype=np.uint8)
        else:
            mask = np.zeros(p.image.shape[2:], dtype=np.uint8)
        if self.patch is not None:
            # The window first, so only the patch's pixels are read from the memmap.
            top, left = patch_window(mask, self.patch, p.head_box, self.rng)
            image, mask = cut_window(p.image, mask, zs, top, left, self.patch)
        else:
            image = np.take(p.image, zs, axis=1).astype(np.float32, copy=False)
        sample = {
            "image": torch.from_numpy(image),
            "present": torch.from_numpy(np.array(p.present, dtype=bool)),
            "mask": torch.from_numpy(mask),
            "patient": p.patient_id,
            "slice": z,
        }
        return self.transform(sample) if self.transform is not None else sample


def _start(n: int, size: int, lo: int, hi: int, focus: int | None, rng: np.random.Generator) -> int:
    """First pixel of a ``size`` window along an axis of ``n`` pixels (negative: the window
    starts before the slice, which is then padded): see :func:`crop_patch`."""
    if n <= size:
        return -int(rng.integers(0, size - n + 1))
    if focus is not None:
        return int(rng.integers(max(0, focus - size + 1), min(n - size, focus) + 1))
    centre = int(rng.integers(lo, max(lo + 1, hi)))
    return int(np.clip(centre - size // 2, 0, n - size))


def patch_window(mask: np.ndarray, size: int, box: Sequence[int] | None, rng: np.random.Generator) -> tuple[int, int]:
    """(top, left) of a ``size`` x ``size`` window on a slice whose lesion mask is ``mask``
    uint8[H, W] (negative where the window starts before the slice); see :func:`crop_patch`."""
    h, w = mask.shape
    h0, h1, w0, w1 = box if box is not None else (0, h, 0, w)
    focus_h = focus_w = None
    lesion = np.flatnonzero(mask)
    if lesion.size:
        focus_h, focus_w = divmod(int(lesion[rng.integers(lesion.size)]), w)
    return _start(h, size, h0, h1, focus_h, rng), _start(w, size, w0, w1, focus_w, rng)


def cut_window(
    image: np.ndarray, mask: np.ndarray, zs: np.ndarray, top: int, left: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The window at (``top``, ``left``) of slices ``zs`` of ``image`` [S, Z, H, W] (a memmap:
    only the window's pixels are read) and of ``mask`` [H, W]: (float32[S, K, P, P],
    uint8[P, P]), zeros where the window lies outside the slice."""
    h, w = mask.shape
    out_img = np.zeros((image.shape[0], len(zs), size, size), dtype=np.float32)
    out_mask = np.zeros((size, size), dtype=np.uint8)
    # The window [top, top + size) meets the slice in [a, b); it lands at [a - top, b - top).
    a_h, b_h = max(top, 0), min(top + size, h)
    a_w, b_w = max(left, 0), min(left + size, w)
    out_img[..., a_h - top : b_h - top, a_w - left : b_w - left] = np.take(image[..., a_h:b_h, a_w:b_w], zs, axis=1)
    out_mask[a_h - top : b_h - top, a_w - left : b_w - left] = mask[a_h:b_h, a_w:b_w]
    return out_img, out_mask


def crop_patch(
    image: np.ndarray, mask: np.ndarray, size: int, box: Sequence[int] | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` patch of one sample: (float32[S, K, P, P], uint8[P, P]).

    ``image``: float32[S, K, H, W]; ``mask``: uint8[H, W]; ``box``: (h0, h1, w0, w1), the
    head's in-plane box (None: the whole slice). Where ``mask`` has lesion, the patch holds a
    lesion pixel drawn uniformly (at a uniform position inside the patch); otherwise the
    patch's centre is uniform inside ``box``. Along an axis shorter than ``size`` the slice
    sits at a uniform offset and the rest is zeros (the background, and the value of an absent
    sequence).
    """
    top, left = patch_window(mask, size, box, rng)
    return cut_window(image, mask, np.arange(image.shape[1]), top, left, size)


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
