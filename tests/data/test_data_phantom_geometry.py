"""A phantom patient is defined in world mm: any grid that contains its region shows the same patient.

Lesion positions are checked from the rendered masks themselves (connected components, centre
of mass through the NIfTI affine), not from the phantom's internals; grids are small (<= 60
voxels per axis) so the whole file runs in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from seqablate.cli import main
from seqablate.data import DataError, count_lesions, discover, load_patient, make_phantom_cohort
from seqablate.data.phantom import (
    BRAIN_CENTRE,
    FOV_MAX,
    FOV_MIN,
    SCANNERS,
    ScannerRange,
    geometry_affine,
    patient_model,
    render_model,
    render_patient,
    write_patient_nifti,
)

SEED = 0  # patient 0 of this cohort has 3 lesions and 2 mimics in REGION
HALF = np.array([40.0, 40.0, 30.0])
REGION = (BRAIN_CENTRE - HALF, BRAIN_CENTRE + HALF)
DIAMETERS = (6.0, 16.0)  # every lesion spans a few voxels of every grid below
COARSEST = 2.5


def _oblique(voxel: float, fov: tuple[float, float, float], degrees: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A grid rotated about z by ``degrees``, centred on the mid-brain."""
    shape = tuple(int(round(f / voxel)) for f in fov)
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot * voxel
    affine[:3, 3] = BRAIN_CENTRE - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine, shape  # type: ignore[return-value]


def _centres_of_mass(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World mm (float64[K, 3]) of the centre of mass of each 26-connected component."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    com = np.array(ndimage.center_of_mass(mask, labels, range(1, n + 1))).reshape(-1, 3)
    return com @ affine[:3, :3].T + affine[:3, 3]


def _render(affine: np.ndarray, shape: tuple[int, int, int], **kw: object) -> tuple[dict, np.ndarray, dict]:
    return render_patient("stanford", SEED, 0, affine=affine, shape=shape, region_mm=REGION,
                          lesion_diameter_mm=DIAMETERS, coarsest_mm=COARSEST, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def renderings() -> dict[str, tuple[np.ndarray, tuple[int, int, int], dict, np.ndarray, dict]]:
    """The same patient at 2 mm (96 x 96 x 72 mm), at 1.5 mm (84 x 90 x 66 mm; both contain
    REGION) and on a grid of 2.5 mm voxels rotated by 20 degrees about z."""
    out = {}
    grids = {"2mm": geometry_affine(2.0, (96, 96, 72)), "1.5mm": geometry_affine(1.5, (84, 90, 66)),
             "oblique": _oblique(2.5, (120, 120, 70), 20.0)}
    for name, (affine, shape) in grids.items():
        seqs = ("t1_gre_post",) if name == "oblique" else None
        images, mask, info = _render(affine, shape, sequences=seqs)
        out[name] = (affine, shape, images, mask, info)
    return out


def test_geometry_affine() -> None:
    affine, shape = geometry_affine(1.5, (96, 96, 72))
    assert shape == (64, 64, 48) and nib.aff2axcodes(affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(affine)[:3], 1.5)
    # voxel centres symmetric about the mid-brain
    np.testing.assert_allclose(affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3], BRAIN_CENTRE)
    affine, shape = geometry_affine(2.0)  # the whole head
    assert shape == tuple(int(round(v)) for v in (FOV_MAX - FOV_MIN) / 2.0) == (84, 103, 84)
    np.testing.assert_allclose(affine[:3, 3] - 1.0, FOV_MIN)  # first voxel's outer face
    affine, shape = geometry_affine((1.0, 1.0, 3.0), (50, 50, 31), centre=(0.0, 0.0, 0.0))
    assert shape == (50, 50, 10)  # round(31 / 3)
    np.testing.assert_allclose(affine[:3, 3], [-24.5, -24.5, -13.5])
    with pytest.raises(DataError, match="voxel_mm must be positive"):
        geometry_affine((1.0, 0.0, 1.0))


def test_same_lesions_in_mm_at_every_grid(renderings) -> None:
    ref = renderings["2mm"][4]
    assert len(ref["lesions"]) == 3 and len(ref["mimics"]) == 2
    for name, (affine, shape, _, mask, info) in renderings.items():
        assert info["lesions"] == ref["lesions"], name  # centres, diameters, kinds: equal
        assert info["mimics"] == ref["mimics"] and info["vessels"] == ref["vessels"]
        assert count_lesions(mask) == len(info["lesions"])
        assert info["shape"] == list(shape)
        np.testing.assert_allclose(info["voxel_mm"], np.linalg.norm(affine[:3, :3], axis=0), atol=1e-4)
        for les in info["lesions"]:  # wholly inside the region
            r = les["diameter_mm"] / 2 * 1.15 / 0.85
            assert np.all(np.asarray(les["center_mm"]) - r >= REGION[0]) and np.all(np.asarray(les["center_mm"]) + r <= REGION[1])
    # The masks' lesions, measured from the voxels: the same places in mm, to a voxel.
    coms = {name: _centres_of_mass(r[3], r[0]) for name, r in renderings.items()}
    for name, voxel in (("1.5mm", 2.0), ("oblique", 2.5)):
        a, b = coms["2mm"], coms[name]
        dist = np.linalg.norm(a[:, None] - b[None], axis=2)
        assert np.all(dist.min(axis=1) <= voxel), (name, dist.min(axis=1))
        assert sorted(dist.argmin(axis=1).tolist()) == list(range(len(b)))  # one-to-one
    # and the same lesion volume (mm^3), to the voxelisation error of 6-16 mm lesions at 2-2.5 mm
    vols = {name: r[3].sum() * abs(np.linalg.det(r[0][:3, :3])) for name, r in renderings.items()}
    assert max(vols.values()) < 1.25 * min(vols.values()), vols


def test_rendering_does_not_change_the_world_model(renderings) -> None:
    a, b = renderings["2mm"][4], renderings["1.5mm"][4]
    assert a["registration_error"] == b["registration_error"]
    assert sorted(a["registration_error"]) == ["flair", "t1_fse_post", "t1_fse_pre"]
    model = patient_model("stanford", SEED, 0, region_mm=REGION, lesion_diameter_mm=DIAMETERS, coarsest_mm=COARSEST)
    affine, shape = geometry_affine(3.0, (90, 90, 66))
    first = render_model(model, affine=affine, shape=shape)
    again = render_model(model, affine=affine, shape=shape)
    for seq in first[0]:
        np.testing.assert_array_equal(first[0][seq], again[0][seq])  # noise: the patient's own streams
    # a missing sequence changes no other sequence's draws (noise, registration, bias)
    fewer = render_model(model, affine=affine, shape=shape, sequences=("t1_gre_post", "t1_fse_post", "flair"))
    np.testing.assert_array_equal(fewer[0]["flair"], first[0]["flair"])
    assert fewer[2]["registration_error"]["flair"] == first[2]["registration_error"]["flair"]
    # mirrored grid (LAS): the same voxel centres in reverse order along x give the same mask
    las = np.diag([-3.0, 3.0, 3.0, 1.0])
    las[:3, 3] = affine[:3, 3] + [3.0 * (shape[0] - 1), 0, 0]
    mirrored = render_model(model, affine=las, shape=shape, sequences=("t1_gre_post",))
    assert first[1].sum() > 0
    np.testing.assert_array_equal(mirrored[1][::-1], first[1])


def test_written_patient_reads_back_with_its_grid(renderings, tmp_path: Path) -> None:
    affine, shape, images, mask, info = renderings["1.5mm"]
    write_patient_nifti(tmp_path / "cohort" / "p0", images, mask, affine)
    cohort = discover(tmp_path / "cohort")
    assert cohort.layout == "nifti" and sorted(cohort.patients[0].files) == sorted(images)
    vol = load_patient(cohort.patients[0])
    assert vol.spacing == pytest.approx((1.5, 1.5, 1.5))
    img = nib.load(str(tmp_path / "cohort" / "p0" / "seg.nii.gz"))
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert img.header.get_xyzt_units()[0] == "mm" and int(img.header["qform_code"]) > 0
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask)


def test_fov_option_grid_region_and_identity(tmp_path: Path) -> None:
    out = make_phantom_cohort(tmp_path / "c", patients=1, seed=2, voxel_mm=(2.0, 2.0, 2.5), fov_mm=(64, 70, 50))
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["shape"] == [32, 35, 20] and meta["voxel_mm"] == [2.0, 2.0, 2.5]
    # the lesion region is the grid's FOV, centred on the mid-brain
    np.testing.assert_allclose(meta["region_mm"][0], BRAIN_CENTRE - [32, 35, 25])
    np.testing.assert_allclose(meta["region_mm"][1], BRAIN_CENTRE + [32, 35, 25])
    info = meta["patients_info"][0]
    assert info["fov_mm"] == [64.0, 70.0, 50.0] and info["shape"] == [32, 35, 20]
    img = nib.load(str(out / "stanford_000" / "flair.nii.gz"))
    assert img.shape == (32, 35, 20)
    np.testing.assert_allclose(img.affine, info["affine"], atol=1e-5)
    # the cohort's patient is render_patient with the manifest's parameters, voxel for voxel
    images, mask, again = render_patient("stanford", 2, 0, affine=np.array(info["affine"]), shape=info["shape"],
                                         region_mm=meta["region_mm"], coarsest_mm=meta["coarsest_mm"])
    np.testing.assert_array_equal(images["flair"], np.asarray(img.dataobj))
    np.testing.assert_array_equal(mask, np.asarray(nib.load(str(out / "stanford_000" / "seg.nii.gz")).dataobj))
    assert again["lesions"] == info["lesions"]
    # the same grid given as voxel size + shape is the same cohort: reused untouched
    mtime = (out / "stanford_000" / "flair.nii.gz").stat().st_mtime_ns
    make_phantom_cohort(tmp_path / "c", patients=1, seed=2, voxel_mm=(2.0, 2.0, 2.5), shape=(32, 35, 20))
    assert (out / "stanford_000" / "flair.nii.gz").stat().st_mtime_ns == mtime
    with pytest.raises(DataError, match="holds another phantom cohort"):
        make_phantom_cohort(tmp_path / "c", patients=1, seed=2, voxel_mm=(2.0, 2.0, 2.5), fov_mm=(64, 70, 60))
    with pytest.raises(DataError, match="holds another phantom cohort"):
        make_phantom_cohort(tmp_path / "c", patients=1, seed=2, scanners=ScannerRange(
            inplane_mm=(2.0, 2.5), slice_mm=(2.5, 3.0), fov_inplane_mm=(64, 70), fov_z_mm=(50, 50)))
    with pytest.raises(DataError, match="at most two of shape, voxel_mm and fov_mm"):
        make_phantom_cohort(tmp_path / "d", voxel_mm=(2, 2, 2), fov_mm=(64, 64, 64), shape=(32, 32, 32))
    with pytest.raises(DataError, match=r"fov_mm .* is a 5 x 5 x 5 grid"):
        make_phantom_cohort(tmp_path / "d", voxel_mm=(2, 2, 2), fov_mm=(10, 10, 10))
    assert not (tmp_path / "d").exists()


def test_mixed_scanner_cohort(tmp_path: Path) -> None:
    rng = ScannerRange(inplane_mm=(2.0, 3.0), slice_mm=(2.5, 4.0), fov_inplane_mm=(60, 90), fov_z_mm=(40, 50))
    out = make_phantom_cohort(tmp_path / "mixed", site="stanford", patients=4, seed=1, scanners=rng,
                              lesion_diameter_mm=(8.0, 16.0))
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["scanners"] == {"inplane_mm": [2.0, 3.0], "slice_mm": [2.5, 4.0], "fov_inplane_mm": [60.0, 90.0],
                                "fov_z_mm": [40.0, 50.0]}
    lo, hi = (np.asarray(v) for v in meta["region_mm"])  # the smallest FOV, around the mid-brain
    np.testing.assert_allclose(lo, BRAIN_CENTRE - [30, 30, 20])
    np.testing.assert_allclose(hi, BRAIN_CENTRE + [30, 30, 20])
    voxels = []
    for info in meta["patients_info"]:
        v = np.asarray(info["voxel_mm"])
        assert v[0] == v[1] and 2.0 <= v[0] <= 3.0 and 2.5 <= v[2] <= 4.0
        fov = v * np.asarray(info["shape"])
        assert np.all(fov >= [60, 60, 40]) and np.all(fov < [90 + v[0], 90 + v[0], 50 + v[2]])
        voxels.append(tuple(v))
        d = out / info["patient_id"]
        img = nib.load(str(d / "seg.nii.gz"))
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S") and list(img.shape) == info["shape"]
        np.testing.assert_allclose(img.header.get_zooms()[:3], v, rtol=1e-6)
        np.testing.assert_allclose(nib.affines.voxel_sizes(img.affine), v, rtol=1e-6)
        np.testing.assert_allclose(img.affine, info["affine"], atol=1e-5)
        # every lesion of the patient is in its mask, whole, inside its grid
        seg = np.asarray(img.dataobj)
        assert count_lesions(seg) == len(info["lesions"]) >= 1
        box_lo, box_hi = img.affine[:3, 3], img.affine[:3, 3] + v * (np.array(img.shape) - 1)
        for les in info["lesions"]:
            assert np.all(np.asarray(les["center_mm"]) >= lo) and np.all(np.asarray(les["center_mm"]) <= hi)
            assert np.all(np.asarray(les["center_mm"]) > box_lo) and np.all(np.asarray(les["center_mm"]) < box_hi)
    assert len(set(voxels)) == len(voxels)  # each patient its own scanner
    # A reader gets the spacing from the files.
    spacing = {p.patient_id: load_patient(p).spacing for p in discover(out).patients}
    for info in meta["patients_info"]:
        assert spacing[info["patient_id"]] == pytest.approx(tuple(info["voxel_mm"]))
    # The grid was drawn apart from the patient: patient 2 at another grid has the same lesions.
    info = meta["patients_info"][2]
    affine, shape = geometry_affine(2.0, (64, 64, 44))
    _, _, other = render_patient("stanford", 1, 2, affine=affine, shape=shape, region_mm=(lo, hi),
                                 lesion_diameter_mm=(8.0, 16.0), coarsest_mm=meta["coarsest_mm"],
                                 sequences=("t1_gre_post",))
    assert other["lesions"] == info["lesions"] and meta["coarsest_mm"] == 4.0
    # the same call again reuses the cohort untouched; another range is another cohort
    mtime = (out / "phantom.json").stat().st_mtime_ns
    make_phantom_cohort(out, site="stanford", patients=4, seed=1, scanners=rng, lesion_diameter_mm=(8.0, 16.0))
    assert (out / "phantom.json").stat().st_mtime_ns == mtime
    with pytest.raises(DataError, match="holds another phantom cohort"):
        make_phantom_cohort(out, site="stanford", patients=4, seed=1, lesion_diameter_mm=(8.0, 16.0),
                            scanners=ScannerRange(inplane_mm=(2.0, 3.0), slice_mm=(2.5, 4.0), fov_inplane_mm=(60, 90),
                                                  fov_z_mm=(40, 60)))
    with pytest.raises(DataError, match="scanners draws each patient's grid; voxel_mm does not apply"):
        make_phantom_cohort(tmp_path / "x", scanners=rng, voxel_mm=(1.0, 1.0, 1.0))


def test_site_default_scanner_ranges_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    # Oslo was scanned with thinner slices than Stanford (paper VI-D).
    assert SCANNERS["oslo"].slice_mm[1] < SCANNERS["stanford"].slice_mm[0]
    with pytest.raises(SystemExit):
        main(["phantom", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere, even at "in-|plane"

    def rng(lo: float, hi: float) -> str:
        return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"

    for name, r in SCANNERS.items():  # --help says what --mixed-scanner draws
        want = (f"{name}: {rng(*r.inplane_mm)} mm in-plane pixels, {rng(*r.slice_mm)} mm slices, "
                f"{rng(*r.fov_inplane_mm)} mm square in-plane FOV, {rng(*r.fov_z_mm)} mm through-plane FOV")
        assert "".join(want.split()) in text
    with pytest.raises(DataError, match="smallest in-plane FOV"):
        ScannerRange(inplane_mm=(1.0, 4.0), fov_inplane_mm=(20, 40))
    with pytest.raises(DataError, match=r"slice_mm must be \(min, max\) with 0 < min <= max"):
        ScannerRange(slice_mm=(3.0, 1.0))


@pytest.mark.parametrize("args, message", [
    (["--voxel-mm", "0", "1", "1"], "--voxel-mm 0 1 1: sizes must be positive mm"),
    (["--fov-mm", "96", "-96", "72"], "--fov-mm 96 -96 72: sizes must be positive mm"),
    (["--voxel-mm", "2", "2", "2", "--fov-mm", "96", "96", "10"], "--fov-mm 96 96 10 spans 48 x 48 x 5 voxels"),
    (["--mixed-scanner", "--voxel-mm", "1", "1", "1"], "--mixed-scanner draws each patient's voxel size and FOV; "
                                                       "it cannot be combined with --voxel-mm"),
    (["--mixed-scanner", "--shape", "32", "32", "16"], "cannot be combined with --shape"),
    (["--shape", "4", "32", "32"], "--shape 4 32 32: each size must be 8 to"),
    (["--misregistration-mm", "-1"], "--misregistration-mm -1: must be 0 to 10 mm"),
    (["--misregistration-mm", "nan"], "--misregistration-mm nan: must be 0 to 10 mm"),
])
def test_cli_refuses_bad_grid_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                      message: str) -> None:
    assert main(["phantom", str(tmp_path / "p"), "--patients", "1", *args]) == 2
    err = capsys.readouterr().err
    assert "seqablate phantom: error:" in err and message in err
    assert not (tmp_path / "p").exists()


def test_cli_fov_and_mixed_scanner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phantom", str(tmp_path / "f"), "--patients", "1", "--voxel-mm", "2", "2", "3",
                 "--fov-mm", "64", "64", "45"]) == 0
    assert "32 x 32 x 15 voxels of 2 x 2 x 3 mm" in capsys.readouterr().out
    assert nib.load(str(tmp_path / "f" / "stanford_000" / "seg.nii.gz")).shape == (32, 32, 15)
    assert main(["phantom", str(tmp_path / "m"), "--site", "oslo", "--patients", "1", "--mixed-scanner"]) == 0
    meta = json.loads((tmp_path / "m" / "phantom.json").read_text())
    assert meta["scanners"] == SCANNERS["oslo"].as_dict() and meta["patients_info"][0]["voxel_mm"][2] == 1.0


@pytest.mark.slow
def test_whole_head_at_1mm_and_2mm_is_the_same_patient() -> None:
    """The benchmark's case: whole head (default region) at 1 mm and 2 mm voxels (~7 s: the reference sequence only)."""
    results = {}
    for voxel in (1.0, 2.0):
        affine, shape = geometry_affine(voxel)
        results[voxel] = (affine, *render_patient("stanford", 5, 3, affine=affine, shape=shape, coarsest_mm=2.0,
                                                  lesion_diameter_mm=(5.0, 30.0), sequences=("t1_gre_post",)))
    (a1, _, m1, i1), (a2, _, m2, i2) = results[1.0], results[2.0]
    assert i1["lesions"] == i2["lesions"] and len(i1["lesions"]) >= 1
    c1, c2 = _centres_of_mass(m1, a1), _centres_of_mass(m2, a2)
    assert len(c1) == len(c2) == count_lesions(m1) == len(i1["lesions"])
    assert np.all(np.linalg.norm(c1[:, None] - c2[None], axis=2).min(axis=1) <= 2.0)
