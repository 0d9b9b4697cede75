"""Preprocessing values, the cache key, warm runs that read only the cache, atomic entries."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from _data_helpers import SHAPE, lesion_mask, volume

import seqablate.data.cache as cache_mod
import seqablate.data.volumes as volumes_mod
from seqablate.data import load_entry, preprocess_cohort, to_original_grid
from seqablate.data.preprocess import clahe_slices, rescale01, resize_inplane

SEQS = ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"]


@pytest.fixture
def cohort(make_nifti_cohort):
    return make_nifti_cohort({"p1": SEQS, "p2": ["t1_gre_post", "t1_fse_post", "flair"]})


def _cfg(**kw):
    return {"image_size": 16, "geometry": "resize", **kw}  # the pixel-count pipeline these tests check by hand


def test_rescale01_by_hand():
    v = np.array([0.0, 1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 1, 5)
    out = rescale01(v, upper_percentile=100.0)
    np.testing.assert_allclose(out.ravel(), [0, 0.25, 0.5, 0.75, 1.0])
    assert not rescale01(np.full((2, 2, 2), 5.0)).any()


def test_resize_inplane_transposes_and_keeps_identity():
    v = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
    out = resize_inplane(v, 4, order=1)
    assert out.shape == (3, 4, 4)
    np.testing.assert_array_equal(out[2], v[:, :, 2])


def test_mask_nearest_neighbour_stays_binary():
    m = np.zeros((10, 10, 2), np.uint8)
    m[2:5, 2:5, 1] = 1
    out = resize_inplane(m, 20, order=0)
    assert set(np.unique(out)) == {0, 1}
    assert out[1].sum() == 9 * 4 and out[0].sum() == 0  # 3x3 -> 6x6 when doubling


def test_clahe_constant_slice_is_zero():
    s = np.zeros((2, 16, 16), np.float32)
    s[1] = np.linspace(0, 1, 256).reshape(16, 16)
    out = clahe_slices(s)
    assert not out[0].any() and out[1].max() == pytest.approx(1.0)


def test_preprocess_cohort_outputs(cohort, tmp_path):
    pats = preprocess_cohort(cohort, _cfg(), cache_dir=tmp_path / "cache", progress=False, workers=1)
    p1, p2 = pats
    assert [p.patient_id for p in pats] == ["p1", "p2"]
    assert isinstance(p1.image, np.memmap) and p1.image.shape == (4, SHAPE[2], 16, 16) and p1.image.dtype == np.float16
    assert p1.image.min() >= 0 and p1.image.max() <= 1
    np.testing.assert_array_equal(p2.present, [True, False, True, True])
    assert not np.asarray(p2.image[1]).any()  # missing on disk = zeros
    assert p1.mask.shape == (SHAPE[2], 16, 16) and p1.mask.dtype == np.uint8
    np.testing.assert_array_equal(p1.lesion_slices(), lesion_mask().any(axis=(0, 1)))
    assert p1.spacing == pytest.approx((1.0, 1.2, 2.0)) and p1.orig_shape == SHAPE
    assert p1.sequences == tuple(SEQS)


def test_clahe_off_is_rescaled_resized_volume(cohort, tmp_path):
    (p1, _) = preprocess_cohort(cohort, _cfg(intensity="minmax", image_size=16), cache_dir=tmp_path / "c", progress=False, workers=1)
    # Computed a second way: scipy zoom of the rescaled volume, slice by slice.
    from scipy import ndimage

    v = rescale01(volume(0))
    expect = np.stack([ndimage.zoom(v[:, :, z], (16 / 12, 16 / 10), order=1, mode="nearest", grid_mode=True) for z in range(SHAPE[2])])
    # Upsampling (no anti-aliasing): both are bilinear on pixel centres; the cache stores
    # float16 (half a unit in the last place of a value in [0.5, 1] is 2.4e-4).
    np.testing.assert_allclose(p1.image[0].astype(np.float32), expect, atol=2.5e-4)


def test_warm_run_reads_only_the_cache(cohort, tmp_path, monkeypatch):
    cdir = tmp_path / "cache"
    cold = preprocess_cohort(cohort, _cfg(), cache_dir=cdir, progress=False, workers=1)

    def boom(*a, **k):
        raise AssertionError("a warm run must not read volumes")

    monkeypatch.setattr(volumes_mod, "load_patient", boom)
    monkeypatch.setattr(cache_mod, "preprocess_volume", boom)
    warm = preprocess_cohort(cohort, _cfg(), cache_dir=cdir, progress=False, workers=1)
    for a, b in zip(cold, warm, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.entry == b.entry


def test_key_changes_with_files_and_params(cohort, tmp_path):
    cdir = tmp_path / "cache"
    first = preprocess_cohort(cohort, _cfg(), cache_dir=cdir, progress=False, workers=1)
    other = preprocess_cohort(cohort, _cfg(intensity="minmax"), cache_dir=cdir, progress=False, workers=1)
    assert first[0].entry != other[0].entry
    f = cohort / "p1" / "flair.nii.gz"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "edited"
    again = preprocess_cohort(cohort, _cfg(), cache_dir=cdir, progress=False, workers=1)
    assert again[0].entry != first[0].entry and again[1].entry == first[1].entry
    seq_order = preprocess_cohort(cohort, _cfg(sequences=list(reversed(SEQS))), cache_dir=cdir, progress=False, workers=1)
    np.testing.assert_array_equal(seq_order[0].image[0], again[0].image[3])


def test_crash_mid_write_leaves_no_entry(cohort, tmp_path, monkeypatch):
    cdir = tmp_path / "cache"
    real_save = np.save
    calls = {"n": 0}

    def failing_save(path, arr, *a, **k):
        calls["n"] += 1
        real_save(path, arr, *a, **k)
        if str(path).endswith("image.npy"):
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache_mod.np, "save", failing_save)
    with pytest.raises(ValueError, match=r"(?s)2 of 2 patient\(s\) failed.*patient p1: OSError: disk full"):
        preprocess_cohort(cohort, _cfg(), cache_dir=cdir, progress=False, workers=1)
    assert calls["n"] == 2 and list(cdir.iterdir()) == []
    monkeypatch.setattr(cache_mod.np, "save", real_save)
    assert len(preprocess_cohort(cohort, _cfg(), cache_dir=cdir, progress=False, workers=1)) == 2


def test_stale_temp_dirs_are_swept(cohort, tmp_path):
    import subprocess
    import sys

    from seqablate.folders import _host

    cdir = tmp_path / "cache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = _host()  # how temp_name records this host
    stale = cdir / f".tmp-p1-{host}-{int(dead.stdout)}-0123abcd"  # its process has exited
    live = cdir / f".tmp-p1-{host}-{os.getpid()}-0123abcd"  # this process: still writing
    foreign = cdir / ".tmp-p1-crashed"  # not a name seqablate makes: never touched
    for d in (stale, live, foreign):
        d.mkdir(parents=True)
        os.utime(d, (0, 0))
    preprocess_cohort(cohort, _cfg(), cache_dir=cdir, progress=False, workers=1)
    assert not stale.exists() and live.exists() and foreign.exists()


def test_errors_skip_keeps_good_patients(cohort, tmp_path):
    (cohort / "p2" / "flair.nii.gz").write_bytes(b"junk")
    pats = preprocess_cohort(cohort, _cfg(), cache_dir=tmp_path / "c", progress=False, workers=1, errors="skip")
    assert [p.patient_id for p in pats] == ["p1"]


def test_default_cache_dir_beside_cohort(cohort):
    (p1, _) = preprocess_cohort(cohort, _cfg(), progress=False, workers=1)
    assert p1.entry.parent == cohort.parent / ".seqablate-cache"


def test_pickle_reopens_memmap(cohort, tmp_path):
    (p1, _) = preprocess_cohort(cohort, _cfg(), cache_dir=tmp_path / "c", progress=False, workers=1)
    blob = pickle.dumps(p1)
    assert len(blob) < 2000  # paths, not arrays
    back = pickle.loads(blob)
    assert isinstance(back.image, np.memmap)
    np.testing.assert_array_equal(back.image, p1.image)
    assert load_entry(p1.entry).patient_id == "p1"


def test_to_original_grid_round_trip(cohort, tmp_path):
    (p1, _) = preprocess_cohort(cohort, _cfg(image_size=24), cache_dir=tmp_path / "c", progress=False, workers=1)
    back = to_original_grid(p1.mask.astype(np.float32), p1)
    assert back.shape == SHAPE and back.dtype == np.float32
    np.testing.assert_array_equal(back > 0.5, lesion_mask().astype(bool))


def test_parallel_workers_match_serial(cohort, tmp_path):
    serial = preprocess_cohort(cohort, _cfg(), cache_dir=tmp_path / "a", progress=False, workers=1)
    parallel = preprocess_cohort(cohort, _cfg(), cache_dir=tmp_path / "b", progress=False, workers=2)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_zscore_over_the_head_background_at_zero(tmp_path):
    from seqablate.data.preprocess import head_mask, zscore

    rng = np.random.default_rng(0)
    vol = rng.rayleigh(0.05, (24, 24, 12)).astype(np.float32)  # background noise
    yy, xx, zz = np.mgrid[:24, :24, :12]
    head = (xx - 12) ** 2 + (yy - 12) ** 2 + ((zz - 6) * 2) ** 2 < 81
    vol[head] = rng.normal(0.8, 0.05, head.sum())
    vol[head & ((xx - 12) ** 2 + (yy - 12) ** 2 < 4)] = 0.1  # a dark ventricle inside: still head
    mask = head_mask(vol)
    assert (mask == head).mean() > 0.99
    z = zscore(vol)
    assert abs(z[mask].mean()) < 1e-5 and abs(z[mask].std() - 1) < 1e-5
    assert (z[~mask] == 0).all()
    assert (zscore(np.ones((8, 8, 4), np.float32)) == 0).all()
