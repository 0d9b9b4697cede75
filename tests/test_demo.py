"""``seqablate demo`` (what ``make demo`` runs) through the CLI: refusals, and the whole pipeline
at smoke size."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from seqablate.cli import main


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("do not touch")
    assert main(["demo", "--out", str(out), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--out" in err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "do not touch"
    # --overwrite does not make it ours either.
    assert main(["demo", "--out", str(out), "--smoke", "--overwrite"]) == 2
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


@pytest.mark.slow
def test_demo_smoke_end_to_end_and_rerun_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo-out"
    assert main(["demo", "--out", str(out), "--smoke"]) == 0
    text = capsys.readouterr().out
    for heading in ("Table I:", "Table II:", "Table III:", "Table IV:", "Table VI:"):
        assert heading in text, heading
    for part in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        assert re.search(rf"^{re.escape(part)} Input", text, re.M), part
    assert "6/6 trials finished" in text
    assert "mlflow ui --backend-store-uri sqlite:///" in text
    report = out / "study" / "report" / "report.html"
    assert report.is_file() and "Findings" in report.read_text()
    assert json.loads((out / ".seqablate").read_text())["kind"] == "demo"
    # Both arms, three seeds each, in MLflow.
    from seqablate import tracking

    trials = tracking.list_trials(str(out / "study"))
    assert sorted(trials["run_name"]) == sorted(
        [f"input-seed{s}" for s in range(3)] + [f"input-p0.25-seed{s}" for s in range(3)])
    assert set(trials["status"]) == {"FINISHED"}
    # A second run reuses the cohorts and resumes the finished study: no trial runs again.
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cohorts").rglob("*.nii.gz")}
    assert main(["demo", "--out", str(out), "--smoke"]) == 0
    assert "6/6 trials finished" in capsys.readouterr().out
    assert len(tracking.list_trials(str(out / "study"))) == 6
    assert {p: p.stat().st_mtime_ns for p in (out / "cohorts").rglob("*.nii.gz")} == mtimes
    # Another seed count is another study: refused, naming the key, nothing trained or deleted.
    assert main(["demo", "--out", str(out), "--smoke", "--seeds", "2"]) != 0
    assert "seeds" in capsys.readouterr().err
    assert len(tracking.list_trials(str(out / "study"))) == 6


def test_demo_seeds_default_to_five_per_arm_and_smoke_to_three(tmp_path: Path) -> None:
    """Five seeds per arm let the exact seed test of finding (d) reach its Holm level (the
    smallest one-sided p of 5 + 5 seeds is 1/252); ``--seeds`` overrides, ``--smoke`` keeps 3."""
    from math import comb

    from seqablate.demo import study_config

    cohorts = {"stanford": tmp_path / "s", "oslo": tmp_path / "o"}
    assert study_config(tmp_path, cohorts).seeds == 5
    assert study_config(tmp_path, cohorts, smoke=True).seeds == 3
    assert study_config(tmp_path, cohorts, seeds=4).seeds == 4
    assert 1 / comb(10, 5) < 0.05 / 5 < 1 / comb(8, 4)  # 5 + 5 seeds reach Holm's smallest level, 4 + 4 do not
