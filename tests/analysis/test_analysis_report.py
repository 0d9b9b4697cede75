"""The report: self-contained HTML with every table and embedded figures; CLI; MLflow artifact."""

from __future__ import annotations

import base64
import re

import pytest

from seqablate import tracking
from seqablate.analysis.report import write_report
from seqablate.cli import main


@pytest.fixture(scope="module")
def report(toy_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "report"
    return write_report(str(toy_study), out=out, progress=False, overlays=False)


def test_html_is_self_contained_and_has_every_table(report):
    html = (report.out / "report.html").read_text()
    # No network: no http(s) URL anywhere, no external scripts, stylesheets or fonts.
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    for tid in ("I", "II", "III", "IV", "V", "VI"):
        assert f"<h3>Table {tid}: " in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    md = (report.out / "report.md").read_text()
    md_images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == len(md_images) >= 5  # consistency, 2x2 saliency, PR, FROC
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert all((report.out / p).is_file() for p in md_images)  # md links resolve locally
    assert report.files[0].name == "report.html"


def test_report_content(report):
    md = (report.out / "report.md").read_text()
    # Consistency, by hand. Dropout seeds: identical traces -> spread 0, W 1.
    # No-dropout seeds: shares (4,1,1,1)/7 vs (1,4,1,1)/7 at every step; across-seed std
    # (ddof 0) is 3/14 for the first two sequences, 0 for the others -> spread 3/28 = 0.1071.
    # Final cumulative (12,3,3,3) vs (3,12,3,3): average ranks (4,2,2,2), (2,4,2,2); R = (6,6,4,4),
    # S = 4, T = 2 * (27 - 3) = 48, W = 12 * 4 / (4 * 60 - 2 * 48) = 48 / 144 = 0.3333.
    assert "| Input | 2 | 0.1071 | 0.3333 | 0.3571 | 0.3571 | 0.1429 | 0.1429 |" in md
    assert "| Input, dropout p=0.25 | 2 | 0 | 1 | 0.2857 | 0.2857 | 0.2857 | 0.1429 |" in md
    assert "dropout training is more consistent" in md
    assert "Precision-recall per evaluation condition, best dropout model (input-p0.25-seed1)" in md
    assert "FROC per evaluation condition, best dropout model" in md
    assert "Overlays not drawn (disabled)" in md


def test_report_logged_to_parent_run(report, toy_study):
    ref = tracking.resolve_study(str(toy_study))
    names = tracking.list_artifacts(ref.parent_run_id, "report", tracking_uri=ref.tracking_uri)
    assert {"report/report.html", "report/report.md"} <= set(names)


def test_cli_report_prints_path_and_replaces_its_own_folder(toy_study, tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["report", str(toy_study), "--out", str(out), "--format", "md", "--quiet", "--no-overlays", "--no-log"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == str(out / "report.md")
    (out / "stale.txt").write_text("old")  # inside a report folder seqablate wrote
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".seqablate", "figures", "report.md"]  # replaced whole


def test_cli_bad_inputs_exit_2(toy_study, tmp_path, capsys):
    assert main(["report", str(toy_study), "--format", "pdf", "--no-log", "--quiet"]) == 2
    assert "pdf" in capsys.readouterr().err
    empty = tmp_path / "nostudy"
    empty.mkdir()
    assert main(["report", str(empty), "--quiet"]) == 2
    assert "mlflow.db" in capsys.readouterr().err
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp leftovers


def test_study_by_folder_experiment_name_or_run_id(toy_study):
    from seqablate.analysis.study import load_study

    by_folder = load_study(str(toy_study))
    uri = by_folder.tracking_uri
    by_name = load_study("toy", tracking_uri=uri)
    by_id = load_study(by_folder.parent_run_id, tracking_uri=uri)
    assert by_folder.parent_run_id == by_name.parent_run_id == by_id.parent_run_id
    assert len(by_name.runs) == len(by_id.runs) == 7
    assert by_folder.name == "toy"
    with pytest.raises(ValueError, match="no-such-study"):
        load_study("no-such-study", tracking_uri=uri)
