"""Physical-space geometry: resampling a RAS volume to a target voxel size and back.

A :class:`GridMap` relates a volume's own RAS voxel grid (``src``: shape [X, Y, Z], spacing
(sx, sy, sz) mm) to a resampled grid of the same physical extent at the target spacing
(tx, ty, tz) mm. Both grids share their centre: target voxel ``i`` sits at source voxel
coordinate ``c_src + (i - c_dst) * t / s`` per axis (``c = (n - 1) / 2``), so the mapping is
a diagonal scale plus an offset and both directions are one ``scipy.ndimage.affine_transform``.
The target shape is ``max(1, round(n * s / t))`` per axis (the same field of view, to within
half a target voxel at each edge).

Images are resampled linearly after a Gaussian prefilter where the target is coarser than
the source (sigma = (t/s - 1) / 2 voxels, scikit-image's anti-aliasing rule), so a
downsampled image does not alias; masks are resampled linearly and thresholded at 0.5 (what
nnU-Net does for segmentations); probabilities go back to the source grid linearly, without a
prefilter (nnU-Net's export does the same).

Planning (:func:`plan_spacing`) takes the median in-plane and the median slice spacing of a
cohort, as nnU-Net's experiment planner takes the median spacing of its training cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Inference pads every slice to a multiple of this (the networks' output stride), so a full
#: slice and a training patch meet the same grid alignment of the strided layers.
PAD_MULTIPLE = 8


@dataclass(frozen=True)
class GridMap:
    """Source RAS grid <-> resampled grid (see the module docstring).

    ``src_shape``: (X, Y, Z) voxels; ``src_spacing``: their size in mm; ``spacing``: the
    target voxel size in mm; ``shape``: the resampled (X', Y', Z').
    """

    src_shape: tuple[int, int, int]
    src_spacing: tuple[float, float, float]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]

    @classmethod
    def plan(cls, src_shape: Sequence[int], src_spacing: Sequence[float], spacing: Sequence[float]) -> GridMap:
        """The grid of the same extent as ``src_shape`` voxels of ``src_spacing`` at ``spacing``.

        Raises ValueError for a non-positive spacing or an empty source.
        """
        src = tuple(int(n) for n in src_shape)
        s = tuple(float(v) for v in src_spacing)
        t = tuple(float(v) for v in spacing)
        if len(src) != 3 or len(s) != 3 or len(t) != 3:
            raise ValueError(f"need three sizes, got shape {src_shape}, spacing {src_spacing} -> {spacing}")
        if min(src) < 1 or min(s) <= 0 or min(t) <= 0:
            raise ValueError(f"bad grid: shape {src}, spacing {s} mm -> target {t} mm")
        shape = tuple(max(1, int(np.floor(n * a / b + 0.5))) for n, a, b in zip(src, s, t, strict=True))
        return cls(src, s, t, shape)  # type: ignore[arg-type]

    @property
    def scale(self) -> np.ndarray:
        """float64[3]: source voxels per target voxel (> 1 where the target is coarser)."""
        return np.asarray(self.spacing) / np.asarray(self.src_spacing)

    @property
    def offset(self) -> np.ndarray:
        """float64[3]: source voxel coordinate of target voxel 0."""
        c_src = (np.asarray(self.src_shape) - 1) / 2.0
        c_dst = (np.asarray(self.shape) - 1) / 2.0
        return c_src - self.scale * c_dst

    @property
    def identity(self) -> bool:
        return self.src_shape == self.shape and np.allclose(self.scale, 1.0)

    def to_target(self, volume: np.ndarray, *, order: int = 1, antialias: bool = True) -> np.ndarray:
        """float32[X', Y', Z'] of ``volume`` float[X, Y, Z] on the resampled grid.

        ``antialias``: Gaussian prefilter along axes the target is coarser on (images; not
        for masks). Outside the source (at most half a target voxel at the edges) the edge
        value is repeated.
        """
        from scipy import ndimage

        v = np.asarray(volume, dtype=np.float32)
        if tuple(v.shape) != self.src_shape:
            raise ValueError(f"volume of shape {v.shape} does not match the grid's source {self.src_shape}")
        if self.identity:
            return v.copy()
        if antialias:
            sigma = np.maximum(0.0, (self.scale - 1.0) / 2.0)
            if sigma.any():
                v = ndimage.gaussian_filter(v, sigma=sigma, mode="nearest")
        return ndimage.affine_transform(v, self.scale, offset=self.offset, output_shape=self.shape,
                                        order=order, mode="nearest").astype(np.float32, copy=False)

    def to_source(self, volume: np.ndarray, *, order: int = 1, above: float | None = None) -> np.ndarray:
        """float32[X, Y, Z]: ``volume`` float[X', Y', Z'] (e.g. probabilities) back on the
        source grid, linearly, edge values repeated outside.

        ``above`` (linear only): only what can exceed this value is computed. A linearly
        interpolated voxel is a convex combination of its 2 x 2 x 2 neighbours, so it can
        exceed ``above`` only near a resampled voxel that does: the source boxes around
        those voxels' clusters are interpolated (as in the full transform, up to float
        rounding of the coordinates) and every other voxel is 0. What reads ``result >
        above`` (lesion detection at that threshold) sees the full transform; at a fraction
        of its cost where few voxels exceed it.
        """
        from scipy import ndimage

        v = np.asarray(volume, dtype=np.float32)
        if tuple(v.shape) != self.shape:
            raise ValueError(f"volume of shape {v.shape} does not match the resampled grid {self.shape}")
        if self.identity:
            return v.copy()
        inv = 1.0 / self.scale
        if above is None or order != 1:
            return ndimage.affine_transform(v, inv, offset=-self.offset * inv, output_shape=self.src_shape,
                                            order=order, mode="nearest").astype(np.float32, copy=False)
        out = np.zeros(self.src_shape, dtype=np.float32)
        boxes = self._source_boxes(v > above)
        if sum(int(np.prod([b.stop - b.start for b in box])) for box in boxes) > out.size // 2:
            boxes = [tuple(slice(0, n) for n in self.src_shape)]  # most of the volume: one call
        for box in boxes:
            start = np.array([b.start for b in box], dtype=np.float64)
            shape = tuple(b.stop - b.start for b in box)
            out[box] = ndimage.affine_transform(v, inv, offset=(start - self.offset) * inv, output_shape=shape,
                                                order=1, mode="nearest")
        return out

    def _source_boxes(self, hot: np.ndarray, block: int = 16) -> list[tuple[slice, slice, slice]]:
        """Source-grid boxes holding every source voxel whose linear interpolation reads a
        ``hot`` resampled voxel: the hot voxels grouped by ``block``-voxel cubes, each group's
        box grown by one resampled voxel (the stencil), mapped back and widened by one source
        voxel; a box touching the resampled grid's edge runs to the source's edge (edge values
        are repeated there). Boxes may overlap (they are filled alike)."""
        flat = np.flatnonzero(hot)
        if flat.size == 0:
            return []
        coords = np.stack(np.unravel_index(flat, hot.shape), axis=1)  # [N, 3]
        blocks = coords // block
        order = np.lexsort(blocks.T[::-1])
        coords, blocks = coords[order], blocks[order]
        starts = np.flatnonzero(np.r_[True, np.any(blocks[1:] != blocks[:-1], axis=1)])
        los = np.minimum.reduceat(coords, starts, axis=0) - 1
        his = np.maximum.reduceat(coords, starts, axis=0) + 1
        boxes = []
        for lo_v, hi_v in zip(los, his, strict=True):
            box = []
            for axis in range(3):
                lo, hi = max(0, int(lo_v[axis])), min(self.shape[axis] - 1, int(hi_v[axis]))
                # Source voxel o interpolates at resampled coordinate (o - offset) / scale, so
                # it reads [lo, hi] when o lies in [lo, hi] * scale + offset.
                first = 0 if lo == 0 else int(np.floor(lo * self.scale[axis] + self.offset[axis])) - 1
                last = (self.src_shape[axis] - 1 if hi == self.shape[axis] - 1
                        else int(np.ceil(hi * self.scale[axis] + self.offset[axis])) + 1)
                box.append(slice(max(0, first), min(self.src_shape[axis], last + 1)))
            boxes.append(tuple(box))
        return boxes  # type: ignore[return-value]

    def anchor(self, affine: np.ndarray) -> tuple[int, int]:
        """(h, w): the index of resampled pixel (0, 0) on the world lattice of the target
        spacing (world mm / spacing, rounded), for the source grid's RAS ``affine``
        float[4, 4]. Two fields of view of one head give pixels at the same world place
        indices that differ by the difference of their anchors (to half a pixel), so anything
        laid on a lattice from the anchor (CLAHE tiles, the network's stride) is laid alike.
        """
        a = np.asarray(affine, dtype=np.float64)
        first = a[:3, :3] @ self.offset + a[:3, 3]
        return int(np.rint(first[0] / self.spacing[0])), int(np.rint(first[1] / self.spacing[1]))

    def mask_to_target(self, mask: np.ndarray) -> np.ndarray:
        """uint8[X', Y', Z']: a binary mask resampled linearly and thresholded at 0.5."""
        return (self.to_target(np.asarray(mask, dtype=np.float32), antialias=False) >= 0.5).astype(np.uint8)

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {"src_shape": list(self.src_shape), "src_spacing": list(self.src_spacing),
                "spacing": list(self.spacing), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[float]]) -> GridMap:
        return cls(tuple(int(v) for v in d["src_shape"]), tuple(float(v) for v in d["src_spacing"]),  # type: ignore[arg-type]
                   tuple(float(v) for v in d["spacing"]), tuple(int(v) for v in d["shape"]))


def anchored_pad(size: int, anchor: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """(before, after) padding of ``size`` pixels whose first pixel has world-lattice index
    ``anchor`` (:meth:`GridMap.anchor`): the padded length is a multiple of ``multiple`` and
    its first pixel sits at a world-lattice index that is a multiple of ``multiple`` too.

    A strided network (output stride ``multiple``) is not shift-equivariant for shifts that are
    not multiples of its stride; padding from the world lattice gives a pixel at one world
    place the same position in the stride's lattice whatever the field of view.
    """
    before = int(anchor) % multiple
    return before, (-(before + int(size))) % multiple


def plan_spacing(spacings: Iterable[Sequence[float]]) -> tuple[float, float]:
    """(in-plane mm, slice mm): the medians of a cohort's voxel sizes (X, Y, Z) in RAS.

    The in-plane value is the median over both in-plane axes of every volume. Rounded to
    0.01 mm, so a planned value reads as it is logged. Raises ValueError on no volumes.
    """
    arr = np.asarray([tuple(float(v) for v in s) for s in spacings], dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no volumes to plan a target spacing from")
    inplane = float(np.median(arr[:, :2].ravel()))
    slice_mm = float(np.median(arr[:, 2]))
    return round(inplane, 2), round(slice_mm, 2)


