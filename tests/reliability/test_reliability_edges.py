"""Edges of the data-safety machinery: a failed final flush, a failed swap, temp names across
hosts, names MLflow rejects, a tracking path through a file, read-only report logging."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seqablate import folders
from seqablate import tracking as T
from seqablate.cli import main
from seqablate.config import TrialConfig


def test_a_failed_final_flush_marks_the_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with T.study_run("edge", storage=str(tmp_path / "s")) as study:
        with pytest.raises(OSError, match="disk full"):
            with T.trial_run(study.ref, TrialConfig(), overrides={"train.seed": 0}, flush_seconds=1e9) as log:
                log.log_metrics({"a": 1.0}, step=0)
                monkeypatch.setattr(log.client, "log_batch",
                                    lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    row = T.list_trials(str(tmp_path / "s")).iloc[0]
    assert row["status"] == "FAILED" and "disk full" in row["tags.error"]


def test_metric_names_over_mlflows_limit_are_refused_at_once(tmp_path: Path) -> None:
    with T.study_run("edge", storage=str(tmp_path / "s")) as study:
        with T.trial_run(study.ref, TrialConfig(), overrides={"train.seed": 0}) as log:
            with pytest.raises(ValueError, match="at most 250 characters"):
                log.log_metrics({"m" * 251: 1.0})
            log.log_metrics({"m" * 250: 1.0}, step=0)  # the limit itself is fine
    row = T.list_trials(str(tmp_path / "s")).iloc[0]
    assert row["status"] == "FINISHED" and row[f"metrics.{'m' * 250}"] == 1.0


def test_a_failed_swap_puts_the_previous_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dst = tmp_path / "report"
    dst.mkdir()
    folders.mark(dst, "report")
    (dst / "old.html").write_text("old")
    src = tmp_path / folders.temp_name("report-new")
    src.mkdir()
    (src / "new.html").write_text("new")
    real = os.replace

    def flaky(a: str | Path, b: str | Path) -> None:
        if Path(a) == src:
            raise OSError("rename failed")
        real(a, b)

    monkeypatch.setattr(folders.os, "replace", flaky)
    with pytest.raises(OSError, match="rename failed"):
        folders.replace_own_dir(src, dst, "report")
    assert (dst / "old.html").read_text() == "old" and (src / "new.html").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-old")] == []


def test_temp_entries_of_another_host_with_a_shared_name_prefix_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two pods whose names agree in their first 40 characters: each must see the other's
    # temp entry as foreign (kept until it is old), not as its own with a dead process id.
    prefix = "raycluster-kuberay-worker-gpu-group-abc"
    monkeypatch.setattr(folders.socket, "gethostname", lambda: prefix + "-x1y2z")
    theirs = tmp_path / folders.temp_name("report")
    theirs.mkdir()
    monkeypatch.setattr(folders.socket, "gethostname", lambda: prefix + "-q9w8e")
    assert folders.sweep_temp(tmp_path) == [] and theirs.is_dir()
    mine = tmp_path / folders.temp_name("report")
    mine.mkdir()
    dead = mine.with_name(mine.name.replace(f"-{os.getpid()}-", "-999999999-"))
    mine.rename(dead)
    assert folders.sweep_temp(tmp_path) == [dead] and theirs.is_dir()


def test_a_tracking_path_through_a_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert main(["report", "somestudy", "--tracking-uri", str(notes), "--no-log", "--quiet"]) == 2
    assert str(notes) in capsys.readouterr().err  # a reader: named, no traceback
    with pytest.raises(T.TrackingStoreError, match=f"{notes} is a file, not a folder"):
        with T.study_run("edge", tracking_uri=str(notes)):  # a writer would have to create it
            pass
    assert notes.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_logging_a_report_to_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.html").write_text("<html></html>")
    missing = tmp_path / "typo" / "mlflow.db"
    with pytest.raises(ValueError, match="no MLflow database"):
        T.log_report("0" * 32, report, tracking_uri=f"sqlite:///{missing}")
    assert not (tmp_path / "typo").exists()
