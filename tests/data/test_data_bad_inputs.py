"""Every bad input named by the issue: the error names the file/patient and the reason, and
preprocessing leaves no cache entry for the failed patient (the good one is cached)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import lesion_mask, volume, write_nii
from PIL import Image

from seqablate.data import DataError, discover, load_patient, preprocess_cohort

CFG = {"image_size": 16, "sequences": ["t1_gre_post", "flair"], "intensity": "minmax"}


def _good(root: Path) -> None:
    write_nii(root / "good" / "t1_gre_post.nii.gz", volume(1))
    write_nii(root / "good" / "flair.nii.gz", volume(2))
    write_nii(root / "good" / "seg.nii.gz", lesion_mask())


def _entries(cache: Path) -> list[str]:
    return sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir() if not p.name.startswith("."))


def _assert_fails_cleanly(tmp_path: Path, root: Path, *needles: str) -> DataError:
    """Loading 'bad' raises naming it; preprocessing caches 'good' only and leaves no temp dir."""
    cohort = discover(root)
    bad = next(p for p in cohort.patients if p.patient_id == "bad")
    with pytest.raises(DataError) as err:
        load_patient(bad)
    msg = str(err.value)
    assert "patient bad" in msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err2:
        preprocess_cohort(root, CFG, cache_dir=cache, progress=False, workers=1)
    assert "1 of 2 patient(s) failed" in str(err2.value) and "patient bad" in str(err2.value)
    assert needles[-1] in str(err2.value)
    assert _entries(cache) == ["good"]
    assert not any(p.name.startswith(".tmp-") for p in cache.iterdir())
    return err.value


def test_truncated_gzip(tmp_path):
    root = tmp_path / "c"
    _good(root)
    p = write_nii(root / "bad" / "t1_gre_post.nii.gz", volume(3))
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    _assert_fails_cleanly(tmp_path, root, str(p), "truncated or corrupt")


def test_truncated_uncompressed(tmp_path):
    root = tmp_path / "c"
    _good(root)
    p = write_nii(root / "bad" / "flair.nii", volume(3))
    p.write_bytes(p.read_bytes()[:700])
    _assert_fails_cleanly(tmp_path, root, str(p), "truncated or corrupt")


def test_corrupt_file(tmp_path):
    root = tmp_path / "c"
    _good(root)
    p = root / "bad" / "flair.nii.gz"
    p.parent.mkdir(parents=True)
    p.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    _assert_fails_cleanly(tmp_path, root, str(p), "truncated or corrupt")


def test_nan_voxels(tmp_path):
    root = tmp_path / "c"
    _good(root)
    v = volume(3)
    v[1, 1, 1] = np.nan
    v[2, 2, 2] = np.nan
    p = write_nii(root / "bad" / "flair.nii.gz", v)
    _assert_fails_cleanly(tmp_path, root, str(p), "2 NaN and 0 Inf")


def test_inf_voxels(tmp_path):
    root = tmp_path / "c"
    _good(root)
    v = volume(3)
    v[0, 0, 0] = np.inf
    p = write_nii(root / "bad" / "t1_gre_post.nii.gz", v)
    _assert_fails_cleanly(tmp_path, root, str(p), "0 NaN and 1 Inf")


def test_unexpected_mask_labels(tmp_path):
    root = tmp_path / "c"
    _good(root)
    write_nii(root / "bad" / "flair.nii.gz", volume(3))
    m = lesion_mask()
    m[0, 0, 0] = 7
    p = write_nii(root / "bad" / "seg.nii.gz", m)
    _assert_fails_cleanly(tmp_path, root, str(p), "unexpected mask label(s) [7]")


def test_non_integer_mask(tmp_path):
    root = tmp_path / "c"
    _good(root)
    write_nii(root / "bad" / "flair.nii.gz", volume(3))
    p = write_nii(root / "bad" / "seg.nii.gz", lesion_mask().astype(np.float32) * 0.5)
    _assert_fails_cleanly(tmp_path, root, str(p), "non-integer")


def test_grid_shape_mismatch(tmp_path):
    root = tmp_path / "c"
    _good(root)
    write_nii(root / "bad" / "flair.nii.gz", volume(3))
    p = write_nii(root / "bad" / "t1_gre_post.nii.gz", volume(4, (12, 10, 7)))
    _assert_fails_cleanly(tmp_path, root, str(p), "'t1_gre_post' has shape (12, 10, 7)", "one grid")


def test_grid_affine_mismatch(tmp_path):
    root = tmp_path / "c"
    _good(root)
    write_nii(root / "bad" / "flair.nii.gz", volume(3))
    shifted = np.diag([1.0, 1.2, 2.0, 1.0])
    shifted[0, 3] = 0.5
    p = write_nii(root / "bad" / "t1_gre_post.nii.gz", volume(4), shifted)
    _assert_fails_cleanly(tmp_path, root, str(p), "affine that differs", "0.5 mm")


def test_no_usable_sequence(tmp_path):
    root = tmp_path / "c"
    _good(root)
    write_nii(root / "bad" / "seg.nii.gz", lesion_mask())
    _assert_fails_cleanly(tmp_path, root, "no usable sequence", str(root / "bad"))


def test_no_sequence_of_the_study(tmp_path):
    """Files exist, but none of the study's sequences: unusable for this study."""
    root = tmp_path / "c"
    _good(root)
    write_nii(root / "bad" / "t2.nii.gz", volume(3))
    pf = next(p for p in discover(root).patients if p.patient_id == "bad")
    with pytest.raises(DataError, match=r"patient bad.*no usable sequence.*has \['t2'\]"):
        load_patient(pf, ["t1_gre_post", "flair"])


def test_all_problems_of_a_patient_at_once(tmp_path):
    root = tmp_path / "c"
    _good(root)
    v = volume(3)
    v[0, 0, 0] = np.nan
    write_nii(root / "bad" / "flair.nii.gz", v)
    m = lesion_mask()
    m[0, 0, 0] = 9
    write_nii(root / "bad" / "seg.nii.gz", m)
    err = _assert_fails_cleanly(tmp_path, root, "1 NaN", "unexpected mask label(s) [9]")
    assert len(err.problems) == 2


def test_empty_cohort(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*empty cohort"):
        discover(tmp_path / "empty")
    with pytest.raises(DataError, match="empty cohort"):
        preprocess_cohort(tmp_path / "empty", CFG, cache_dir=tmp_path / "cache", progress=False)


def test_missing_cohort_folder(tmp_path):
    with pytest.raises(DataError, match=r"nope: cohort folder does not exist"):
        discover(tmp_path / "nope")


def test_unknown_layout(make_nifti_cohort):
    root = make_nifti_cohort({"p": ["flair"]})
    with pytest.raises(DataError, match=r"unknown layout 'brats'.*did you mean 'brats-mets'"):
        discover(root, "brats")


def test_brainmetshare_slice_missing_in_the_middle(tmp_path):
    root = tmp_path / "bms"
    img = np.full((6, 6), 100, np.uint8)
    for series in ("0", "3"):
        for i in range(8):
            (root / "Mets_001" / series).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "Mets_001" / series / f"{i}.png")
    (root / "Mets_001" / "3" / "5.png").unlink()
    for i in range(8):
        (root / "Mets_002" / "0").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "Mets_002" / "0" / f"{i}.png")
    cohort = discover(root)
    with pytest.raises(DataError, match=r"Mets_001/3: series has 1 slice\(s\) missing in the middle \(no 5.png"):
        load_patient(cohort.patients[0])
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="Mets_001"):
        preprocess_cohort(root, {**CFG, "sequences": ["t1_gre_post", "flair"]}, cache_dir=cache, progress=False, workers=1)
    assert _entries(cache) == ["Mets_002"]


def test_corrupt_png(tmp_path):
    root = tmp_path / "bms"
    for i in range(4):
        (root / "Mets_001" / "0").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(root / "Mets_001" / "0" / f"{i}.png")
    (root / "Mets_001" / "0" / "2.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"2.png: truncated or corrupt PNG"):
        load_patient(discover(root).patients[0])


def test_duplicate_sequence_files(tmp_path):
    root = tmp_path / "c"
    write_nii(root / "p" / "bravo.nii.gz", volume(0))
    write_nii(root / "p" / "t1_gre_post.nii", volume(1))
    with pytest.raises(DataError, match=r"a second file for sequence 't1_gre_post'"):
        load_patient(discover(root).patients[0])
