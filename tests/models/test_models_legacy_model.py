"""A model saved by the release before ``data.geometry`` existed loads and scores as it did then.

The fixture (``tests/fixtures/legacy_resize_model``, made by its ``make_fixture.sh`` with the
release at commit 4aac5a2) is the MLflow model folder a ``seqablate train`` run logged, a
three-patient cohort on another grid than training (48 x 44 x 16, anisotropic in-plane
voxels) and what that release's ``seqablate predict`` and ``seqablate evaluate`` computed on
it. The model's stored config has no ``data.geometry``: it must mean ``resize`` (every axial
slice resized to ``data.image_size`` pixels), so the same public commands must give back the
same probabilities and the same metrics. The numbers are the CPU's: CUDA is hidden.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from seqablate.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_resize_model"
RELEASE_COMMIT = "4aac5a28f000e1655313dfea9bf754cbe589e9ee"
PATIENTS = ("legacy_000", "legacy_001", "legacy_002")
#: ``predict --sequences`` per recorded condition (None: every sequence the model knows).
CONDITIONS: dict[str, list[str] | None] = {
    "full": None,
    "censor_t1_gre_post": ["t1_fse_pre", "t1_fse_post", "flair"],
}
#: Probabilities may drift by float rounding (another CPU, thread count, library version);
#: the recorded threshold margins are above this, so the masks cannot change within it.
PROB_ATOL = 1e-4
#: Metrics are computed from the thresholded masks and lesion scores: equal up to summation order.
METRIC_ATOL = 1e-6


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    """What the release recorded (``expected.json``)."""
    return json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture's model and cohort in ``tmp_path`` (the working directory), with
    CUDA hidden and no MLflow store from the environment; returns ``tmp_path``."""
    import torch

    # predict and evaluate pick CUDA when they see it (bfloat16 there): the recorded numbers are
    # float32 CPU numbers. Patched rather than CUDA_VISIBLE_DEVICES, which is too late once
    # another test in this process has initialised CUDA.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # anything written by default (./seqablate-runs, ...) stays here
    for name in ("model", "cohort"):
        shutil.copytree(FIXTURE / name, tmp_path / name)
    return tmp_path


def _probabilities(expected: dict[str, Any], condition: str, patient: str) -> np.ndarray:
    """The release's probability volume, float32[X, Y, Z] on the input grid."""
    with np.load(FIXTURE / "expected_probabilities.npz") as stored:
        q = stored[f"{condition}.{patient}"]
    return q.astype(np.float32) / np.float32(expected["probability_scale"])


def _check_prediction(out: Path, expected: dict[str, Any], condition: str, patient: str) -> None:
    """``out`` (a ``predict --out`` folder) holds the release's prediction of ``patient``."""
    import nibabel as nib
    import pandas as pd

    rec = expected["predict"][condition][patient]
    img = nib.load(out / "probability.nii.gz")
    got = np.asarray(img.dataobj, dtype=np.float32)
    assert list(got.shape) == rec["shape"], "the prediction is not on the input's grid"
    np.testing.assert_allclose(np.asarray(img.affine), np.asarray(rec["affine"]), atol=1e-6)
    want = _probabilities(expected, condition, patient)
    # the stored values are rounded to 1/65535: half a step more than the drift allowed
    diff = float(np.abs(got - want).max())
    assert diff <= PROB_ATOL + 0.5 / expected["probability_scale"], f"{condition} {patient}: max |diff| {diff:.2e}"
    assert float(got.max()) == pytest.approx(rec["max"], abs=PROB_ATOL)
    assert float(got.sum(dtype=np.float64)) == pytest.approx(rec["sum"], abs=PROB_ATOL * got.size)
    threshold = expected["threshold"]
    assert int((got > threshold).sum()) == rec["voxels_over_threshold"]
    mask = np.asarray(nib.load(out / "mask.nii.gz").dataobj)
    assert np.array_equal(mask > 0, got > threshold)
    assert len(pd.read_csv(out / "lesions.csv")) == rec["lesions"]


def test_the_fixture_is_a_pre_geometry_model(expected: dict[str, Any]) -> None:
    """The stored config predates ``data.geometry`` (else this test proves nothing about it),
    and the model was written by the release the numbers come from."""
    cfg = yaml.safe_load((FIXTURE / "model" / "config.yaml").read_text())
    assert "geometry" not in cfg["data"]
    assert not {"spacing_mm", "slice_mm", "clahe_tile_mm"} & set(cfg["data"])
    # not a multiple of the output stride (8): resized inputs padded to one would change the numbers
    assert cfg["data"]["image_size"] == 36 and cfg["data"]["image_size"] % 8 and cfg["model"]["backbone"] == "tiny"
    meta = yaml.safe_load((FIXTURE / "model" / "MLmodel").read_text())["metadata"]
    assert meta["git_commit"] == expected["release_commit"] == RELEASE_COMMIT
    # the evaluation grid is not the training grid, nor square: the resize path is exercised
    assert all(rec["shape"] == [48, 44, 16] for rec in expected["predict"]["full"].values())


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_predict_gives_the_release_probabilities(legacy: Path, expected: dict[str, Any], condition: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``seqablate predict --model <MLflow model folder>``: the release's probabilities, mask
    and lesions for every patient (all sequences, and t1_gre_post censored)."""
    sequences = CONDITIONS[condition]
    for patient in PATIENTS:
        out = legacy / "pred" / condition / patient
        args = ["predict", "--model", str(legacy / "model"), "--input", str(legacy / "cohort" / patient),
                "--out", str(out)]
        if sequences is not None:
            # the model was trained without sequence dropout: predict refuses a missing one unless forced
            args += ["--sequences", *sequences, "--force"]
        assert main(args) == 0, capsys.readouterr().err
        _check_prediction(out, expected, condition, patient)


def test_evaluate_gives_the_release_metrics(legacy: Path, expected: dict[str, Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``seqablate evaluate --model <MLflow model folder>``: every metric the release wrote
    (full protocol and t1_gre_post censored, each with stored and per-subset BatchNorm
    statistics, bootstrap CIs included), to summation order."""
    code = main(["evaluate", "--model", str(legacy / "model"), "--cohort", str(legacy / "cohort"),
                 "--out", str(legacy / "ev"), "--no-log", "--cache-dir", str(legacy / "cache")])
    assert code == 0, capsys.readouterr().err
    got = json.loads((legacy / "ev" / "metrics.json").read_text())
    want: dict[str, float] = expected["evaluate"]
    # New metrics may be added; none of the release's may go missing or change.
    assert not set(want) - set(got), sorted(set(want) - set(got))
    changed = {k: (want[k], got[k]) for k in want if abs(got[k] - want[k]) > METRIC_ATOL}
    assert not changed, changed
    assert want["test.full.n_tp"] > 0, "a fixture that finds nothing would compare nothing"


def test_a_checkpoint_folder_of_the_same_model_predicts_alike(legacy: Path, expected: dict[str, Any],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The other self-contained form ``--model`` takes, a training checkpoint folder
    (``config.yaml`` + ``model.pt``), with the release's pre-geometry ``config.yaml`` and the
    fixture's weights: the same prediction."""
    import torch

    from seqablate import tracking

    deployed = tracking.load_deployed(legacy / "model")
    ckpt = legacy / "checkpoint"
    ckpt.mkdir()
    shutil.copy(legacy / "model" / "config.yaml", ckpt / "config.yaml")  # as the release wrote it
    torch.save(deployed.net.state_dict(), ckpt / "model.pt")
    if deployed.norm_stats:
        torch.save(deployed.norm_stats, ckpt / "norm_stats.pt")
    patient = PATIENTS[0]
    out = legacy / "pred-ckpt" / patient
    assert main(["predict", "--model", str(ckpt), "--input", str(legacy / "cohort" / patient),
                 "--out", str(out)]) == 0, capsys.readouterr().err
    _check_prediction(out, expected, "full", patient)
