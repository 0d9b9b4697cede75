"""Outside baselines: a study's split handed to nnU-Net, and another tool's predictions scored
like a trial (the "outside" predictions here are a trained model's own, renamed as nnU-Net
names its outputs, so the numbers must be the model's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seqablate.cli import main

from .test_ecosystem_evaluate import _run_metrics


def _split(run_folder: Path) -> dict[str, list[str]]:
    from seqablate import tracking

    run_id, _, uri = _run_metrics(run_folder)
    assert "split.json" in tracking.list_artifacts(run_id, tracking_uri=uri)
    assert "model/split.json" in tracking.list_artifacts(run_id, "model", tracking_uri=uri)
    path = tracking.download_artifact(run_id, "split.json", tracking_uri=uri)
    return json.loads(path.read_text())


@pytest.mark.slow
def test_outside_predictions_score_as_the_model_and_log_a_baseline(trained: Path, phantom: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate import tracking

    run_id, _, uri = _run_metrics(trained)
    split = _split(trained)
    assert split["cohort"] == str(phantom.resolve()) and split["test"]
    assert set(split["train"]) | set(split["val"]) | set(split["test"]) == {p.name for p in phantom.glob("stanford_*")}

    # The model on its own training cohort: its training and validation patients are left out.
    assert main(["evaluate", "--model", run_id, "--tracking-uri", uri, "--cohort", str(phantom),
                 "--out", str(tmp_path / "ev_model"), "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert f"its {len(split['train'])} training and {len(split['val'])} validation patients" in printed
    model = json.loads((tmp_path / "ev_model" / "metrics.json").read_text())
    assert model["test.full.n_patients"] == len(split["test"])
    # --include-training scores every patient and says the scores are optimistic.
    assert main(["evaluate", "--model", run_id, "--tracking-uri", uri, "--cohort", str(phantom),
                 "--out", str(tmp_path / "ev_all"), "--no-log", "--include-training"]) == 0
    assert "their scores are optimistic" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev_all" / "metrics.json").read_text())["test.full.n_patients"] == 6

    # "Outside" predictions: predict's probability maps renamed <case>.nii.gz, and thresholded.
    probs, masks = tmp_path / "nnunet_probs", tmp_path / "nnunet_masks"
    probs.mkdir()
    masks.mkdir()
    for pid in split["test"]:
        assert main(["predict", "--model", run_id, "--tracking-uri", uri, "--input", str(phantom / pid),
                     "--out", str(tmp_path / "pred" / pid)]) == 0
        shutil.copy(tmp_path / "pred" / pid / "probability.nii.gz", probs / f"{pid}.nii.gz")
        img = nib.load(str(probs / f"{pid}.nii.gz"))
        nib.save(nib.Nifti1Image((np.asarray(img.dataobj) > 0.1).astype(np.uint8), img.affine), masks / f"{pid}.nii.gz")
    capsys.readouterr()

    assert main(["evaluate", "--predictions", str(probs), "--cohort", str(phantom), "--study", str(trained),
                 "--name", "nnunet-2d", "--out", str(tmp_path / "ev_probs")]) == 0
    printed = capsys.readouterr().out
    assert "probability predictions" in printed and "outside baseline 'nnunet-2d'" in printed
    outside = json.loads((tmp_path / "ev_probs" / "metrics.json").read_text())
    keys = [k for k in model if k.startswith("test.full.") and not k.endswith(("_lo", "_hi"))]
    assert "test.full.mAP" in keys and "test.full.mAP" in outside
    for k in keys:
        assert outside[k] == pytest.approx(model[k], abs=1e-6), k

    assert main(["evaluate", "--predictions", str(masks), "--cohort", str(phantom), "--study", str(trained),
                 "--name", "nnunet-2d-masks", "--out", str(tmp_path / "ev_masks"), "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert "binary predictions" in printed and "PR curve is one point" in printed
    binary = json.loads((tmp_path / "ev_masks" / "metrics.json").read_text())
    # Thresholding keeps the lesions (same components, same matches), drops their ranking.
    for k in ("n_pred", "n_tp", "n_truth", "max_sensitivity"):
        assert binary[f"test.full.{k}"] == pytest.approx(model[f"test.full.{k}"]), k
    n_pred, n_tp, n_truth = (binary[f"test.full.{k}"] for k in ("n_pred", "n_tp", "n_truth"))
    assert binary["test.full.mAP"] == pytest.approx((n_tp / n_pred) * (n_tp / n_truth) if n_pred else 0.0)

    # The baseline run sits beside the study's trials, recognisable and not one of them.
    assert list(tracking.list_trials(str(trained))["run_id"]) == [run_id]
    (base,) = tracking.list_baselines(str(trained)).to_dict("records")
    assert base["tags.seqablate.kind"] == "baseline" and base["tags.seqablate.baseline"] == "nnunet-2d"
    assert base["tags.seqablate.prediction_kind"] == "probability"
    assert base["metrics.test.full.mAP"] == pytest.approx(outside["test.full.mAP"])
    names = set(tracking.list_artifacts(base["run_id"], "eval", tracking_uri=uri))
    assert {"eval/patients.csv", "eval/lesions.csv"} <= names
    assert "split.json" in tracking.list_artifacts(base["run_id"], tracking_uri=uri)


@pytest.mark.slow
def test_export_nnunet_hands_the_studys_split_to_nnunet(trained: Path, phantom: Path, tmp_path: Path) -> None:
    split = _split(trained)
    run_id, _, uri = _run_metrics(trained)
    for i, study in enumerate([str(trained), run_id]):
        out = tmp_path / f"nnunet{i}"
        args = ["cohort", "export-nnunet", str(phantom), str(out), "--study", study, "--dataset-id", "7"]
        assert main(args + (["--tracking-uri", uri] if study == run_id else [])) == 0
        raw = out / "nnUNet_raw" / f"Dataset007_{phantom.name}"
        (fold,) = json.loads((out / "nnUNet_preprocessed" / raw.name / "splits_final.json").read_text())
        assert fold == {"train": split["train"], "val": split["val"]}
        assert sorted(p.name[:-12] for p in (raw / "imagesTs").glob("*_0000.nii.gz")) == sorted(split["test"])
        meta = json.loads((raw / "dataset.json").read_text())
        assert meta["numTraining"] == len(split["train"]) + len(split["val"])
        assert list(meta["channel_names"].values()) == split["sequences"]
