"""Physical-space geometry: resampling to a target spacing and back keeps lesions where they are.

Volumes are made up here with a sphere of known centre and radius in world millimetres, stored
at five voxel sizes and orientations, and pushed through the real preprocessing (load,
reorientation, resampling) and back to each file's own grid.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from seqablate.data.dataset import crop_patch
from seqablate.data.geometry import GridMap, anchored_pad, plan_spacing
from seqablate.data.layouts import PatientFiles
from seqablate.data.preprocess import (
    PreprocessParams,
    preprocess_volume,
    reference_ball,
    to_original_grid,
)
from seqablate.data.volumes import header_spacing, load_patient

CENTRE = np.array([3.3, -7.1, 5.6])  # mm, world (RAS)
RADIUS = 7.0  # mm

# (voxel sizes along the file's axes, axis codes of the file): isotropic, anisotropic thick
# slices, LPS storage, a permuted (sagittal-first) storage, and coarse in-plane voxels.
GRIDS = [
    ((1.0, 1.0, 1.0), ("R", "A", "S")),
    ((0.8, 0.8, 3.6), ("R", "A", "S")),
    ((1.2, 1.2, 2.5), ("L", "P", "S")),
    ((2.0, 1.1, 1.4), ("P", "S", "R")),
    ((1.8, 1.8, 1.8), ("L", "A", "I")),
]


def _affine(zooms: tuple[float, float, float], codes: tuple[str, str, str], shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel -> RAS mm for a grid stored with axis ``codes``, centred on the world origin."""
    directions = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    a = np.zeros((4, 4))
    a[3, 3] = 1
    for axis, (code, zoom) in enumerate(zip(codes, zooms, strict=True)):
        world, sign = directions[code]
        a[world, axis] = sign * zoom
    a[:3, 3] = -a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


def _write_patient(folder: Path, zooms: tuple[float, float, float], codes: tuple[str, str, str]) -> tuple[Path, np.ndarray]:
    """A 64 mm cube of head-like signal with a sphere lesion; returns (folder, affine)."""
    shape = tuple(int(round(64 / z)) for z in zooms)
    affine = _affine(zooms, codes, shape)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    lesion = np.linalg.norm(world - CENTRE, axis=-1) <= RADIUS
    head = np.linalg.norm(world, axis=-1) <= 28.0
    image = (100 * head + 150 * lesion + 5).astype(np.float32)
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(image, affine), folder / "t1_gre_post.nii.gz")
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine), folder / "seg.nii.gz")
    return folder, affine


def _files(folder: Path) -> PatientFiles:
    return PatientFiles(folder.name, {"t1_gre_post": folder / "t1_gre_post.nii.gz"}, folder / "seg.nii.gz", "nifti",
                        folder=folder, mask_labels=(0, 1), lesion_labels=(1,))


def _centre_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    com = np.asarray(ndimage.center_of_mass(mask.astype(float)))
    return affine[:3, :3] @ com + affine[:3, 3]


def test_grid_map_by_hand() -> None:
    """10 x 20 x 5 voxels of 2 x 1 x 3 mm to 1 x 1 x 1.5 mm: 20 x 20 x 10 voxels, and target
    voxel 0 sits a quarter source voxel before source voxel 0 along x and z (same centre)."""
    g = GridMap.plan((10, 20, 5), (2.0, 1.0, 3.0), (1.0, 1.0, 1.5))
    assert g.shape == (20, 20, 10)
    np.testing.assert_allclose(g.scale, [0.5, 1.0, 0.5])
    np.testing.assert_allclose(g.offset, [-0.25, 0.0, -0.25])
    # A ramp along x (value = source x index) resamples to the source coordinate of each target voxel.
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None], (10, 20, 5))
    got = g.to_target(ramp, antialias=False)[:, 0, 0]
    want = np.clip(-0.25 + 0.5 * np.arange(20), 0, 9)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Back: exact away from the edge (the first and last source voxel lie outside the target's
    # outermost voxel centres, where the edge value is repeated).
    back = g.to_source(g.to_target(ramp, antialias=False))
    np.testing.assert_allclose(back[1:-1], ramp[1:-1], atol=1e-5)
    with pytest.raises(ValueError, match="spacing"):
        GridMap.plan((4, 4, 4), (1, 1, 0), (1, 1, 1))


def test_plan_spacing_is_the_median() -> None:
    assert plan_spacing([(1.0, 1.0, 3.0), (0.5, 0.5, 1.0), (2.0, 2.0, 5.0)]) == (1.0, 3.0)
    # padded from the world lattice: first pixel at world index 13 -> 5 before (index 8), and
    # 13 + 61 = 74 -> 6 after (80); index -3 -> 5 before (-8); already aligned -> nothing
    assert anchored_pad(61, 13) == (5, 6) and anchored_pad(64, -3) == (5, 3) and anchored_pad(64, 16) == (0, 0)


@pytest.mark.parametrize(("zooms", "codes"), GRIDS, ids=[f"{z}-{''.join(c)}" for z, c in GRIDS])
def test_round_trip_keeps_the_lesion(tmp_path: Path, zooms: tuple[float, float, float], codes: tuple[str, str, str]) -> None:
    """Load (reoriented to RAS), resample to 1 x 1 x 1.5 mm, back to the file's grid: the lesion
    keeps its voxels (within 10 %, Dice >= 0.95) and its centre (within 0.2 mm); on the
    resampled grid it sits at the same world point and has the sphere's volume (4/3 pi r^3)."""
    folder, affine = _write_patient(tmp_path / "p", zooms, codes)
    pf = _files(folder)
    vol = load_patient(pf)
    assert header_spacing(pf) == pytest.approx(vol.spacing)
    params = PreprocessParams(geometry="spacing", spacing_mm=1.0, slice_mm=1.5, intensity="minmax")
    pre = preprocess_volume(vol, ["t1_gre_post"], params)
    assert pre.grid is not None and pre.mask is not None
    assert pre.grid.spacing == (1.0, 1.0, 1.5)
    assert pre.image.shape == (1, pre.grid.shape[2], pre.grid.shape[0], pre.grid.shape[1])

    # On the resampled grid: the world point of target voxel i is the source's at offset + scale * i.
    target_affine = vol.affine.copy()
    target_affine[:3, :3] = vol.affine[:3, :3] @ np.diag(pre.grid.scale)
    target_affine[:3, 3] = vol.affine[:3, :3] @ pre.grid.offset + vol.affine[:3, 3]
    mask_xyz = np.transpose(pre.mask, (1, 2, 0))
    np.testing.assert_allclose(_centre_mm(mask_xyz, target_affine), CENTRE, atol=0.25)
    sphere_mm3 = 4 / 3 * np.pi * RADIUS**3
    assert mask_xyz.sum() * 1.5 == pytest.approx(sphere_mm3, rel=0.1)

    # Back on the patient's RAS grid, as probabilities are: the same voxels, the same centre.
    back = to_original_grid(pre.mask.astype(np.float32), vol.shape, pre.grid) >= 0.5
    truth = vol.mask.astype(bool)
    dice = 2 * (back & truth).sum() / (back.sum() + truth.sum())
    assert dice >= 0.95
    assert back.sum() == pytest.approx(truth.sum(), rel=0.1)
    np.testing.assert_allclose(_centre_mm(back, vol.affine), _centre_mm(truth, vol.affine), atol=0.2)
    # ... and the RAS grid is the file's own: its centre is the sphere's, in the file's affine too.
    stored = np.asanyarray(nib.load(folder / "seg.nii.gz").dataobj)
    np.testing.assert_allclose(_centre_mm(stored, affine), CENTRE, atol=0.5)


def test_resize_geometry_is_unchanged(tmp_path: Path) -> None:
    """``resize`` keeps the pixel-count pipeline: H = W = image_size, no grid, and the cache
    key of the arrays is the one it had before the geometry existed."""
    folder, _ = _write_patient(tmp_path / "p", (1.0, 1.0, 2.0), ("R", "A", "S"))
    vol = load_patient(_files(folder))
    pre = preprocess_volume(vol, ["t1_gre_post"], PreprocessParams(image_size=48))
    assert pre.grid is None and pre.image.shape == (1, vol.shape[2], 48, 48)
    assert PreprocessParams(image_size=48).key() == {"version": 3, "image_size": 48, "intensity": "minmax_clahe",
                                                     "clahe_clip": 0.01, "upper_percentile": 99.5}
    with pytest.raises(ValueError, match="data.spacing_mm"):
        PreprocessParams(geometry="spacing")


def test_reference_ball_by_hand() -> None:
    """Voxels within the radius of the volume's centre, in mm along each axis's own spacing."""
    ball = reference_ball((5, 3, 3), (1.0, 2.0, 4.0), 2.0)
    # centre (2, 1, 1); along x two voxels of 1 mm reach 2 mm, along y one voxel is 2 mm,
    # along z one voxel is already 4 mm
    want = np.zeros((5, 3, 3), dtype=bool)
    want[:, 1, 1] = True
    want[2, :, 1] = True
    assert np.array_equal(ball, want)
    assert reference_ball((4, 4, 2), (1.0, 1.0, 1.0), 100.0).all()  # a small field of view: all of it


def test_clahe_tiles_are_fixed_in_the_world() -> None:
    """A slice and a wider view of the same scene (more around it, other grey range) get the
    same CLAHE values where both see the same tiles: tiles on the world lattice, grey levels
    not stretched to each slice's own range. skimage's default tiling would not."""
    from skimage.exposure import equalize_adapthist

    from seqablate.data.preprocess import clahe_anchored

    rng = np.random.default_rng(3)
    k = 8
    scene = ndimage.gaussian_filter(rng.uniform(0.0, 0.6, (1, 80, 80)), (0, 2, 2)).astype(np.float32)
    wide = scene.copy()
    wide[0, :13, :] = 1.0  # a bright rim only the wide view holds (another grey range)
    tight = scene[:, 13:77, 11:75]  # pixel (0, 0) of the tight view is pixel (13, 11) of the wide one
    a = clahe_anchored(wide, 0.01, k, (-40, -40))
    b = clahe_anchored(tight, 0.01, k, (-40 + 13, -40 + 11))
    # Tiles whose context lies inside both views: 2 tiles in from the tight view's edges.
    inner = (slice(None), slice(13 + 2 * k, 77 - 2 * k), slice(11 + 2 * k, 75 - 2 * k))
    tight_inner = (slice(None), slice(2 * k, 64 - 2 * k), slice(2 * k, 64 - 2 * k))
    assert np.array_equal(a[inner], b[tight_inner])
    assert float(b.min()) >= 0.0 and float(b.max()) <= 1.0
    assert not clahe_anchored(np.full((1, 16, 16), 0.3, np.float32), 0.01, k, (0, 0)).any()
    ska = np.stack([equalize_adapthist(wide[0], kernel_size=k, clip_limit=0.01)])
    skb = np.stack([equalize_adapthist(tight[0], kernel_size=k, clip_limit=0.01)])
    assert float(np.abs(ska[inner] - skb[tight_inner]).mean()) > 0.01


def test_field_of_view_does_not_change_intensities(tmp_path: Path) -> None:
    """The same head in a tight and in a wide field of view gets the same intensities inside
    the head, even when the wide one adds air and a bright rim (scalp fat) around it: the
    rescale's percentile is taken in a ball at the centre of the field of view, and the CLAHE
    tile is in mm, not a fraction of the slice."""
    tight, _ = _write_patient(tmp_path / "tight", (1.0, 1.0, 2.0), ("R", "A", "S"))
    img = nib.load(tight / "t1_gre_post.nii.gz")
    seg = nib.load(tight / "seg.nii.gz")
    wide = tmp_path / "wide"
    wide.mkdir()
    pad = ((32, 32), (32, 32), (0, 0))
    shift = np.eye(4)
    shift[:3, 3] = -np.array([32, 32, 0])
    wide_affine = img.affine @ shift
    rng = np.random.default_rng(0)
    head = np.asarray(img.dataobj, dtype=np.float32)
    air = np.pad(head, pad, constant_values=5.0) + rng.uniform(0, 1, (128, 128, 32)).astype(np.float32)
    rim = np.zeros(air.shape[:2], dtype=bool)
    rim[28:100, 28:100] = True
    rim[32:96, 32:96] = False
    air[rim] = 3.0 * float(head.max())  # touches the head: a head mask would hold it
    nib.save(nib.Nifti1Image(air.astype(np.float32), wide_affine), wide / "t1_gre_post.nii.gz")
    nib.save(nib.Nifti1Image(np.pad(np.asarray(seg.dataobj), pad), wide_affine), wide / "seg.nii.gz")
    # a ball inside the tight field of view (64 mm), as the default's 35 mm is inside 72 mm
    params = PreprocessParams(geometry="spacing", spacing_mm=1.0, slice_mm=2.0, reference_radius_mm=28.0)
    a = preprocess_volume(load_patient(_files(tight)), ["t1_gre_post"], params)
    b = preprocess_volume(load_patient(_files(wide)), ["t1_gre_post"], params)
    inside = a.mask.astype(bool)
    got = b.image[0][:, 32:96, 32:96][inside]
    assert float(np.abs(got - a.image[0][inside]).mean()) < 0.03
    # The resize pipeline would not: the same head fills a quarter of the slices.
    h0, h1, w0, w1 = b.head_box
    assert h0 >= 28 - 1 and h1 <= 100 + 1 and w0 >= 28 - 1 and w1 <= 100 + 1
    # A reference over the whole field of view (the rim in it) would not either.
    wide_ref = PreprocessParams(geometry="spacing", spacing_mm=1.0, slice_mm=2.0, reference_radius_mm=1000.0)
    c = preprocess_volume(load_patient(_files(wide)), ["t1_gre_post"], wide_ref)
    assert float(np.abs(c.image[0][:, 32:96, 32:96][inside] - a.image[0][inside]).mean()) > 0.1


def test_crop_patch_by_hand() -> None:
    """A lesion pixel is always in the patch; a slice smaller than the patch is padded with zeros."""
    rng = np.random.default_rng(0)
    image = np.arange(2 * 1 * 40 * 30, dtype=np.float32).reshape(2, 1, 40, 30) + 1
    mask = np.zeros((40, 30), np.uint8)
    mask[35, 2] = 1
    for _ in range(50):
        img, m = crop_patch(image, mask, 16, (0, 40, 0, 30), rng)
        assert img.shape == (2, 1, 16, 16) and m.sum() == 1
        (r, c), = np.argwhere(m)
        assert img[0, 0, r, c] == image[0, 0, 35, 2]
    small = np.ones((1, 1, 10, 12), np.float32)
    img, m = crop_patch(small, np.zeros((10, 12), np.uint8), 16, None, rng)
    assert img.sum() == 120 and m.sum() == 0
    # Without lesion the patch centre stays inside the head box.
    for _ in range(50):
        img, _ = crop_patch(image, np.zeros((40, 30), np.uint8), 8, (20, 24, 10, 12), rng)
        centre = img[0, 0, 4, 4] - 1
        r, c = divmod(int(centre), 30)
        assert 20 - 4 <= r <= 24 + 4 and 10 - 4 <= c <= 12 + 4


def test_cache_plans_and_keeps_the_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cohort of two scanners through the cache: unset spacing is planned as the median
    voxel size, each patient keeps its own grid map, the truth is the mask as stored (not a
    round trip), probabilities go back to each patient's own grid, and another target spacing
    is another cache entry."""
    from seqablate.data.cache import preprocess_cohort
    from seqablate.data.cache import to_original_grid as back_to_patient

    root = tmp_path / "cohort"
    _write_patient(root / "a", (1.0, 1.0, 1.0), ("R", "A", "S"))
    _write_patient(root / "b", (2.0, 2.0, 3.0), ("L", "P", "S"))
    _write_patient(root / "c", (1.2, 1.2, 2.0), ("R", "A", "S"))
    cfg = {"geometry": "spacing", "sequences": ["t1_gre_post"], "intensity": "minmax", "lesion_labels": [1]}
    pats = preprocess_cohort(root, cfg, cache_dir=tmp_path / "cache", progress=False, workers=1)
    assert "1.2 mm in-plane, 2.0 mm between slices" in capsys.readouterr().err  # medians of (1, 2, 1.2), (1, 3, 2)
    for p in pats:
        assert p.grid is not None and p.grid.spacing == (1.2, 1.2, 2.0)
        assert p.image.shape[1:] == (p.grid.shape[2], p.grid.shape[0], p.grid.shape[1])
        truth = np.asarray(p.truth)
        assert truth.shape == p.orig_shape and truth.sum() > 0
        back = back_to_patient(np.asarray(p.mask, dtype=np.float32), p) >= 0.5
        assert 2 * (back & (truth > 0)).sum() / (back.sum() + truth.sum()) >= 0.9
    other = preprocess_cohort(root, {**cfg, "spacing_mm": 1.0, "slice_mm": 1.0}, cache_dir=tmp_path / "cache",
                              progress=False, workers=1)
    assert {p.entry for p in other}.isdisjoint({p.entry for p in pats})
    assert other[1].image.shape[2:] == (64, 64)  # 32 voxels of 2 mm -> 64 of 1 mm


def test_stored_configs_without_geometry_mean_resize(tmp_path: Path) -> None:
    """A new config defaults to ``spacing``; a config a run or a study stored before the
    geometry existed (no ``data.geometry``) reads as ``resize``, so the model it describes is
    preprocessed as it was trained and a resumed study continues as it started."""
    import yaml

    from seqablate.config import StudyConfig, TrialConfig, load_yaml, parse, stored_trial

    assert parse(TrialConfig, {}).data.geometry == "spacing"
    assert stored_trial({"data": {"image_size": 36}}).data.geometry == "resize"
    assert stored_trial({"data": {"geometry": "spacing", "spacing_mm": 1.5, "slice_mm": 2.0}}).data.spacing_mm == 1.5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"image_size": 36}}))
    assert load_yaml(tmp_path / "config.yaml", TrialConfig, stored=True).data.geometry == "resize"
    assert load_yaml(tmp_path / "config.yaml", TrialConfig).data.geometry == "spacing"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"name": "s", "space": "dropout-sweep", "base": {"data": {}}}))
    assert load_yaml(tmp_path / "study.yaml", StudyConfig, stored=True).base.data.geometry == "resize"


def test_dataset_patches_are_the_crop_of_the_whole_sample(tmp_path: Path) -> None:
    """A patch dataset reads only the window from the cache, and gives what cropping the whole
    2.5D sample would (same stream, same window)."""
    from seqablate.data.cache import preprocess_cohort
    from seqablate.data.dataset import SliceDataset

    root = tmp_path / "cohort"
    _write_patient(root / "a", (1.0, 1.0, 2.0), ("R", "A", "S"))
    _write_patient(root / "b", (2.0, 2.0, 3.0), ("L", "P", "S"))
    cfg = {"geometry": "spacing", "spacing_mm": 1.0, "slice_mm": 2.0, "sequences": ["t1_gre_post"],
           "intensity": "minmax", "lesion_labels": [1]}
    pats = preprocess_cohort(root, cfg, cache_dir=tmp_path / "cache", progress=False, workers=1)
    patched = SliceDataset(pats, slices=3, patch=24, seed=5)
    whole = SliceDataset(pats, slices=3)
    rng = np.random.default_rng(5)
    for i in (0, 7, 20, len(whole) - 1):
        want_img, want_mask = crop_patch(whole[i]["image"].numpy(), whole[i]["mask"].numpy(), 24,
                                         pats[whole.index(i)[0]].head_box, rng)
        got = patched[i]
        np.testing.assert_array_equal(got["image"].numpy(), want_img)
        np.testing.assert_array_equal(got["mask"].numpy(), want_mask)


def test_to_source_above_a_threshold_equals_the_full_transform_where_it_counts() -> None:
    """``to_source(above=t)`` interpolates only near resampled voxels above t: wherever the full
    transform exceeds t the values agree, and nothing else exceeds t (random grids, hot voxels
    anywhere, including the grid's corners where edge values are repeated)."""
    rng = np.random.default_rng(0)
    computed = 0
    for trial in range(120):
        src = tuple(int(n) for n in rng.integers(8, 40, 3))
        g = GridMap.plan(src, tuple(rng.uniform(0.5, 3, 3)), tuple(rng.uniform(0.5, 3, 3)))
        v = (rng.random(g.shape) * 0.05).astype(np.float32)
        for _ in range(int(rng.integers(0, 5))):
            v[tuple(int(rng.integers(0, n)) for n in g.shape)] = rng.uniform(0.1, 1)
        if trial % 6 == 0:
            v[0, 0, 0], v[-1, -1, -1] = 0.9, 0.8
        full, fast = g.to_source(v), g.to_source(v, above=0.1)
        hot = full > 0.1
        np.testing.assert_array_equal(fast > 0.1, hot)
        np.testing.assert_allclose(fast[hot], full[hot], atol=1e-6)
        computed += int((fast != 0).sum())
    assert computed > 0
    g = GridMap.plan((20, 20, 10), (1.0, 1.0, 3.0), (1.5, 1.5, 1.5))
    assert not g.to_source(np.zeros(g.shape, np.float32), above=0.1).any()  # nothing hot: nothing computed
