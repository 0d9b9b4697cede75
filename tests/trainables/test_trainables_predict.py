"""`seqablate predict`: refusal without dropout, --force, outputs on the input grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from seqablate.cli import main
from seqablate.config import TrialConfig, parse
from seqablate.trainables.loop import fit_trial

from .conftest import tiny_trial


@pytest.fixture(scope="module")
def models(cohorts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoint folders of a 2-step model without and with sequence dropout."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, p in (("plain", 0.0), ("dropout", 0.25)):
        cfg = parse(TrialConfig, tiny_trial(cohorts["stanford"], steps=2, saliency_every=0, dropout_p=p))
        out[name] = fit_trial(cfg, storage=root / name, cpus=1, use_gpu=False, evaluate=False).checkpoint
    return out


@pytest.fixture()
def patient_missing_gre(cohorts: dict[str, Path], tmp_path: Path) -> Path:
    """A stanford patient whose t1_gre_post is gone, stored L-R flipped (LAS) on disk."""
    src = cohorts["stanford"] / "stanford_000"
    dst = tmp_path / "p0"
    shutil.copytree(src, dst)
    (dst / "t1_gre_post.nii.gz").unlink()
    for f in dst.glob("*.nii.gz"):
        img = nib.load(f)
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        flip[0, 3] = img.shape[0] - 1
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1], img.affine @ flip), f)
    return dst


def test_refuses_model_without_dropout(models: dict[str, Path], patient_missing_gre: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", "--model", str(models["plain"]), "--input", str(patient_missing_gre),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "trained without sequence dropout" in err and "t1_gre_post" in err and "--force" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("which, extra", [("plain", ["--force"]), ("dropout", [])])
def test_outputs_on_input_grid(models: dict[str, Path], patient_missing_gre: Path, tmp_path: Path,
                               which: str, extra: list[str]) -> None:
    out = tmp_path / "o"
    assert main(["predict", "--model", str(models[which]), "--input", str(patient_missing_gre),
                 "--out", str(out), *extra]) == 0
    ref = nib.load(patient_missing_gre / "flair.nii.gz")
    prob = nib.load(out / "probability.nii.gz")
    mask = nib.load(out / "mask.nii.gz")
    assert prob.shape == ref.shape and mask.shape == ref.shape
    np.testing.assert_allclose(prob.affine, ref.affine)
    p = np.asarray(prob.dataobj)
    assert p.min() >= 0 and p.max() <= 1
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (p > 0.1).astype(np.uint8))
    lesions = pd.read_csv(out / "lesions.csv")
    assert list(lesions.columns) == ["lesion", "x_mm", "y_mm", "z_mm", "volume_mm3", "voxels", "score"]
    assert int(lesions["voxels"].sum()) == int((p > 0.1).sum())


def test_sequences_flag_restricts_and_validates(models: dict[str, Path], cohorts: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    patient = cohorts["stanford"] / "stanford_001"
    assert main(["predict", "--model", str(models["dropout"]), "--input", str(patient), "--out",
                 str(tmp_path / "a"), "--sequences", "t1_fse_post", "flair"]) == 0
    code = main(["predict", "--model", str(models["dropout"]), "--input", str(patient), "--out",
                 str(tmp_path / "b"), "--sequences", "t2"])
    assert code == 2 and "the model knows only" in capsys.readouterr().err
