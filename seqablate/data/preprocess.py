"""Preprocessing of one patient: [X, Y, Z] RAS volumes -> [Z, H, W] slices.

Two geometries (``data.geometry``):

- ``spacing`` (physical space, nnU-Net's approach): every volume is resampled in 3D to the
  target voxel size (``data.spacing_mm`` in-plane, ``data.slice_mm`` between slices) over its
  own field of view (:class:`~seqablate.data.geometry.GridMap`), so a lesion has the same size
  in pixels whatever the scanner's voxel size; slices differ in H x W between patients
  (training samples patches of ``image_size``; inference runs on whole slices).
  Intensities are fixed in physical terms: the robust rescale's percentile is taken inside a
  ball of ``reference_radius_mm`` at the centre of the field of view (:func:`reference_ball`;
  deep brain whatever the field of view, since scanners centre it on the brain) and the CLAHE
  tile is ``data.clahe_tile_mm`` wide.
- ``resize`` (the paper's 256 x 256 pipeline): every axial slice is resized to H = W =
  ``image_size`` pixels, whatever its field of view; kept to reproduce the paper and for
  models trained before the geometry existed.

Per sequence, by ``data.intensity``: ``minmax_clahe`` (the paper's) = robust volume-wise
rescale to [0, 1] (min .. 99.5th percentile, so a few hot voxels do not squash the contrast),
then CLAHE per slice (``skimage.exposure.equalize_adapthist``); ``minmax`` the same without
CLAHE; ``zscore`` = zero mean and unit variance over a head mask computed from the volume
(nnU-Net's MRI scheme), background 0. Images are interpolated linearly (anti-aliased when
shrinking); masks nearest-neighbour (``resize``) or linearly and thresholded at 0.5
(``spacing``).

Axis convention: slice ``z`` of the output is ``volume[:, :, z]`` resampled, i.e. output
``[z, h, w]`` corresponds to RAS ``[x, y, z]`` with ``h`` along X and ``w`` along Y.
:func:`to_original_grid` undoes the resize and the transpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from seqablate.data.geometry import GridMap
from seqablate.data.volumes import Volume

#: Bump when the preprocessing changes in a way that invalidates cached arrays.
PREPROCESS_VERSION = 3

#: Intensity normalisations (``data.intensity``).
INTENSITIES = ("minmax_clahe", "minmax", "zscore")
#: Geometries (``data.geometry``).
GEOMETRIES = ("spacing", "resize")


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that determines the preprocessed arrays (part of the cache key).

    ``geometry`` ``resize``: slices resized to ``image_size`` squared; ``spacing``: volumes
    resampled to ``spacing_mm`` x ``spacing_mm`` x ``slice_mm`` (both required) and
    ``image_size`` is only the training patch size (not part of the arrays, so not of the key).
    """

    image_size: int = 256  # resize: H = W after resize
    intensity: str = "minmax_clahe"  # one of INTENSITIES
    clahe_clip: float = 0.01  # equalize_adapthist clip_limit (skimage default)
    upper_percentile: float = 99.5  # robust maximum of the volume-wise rescale
    geometry: str = "resize"  # one of GEOMETRIES
    spacing_mm: float | None = None  # spacing: target in-plane voxel size
    slice_mm: float | None = None  # spacing: target slice spacing
    clahe_tile_mm: float = 30.0  # spacing: CLAHE tile width (the paper's 32 px of ~0.94 mm)
    # spacing: radius of the rescale's reference ball (fits the smallest field of view, 72 mm)
    reference_radius_mm: float = 35.0

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITIES:
            raise ValueError(f"data.intensity: unknown value {self.intensity!r}; valid choices: {list(INTENSITIES)}")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"data.geometry: unknown value {self.geometry!r}; valid choices: {list(GEOMETRIES)}")
        if self.geometry == "spacing" and not (self.spacing_mm and self.slice_mm and self.spacing_mm > 0
                                               and self.slice_mm > 0):
            raise ValueError(f"data.geometry spacing needs positive data.spacing_mm and data.slice_mm, got "
                             f"{self.spacing_mm} and {self.slice_mm} (plan them with plan_geometry)")

    @classmethod
    def from_data(cls, data: object) -> PreprocessParams:
        """The parameters of a :class:`~seqablate.config.DataConfig` (spacing planned already)."""
        geometry = getattr(data, "geometry", "resize")
        if geometry == "resize":
            return cls(image_size=data.image_size, intensity=data.intensity)  # type: ignore[attr-defined]
        return cls(image_size=data.image_size, intensity=data.intensity, geometry="spacing",  # type: ignore[attr-defined]
                   spacing_mm=data.spacing_mm, slice_mm=data.slice_mm,  # type: ignore[attr-defined]
                   clahe_tile_mm=data.clahe_tile_mm)  # type: ignore[attr-defined]

    @property
    def clahe(self) -> bool:
        return self.intensity == "minmax_clahe"

    @property
    def target_spacing(self) -> tuple[float, float, float]:
        """(x, y, z) mm of the resampled grid (``spacing`` only)."""
        return (float(self.spacing_mm), float(self.spacing_mm), float(self.slice_mm))  # type: ignore[arg-type]

    @property
    def clahe_tile_px(self) -> int:
        """CLAHE tile width in pixels of the resampled grid (``spacing`` only)."""
        return max(4, int(round(self.clahe_tile_mm / float(self.spacing_mm))))  # type: ignore[arg-type]

    def key(self) -> dict[str, object]:
        if self.geometry == "resize":  # the key of the arrays before the geometry existed
            keep = ("image_size", "intensity", "clahe_clip", "upper_percentile")
            return {"version": PREPROCESS_VERSION, **{k: v for k, v in asdict(self).items() if k in keep}}
        d = asdict(self)
        d.pop("image_size")  # the patch size: not part of the arrays
        return {"version": PREPROCESS_VERSION, **d}


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


def reference_ball(shape: Sequence[int], spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """bool[X, Y, Z]: voxels whose centre lies within ``radius_mm`` of the volume's centre.

    The intensity reference of the ``spacing`` geometry. A head mask is not: Otsu's threshold
    separates head from air on a whole-head scan but splits tissue classes on a crop that holds
    no air, and a whole head adds scalp, skull base and neck, so the head mask's 99.5th
    percentile of one patient's scan moved by a third between a 96 mm mid-brain crop and the
    whole head; inside this ball it moved by under 5 % (``benchmarks/RESULTS.md``, Geometry).
    A field of view smaller than the ball truncates it (the whole volume then).
    """
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((a - (n - 1) / 2.0) * float(s)) ** 2 for a, n, s in zip(axes, shape, spacing, strict=True))
    return np.asarray(d2 <= float(radius_mm) ** 2)


def zscore(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """float32 copy of ``volume``: (v - mean) / std over :func:`head_mask` (or ``mask``, the
    head mask a caller already has), background 0.

    A volume whose head mask is empty or constant becomes all zeros (the absent value).
    """
    v = np.asarray(volume, dtype=np.float32)
    mask = head_mask(v) if mask is None else mask
    if not mask.any():
        return np.zeros_like(v)
    inside = v[mask].astype(np.float64)
    std = float(inside.std())
    if std <= 0:
        return np.zeros_like(v)
    out = ((v - inside.mean()) / std).astype(np.float32)
    out[~mask] = 0.0
    return out


def rescale01(volume: np.ndarray, upper_percentile: float = 99.5, within: np.ndarray | None = None) -> np.ndarray:
    """float32 copy of ``volume`` mapped to [0, 1]: min -> 0, upper percentile -> 1, clipped.

    The percentile is taken over voxels above the minimum (the background would otherwise
    dominate), and only inside ``within`` (bool, same shape; e.g. the head mask, so that the
    value does not depend on how much air the field of view holds) when it is given and not
    empty. A constant volume becomes all zeros.
    """
    v = np.asarray(volume, dtype=np.float32)
    lo = float(v.min())
    inside = v[within] if within is not None and within.any() else v
    above = inside[inside > lo]
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


def clahe_slices(slices: np.ndarray, clip_limit: float = 0.01, kernel_px: int | None = None) -> np.ndarray:
    """CLAHE on each [H, W] slice of float32[Z, H, W] in [0, 1]; constant slices -> zeros.

    ``kernel_px``: tile width in pixels (None: skimage's default, 1/8 of the slice, which
    follows the field of view). (equalize_adapthist would stretch a constant slice, e.g. the
    empty air above the head, to a bright one.)
    """
    from skimage.exposure import equalize_adapthist

    out = np.zeros_like(slices, dtype=np.float32)
    for z in range(slices.shape[0]):
        s = slices[z]
        if float(s.max()) - float(s.min()) > 1e-6:
            out[z] = equalize_adapthist(s, kernel_size=kernel_px, clip_limit=clip_limit)
    return out


def clahe_anchored(slices: np.ndarray, clip_limit: float, kernel_px: int, anchor: tuple[int, int]) -> np.ndarray:
    """CLAHE on each [H, W] slice of float32[Z, H, W] in [0, 1] that does not depend on the
    field of view (the ``spacing`` geometry); constant slices -> zeros.

    skimage's ``equalize_adapthist`` depends on it twice: it stretches each slice's own min..max
    to the full grey range before binning (and its output again), and it lays its tiles from the
    slice's first pixel. Here the grey levels are fixed ([0, 1] -> 0..NR_OF_GRAY-1, output back
    by the same factor) and the tiles are laid on a lattice fixed in the world: ``anchor`` is
    the (h, w) index of pixel (0, 0) on the world lattice of this spacing (world mm / spacing,
    rounded), so a pixel inside two fields of view sees the same tiles in both (to half a pixel).
    Same contextual regions, clip limit and interpolation as skimage's (its ``_clahe`` does the
    work).
    """
    from skimage.exposure._adapthist import NR_OF_GRAY, _clahe

    k = int(kernel_px)
    lead = (int(anchor[0]) % k, int(anchor[1]) % k)  # pixels before (0, 0) back to a lattice line
    scale = NR_OF_GRAY - 1
    out = np.zeros_like(slices, dtype=np.float32)
    for z in range(slices.shape[0]):
        sl = slices[z]
        if float(sl.max()) - float(sl.min()) <= 1e-6:
            continue
        grey = np.round(np.clip(sl, 0.0, 1.0) * scale).astype(np.uint16)
        grey = np.pad(grey, ((lead[0], 0), (lead[1], 0)), mode="reflect")
        eq = _clahe(grey, [k, k], clip_limit, 256)
        out[z] = eq[lead[0]:, lead[1]:].astype(np.float32) / scale
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


@dataclass
class Preprocessed:
    """One patient after preprocessing.

    ``image``: float32[S, Z, H, W] (S follows the study's sequences; a sequence missing from
    the volume is zeros with ``present`` False); ``present``: bool[S]; ``mask``: uint8[Z, H, W]
    or None when unlabelled; ``grid``: the resampling (``spacing`` geometry) or None
    (``resize``); ``head_box``: (h0, h1, w0, w1), the in-plane bounding box of the head on the
    slices (half-open; the whole slice when no head is found).
    """

    image: np.ndarray
    present: np.ndarray
    mask: np.ndarray | None
    grid: GridMap | None = None
    head_box: tuple[int, int, int, int] | None = None

    def __iter__(self):  # type: ignore[no-untyped-def]
        """``image, present, mask = preprocess_volume(...)`` keeps working."""
        return iter((self.image, self.present, self.mask))


def _resampled_image(volume: np.ndarray, head: np.ndarray, reference: np.ndarray, params: PreprocessParams,
                     grid: GridMap, anchor: tuple[int, int]) -> np.ndarray:
    """One sequence float32[X, Y, Z] -> float32[Z', H', W'] on the resampled grid
    (``spacing`` geometry): normalised on its own grid (z-score over ``head``; or the rescale's
    percentile inside ``reference``, a :func:`reference_ball`), resampled, CLAHE with tiles of
    ``clahe_tile_mm`` on the world lattice (:func:`clahe_anchored`, ``anchor``)."""
    if params.intensity == "zscore":
        v = zscore(volume, head)
    else:
        v = rescale01(volume, params.upper_percentile, within=reference)
    out = np.ascontiguousarray(np.transpose(grid.to_target(v), (2, 0, 1)))
    if params.intensity != "zscore":
        np.clip(out, 0.0, 1.0, out=out)
    if params.clahe:
        out = clahe_anchored(out, params.clahe_clip, params.clahe_tile_px, anchor)
    return out


def _box(mask_zhw: np.ndarray) -> tuple[int, int, int, int]:
    """(h0, h1, w0, w1): the in-plane bounding box of a bool[Z, H, W] (whole slice if empty)."""
    _, h, w = mask_zhw.shape
    rows, cols = np.flatnonzero(mask_zhw.any(axis=(0, 2))), np.flatnonzero(mask_zhw.any(axis=(0, 1)))
    if not len(rows):
        return 0, h, 0, w
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def preprocess_volume(vol: Volume, sequences: Sequence[str], params: PreprocessParams) -> Preprocessed:
    """A patient -> :class:`Preprocessed` (unpacks as ``image, present, mask``).

    S follows ``sequences``; a sequence missing from ``vol`` is zeros with present False.
    """
    if params.geometry == "spacing":
        return _preprocess_spacing(vol, sequences, params)
    x, y, nz = vol.shape
    size = params.image_size
    image = np.zeros((len(sequences), nz, size, size), dtype=np.float32)
    present = np.zeros(len(sequences), dtype=bool)
    for i, name in enumerate(sequences):
        if name in vol.images:
            image[i] = preprocess_image(vol.images[name], params)
            present[i] = True
    mask = preprocess_mask(vol.mask, size) if vol.mask is not None else None
    return Preprocessed(image, present, mask, None, (0, size, 0, size))


def _preprocess_spacing(vol: Volume, sequences: Sequence[str], params: PreprocessParams) -> Preprocessed:
    grid = GridMap.plan(vol.shape, vol.spacing, params.target_spacing)
    xs, ys, zs = grid.shape
    image = np.zeros((len(sequences), zs, xs, ys), dtype=np.float32)
    present = np.zeros(len(sequences), dtype=bool)
    head_any = np.zeros(vol.shape, dtype=bool)
    reference = reference_ball(vol.shape, vol.spacing, params.reference_radius_mm)
    anchor = grid.anchor(vol.affine)  # CLAHE tiles on the world lattice
    for i, name in enumerate(sequences):
        if name in vol.images:
            head = head_mask(vol.images[name])
            head_any |= head
            image[i] = _resampled_image(vol.images[name], head, reference, params, grid, anchor)
            present[i] = True
    head_zhw = np.transpose(grid.mask_to_target(head_any), (2, 0, 1)).astype(bool)
    mask = None
    if vol.mask is not None:
        mask = np.ascontiguousarray(np.transpose(grid.mask_to_target(vol.mask), (2, 0, 1)))
    return Preprocessed(image, present, mask, grid, _box(head_zhw))


def to_original_grid(vol_zhw: np.ndarray, orig_shape: Sequence[int], grid: GridMap | None = None, *,
                     above: float | None = None) -> np.ndarray:
    """Undo the preprocessing's geometry: float32[Z, H, W] -> float32[X, Y, Z] (linear, for
    probabilities): the resampling of ``grid`` (``spacing``), else :func:`resize_inplane`.
    ``above``: exact only where the result can exceed it, 0 far from it (``GridMap.to_source``;
    the resize path computes everything)."""
    from skimage.transform import resize

    x, y, z = (int(s) for s in orig_shape)
    v = np.asarray(vol_zhw, dtype=np.float32)
    if grid is not None:
        if tuple(grid.src_shape) != (x, y, z):
            raise ValueError(f"the grid maps {grid.src_shape}, the original grid is {tuple(orig_shape)}")
        return grid.to_source(np.transpose(v, (1, 2, 0)), above=above)
    if v.shape[0] != z:
        raise ValueError(f"volume has {v.shape[0]} slices, the original grid {tuple(orig_shape)} has {z}")
    if v.shape[1:] != (x, y):
        v = resize(v, (z, x, y), order=1, mode="edge", preserve_range=True, anti_aliasing=False)
    return np.ascontiguousarray(np.transpose(v, (1, 2, 0)), dtype=np.float32)
