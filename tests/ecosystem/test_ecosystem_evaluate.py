"""``seqablate evaluate``: any model on any labelled cohort, the same numbers as a study's test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seqablate.cli import main

from .conftest import train, trial


def _run_metrics(run_folder: Path) -> tuple[str, dict[str, float], str]:
    from seqablate import tracking

    df = tracking.list_trials(str(run_folder))
    row = df.iloc[0]
    metrics = {k[len("metrics."):]: float(v) for k, v in row.items() if k.startswith("metrics.") and v == v}
    return row["run_id"], metrics, f"sqlite:///{run_folder / 'mlflow.db'}"


def _test_cohort(run_folder: Path, cohort: Path, out: Path) -> Path:
    """A cohort folder holding copies of exactly the run's test patients."""
    from seqablate.config import TrialConfig, load_yaml
    from seqablate.evaluation.cohort import load_cached, plan_split

    cfg = load_yaml(run_folder / "config.yaml", TrialConfig)
    split = plan_split(cfg, load_cached(cfg.data))
    out.mkdir()
    from seqablate.data.layouts import discover

    folders = {p.patient_id: p.folder for p in discover(cohort).patients}
    for pid in split.test:
        shutil.copytree(folders[pid], out / folders[pid].name)
    return out


def _same(a: dict[str, float], b: dict[str, float], prefix: str = "test.") -> None:
    keys = sorted(k for k in a if k.startswith(prefix) and not k.endswith(("_lo", "_hi", "n_skipped")))
    assert keys, "no test metrics to compare"
    for k in keys:
        assert b[k] == pytest.approx(a[k], abs=1e-9), k


def test_evaluate_reproduces_the_study_test_metrics(trained: Path, phantom: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run_id, logged, uri = _run_metrics(trained)
    cohort = _test_cohort(trained, phantom, tmp_path / "hospital")
    code = main(["evaluate", "--model", run_id, "--tracking-uri", uri, "--cohort", str(cohort),
                 "--out", str(tmp_path / "ev")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| full |" in printed and "| censor_t1_gre_post |" in printed
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    _same(logged, got)
    assert {"lesions.csv", "patients.csv", "pr_curves.csv", "table.md"} <= {p.name for p in (tmp_path / "ev").iterdir()}
    # a new MLflow run nested under the model's run, with the same numbers
    from seqablate import tracking

    c = tracking.client(uri)
    runs = c.search_runs([c.get_run(run_id).info.experiment_id],
                         f"tags.`mlflow.parentRunId` = '{run_id}' and tags.`seqablate.model` = '{run_id}'")
    assert len(runs) == 1 and runs[0].data.tags["seqablate.kind"] == "evaluation"
    assert runs[0].data.metrics["test.full.mAP"] == pytest.approx(got["test.full.mAP"])


def test_registered_model_every_subset_logged(trained: Path, phantom: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered model version (``models:/``) scores like its run; every sequence subset is
    evaluated and logged to MLflow under names MLflow accepts."""
    from seqablate import tracking

    monkeypatch.chdir(tmp_path)  # the registry must live in the run's store, not in ./mlflow.db
    run_id, logged, uri = _run_metrics(trained)
    ref = tracking.register_model(run_id, "eco-input", tracking_uri=uri)
    assert ref == "models:/eco-input/1"
    cohort = _test_cohort(trained, phantom, tmp_path / "hospital")
    assert main(["evaluate", "--model", ref, "--tracking-uri", uri, "--cohort", str(cohort), "--all-subsets",
                 "--out", str(tmp_path / "ev")]) == 0
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    _same(logged, {k: v for k, v in got.items() if ".subset_" not in k})
    subsets = sorted({k.split(".")[1] for k in got if k.startswith("test.subset_")})
    assert len(subsets) == 2**4 - 2 and "subset_t1_gre_post-flair" in subsets
    # The single-sequence subset that drops only t1_gre_post is the censor condition, scored alike.
    assert got["test.subset_t1_fse_pre-t1_fse_post-flair.mAP"] == pytest.approx(got["test.censor_t1_gre_post.mAP"])
    c = tracking.client(uri)
    (ev,) = c.search_runs([c.get_run(run_id).info.experiment_id],
                          f"tags.`mlflow.parentRunId` = '{run_id}' and tags.`seqablate.model` = '{ref}'")
    assert {k for k in ev.data.metrics if ".subset_" in k} == {k for k in got if ".subset_" in k}
    # Every subset scored: each sequence's Shapley value, logged too; they sum to the full mAP.
    shapley = {k: v for k, v in got.items() if k.startswith("test.shapley.")}
    assert sorted(shapley) == sorted(f"test.shapley.{s}" for s in ("t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"))
    assert sum(shapley.values()) == pytest.approx(got["test.full.mAP"])
    assert all(ev.data.metrics[k] == pytest.approx(v) for k, v in shapley.items())
    table = (tmp_path / "ev" / "table.md").read_text()
    assert "contribution to test mAP (exact Shapley values" in table
    assert f"t1_gre_post {100 * shapley['test.shapley.t1_gre_post']:+.1f}" in table
    assert not (tmp_path / "mlflow.db").exists()


def test_a_patient_without_t1_gre_post_is_scored_on_its_subset(trained: Path, phantom: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run_id, _, uri = _run_metrics(trained)
    cohort = tmp_path / "partial"
    shutil.copytree(phantom, cohort, ignore=shutil.ignore_patterns(".seqablate"))
    (cohort / "stanford_000" / "t1_gre_post.nii.gz").unlink()
    assert main(["evaluate", "--model", run_id, "--tracking-uri", uri, "--cohort", str(cohort),
                 "--out", str(tmp_path / "ev"), "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert "1 of 6 patients lack a sequence" in printed and "trained without sequence dropout" in printed
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert got["test.full.n_patients"] == 6 and got["test.full.n_skipped"] == 0
    patients = (tmp_path / "ev" / "patients.csv").read_text()
    assert "stanford_000" in patients


def test_sequences_restrict_every_condition_and_name_it(trained: Path, phantom: Path, tmp_path: Path) -> None:
    """``--sequences`` censors the others in every condition; each condition is named by what it
    keeps (not 'full'), and conditions that coincide are scored once."""
    run_id, _, uri = _run_metrics(trained)
    assert main(["evaluate", "--model", run_id, "--tracking-uri", uri, "--cohort", str(phantom), "--no-log",
                 "--sequences", "flair", "t1_fse_post", "--out", str(tmp_path / "ev")]) == 0
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    conds = sorted({k.split(".")[1] for k in got if k.startswith("test.")})
    # kept {t1_fse_post, flair}; each alone (censoring the other); nothing named full/censor_*
    assert conds == ["subset_flair", "subset_t1_fse_post", "subset_t1_fse_post-flair"]


def test_a_cohort_without_labels_exits_2(trained: Path, phantom: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_id, _, uri = _run_metrics(trained)
    cohort = tmp_path / "nolabels"
    shutil.copytree(phantom, cohort, ignore=shutil.ignore_patterns("seg.nii.gz", ".seqablate"))
    code = main(["evaluate", "--model", run_id, "--tracking-uri", uri, "--cohort", str(cohort), "--no-log",
                 "--out", str(tmp_path / "ev")])
    assert code == 2
    assert "no labelled patient" in capsys.readouterr().err and not (tmp_path / "ev").exists()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["brainmetshare", "brats-mets", "ucsf-bmsr"])
def test_evaluate_on_each_layout(phantom: Path, tmp_path: Path, layout: str) -> None:
    """Train on the phantom written in ``layout`` (inside a release's wrapper folder), then
    evaluate the model on that layout's test patients: the study's numbers again."""
    from tests._layouts import SEQUENCES, write_as

    wrapped = tmp_path / "download" / f"{layout.upper()}_Release" / "TRAIN"
    write_as(layout, phantom, wrapped)
    spacing = {"default_spacing": [5.25, 6.44, 14.0]} if layout == "brainmetshare" else {}
    run = train(tmp_path / "t", trial(tmp_path / "download", SEQUENCES[layout], **spacing))
    run_id, logged, uri = _run_metrics(run)
    cohort = _test_cohort(run, wrapped, tmp_path / "hospital")
    assert main(["evaluate", "--model", run_id, "--tracking-uri", uri, "--cohort", str(cohort),
                 "--out", str(tmp_path / "ev"), "--no-log"]) == 0
    _same(logged, json.loads((tmp_path / "ev" / "metrics.json").read_text()))
