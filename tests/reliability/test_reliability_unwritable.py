"""Paths that cannot be written: a read-only cohort, a read-only tracking database or folder, a
tracking URI through a file or with an unknown scheme, a cache folder taken by a user's file,
a full disk. Each is a message naming the path and the option, exit code 2, nothing left half
made, instead of a traceback.

The tests run as root, for whom ``chmod`` makes nothing read-only, and mounting a read-only
file system needs privileges a test does not have. seqablate asks ``os.access`` whether it
may write (which says False on a read-only mount, for root too), so "read-only" is simulated
by an ``os.access`` that answers False for writing below one folder; a full disk by a write
that raises ``ENOSPC``.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from seqablate.cli import main

from .conftest import trial_yaml


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Everything at or below ``root`` is read-only, as on a read-only mount."""
    real = os.access
    root = root.resolve()

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        p = Path(os.fsdecode(path)).resolve() if isinstance(path, str | bytes | os.PathLike) else None
        if p is not None and mode & os.W_OK and (p == root or root in p.parents):
            return False
        return real(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


def _small_cohort(cohort: Path, root: Path, patients: int = 2) -> Path:
    """The first ``patients`` patients of the session's phantom ``cohort``, copied to ``root``."""
    for d in sorted(p for p in cohort.iterdir() if p.is_dir() and not p.name.startswith("."))[:patients]:
        shutil.copytree(d, root / d.name)
    return root


# ------------------------------------------------------------------------ a read-only cohort


def test_a_read_only_cohort_is_cached_in_the_user_cache(cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.data.cache import preprocess_cohort

    share = tmp_path / "share"
    root = _small_cohort(cohort, share / "cohort")
    monkeypatch.setenv("SEQABLATE_CACHE", str(tmp_path / "user-cache"))
    _read_only(monkeypatch, share)
    before = sorted(p.name for p in share.iterdir())
    got = preprocess_cohort(root, {"image_size": 16, "intensity": "minmax"}, progress=False, workers=1)
    assert len(got) == 2 and all(p.entry.parent == tmp_path / "user-cache" / "preprocessed" for p in got)
    assert sorted(p.name for p in share.iterdir()) == before  # nothing made beside the cohort
    assert "read-only" in capsys.readouterr().err


def test_evaluate_takes_a_cache_folder(trained: Path, cohort: Path, tmp_path: Path) -> None:
    ckpt = sorted((trained / "checkpoints").glob("checkpoint_*"))[-1]
    two = _small_cohort(cohort, tmp_path / "two")
    assert main(["evaluate", "--model", str(ckpt), "--cohort", str(two), "--out", str(tmp_path / "ev"),
                 "--no-log", "--bootstrap", "0", "--cache-dir", str(tmp_path / "cc")]) == 0
    assert len([p for p in (tmp_path / "cc").iterdir() if not p.name.startswith(".")]) == 2
    assert not (tmp_path / ".seqablate-cache").exists()


# ------------------------------------------------------------------------ tracking stores


def test_a_healthy_read_only_database_is_called_read_only(cohort: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate import tracking
    from seqablate.tracking import store

    ro = tmp_path / "ro"
    with tracking.study_run("healthy", storage=str(ro)):  # a real, healthy MLflow database
        pass
    db = ro / "mlflow.db"
    before = db.read_bytes()
    _read_only(monkeypatch, ro)
    # A writer is refused before it makes its --out.
    code, err = _run(["train", str(trial_yaml(tmp_path / "a.yaml", cohort)), "--out", str(tmp_path / "run"),
                      "--tracking-uri", str(db), "--cpu"], capsys)
    assert code == 2 and f"{db}: the tracking database is read-only" in err and "backup" not in err
    assert not (tmp_path / "run").exists()
    # A WAL database in a read-only folder cannot be opened by SQLite: still read-only, not damage.
    monkeypatch.setattr(store, "_read_schema",
                        lambda path: (_ for _ in ()).throw(sqlite3.OperationalError("unable to open database file")))
    with pytest.raises(store.TrackingStoreError) as info:
        store.db_state(db)
    assert "read-only" in str(info.value) and "restore it from a backup" not in str(info.value)
    assert db.read_bytes() == before


@pytest.mark.parametrize("kind", ["under-a-file", "unknown-scheme", "read-only-folder"])
def test_an_unusable_tracking_uri_leaves_no_half_made_out(cohort: Path, tmp_path: Path, kind: str,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    uri, needle = {
        "under-a-file": (str(notes / "mlflow.db"), f"{notes} is a file, not a folder"),
        "unknown-scheme": ("foo://bar", "--tracking-uri foo://bar: unknown scheme 'foo'"),
        "read-only-folder": (str(tmp_path / "ro" / "sub" / "x.db"), f"{tmp_path / 'ro'} is read-only"),
    }[kind]
    (tmp_path / "ro").mkdir()
    _read_only(monkeypatch, tmp_path / "ro")
    out = tmp_path / "run"
    code, err = _run(["train", str(trial_yaml(tmp_path / "a.yaml", cohort)), "--out", str(out),
                      "--tracking-uri", uri, "--cpu"], capsys)
    assert code == 2 and needle in err and "Traceback" not in err
    assert not out.exists()  # so the corrected rerun is not refused as "another tracking URI"
    assert notes.read_text() == "mine" and list((tmp_path / "ro").iterdir()) == []


# ------------------------------------------------------------------------ the preprocessing cache


def test_a_cache_folder_taken_by_a_file_is_named(cohort: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.data import DataError
    from seqablate.data.cache import CACHE_NAME, preprocess_cohort

    taken = tmp_path / "cache.txt"
    taken.write_text("mine")
    cfg = yaml.safe_load(trial_yaml(tmp_path / "a.yaml", cohort).read_text())
    cfg["data"]["cache_dir"] = str(taken)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    code, err = _run(["train", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "run"), "--cpu"], capsys)
    assert code == 2 and f"data.cache_dir {taken}: is a file" in err and "Traceback" not in err
    assert taken.read_text() == "mine" and not (tmp_path / "run").exists()
    # The default name beside the cohort, taken by a user's file: named, not replaced.
    root = _small_cohort(cohort, tmp_path / "c" / "cohort")
    (root.parent / CACHE_NAME).write_text("mine")
    with pytest.raises(DataError, match=rf"{CACHE_NAME}: the preprocessing cache of cohort .* a file"):
        preprocess_cohort(root, {"image_size": 16}, progress=False, workers=1)
    assert (root.parent / CACHE_NAME).read_text() == "mine"


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", str(args[0]) if args else None)


def test_a_full_disk_while_caching_stops_at_once_naming_the_folder(cohort: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from seqablate.data.cache import CacheWriteError, preprocess_cohort

    root = _small_cohort(cohort, tmp_path / "cohort")
    cdir = tmp_path / "cache"
    calls: list[object] = []
    monkeypatch.setattr("seqablate.data.cache.np.save", lambda *a, **k: (calls.append(a), _enospc(*a))[1])
    with pytest.raises(CacheWriteError) as info:
        preprocess_cohort(root, {"image_size": 16}, cache_dir=cdir, progress=False, workers=1)
    msg = str(info.value)
    assert f"cannot write the preprocessing cache in {cdir}: No space left on device" in msg
    assert "image.npy" in msg and "data.cache_dir" in msg
    assert len(calls) == 1  # the second patient was not even started
    assert list(cdir.iterdir()) == []  # no entry, no temp folder


def test_a_full_disk_while_training_is_a_message_not_a_traceback(cohort: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate import tracking
    from seqablate.trainables import session

    real = shutil.copytree

    def full(src: str, dst: str, *a: object, **k: object) -> None:
        real(src, dst, *a, **k)  # half written, then the disk is full
        _enospc(Path(dst) / "model.pt")

    monkeypatch.setattr(session.shutil, "copytree", full)
    out = tmp_path / "run"
    code, err = _run(["train", str(trial_yaml(tmp_path / "a.yaml", cohort)), "--out", str(out), "--cpu"], capsys)
    assert code == 2 and "No space left on device" in err and "model.pt" in err and "Traceback" not in err
    assert list((out / "checkpoints").iterdir()) == []  # no half-written checkpoint
    # The run that started is kept (a rerun with the same config continues it), marked FAILED.
    assert tracking.list_trials(str(out)).iloc[0]["status"] == "FAILED"
