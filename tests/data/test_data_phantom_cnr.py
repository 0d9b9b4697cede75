"""The phantom models the paper's mechanism, measured on rendered images of the demo's grid.

The mask is drawn on ``t1_gre_post`` (the registration reference); every other sequence is
rendered through a residual registration error of 0.2-1 mm and 0.1-0.6 degrees (the paper's
~1 mm cohort), which the grid (1.5 mm voxels) can show. Lesion contrast per sequence follows
the paper: both post-contrast scans show the enhancing lesion, the FSE one with the higher
contrast-to-noise (section I: vascular suppression); the pre-contrast scan does not; BRAVO
also enhances vessels. Everything here is measured from the images, independently of the
phantom's constants: noise sigma from flat white matter far from lesions (bias removed), contrast on solid
lesions, registration error by phase correlation of edge maps (contrast-sign independent).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from seqablate.data.phantom import _SITES, _grid, _render_patient
from seqablate.sequences import PAPER_SEQUENCES

SHAPE = (64, 64, 48)
VOXEL = (1.5, 1.5, 1.5)  # the demo's grid


@pytest.fixture(scope="module")
def patient() -> tuple[dict, np.ndarray, dict, dict]:
    affine = _grid(SHAPE, VOXEL)
    debug: dict[str, np.ndarray] = {}
    images, mask, info = _render_patient(np.random.default_rng([7, 0, 0]), _SITES["stanford"], SHAPE, affine,
                                         PAPER_SEQUENCES, debug)
    return images, mask, info, debug


def _solid(mask: np.ndarray, info: dict, affine: np.ndarray) -> np.ndarray:
    labels, _ = ndimage.label(mask)
    inv = np.linalg.inv(affine)
    out = np.zeros(mask.shape, bool)
    for les in info["lesions"]:
        ijk = tuple(np.rint(inv[:3, :3] @ np.asarray(les["center_mm"]) + inv[:3, 3]).astype(int))
        if les["kind"] == "solid" and labels[ijk]:
            out |= labels == labels[ijk]
    return out


def test_lesion_cnr_per_sequence(patient) -> None:
    images, mask, info, dbg = patient
    solid = ndimage.binary_erosion(_solid(mask, info, _grid(SHAPE, VOXEL)))  # lesion interior
    assert solid.sum() >= 20, "this seed must give a resolvable solid lesion"
    around = ndimage.binary_dilation(mask > 0, iterations=3) & ~ndimage.binary_dilation(mask > 0, iterations=1)
    around &= (dbg["edema"] < 0.05) & (dbg["vessel"] < 0.05)
    flat = (dbg["wm"] > 0.95) & (dbg["vessel"] < 0.01) & (dbg["edema"] < 0.01) & ~ndimage.binary_dilation(mask > 0, iterations=4)
    assert flat.sum() > 500
    cnr = {}
    for seq, img in images.items():
        # Noise: the spread of flat white matter once the smooth coil bias is taken out.
        residual = img - ndimage.gaussian_filter(img, 2.0)
        sigma = float(residual[flat].std())
        cnr[seq] = float((img[solid].mean() - img[around].mean()) / sigma)
    # Both post-contrast scans show the lesion; FSE's the most (section I); pre-contrast not.
    assert cnr["t1_fse_post"] > cnr["t1_gre_post"] > 5, cnr  # measured: 20.1 vs 14.0 (seed 7)
    assert abs(cnr["t1_fse_pre"]) < 0.5 * cnr["t1_gre_post"], cnr


def test_annotation_lies_on_the_reference_grid(patient) -> None:
    images, mask, info, dbg = patient
    # The mask is the reference scan's own lesion: its enhancement edge coincides with the
    # mask border on t1_gre_post (no resampling, no registration error). Measured on the
    # largest solid lesion (a ring lesion's interior is its dark necrotic core).
    gre = images["t1_gre_post"]
    solid = _solid(mask, info, _grid(SHAPE, VOXEL))
    labels, n = ndimage.label(solid)
    assert n >= 1
    big = labels == (1 + int(np.argmax(ndimage.sum(solid, labels, range(1, n + 1)))))
    inside = big & ndimage.binary_erosion(big)
    ring = ndimage.binary_dilation(big, iterations=2) & ~big
    assert gre[inside].mean() > gre[ring].mean()
    assert "t1_gre_post" not in info["registration_error"]


def test_registration_error_of_each_other_sequence_is_in_the_papers_range(patient) -> None:
    images, _, info, _ = patient
    ref = ndimage.gaussian_gradient_magnitude(images["t1_gre_post"].astype(np.float64), 1.0)
    for seq in ("t1_fse_pre", "t1_fse_post", "flair"):
        mov = ndimage.gaussian_gradient_magnitude(images[seq].astype(np.float64), 1.0)
        shift, _, _ = phase_cross_correlation(ref, mov, upsample_factor=20)
        measured = np.asarray(shift) * np.asarray(VOXEL)  # mm
        # 0.2-1 mm translation plus <= 0.6 degrees of rotation about the centre
        assert 0.1 <= np.linalg.norm(measured) <= 1.25, (seq, measured)
        np.testing.assert_allclose(measured, info["registration_error"][seq]["shift_mm"], atol=0.35)


def test_vessels_and_mimics(patient) -> None:
    images, mask, info, dbg = patient
    lesion = mask > 0
    vessel = (dbg["vessel"] > 0.6) & ~lesion
    wm = (dbg["wm"] > 0.9) & ~lesion & (dbg["vessel"] < 0.05) & (dbg["edema"] < 0.05)
    gre, pre, post = images["t1_gre_post"], images["t1_fse_pre"], images["t1_fse_post"]
    assert vessel.sum() > 20
    assert gre[vessel].mean() > 1.2 * gre[wm].mean()  # BRAVO: bright, confusable vessels
    assert post[vessel].mean() < post[wm].mean()  # FSE: black blood
    assert info["mimics"], "this seed must have a T1-bright mimic"
    inv = np.linalg.inv(_grid(SHAPE, VOXEL))
    for m in info["mimics"]:
        ijk = tuple(np.rint(inv[:3, :3] @ np.asarray(m["center_mm"]) + inv[:3, 3]).astype(int))
        assert not lesion[ijk]  # not part of the annotation
        for img in (gre, pre, post):  # bright on every T1 scan, pre-contrast included
            assert img[ijk] > 1.2 * img[wm].mean()


def test_misregistration_level_moves_only_the_other_sequences() -> None:
    """``misregistration_mm``: 0 leaves every sequence on the reference; 2 mm shifts each other
    sequence by ~2 mm (measured by phase correlation, independently of the manifest); the
    reference image, the mask and the lesions are those of every level (same draws)."""
    import dataclasses

    affine = _grid(SHAPE, VOXEL)
    out = {}
    for m in (0.0, 2.0):
        site = dataclasses.replace(_SITES["stanford"], misregistration_mm=m)
        out[m] = _render_patient(np.random.default_rng([7, 0, 0]), site, SHAPE, affine,
                                 ("t1_gre_post", "t1_fse_post"), None)
    (img0, mask0, info0), (img2, mask2, info2) = out[0.0], out[2.0]
    np.testing.assert_array_equal(img0["t1_gre_post"], img2["t1_gre_post"])
    np.testing.assert_array_equal(mask0, mask2)
    assert info0["lesions"] == info2["lesions"]
    assert np.linalg.norm(info2["registration_error"]["t1_fse_post"]["shift_mm"]) == pytest.approx(2.0, abs=1e-3)
    ref = ndimage.gaussian_gradient_magnitude(img0["t1_gre_post"].astype(np.float64), 1.0)
    for m, img in ((0.0, img0), (2.0, img2)):
        mov = ndimage.gaussian_gradient_magnitude(img["t1_fse_post"].astype(np.float64), 1.0)
        shift, _, _ = phase_cross_correlation(ref, mov, upsample_factor=20)
        measured = float(np.linalg.norm(np.asarray(shift) * np.asarray(VOXEL)))
        assert measured == pytest.approx(m, abs=0.3 + 0.15 * m), (m, measured)  # + the scaled rotation
