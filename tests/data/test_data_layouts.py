"""One small cohort per layout, written by the test, discovered and loaded."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _data_helpers import AFFINE, SHAPE, lesion_mask, volume, write_nii
from PIL import Image

from seqablate.data import DataError, detect_layout, discover, load_patient


def test_nifti_canonical_names_and_alias(make_nifti_cohort):
    root = make_nifti_cohort({"p1": ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"], "p2": ["cube_post", "t2_flair"]}, ext=".nii")
    cohort = discover(root)
    assert cohort.layout == "nifti" and cohort.ids() == ["p1", "p2"]
    assert sorted(cohort.patients[1].files) == ["flair", "t1_fse_post"]
    vol = load_patient(cohort.patients[0])
    assert vol.shape == SHAPE and vol.spacing == pytest.approx((1.0, 1.2, 2.0))
    np.testing.assert_array_equal(vol.images["t1_fse_pre"], volume(1))
    np.testing.assert_array_equal(vol.mask, lesion_mask())


def test_nifti_stanford_naming(make_nifti_cohort):
    # The public Stanford NIfTI copy: there t1_pre is the FSE (CUBE) pre-contrast scan.
    root = make_nifti_cohort({"Mets_001": ["bravo", "t1_pre", "t1_gd", "flair"]})
    pf = discover(root).patients[0]
    assert {k: v.name for k, v in pf.files.items()} == {
        "t1_gre_post": "bravo.nii.gz",
        "t1_fse_pre": "t1_pre.nii.gz",
        "t1_fse_post": "t1_gd.nii.gz",
        "flair": "flair.nii.gz",
    }


def test_nifti_generic_t1_pre_stays_t1_pre(make_nifti_cohort):
    root = make_nifti_cohort({"p": ["t1_pre", "t1_post"]})
    assert sorted(discover(root).patients[0].files) == ["t1_post", "t1_pre"]


def test_nifti_unknown_file_is_a_note_not_an_error(make_nifti_cohort, tmp_path):
    root = make_nifti_cohort({"p": ["flair"]})
    write_nii(root / "p" / "flare_old.nii.gz", volume(0))
    pf = discover(root).patients[0]
    assert pf.problems == () and len(pf.notes) == 1 and "flare_old" in pf.notes[0]
    load_patient(pf)


def test_reorientation_to_ras(tmp_path):
    """A volume stored LPS is flipped to RAS: voxel (0,0,0) on disk ends at (X-1, Y-1, 0)."""
    data = volume(0)
    lps = np.diag([-1.0, -1.2, 2.0, 1.0])
    write_nii(tmp_path / "c" / "p" / "flair.nii.gz", data, lps)
    vol = load_patient(discover(tmp_path / "c").patients[0])
    assert vol.images["flair"][SHAPE[0] - 1, SHAPE[1] - 1, 0] == data[0, 0, 0]
    assert np.all(np.diag(vol.affine)[:3] > 0)
    np.testing.assert_allclose(vol.orig_affine, lps, atol=1e-6)


def _png_series(folder: Path, slices: list[np.ndarray], names: list[int] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in zip(names or range(len(slices)), slices, strict=True):
        Image.fromarray(s.astype(np.uint8)).save(folder / f"{i}.png")


def _bms_cohort(root: Path, n_slices: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    slices = [rng.integers(0, 255, (8, 10)).astype(np.uint8) for _ in range(n_slices)]
    for series in ("0", "1", "2", "3"):
        _png_series(root / "train" / "Mets_001" / series, slices)
    seg = [np.zeros((8, 10), np.uint8) for _ in range(n_slices)]
    seg[3][2:4, 2:5] = 255
    _png_series(root / "train" / "Mets_001" / "seg", seg)
    for series in ("0", "3"):  # an unlabelled test patient with two sequences
        _png_series(root / "test" / "Mets_002" / series, slices)
    return slices


def test_brainmetshare_png_series(tmp_path):
    slices = _bms_cohort(tmp_path / "bms")
    cohort = discover(tmp_path / "bms")
    assert cohort.layout == "brainmetshare" and cohort.ids() == ["Mets_001", "Mets_002"]
    p1, p2 = cohort.patients
    assert sorted(p1.files) == ["flair", "t1_fse_post", "t1_fse_pre", "t1_gre_post"]
    assert p2.mask is None and sorted(p2.files) == ["flair", "t1_gre_post"]
    vol = load_patient(p1)
    assert vol.spacing == pytest.approx((0.94, 0.94, 1.0))
    assert vol.shape == (10, 8, 12)  # [col, row, slice]
    # Numeric order: slice 10 follows slice 9 (a lexical sort would put 10.png after 1.png).
    # PNG columns run right->left and rows anterior->posterior, so RAS flips both in-plane axes.
    for z in (2, 9, 10):
        np.testing.assert_array_equal(vol.images["t1_gre_post"][:, :, z], slices[z].T[::-1, ::-1])
    assert vol.mask.sum() == 6 and set(np.unique(vol.mask)) == {0, 1}
    assert load_patient(p2).mask is None


def test_brainmetshare_spacing_override(tmp_path):
    _bms_cohort(tmp_path / "bms")
    vol = load_patient(discover(tmp_path / "bms", default_spacing=(0.5, 0.5, 2.0)).patients[0])
    assert vol.spacing == pytest.approx((0.5, 0.5, 2.0))


def _brats_case(root: Path, case: str, labels: np.ndarray) -> None:
    for j, s in enumerate(("t1n", "t1c", "t2w", "t2f")):
        write_nii(root / case / f"{case}-{s}.nii.gz", volume(j))
    write_nii(root / case / f"{case}-seg.nii.gz", labels)


def _labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:4, 2:4, 2] = 1  # necrotic core: 4 voxels
    lab[5:8, 2:4, 2] = 2  # edema: 6 voxels
    lab[2:4, 5:7, 3] = 3  # enhancing: 4 voxels
    return lab


def test_brats_mets_default_labels_exclude_edema(tmp_path):
    _brats_case(tmp_path / "brats", "BraTS-MET-00001-000", _labels())
    cohort = discover(tmp_path / "brats")
    assert cohort.layout == "brats-mets"
    pf = cohort.patients[0]
    assert sorted(pf.files) == ["flair", "t1_post", "t1_pre", "t2"]
    vol = load_patient(pf)
    assert int(vol.mask.sum()) == 8 and vol.labels == (0, 1, 2, 3)


def test_brats_mets_configurable_labels(tmp_path):
    _brats_case(tmp_path / "brats", "BraTS-MET-00002-000", _labels())
    vol = load_patient(discover(tmp_path / "brats", lesion_labels=(1, 2, 3)).patients[0])
    assert int(vol.mask.sum()) == 14


def test_ucsf_bmsr(tmp_path):
    root = tmp_path / "ucsf"
    for j, s in enumerate(("T1pre", "T1post", "FLAIR", "subtraction")):
        write_nii(root / "100001" / f"100001_{s}.nii.gz", volume(j))
    write_nii(root / "100001" / "100001_seg.nii.gz", _labels())
    cohort = discover(root)
    assert cohort.layout == "ucsf-bmsr"
    pf = cohort.patients[0]
    assert sorted(pf.files) == ["flair", "t1_post", "t1_pre", "t1_subtraction"]
    assert int(load_patient(pf).mask.sum()) == 8


def test_forced_layout(make_nifti_cohort):
    root = make_nifti_cohort({"p": ["flair"]})
    assert discover(root, "nifti").layout == "nifti"
    # Forcing a layout that does not match finds no sequence: a per-patient problem.
    pf = discover(root, "brats-mets").patients[0]
    assert pf.files == {} and "no usable sequence" in pf.problems[0]


def test_detect_layout_votes(make_nifti_cohort):
    root = make_nifti_cohort({"a": ["flair"], "b": ["bravo"]})
    assert detect_layout(root) == "nifti"


def test_undetectable_layout_names_root(tmp_path):
    (tmp_path / "c" / "p").mkdir(parents=True)
    (tmp_path / "c" / "p" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"cannot detect the cohort layout"):
        discover(tmp_path / "c")


def test_affine_equal_within_tolerance(tmp_path):
    write_nii(tmp_path / "c" / "p" / "flair.nii.gz", volume(0))
    write_nii(tmp_path / "c" / "p" / "t1_gre_post.nii.gz", volume(1), AFFINE + 1e-5)
    assert load_patient(discover(tmp_path / "c").patients[0]).shape == SHAPE


def test_4d_singleton_is_squeezed(tmp_path):
    write_nii(tmp_path / "c" / "p" / "flair.nii.gz", volume(0)[..., None])
    assert load_patient(discover(tmp_path / "c").patients[0]).shape == SHAPE


def test_float_mask_with_integer_values(tmp_path):
    write_nii(tmp_path / "c" / "p" / "flair.nii.gz", volume(0))
    write_nii(tmp_path / "c" / "p" / "seg.nii.gz", lesion_mask().astype(np.float32))
    assert load_patient(discover(tmp_path / "c").patients[0]).mask.sum() == lesion_mask().sum()


def test_mask_0_255(tmp_path):
    write_nii(tmp_path / "c" / "p" / "flair.nii.gz", volume(0))
    write_nii(tmp_path / "c" / "p" / "seg.nii.gz", lesion_mask(value=255))
    vol = load_patient(discover(tmp_path / "c").patients[0])
    np.testing.assert_array_equal(vol.mask, lesion_mask())
    assert nib.load(tmp_path / "c" / "p" / "seg.nii.gz").get_fdata().max() == 255
