"""Preprocessing of one patient: [X, Y, Z] RAS volumes -> [Z, H, W] slices.

Per sequence, by ``data.intensity``: ``minmax_clahe`` (the paper's) = robust volume-wise
rescale to [0, 1] (min .. 99.5th percentile, so a few hot voxels do not squash the contrast),
in-plane resize of every axial slice to H = W = ``image_size`` (linear, anti-aliased when
shrinking; masks nearest-neighbour), then CLAHE per slice (``skimage.exposure.
equalize_adapthist``); ``minmax`` the same without CLAHE; ``zscore`` = zero mean and unit
variance over a head mask computed from the volume (nnU-Net's MRI scheme), background 0, then
the resize.

Axis convention: slice ``z`` of the output is ``volume[:, :, z]`` resized, i.e. output
``[z, h, w]`` corresponds to RAS ``[x, y, z]`` with ``h`` along X and ``w`` along Y.
:func:`to_original_grid` undoes the resize and the transpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from seqablate.data.volumes import Volume

#: Bump when the preprocessing changes in a way that invalidates cached arrays.
PREPROCESS_VERSION = 3

#: Intensity normalisations (``data.intensity``).
INTENSITIES = ("minmax_clahe", "minmax", "zscore")


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that determines the preprocessed arrays (part of the cache key)."""

    image_size: int = 256  # H = W after resize
    intensity: str = "minmax_clahe"  # one of INTENSITIES
    clahe_clip: float = 0.01  # equalize_adapthist clip_limit (skimage default)
    upper_percentile: float = 99.5  # robust maximum of the volume-wise rescale

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITIES:
            raise ValueError(f"data.intensity: unknown value {self.intensity!r}; valid choices: {list(INTENSITIES)}")

    @property
    def clahe(self) -> bool:
        return self.intensity == "minmax_clahe"

    def key(self) -> dict[str, object]:
        return {"version": PREPROCESS_VERSION, **asdict(self)}


def head_mask(volume: np.ndarray) -> np.ndarray:
    """bool[X, Y, Z]: the head, from the volume itself (no atlas, no other sequence).

    Otsu's threshold over the voxels above the minimum separates tissue from the background
    noise; the largest 26-connected component is kept and its holes (dark CSF, necrotic
    cores) filled, in 3D and slice by slice. A constant volume gives an empty mask.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    v = np.asarray(volume, dtype=np.float32)
    above = v[v > v.min()]
    if above.size == 0 or float(above.max()) == float(above.min()):
        return np.zeros(v.shape, dtype=bool)
    m = v > threshold_otsu(above)
    labels, n = ndimage.label(m, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return m
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    m = labels == int(np.argmax(sizes))
    m = ndimage.binary_fill_holes(m)
    for z in range(m.shape[2]):
        m[:, :, z] = ndimage.binary_fill_holes(m[:, :, z])
    return m


def zscore(volume: np.ndarray) -> np.ndarray:
    """float32 copy of ``volume``: (v - mean) / std over :func:`head_mask`, background 0.

    A volume whose head mask is empty or constant becomes all zeros (the absent value).
    """
    v = np.asarray(volume, dtype=np.float32)
    mask = head_mask(v)
    if not mask.any():
        return np.zeros_like(v)
    inside = v[mask].astype(np.float64)
    std = float(inside.std())
    if std <= 0:
        return np.zeros_like(v)
    out = ((v - inside.mean()) / std).astype(np.float32)
    out[~mask] = 0.0
    return out


def rescale01(volume: np.ndarray, upper_percentile: float = 99.5) -> np.ndarray:
    """float32 copy of ``volume`` mapped to [0, 1]: min -> 0, upper percentile -> 1, clipped.

    The percentile is taken over voxels above the minimum (the background would otherwise
    dominate). A constant volume becomes all zeros.
    """
    v = np.asarray(volume, dtype=np.float32)
    lo = float(v.min())
    above = v[v > lo]
    if above.size == 0:
        return np.zeros_like(v)
    hi = float(np.percentile(above, upper_percentile))
    if hi <= lo:
        hi = float(above.max())
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0, dtype=np.float32)


def resize_inplane(volume: np.ndarray, size: int, *, order: int) -> np.ndarray:
    """[X, Y, Z] -> [Z, size, size]; ``order`` 1 (linear) for images, 0 for masks."""
    from skimage.transform import resize

    x, y, z = volume.shape
    if (x, y) != (size, size):
        volume = resize(
            volume,
            (size, size, z),
            order=order,
            mode="edge",
            preserve_range=True,
            anti_aliasing=None if order > 0 else False,
        )
    return np.ascontiguousarray(np.transpose(volume, (2, 0, 1)))


def clahe_slices(slices: np.ndarray, clip_limit: float = 0.01) -> np.ndarray:
    """CLAHE on each [H, W] slice of float32[Z, H, W] in [0, 1]; constant slices -> zeros.

    (equalize_adapthist would stretch a constant slice, e.g. the empty air above the head,
    to a bright one.)
    """
    from skimage.exposure import equalize_adapthist

    out = np.zeros_like(slices, dtype=np.float32)
    for z in range(slices.shape[0]):
        s = slices[z]
        if float(s.max()) - float(s.min()) > 1e-6:
            out[z] = equalize_adapthist(s, clip_limit=clip_limit)
    return out


def preprocess_image(
    volume: np.ndarray, params: PreprocessParams, z: Sequence[int] | None = None
) -> np.ndarray:
    """One sequence float32[X, Y, Z] -> float32[Z, H, W] (or only slices ``z``).

    ``minmax*``: values in [0, 1]; ``zscore``: zero mean, unit variance over the head.
    Restricting to ``z`` gives the same values as the full run for those slices (the
    normalisation still uses the whole volume); benchmarks use it as the no-cache baseline.
    """
    if params.intensity == "zscore":
        v = zscore(volume)
    else:
        v = rescale01(volume, params.upper_percentile)
    if z is not None:
        v = v[:, :, list(z)]
    out = resize_inplane(v, params.image_size, order=1).astype(np.float32, copy=False)
    if params.intensity != "zscore":
        np.clip(out, 0.0, 1.0, out=out)
    if params.clahe:
        out = clahe_slices(out, params.clahe_clip)
    return out


def preprocess_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary uint8[X, Y, Z] -> uint8[Z, H, W] by nearest neighbour."""
    return resize_inplane(mask.astype(np.uint8), size, order=0).astype(np.uint8, copy=False)


def preprocess_volume(
    vol: Volume, sequences: Sequence[str], params: PreprocessParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A patient -> (image float32[S, Z, H, W], present bool[S], mask uint8[Z, H, W] | None).

    S follows ``sequences``; a sequence missing from ``vol`` is zeros with present False.
    """
    x, y, nz = vol.shape
    size = params.image_size
    image = np.zeros((len(sequences), nz, size, size), dtype=np.float32)
    present = np.zeros(len(sequences), dtype=bool)
    for i, name in enumerate(sequences):
        if name in vol.images:
            image[i] = preprocess_image(vol.images[name], params)
            present[i] = True
    mask = preprocess_mask(vol.mask, size) if vol.mask is not None else None
    return image, present, mask


def to_original_grid(vol_zhw: np.ndarray, orig_shape: Sequence[int]) -> np.ndarray:
    """Undo :func:`resize_inplane`: float32[Z, H, W] -> float32[X, Y, Z] (linear, for probabilities)."""
    from skimage.transform import resize

    x, y, z = (int(s) for s in orig_shape)
    v = np.asarray(vol_zhw, dtype=np.float32)
    if v.shape[0] != z:
        raise ValueError(f"volume has {v.shape[0]} slices, the original grid {tuple(orig_shape)} has {z}")
    if v.shape[1:] != (x, y):
        v = resize(v, (z, x, y), order=1, mode="edge", preserve_range=True, anti_aliasing=False)
    return np.ascontiguousarray(np.transpose(v, (1, 2, 0)), dtype=np.float32)
