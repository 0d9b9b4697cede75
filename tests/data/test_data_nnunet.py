"""nnU-Net v2 raw datasets: ``cohort export-nnunet`` writes one with a study's split, and the
``nnunet`` layout reads one (channel names through the alias tables) with equal voxels."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _data_helpers import AFFINE, lesion_mask, volume, write_nii

from seqablate.cli import main
from seqablate.data.errors import DataError
from seqablate.data.layouts import discover
from seqablate.data.volumes import load_patient

SPLIT = {"train": ["stanford_000", "stanford_001"], "val": ["stanford_002"], "test": ["stanford_003"]}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seqablate.data.phantom import make_phantom_cohort

    return make_phantom_cohort(tmp_path_factory.mktemp("nnunet") / "stanford", site="stanford", patients=4, seed=2,
                               shape=(24, 24, 8))


def _split_file(folder: Path, cohort: Path, sequences: list[str]) -> Path:
    path = folder / "split.json"
    path.write_text(json.dumps({"cohort": str(cohort), "sequences": sequences, **SPLIT}))
    return path


def _same_patients(a: Path, b: Path) -> None:
    """Every patient of cohort ``b`` loads with the voxels, mask and affine it has in ``a``."""
    original = {p.patient_id: p for p in discover(a).patients}
    back = discover(b).patients
    assert sorted(p.patient_id for p in back) == sorted(original)
    for p in back:
        got = load_patient(p)
        want = load_patient(original[p.patient_id], list(got.images))
        np.testing.assert_array_equal(got.affine, want.affine)
        np.testing.assert_array_equal(got.mask, want.mask)
        assert got.spacing == pytest.approx(want.spacing)
        for s, img in got.images.items():
            np.testing.assert_array_equal(img, want.images[s], err_msg=f"{p.patient_id} {s}")


def test_export_round_trip_keeps_voxels_affines_and_the_split(phantom: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    seqs = ["t1_gre_post", "t1_fse_post", "flair"]
    out = tmp_path / "export"
    assert main(["cohort", "export-nnunet", str(phantom), str(out), "--study",
                 str(_split_file(tmp_path, phantom, seqs)), "--dataset-id", "42", "--dataset-name", "mets"]) == 0
    printed = capsys.readouterr().out
    assert "nnUNetv2_train 42 2d 0" in printed and "seqablate evaluate --predictions" in printed
    raw = out / "nnUNet_raw" / "Dataset042_mets"
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "t1_gre_post", "1": "t1_fse_post", "2": "flair"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == sorted(
        f"{pid}_{i:04d}.nii.gz" for pid in ["stanford_000", "stanford_001", "stanford_002"] for i in range(3))
    assert sorted(p.name for p in (raw / "labelsTr").iterdir()) == [f"stanford_00{i}.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == [f"stanford_003_{i:04d}.nii.gz" for i in range(3)]
    assert [p.name for p in (raw / "labelsTs").iterdir()] == ["stanford_003.nii.gz"]
    splits = json.loads((out / "nnUNet_preprocessed" / "Dataset042_mets" / "splits_final.json").read_text())
    assert splits == [{"train": SPLIT["train"], "val": SPLIT["val"]}]
    label = nib.load(str(raw / "labelsTr" / "stanford_000.nii.gz"))
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1}
    np.testing.assert_allclose(label.get_qform(), label.get_sform())  # SimpleITK reads the qform
    # Read back as the fifth layout (auto-detected, through the nnUNet_raw wrapper folder).
    cohort = discover(out / "nnUNet_raw")
    assert cohort.layout == "nnunet" and cohort.root == raw
    assert all(sorted(p.files) == sorted(seqs) and p.mask is not None for p in cohort.patients)
    _same_patients(phantom, raw)


def test_export_of_a_non_ras_cohort_is_its_ras_grid(make_nifti_cohort, tmp_path: Path) -> None:
    """Volumes are written on the grid seqablate reads them on (RAS), so the round trip holds
    for any stored orientation."""
    lps = np.diag([-1.0, -1.2, 2.0, 1.0]) @ np.array([[1, 0, 0, -12], [0, 1, 0, -10], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    root = tmp_path / "lps"
    for i in range(3):
        for j, name in enumerate(["t1_post", "flair"]):
            write_nii(root / f"p{i}" / f"{name}.nii.gz", volume(10 * i + j).round(), lps)
        write_nii(root / f"p{i}" / "seg.nii.gz", lesion_mask(), lps)
    assert main(["cohort", "export-nnunet", str(root), str(tmp_path / "out")]) == 0
    raw = tmp_path / "out" / "nnUNet_raw" / "Dataset500_lps"
    assert nib.aff2axcodes(nib.load(str(raw / "imagesTr" / "p0_0000.nii.gz")).affine) == ("R", "A", "S")
    assert not (tmp_path / "out" / "nnUNet_preprocessed").exists()  # no study, no split: nnU-Net draws its own
    _same_patients(root, raw)


def test_export_refuses_foreign_folders_and_overwrites_only_its_own(phantom: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(["cohort", "export-nnunet", str(phantom), str(foreign), *extra]) == 2
        assert "seqablate did not create" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    out = tmp_path / "export"
    args = ["cohort", "export-nnunet", str(phantom), str(out), "--sequences", "flair"]
    assert main(args) == 0
    assert main(args) == 2 and "--overwrite replaces it" in capsys.readouterr().err
    assert main([*args[:-1], "t1_fse_pre", "--overwrite"]) == 0
    meta = json.loads((out / "nnUNet_raw" / "Dataset500_stanford" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "t1_fse_pre"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "mine"]  # no temp folder left


def test_export_names_every_patient_it_cannot_write(make_nifti_cohort, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = make_nifti_cohort({"a": ["t1_post", "flair"], "b": ["t1_post"], "c": ["t1_post", "flair"]})
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a", "zz"], "val": ["c"], "test": ["b"]}))
    out = tmp_path / "out"
    assert main(["cohort", "export-nnunet", str(root), str(out), "--study", str(split),
                 "--sequences", "t1_post", "flair"]) == 2
    err = capsys.readouterr().err
    assert "['zz']" in err and "b lacks ['flair']" in err and "--sequences" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "split.json"]


def _nnunet_dataset(root: Path, channels: dict[str, str], labels: dict[str, int] | None = None) -> Path:
    """A hand-made nnU-Net raw dataset: two training cases and one test case (no label)."""
    meta = {"channel_names": channels, "labels": labels or {"background": 0, "lesion": 1}, "numTraining": 2,
            "file_ending": ".nii.gz"}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for folder, cases in (("imagesTr", ["BRATS_001", "BRATS_002"]), ("imagesTs", ["BRATS_101"])):
        for k, case in enumerate(cases):
            for i in range(len(channels)):
                write_nii(root / folder / f"{case}_{i:04d}.nii.gz", volume(k * 10 + i))
            if folder == "imagesTr":
                write_nii(root / "labelsTr" / f"{case}.nii.gz", lesion_mask(value=max((labels or {"l": 1}).values())))
    return root


def test_nnunet_layout_maps_channel_names_through_the_aliases(tmp_path: Path) -> None:
    root = _nnunet_dataset(tmp_path / "Dataset003_Mets", {"0": "T1", "1": "T1ce", "2": "FLAIR"},
                           {"background": 0, "edema": 2, "enhancing": 3})
    cohort = discover(tmp_path)  # descended into, detected
    assert cohort.root == root
    assert cohort.layout == "nnunet" and cohort.ids() == ["BRATS_001", "BRATS_002", "BRATS_101"]
    p = cohort.patients[0]
    assert {s: f.name for s, f in p.files.items()} == {
        "t1_pre": "BRATS_001_0000.nii.gz", "t1_post": "BRATS_001_0001.nii.gz", "flair": "BRATS_001_0002.nii.gz"}
    assert p.mask_labels == (0, 2, 3) and p.lesion_labels == (3,)  # several labels: lesion_labels decide
    assert cohort.patients[2].mask is None  # imagesTs without labelsTs: unlabelled
    vol = load_patient(p)
    assert int(vol.mask.sum()) == int((lesion_mask() > 0).sum())
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)  # NIfTI stores float32


def test_an_unknown_channel_name_lists_the_names_and_the_alias_option(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = _nnunet_dataset(tmp_path / "Dataset004_X", {"0": "T1_post_gd", "1": "flair"})
    with pytest.raises(DataError) as err:
        discover(root)
    msg = str(err.value)
    assert "channel 0: 'T1_post_gd' is not a pulse sequence" in msg and "'t1_gre_post'" in msg
    assert "--alias 'T1_post_gd=<canonical name>'" in msg and "data.aliases" in msg
    assert main(["cohort", "inspect", str(root)]) == 2
    assert main(["cohort", "inspect", str(root), "--alias", "T1_post_gd=t1_post", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "nnunet" and report["patients"][0]["sequences"] == ["flair", "t1_post"]
    assert discover(root, aliases={"t1_post_GD": "t1_post"}).patients[0].files.keys() == {"t1_post", "flair"}


def test_nnunet_layout_refuses_non_nifti_and_region_labels(tmp_path: Path) -> None:
    root = _nnunet_dataset(tmp_path / "Dataset005_X", {"0": "flair"})
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".mha"}))
    with pytest.raises(DataError, match=r"file_ending '\.mha'.*NIfTI"):
        discover(root)
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": {"background": 0, "whole": [1, 2]}}))
    with pytest.raises(DataError, match="region-based"):
        discover(root)
    with pytest.raises(DataError, match="not an nnU-Net raw dataset"):
        discover(tmp_path / "Dataset005_X" / "imagesTr", "nnunet")
