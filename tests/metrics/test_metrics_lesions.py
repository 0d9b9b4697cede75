"""Sparse 26-connected labelling, dilation and overlaps vs scipy.ndimage (second method)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from seqablate.metrics.lesions import (
    STRUCTURE_26,
    components,
    dilate_flat,
    from_flat,
    overlap_counts,
)


@pytest.mark.parametrize("density,dense_fraction", [(0.004, 0.02), (0.3, 0.02), (0.05, 1.0)])
def test_components_match_ndimage_label(density, dense_fraction):
    rng = np.random.default_rng(1)
    mask = rng.random((9, 11, 7)) < density
    lab, n = ndimage.label(mask, structure=STRUCTURE_26)
    c = components(mask, dense_fraction=dense_fraction)
    assert c.n == n
    np.testing.assert_array_equal(c.flat, np.flatnonzero(mask))
    # Same label numbers, not just the same partition.
    np.testing.assert_array_equal(c.labels, lab.reshape(-1)[c.flat])
    np.testing.assert_array_equal(c.sizes, np.bincount(lab.reshape(-1))[1:])


def test_corner_neighbours_connect_and_centroids():
    m = np.zeros((5, 5, 5), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # corner-adjacent: one 26-component
    m[4, 4, 4] = True
    c = components(m, dense_fraction=1.0)  # sparse path
    assert c.n == 2
    np.testing.assert_allclose(c.centroids(), [[0.5, 0.5, 0.5], [4, 4, 4]])
    vol = np.arange(125, dtype=float).reshape(5, 5, 5)
    # 0 + 31 (=25+5+1) and 124
    np.testing.assert_allclose(c.sums(vol), [31.0, 124.0])
    np.testing.assert_array_equal(c.label_at(np.array([0, 31, 124, 2])), [1, 1, 2, 0])


def test_empty_and_bad_mask():
    c = components(np.zeros((3, 3, 3)))
    assert c.n == 0 and c.sizes.size == 0 and c.centroids().shape == (0, 3)
    with pytest.raises(ValueError, match="3D"):
        components(np.zeros((3, 3)))


def test_dilate_flat_matches_binary_dilation_at_borders():
    rng = np.random.default_rng(2)
    mask = rng.random((6, 7, 5)) < 0.05
    mask[0, 0, 0] = mask[-1, -1, -1] = True
    struct = ndimage.generate_binary_structure(3, 2)
    for it in (1, 2):
        ref = np.flatnonzero(ndimage.binary_dilation(mask, structure=struct, iterations=it))
        got = dilate_flat(np.flatnonzero(mask), mask.shape, struct, it)
        np.testing.assert_array_equal(got, ref)


def test_overlap_counts_by_hand():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[0, 0, 0:3] = True  # a-label 1: 3 voxels
    a[3, 3, 3] = True  # a-label 2
    b[0, 0, 1:4] = True  # b-label 1 overlaps a1 at z=1,2 -> 2 voxels
    b[3, 3, 3] = True  # b-label 2 overlaps a2 -> 1 voxel
    la, lb, n = overlap_counts(components(a), components(b))
    np.testing.assert_array_equal(np.c_[la, lb, n], [[1, 1, 2], [2, 2, 1]])
    assert from_flat(np.array([], dtype=np.int64), (2, 2, 2)).n == 0
