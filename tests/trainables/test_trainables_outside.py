"""``seqablate evaluate --predictions``: another tool's predictions scored with the trials' metrics,
on their own grid, checked against the cohort's (no model involved: the predictions here are
the truth itself, transformed, so the expected numbers are known by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from seqablate.cli import main

SPLIT = {"train": ["stanford_000", "stanford_001", "stanford_002"], "val": ["stanford_003"],
         "test": ["stanford_004", "stanford_005"]}


def _truth(cohort: Path, pid: str) -> nib.Nifti1Image:
    return nib.load(str(cohort / pid / "seg.nii.gz"))


def _write(folder: Path, name: str, data: np.ndarray, affine: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), folder / name)
    return folder / name


def _predictions(cohort: Path, folder: Path, pids: list[str], scale: float = 1.0) -> Path:
    """nnU-Net-named copies of the truth (``<case>.nii.gz``), times ``scale``."""
    for pid in pids:
        seg = _truth(cohort, pid)
        data = np.asarray(seg.dataobj) > 0
        _write(folder, f"{pid}.nii.gz", data.astype(np.uint8) if scale == 1.0 else data.astype(np.float32) * scale,
               seg.affine)
    return folder


def _metrics(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())


def test_perfect_masks_score_one_on_the_studys_test_patients(cohorts: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cohort = cohorts["stanford"]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"cohort": str(cohort), **SPLIT}))
    pred = _predictions(cohort, tmp_path / "pred", [f"stanford_00{i}" for i in range(6)])
    assert main(["evaluate", "--predictions", str(pred), "--cohort", str(cohort), "--study", str(split),
                 "--name", "nnunet-2d", "--out", str(tmp_path / "ev"), "--no-log", "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "| nnunet-2d | test.full | 100.0 (100.0, 100.0) |" in printed
    assert "PR curve is one point" in printed and "4 training and validation patients" in printed
    m = _metrics(tmp_path / "ev")
    assert m["test.full.mAP"] == 1.0 and m["test.full.n_patients"] == 2 and m["test.full.n_skipped"] == 0
    patients = pd.read_csv(tmp_path / "ev" / "patients.csv")
    assert sorted(patients["patient"]) == SPLIT["test"] and set(patients["condition"]) == {"test.full"}
    assert set(pd.read_csv(tmp_path / "ev" / "lesions.csv")["condition"]) == {"test.full"}
    # --include-training scores every patient that has a prediction.
    assert main(["evaluate", "--predictions", str(pred), "--cohort", str(cohort), "--study", str(split),
                 "--include-training", "--out", str(tmp_path / "ev_all"), "--no-log", "--bootstrap", "0"]) == 0
    assert _metrics(tmp_path / "ev_all")["test.full.n_patients"] == 6


def test_a_probability_map_is_read_on_its_own_grid_in_any_orientation(cohorts: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    """The same probabilities stored RAS (``<case>.nii.gz``) and flipped to L-P-S in a
    ``<patient>/probability.nii.gz`` folder (as ``seqablate predict`` writes) score alike."""
    cohort = cohorts["stanford"]
    pids = ["stanford_001", "stanford_004"]
    ras = _predictions(cohort, tmp_path / "ras", pids, scale=0.7)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    for pid in pids:
        img = nib.load(str(ras / f"{pid}.nii.gz"))
        shape = np.array(img.shape[:3]) - 1
        to_lps = img.affine @ np.array([[-1, 0, 0, shape[0]], [0, -1, 0, shape[1]], [0, 0, 1, 0], [0, 0, 0, 1.0]])
        assert nib.aff2axcodes(to_lps) == nib.aff2axcodes(flip @ img.affine)
        _write(tmp_path / "lps" / pid, "probability.nii.gz", np.asarray(img.dataobj)[::-1, ::-1, :].copy(), to_lps)
    for name in ("ras", "lps"):
        assert main(["evaluate", "--predictions", str(tmp_path / name), "--cohort", str(cohort), "--no-log",
                     "--out", str(tmp_path / f"ev_{name}"), "--bootstrap", "0"]) == 0
    a, b = _metrics(tmp_path / "ev_ras"), _metrics(tmp_path / "ev_lps")
    assert a == b and a["test.full.mAP"] == 1.0 and a["test.full.n_patients"] == 2 and a["test.full.n_skipped"] == 4


@pytest.mark.parametrize("problem", ["grid", "affine", "patient", "range", "mixed"])
def test_bad_predictions_are_refused_naming_the_file(cohorts: dict[str, Path], tmp_path: Path, problem: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cohort = cohorts["stanford"]
    pred = _predictions(cohort, tmp_path / "pred", ["stanford_000"], scale=0.5)
    seg = _truth(cohort, "stanford_001")
    data = (np.asarray(seg.dataobj) > 0).astype(np.float32)
    bad = {
        "grid": lambda: _write(pred, "stanford_001.nii.gz", data[:-2], seg.affine),
        "affine": lambda: _write(pred, "stanford_001.nii.gz", data, seg.affine @ np.diag([1.0, 1.0, 1.5, 1.0])),
        "patient": lambda: _write(pred, "oslo_001.nii.gz", data, seg.affine),
        "range": lambda: _write(pred, "stanford_001.nii.gz", data * 3.0, seg.affine),
        "mixed": lambda: _write(pred, "stanford_001.nii.gz", data.astype(np.uint8), seg.affine),
    }[problem]()
    out = tmp_path / "ev"
    assert main(["evaluate", "--predictions", str(pred), "--cohort", str(cohort), "--no-log", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    expect = {"grid": "differs from the patient's", "affine": "affine differs", "patient": "matches no patient",
              "range": "values 0..3", "mixed": "mixed with probability maps"}[problem]
    assert expect in err and (problem == "mixed" or str(bad) in err)
    assert not out.exists()


def test_a_baseline_run_is_tagged_as_an_outside_tool(cohorts: dict[str, Path], tmp_path: Path) -> None:
    from seqablate import tracking

    cohort = cohorts["stanford"]
    pred = _predictions(cohort, tmp_path / "pred", ["stanford_002", "stanford_005"], scale=0.9)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["evaluate", "--predictions", str(pred), "--cohort", str(cohort), "--name", "other-tool",
                 "--tracking-uri", uri, "--out", str(tmp_path / "ev"), "--bootstrap", "0"]) == 0
    c = tracking.client(uri)
    (run,) = c.search_runs([c.get_experiment_by_name("seqablate-evaluate").experiment_id])
    tags = run.data.tags
    assert tags["seqablate.kind"] == "baseline" and tags["seqablate.baseline"] == "other-tool"
    assert tags["seqablate.prediction_kind"] == "probability" and tags["mlflow.runName"] == "other-tool"
    assert run.data.metrics["test.full.mAP"] == 1.0 and run.data.params["baseline.name"] == "other-tool"
    assert {"eval/patients.csv", "eval/lesions.csv", "eval/metrics.json"} <= set(
        tracking.list_artifacts(run.info.run_id, "eval", tracking_uri=uri))


def test_a_baseline_beside_a_study_is_not_one_of_its_trials(cohorts: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``--study``: the study's split (its recorded ``split.json``) and protocol are used, the
    run is nested under the study's parent run, and ``list_trials`` still lists only trials."""
    from seqablate import tracking
    from seqablate.config import TrialConfig, with_overrides

    cohort = cohorts["stanford"]
    cfg = with_overrides(TrialConfig(), {"data.cohort": str(cohort), "eval.bootstrap": 0, "eval.threshold": 0.5})
    storage = tmp_path / "study"
    with tracking.study_run("mets", storage=str(storage)) as study:
        with tracking.trial_run(study.ref, cfg, overrides={"train.seed": 0}) as log:
            log.log_dict({"cohort": str(cohort), "sequences": cfg.data.sequences, **SPLIT}, "split.json")
            log.log_metrics({"test.full.mAP": 0.5})
    # 0.4 < eval.threshold of the study: no lesion is predicted, whatever the default says.
    pred = _predictions(cohort, tmp_path / "pred", SPLIT["test"], scale=0.4)
    assert main(["evaluate", "--predictions", str(pred), "--cohort", str(cohort), "--study", str(storage),
                 "--name", "nnunet-3d", "--out", str(tmp_path / "ev")]) == 0
    assert "MLflow run" in capsys.readouterr().out
    trials, baselines = tracking.list_trials(str(storage)), tracking.list_baselines(str(storage))
    assert list(trials["run_name"]) == ["seed0"] and list(baselines["run_name"]) == ["nnunet-3d"]
    base = baselines.iloc[0]
    assert base["tags.mlflow.parentRunId"] == study.ref.parent_run_id and base["tags.seqablate.study"] == "mets"
    assert base["params.eval.threshold"] == "0.5" and base["tags.seqablate.excluded_training"] == "4"
    assert base["metrics.test.full.n_pred"] == 0 and base["metrics.test.full.n_patients"] == 2
