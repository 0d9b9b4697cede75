"""Nothing seqablate did not create is ever deleted or replaced; tracking stores are never re-created.

Each case was reproduced on the code before the fix (see the closing note of the reliability
work): ``report --out`` deleted whatever was there, and any unreadable or foreign SQLite file
passed as a tracking store was replaced by an empty MLflow database.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from seqablate.cli import main

from .conftest import snapshot, trial_yaml


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("target", ["study", "thesis", "file"])
def test_report_out_never_deletes_what_is_there(trained: Path, tmp_path: Path, target: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "study"
    shutil.copytree(trained, study)
    if target == "study":
        out = study  # the study folder itself: mlflow.db, mlartifacts/, checkpoints/
    elif target == "thesis":
        out = tmp_path / "thesis"
        out.mkdir()
        (out / "chapter1.tex").write_text("\\chapter{Introduction}")
    else:
        out = tmp_path / "notes.txt"
        out.write_text("my notes")
    before = snapshot(out)
    code, err = _run(["report", str(study), "--out", str(out), "--no-overlays", "--quiet", "--no-log"], capsys)
    assert code == 2
    assert f"--out {out}" in err and "Choose another --out" in err
    assert snapshot(out) == before  # every file still there, byte for byte


def test_report_replaces_only_its_own_folder(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    argv = ["report", str(trained), "--out", str(out), "--no-overlays", "--quiet", "--no-log", "--format", "md"]
    assert main(argv) == 0
    (out / "old.txt").write_text("from the first report")
    assert main(argv) == 0
    assert not (out / "old.txt").exists() and (out / "report.md").is_file()


def _foreign(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE thesis (chapter TEXT)")
    con.execute("INSERT INTO thesis VALUES ('introduction')")
    con.commit()
    con.close()
    return path


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    return path


def _truncated(trained: Path, path: Path) -> Path:
    data = (trained / "mlflow.db").read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize("kind", ["foreign", "corrupt", "truncated", "empty-file"])
@pytest.mark.parametrize("command", ["report", "predict", "train"])
def test_unreadable_tracking_db_is_reported_never_replaced(
    trained: Path, cohort: Path, tmp_path: Path, kind: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    {"foreign": _foreign, "corrupt": _corrupt, "empty-file": lambda p: (p.write_bytes(b""), p)[1],
     "truncated": lambda p: _truncated(trained, p)}[kind](db)
    before = db.read_bytes()
    argv = {
        "report": ["report", "somestudy", "--tracking-uri", str(db), "--quiet", "--no-overlays"],
        "predict": ["predict", "--model", "0" * 32, "--input", str(cohort / "stanford_000"),
                    "--out", str(tmp_path / "pred"), "--tracking-uri", str(db)],
        "train": ["train", str(trial_yaml(tmp_path / "t.yaml", cohort)), "--out", str(tmp_path / "run"),
                  "--tracking-uri", str(db), "--cpu"],
    }[command]
    code, err = _run(argv, capsys)
    assert code == 2
    assert str(db) in err and "never replaces or re-creates an existing database" in err
    assert db.read_bytes() == before
    assert not (tmp_path / "run" / "checkpoints").exists()  # train refused before training


def test_study_run_refuses_a_foreign_db_before_ray(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _foreign(tmp_path / "store.db")
    before = db.read_bytes()
    code, err = _run(["study", "run", "paper-table1", "--cohort", str(cohort), "--smoke",
                      "--storage", str(tmp_path / "s"), "--tracking-uri", str(db)], capsys)
    assert code == 2 and "not an MLflow tracking store" in err
    assert db.read_bytes() == before and not (tmp_path / "s").exists()


def test_locked_db_is_waited_for_not_replaced(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A "database is locked" while checking the schema is retried, never taken for damage."""
    from seqablate import tracking

    db = tmp_path / "mlflow.db"
    shutil.copy(trained / "mlflow.db", db)
    from seqablate.tracking import store

    real = store._read_schema
    calls = {"n": 0}

    def flaky(path: Path):  # noqa: ANN202
        calls["n"] += 1
        if calls["n"] < 3:
            raise sqlite3.OperationalError("database is locked")
        return real(path)

    monkeypatch.setattr(store, "_read_schema", flaky)
    monkeypatch.setattr(store, "RETRY", store.RetryPolicy(sleep=lambda s: None))
    before = db.read_bytes()
    assert tracking.db_state(db) == "mlflow" and calls["n"] == 3
    assert db.read_bytes() == before


def test_phantom_overwrite_replaces_only_phantoms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "draft.tex").write_text("x")
    code, err = _run(["phantom", str(thesis), "--patients", "1", "--shape", "16", "16", "8", "--overwrite"], capsys)
    assert code == 2 and "draft" not in err and "already there" in err
    assert (thesis / "draft.tex").read_text() == "x"
    f = tmp_path / "file.txt"
    f.write_text("keep")
    code, err = _run(["phantom", str(f / "sub"), "--patients", "1", "--shape", "16", "16", "8"], capsys)
    assert code == 2 and "a parent of this path is a file" in err and f.read_text() == "keep"
