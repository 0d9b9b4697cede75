"""Lesions as 26-connected components of a 3D mask, stored sparsely.

A brain-metastasis mask is >99 % background, so every metric here works on the foreground
voxels only: a :class:`Components` keeps the sorted flat (raster) indices of the foreground
voxels and each one's component label. Statistics per component (size, centroid, sum of a
volume) are ``np.bincount`` over those few voxels, and overlaps between two masks are a sorted
intersection of flat indices -- never a Python loop over voxels, never a full-volume pass
per lesion.

Labelling gives exactly ``scipy.ndimage.label(mask, structure=np.ones((3, 3, 3)))``,
including its label numbers (raster order of each component's first voxel): dense masks are
labelled by ndimage itself; sparse ones (the usual case) by a connected-components pass over
the foreground voxels' 13 forward neighbours (``scipy.sparse.csgraph``), which costs
O(foreground) instead of O(volume).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

# Full 3x3x3 neighbourhood: 26-connectivity (faces, edges and corners), the paper's "3D
# connected component" and BraTS's cc3d connectivity=26.
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)

# The 13 neighbour offsets that come after a voxel in raster order; each undirected edge of
# the 26-neighbourhood graph is found once from its earlier voxel.
_FORWARD_26 = tuple(o for o in product((-1, 0, 1), repeat=3) if o > (0, 0, 0))

# Above this foreground fraction ndimage.label over the whole volume is the faster labeller
# (measured by benchmarks/bench_metrics.py); below it the sparse graph pass is.
DENSE_FRACTION = 0.02


@dataclass(frozen=True)
class Components:
    """The 26-connected components of a 3D binary mask, stored over its foreground voxels.

    Attributes:
        shape: shape of the volume ``(X, Y, Z)``.
        flat: int64[N], sorted raster (C-order) indices of the N foreground voxels.
        labels: int64[N], component label of each foreground voxel, 1..n (ndimage numbering).
        n: number of components (0 for an empty mask).
    """

    shape: tuple[int, int, int]
    flat: np.ndarray
    labels: np.ndarray
    n: int

    @property
    def sizes(self) -> np.ndarray:
        """int64[n]: voxel count of each component (index i is label i + 1)."""
        return np.bincount(self.labels, minlength=self.n + 1)[1:]

    def coords(self) -> np.ndarray:
        """int64[N, 3]: voxel indices of the foreground voxels."""
        return np.stack(np.unravel_index(self.flat, self.shape), axis=1).astype(np.int64)

    def centroids(self) -> np.ndarray:
        """float64[n, 3]: unweighted centroid of each component in voxel-index units."""
        coords = np.unravel_index(self.flat, self.shape)  # 3 index arrays, no [N, 3] copy
        sizes = self.sizes
        out = np.empty((self.n, 3), dtype=np.float64)
        for axis in range(3):  # 3 axes, each a vectorised bincount over the foreground
            out[:, axis] = np.bincount(self.labels, weights=coords[axis], minlength=self.n + 1)[1:]
        return out / np.maximum(sizes, 1)[:, None]

    def sums(self, volume: np.ndarray) -> np.ndarray:
        """float64[n]: sum of ``volume`` (same shape as the mask) over each component."""
        values = np.asarray(volume).reshape(-1)[self.flat].astype(np.float64)
        return np.bincount(self.labels, weights=values, minlength=self.n + 1)[1:]

    def label_at(self, flat_indices: np.ndarray) -> np.ndarray:
        """int64[M]: the component label at each raster index, 0 where it is background."""
        flat_indices = np.asarray(flat_indices, dtype=np.int64)
        if self.flat.size == 0:
            return np.zeros(flat_indices.shape, dtype=np.int64)
        pos = np.searchsorted(self.flat, flat_indices)
        pos_c = np.minimum(pos, self.flat.size - 1)
        hit = self.flat[pos_c] == flat_indices
        return np.where(hit, self.labels[pos_c], 0)


def _sparse_labels(flat: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """Label the 26-connected components of the voxel set ``flat`` (sorted raster indices)."""
    n_fg = flat.size
    coords = np.stack(np.unravel_index(flat, shape), axis=0).astype(np.int64)  # [3, N]
    dims = np.asarray(shape, dtype=np.int64)[:, None]
    rows, cols = [], []
    node = np.arange(n_fg, dtype=np.int64)
    for offset in _FORWARD_26:  # 13 offsets, each a vectorised lookup over all voxels
        nb = coords + np.asarray(offset, dtype=np.int64)[:, None]
        inside = np.all((nb >= 0) & (nb < dims), axis=0)
        nb_flat = np.ravel_multi_index(tuple(nb[:, inside]), shape)
        pos = np.searchsorted(flat, nb_flat)
        pos_c = np.minimum(pos, n_fg - 1)
        hit = flat[pos_c] == nb_flat
        rows.append(node[inside][hit])
        cols.append(pos_c[hit])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    graph = sparse.coo_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(n_fg, n_fg))
    n, lab = csgraph.connected_components(graph, directed=False)
    # csgraph numbers components in order of their lowest node; nodes are in raster order,
    # so this is ndimage.label's numbering too (checked by the tests).
    return lab.astype(np.int64) + 1, int(n)


def components(mask: np.ndarray, *, dense_fraction: float = DENSE_FRACTION) -> Components:
    """26-connected components of a 3D mask (nonzero = foreground).

    Args:
        mask: bool/integer array [X, Y, Z]; any nonzero voxel is foreground.
        dense_fraction: foreground fraction above which ndimage.label is used.

    Returns:
        :class:`Components`; an all-zero mask gives ``n == 0`` and empty arrays.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    shape = tuple(int(s) for s in mask.shape)
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return Components(shape, flat.astype(np.int64), np.zeros(0, dtype=np.int64), 0)
    if flat.size > dense_fraction * mask.size:
        lab, n = ndimage.label(mask != 0, structure=STRUCTURE_26)
        labels = lab.reshape(-1)[flat].astype(np.int64)
    else:
        labels, n = _sparse_labels(flat, shape)
    return Components(shape, flat.astype(np.int64), labels, int(n))


def from_flat(flat: np.ndarray, shape: tuple[int, int, int]) -> Components:
    """Components of the voxel set given by sorted unique raster indices ``flat``."""
    flat = np.asarray(flat, dtype=np.int64)
    if flat.size == 0:
        return Components(shape, flat, np.zeros(0, dtype=np.int64), 0)
    labels, n = _sparse_labels(flat, shape)
    return Components(shape, flat, labels, n)


def dilate_flat(
    flat: np.ndarray, shape: tuple[int, int, int], structure: np.ndarray, iterations: int = 1
) -> np.ndarray:
    """Binary dilation of a sparse voxel set: sorted raster indices of the dilated set.

    Equal to ``np.flatnonzero(ndimage.binary_dilation(mask, structure, iterations))`` for a
    centred 3x3x3 ``structure`` (voxels outside the volume are dropped, as ndimage does).
    """
    offsets = np.argwhere(np.asarray(structure, dtype=bool)) - 1  # [M, 3] in {-1, 0, 1}
    dims = np.asarray(shape, dtype=np.int64)[:, None]
    out = np.asarray(flat, dtype=np.int64)
    for _ in range(iterations):
        coords = np.stack(np.unravel_index(out, shape), axis=0).astype(np.int64)
        grown = []
        for offset in offsets:  # <= 27 offsets, each vectorised over all voxels
            nb = coords + offset[:, None]
            inside = np.all((nb >= 0) & (nb < dims), axis=0)
            grown.append(np.ravel_multi_index(tuple(nb[:, inside]), shape))
        out = np.unique(np.concatenate(grown)) if grown else out
    return out


def overlap_counts(a: Components, b: Components) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel counts of every overlapping (component of ``a``, component of ``b``) pair.

    Returns:
        (label_a int64[P], label_b int64[P], count int64[P]) for the P pairs with overlap > 0,
        sorted by (label_a, label_b).
    """
    _, ia, ib = np.intersect1d(a.flat, b.flat, assume_unique=True, return_indices=True)
    if ia.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    code = a.labels[ia] * (b.n + 1) + b.labels[ib]
    pairs, counts = np.unique(code, return_counts=True)
    return pairs // (b.n + 1), pairs % (b.n + 1), counts.astype(np.int64)
