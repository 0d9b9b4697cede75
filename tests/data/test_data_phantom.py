"""Synthetic cohorts: files, affines, lesions, site differences, contrasts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from seqablate.data import DataError, count_lesions, discover, load_patient, make_phantom_cohort
from seqablate.data.phantom import FOV_MAX, FOV_MIN
from seqablate.sequences import PAPER_SEQUENCES

SHAPE = (40, 40, 20)


def _load(path):
    return nib.load(str(path)).get_fdata(dtype=np.float32)


def test_stanford_files_shapes_affines(phantom_dir):
    root = phantom_dir / "stanford"
    cohort = discover(root)
    assert cohort.layout == "nifti" and cohort.ids() == ["stanford_000", "stanford_001"]
    spacing = (FOV_MAX - FOV_MIN) / np.array(SHAPE)
    for pf in cohort.patients:
        assert sorted(pf.files) == sorted(PAPER_SEQUENCES) and pf.mask is not None
        for f in [*pf.files.values(), pf.mask]:
            img = nib.load(str(f))
            assert img.shape == SHAPE
            np.testing.assert_allclose(np.diag(img.affine)[:3], spacing)  # RAS, positive axes
            # voxel centres span the field of view
            np.testing.assert_allclose(img.affine[:3, 3], FOV_MIN + spacing / 2)
        vol = load_patient(pf)
        assert vol.mask.sum() > 0
        assert vol.spacing == pytest.approx(tuple(spacing))


def test_manifest_matches_masks(phantom_dir):
    meta = json.loads((phantom_dir / "stanford" / "phantom.json").read_text())
    assert meta["site"] == "stanford" and meta["reference"] == "t1_gre_post"
    for info in meta["patients_info"]:
        seg = _load(phantom_dir / "stanford" / info["patient_id"] / "seg.nii.gz")
        assert set(np.unique(seg)) <= {0.0, 1.0}
        assert count_lesions(seg) == len(info["lesions"]) >= 1
        for les in info["lesions"]:
            assert 2.0 <= les["diameter_mm"] <= 30.0 * 1.15 and les["kind"] in ("solid", "ring")
        assert sorted(info["registration_error"]) == ["flair", "t1_fse_post", "t1_fse_pre"]


def test_lesions_enhance_only_post_contrast(phantom_dir):
    for pid in ("stanford_000", "stanford_001"):
        d = phantom_dir / "stanford" / pid
        seg = _load(d / "seg.nii.gz") > 0
        pre, post, gre = (_load(d / f"{s}.nii.gz") for s in ("t1_fse_pre", "t1_fse_post", "t1_gre_post"))
        brain = pre > np.percentile(pre, 60)
        # relative to the normal-appearing brain of each scan
        ratio_pre = pre[seg].mean() / pre[brain & ~seg].mean()
        assert post[seg].mean() / post[brain & ~seg].mean() > 1.15 * ratio_pre
        assert gre[seg].mean() / gre[brain & ~seg].mean() > 1.05 * ratio_pre


def test_flair_csf_dark_and_edema_outside_mask(phantom_dir):
    d = phantom_dir / "stanford" / "stanford_000"
    flair, gre = _load(d / "flair.nii.gz"), _load(d / "t1_gre_post.nii.gz")
    # Ventricles: dark on T1 inside the head centre; they must be dark on FLAIR as well.
    centre = np.zeros(flair.shape, bool)
    cx, cy, cz = (s // 2 for s in flair.shape)
    centre[cx - 4 : cx + 4, cy - 4 : cy + 6, cz - 2 : cz + 4] = True
    csf = centre & (gre < np.percentile(gre[centre], 15))
    wm = centre & (gre > np.percentile(gre[centre], 80))
    assert flair[csf].mean() < 0.6 * flair[wm].mean()


def test_oslo_site(phantom_dir):
    meta = json.loads((phantom_dir / "oslo" / "phantom.json").read_text())
    assert meta["reference"] == "t1_fse_post"
    cohort = discover(phantom_dir / "oslo")
    assert all("t1_gre_post" not in p.files for p in cohort.patients)
    without_pre = [p.patient_id for p in cohort.patients if "t1_fse_pre" not in p.files]
    assert len(without_pre) == 2  # paper III-B: two Oslo patients lack the pre-contrast FSE
    for info in meta["patients_info"]:
        assert all(les["diameter_mm"] >= 5.0 * 0.85 for les in info["lesions"])
        assert "t1_fse_post" not in info["registration_error"]


def test_reproducible_and_reused(phantom_dir, tmp_path):
    a = make_phantom_cohort(tmp_path / "a", site="stanford", patients=1, seed=3, shape=SHAPE)
    np.testing.assert_array_equal(_load(a / "stanford_000" / "flair.nii.gz"), _load(phantom_dir / "stanford" / "stanford_000" / "flair.nii.gz"))
    mtime = (a / "stanford_000" / "flair.nii.gz").stat().st_mtime_ns
    make_phantom_cohort(tmp_path / "a", site="stanford", patients=1, seed=3, shape=SHAPE)  # reused as is
    assert (a / "stanford_000" / "flair.nii.gz").stat().st_mtime_ns == mtime
    with pytest.raises(DataError, match="holds another phantom cohort"):
        make_phantom_cohort(tmp_path / "a", site="stanford", patients=1, seed=4, shape=SHAPE)
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="unknown phantom site 'paris'"):
        make_phantom_cohort(tmp_path / "x", site="paris", patients=1, seed=0)
    with pytest.raises(DataError, match="patients must be >= 1"):
        make_phantom_cohort(tmp_path / "x", patients=0, seed=0)


def _debug_patient():
    from seqablate.data.phantom import _SITES, _grid, _render_patient

    debug: dict = {}
    shape = (48, 48, 24)
    images, mask, info = _render_patient(np.random.default_rng([11, 0, 0]), _SITES["stanford"], shape, _grid(shape), PAPER_SEQUENCES, debug)
    return images, mask, info, debug


def test_vessels_bright_on_bravo_suppressed_on_fse_and_edema_flair_bright():
    images, mask, info, dbg = _debug_patient()
    lesion = mask > 0
    vessel = (dbg["vessel"] > 0.6) & ~lesion
    wm = (dbg["wm"] > 0.9) & ~lesion & (dbg["vessel"] < 0.05) & (dbg["edema"] < 0.05)
    assert vessel.sum() > 20 and wm.sum() > 100
    gre, fse_post, flair = images["t1_gre_post"], images["t1_fse_post"], images["flair"]
    # BRAVO: vessels brighter than white matter and as bright as enhancing lesion -> confusable
    assert gre[vessel].mean() > 1.2 * gre[wm].mean()
    assert gre[vessel].mean() > 0.7 * gre[lesion].mean()
    # black-blood FSE: vessels darker than white matter (lesion enhancement: test above)
    assert fse_post[vessel].mean() < fse_post[wm].mean()
    # edema: bright on FLAIR, outside the lesion mask
    edema = (dbg["edema"] > 0.6) & ~lesion
    assert edema.sum() > 5
    assert flair[edema].mean() > 1.3 * flair[wm].mean()
    assert not (lesion & (dbg["edema"] > 0.6)).any()


def test_lesion_diameter_override(tmp_path):
    out = make_phantom_cohort(tmp_path / "big", site="stanford", patients=2, seed=5, shape=SHAPE,
                              lesion_diameter_mm=(12.0, 20.0))
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["lesion_diameter_mm"] == [12.0, 20.0]
    diameters = [les["diameter_mm"] for info in meta["patients_info"] for les in info["lesions"]]
    # drawn in [12, 20] mm, then each semi-axis jittered by 0.85-1.15 (the mean of three)
    assert diameters and all(12.0 * 0.85 <= d <= 20.0 * 1.15 for d in diameters)
    # the option is part of the cohort's identity: the same folder without it is another cohort
    with pytest.raises(DataError, match="holds another phantom cohort"):
        make_phantom_cohort(tmp_path / "big", site="stanford", patients=2, seed=5, shape=SHAPE)
    with pytest.raises(DataError, match=r"lesion_diameter_mm.*\(30.0, 5.0\)"):
        make_phantom_cohort(tmp_path / "bad", site="stanford", patients=1, seed=0, shape=SHAPE,
                            lesion_diameter_mm=(30.0, 5.0))
    assert not (tmp_path / "bad").exists()


def test_cropped_grid_and_lesion_counts(tmp_path):
    out = make_phantom_cohort(tmp_path / "fine", site="stanford", patients=12, seed=1, shape=(24, 24, 16),
                              voxel_mm=(1.5, 1.5, 1.5), workers=2)
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["voxel_mm"] == [1.5, 1.5, 1.5] and meta["spacing_mm"] == [1.5, 1.5, 1.5]
    img = nib.load(str(out / "stanford_000" / "flair.nii.gz"))
    np.testing.assert_allclose(np.diag(img.affine)[:3], 1.5)
    # the box is centred on the mid-brain
    centre = img.affine[:3, :3] @ (np.array(img.shape) - 1) / 2 + img.affine[:3, 3]
    np.testing.assert_allclose(centre, [0.0, -18.0, 12.0], atol=1e-6)
    # 1 + Geometric(0.35) lesions drawn (capped at 10): mostly few, sometimes many
    counts = [len(p["lesions"]) for p in meta["patients_info"]]
    assert min(counts) >= 0 and max(counts) <= 10 and sum(counts) >= 1
    # lesions are placed wholly inside the grid's FOV (36 x 36 x 24 mm around the mid-brain)
    lo, hi = centre - [18.0, 18.0, 12.0], centre + [18.0, 18.0, 12.0]
    np.testing.assert_allclose(meta["region_mm"], [lo, hi])
    for p in meta["patients_info"]:
        assert p["voxel_mm"] == [1.5, 1.5, 1.5] and p["shape"] == [24, 24, 16] and p["fov_mm"] == [36.0, 36.0, 24.0]
        for les in p["lesions"]:
            reach = les["diameter_mm"] / 2 * 1.15 / 0.85  # longest semi-axis
            assert np.all(np.asarray(les["center_mm"]) - reach >= lo) and np.all(np.asarray(les["center_mm"]) + reach <= hi)
    # rendering in 2 processes gives the same cohort as in one
    one = make_phantom_cohort(tmp_path / "one", site="stanford", patients=2, seed=1, shape=(24, 24, 16),
                              voxel_mm=(1.5, 1.5, 1.5))
    np.testing.assert_array_equal(_load(one / "stanford_001" / "seg.nii.gz"), _load(out / "stanford_001" / "seg.nii.gz"))
    np.testing.assert_array_equal(_load(one / "stanford_001" / "t1_fse_pre.nii.gz"),
                                  _load(out / "stanford_001" / "t1_fse_pre.nii.gz"))


def test_lesion_count_distribution():
    from seqablate.data.phantom import _SITES

    site = _SITES["stanford"]
    rng = np.random.default_rng(0)
    draws = np.minimum(site.lesions[1], site.lesions[0] - 1 + rng.geometric(site.lesion_p, 20000))
    # 1 to 10 lesions, most patients few (paper cohort): P(1) = 0.35, mean ~2.8
    assert draws.min() == 1 and draws.max() == 10
    assert abs((draws == 1).mean() - 0.35) < 0.02 and 2.5 < draws.mean() < 3.0
