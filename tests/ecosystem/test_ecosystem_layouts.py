"""Cohorts as downloaded: release wrapper folders are descended into; ambiguity is listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqablate.data.errors import DataError
from seqablate.data.layouts import discover
from tests._layouts import write_as


@pytest.mark.parametrize(("layout", "wrappers"), [
    ("brainmetshare", ["stanford_release_brainmask", "mets_stanford_releaseMask_train"]),
    ("brats-mets", ["ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData"]),
    ("ucsf-bmsr", ["UCSF_BrainMetastases_TRAIN", "train"]),
])
def test_wrapper_folders_are_descended_into(phantom: Path, tmp_path: Path, layout: str, wrappers: list[str]) -> None:
    inner = tmp_path / "download" / Path(*wrappers)
    write_as(layout, phantom, inner)
    (tmp_path / "download" / "README.txt").write_text("release notes")  # files beside do not stop it
    cohort = discover(tmp_path / "download")
    assert cohort.layout == layout and len(cohort.patients) == 6
    assert all(p.folder.parent == inner for p in cohort.patients)
    # BrainMetShare's own layout has split folders (<root>/train/Mets_*): its descent stops
    # at the folder holding the split; the others go down to the patients' parent.
    assert cohort.root == (inner.parent if layout == "brainmetshare" else inner)
    assert cohort.notes and all("reading the cohort in it" in n for n in cohort.notes)


def test_nifti_cohort_inside_a_wrapper_and_inspect_says_so(phantom: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from seqablate.cli import main

    shutil.copytree(phantom, tmp_path / "dl" / "cohort_v2")
    assert main(["cohort", "inspect", str(tmp_path / "dl")]) == 0
    out = capsys.readouterr().out
    assert "holds no patient folder but one folder, cohort_v2/" in out and "all patients usable" in out


def test_an_ambiguous_folder_lists_the_cohorts_below(phantom: Path, tmp_path: Path) -> None:
    write_as("brats-mets", phantom, tmp_path / "data" / "BraTS" / "TrainingData")
    write_as("ucsf-bmsr", phantom, tmp_path / "data" / "UCSF" / "train")
    with pytest.raises(DataError) as err:
        discover(tmp_path / "data")
    msg = str(err.value)
    assert "folders below it that look like cohorts" in msg
    assert str(tmp_path / "data" / "BraTS" / "TrainingData") + " (brats-mets, 6 patient folders)" in msg
    assert str(tmp_path / "data" / "UCSF" / "train") + " (ucsf-bmsr, 6 patient folders)" in msg
