"""The tracking store: SQLite databases that are never replaced, lock retries, WAL, clients.

Every MLflow call goes through :func:`retry`, which retries "database is locked"/busy errors
with exponential backoff and full jitter; SQLite databases are switched to WAL journaling once
(readers never block the writer). A database that exists but cannot be read as an MLflow
store is reported, never re-created (:func:`db_state`); a new one is copied from a migrated
empty template. A tracking server is asked once per process whether it answers.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from seqablate.folders import temp_name
from seqablate.tracking.uris import ARTIFACTS_NAME, DB_NAME, sqlite_db_path, sqlite_uri

T = TypeVar("T")

_LOCKED_MARKERS = ("database is locked", "database table is locked", "database is busy", "sqlite_busy")


def is_locked_error(err: BaseException) -> bool:
    """True when ``err`` or anything in its cause/context chain is a SQLite lock/busy error."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        text = f"{type(e).__name__} {e} {getattr(e, 'message', '')}".lower()
        if any(m in text for m in _LOCKED_MARKERS):
            return True
        stack.extend([e.__cause__, e.__context__, getattr(e, "orig", None)])
    return False


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter for lock errors (``sleep ~ U(0, base * 2**i)``)."""

    attempts: int = 10  # tries in all; SQLite itself also waits (MLflow sets busy_timeout 20 s)
    base_s: float = 0.05  # first backoff ceiling
    cap_s: float = 5.0  # largest backoff ceiling
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delays(self) -> Iterator[float]:
        for i in range(self.attempts - 1):
            yield random.uniform(0, min(self.cap_s, self.base_s * 2**i))


RETRY = RetryPolicy()
#: Number of lock errors retried in this process (read by tests and benchmarks).
retry_count = 0


def retry(fn: Callable[..., T], *args: Any, policy: RetryPolicy | None = None, **kwargs: Any) -> T:
    """Call ``fn``; on a lock/busy error wait (backoff + jitter) and try again.

    Safe for MLflow writes: each store call is one transaction (rolled back on error), and
    re-inserting an identical metric or param is idempotent in MLflow's SQL store.
    """
    global retry_count
    policy = policy or RETRY
    delays = policy.delays()
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if not is_locked_error(err):
                raise
            delay = next(delays, None)
            if delay is None:
                raise
            retry_count += 1
            policy.sleep(delay)


def _enable_wal(db: Path) -> None:
    """Switch a SQLite database to write-ahead logging (persistent, once per file).

    With WAL, readers (the UI, ``list_trials``) never block the writer and the writer never
    blocks readers; writers still serialise, which the retries handle. Not for network file
    systems (NFS), where SQLite locking is unreliable anyway: use a tracking server there.
    Set ``SEQABLATE_SQLITE_WAL=0`` to leave the journal mode alone.
    """
    if os.environ.get("SEQABLATE_SQLITE_WAL", "1") == "0" or not _writable(db):
        return  # a read-only database is read as it is (switching the journal is a write)
    con = sqlite3.connect(db, timeout=30)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            retry(con.execute, "PRAGMA journal_mode=WAL")
    finally:
        con.close()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (``fcntl``); a no-op where fcntl is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class TrackingStoreError(ValueError):
    """A tracking store that cannot be used as asked (unreadable, foreign, missing, unreachable).

    seqablate never replaces or re-creates an existing database: the message says what is
    wrong and what to do instead.
    """


def _initialised(db: Path) -> bool:
    """True when ``db`` holds a (fully built) MLflow schema: its alembic version is stamped.
    Any doubt (no file, empty, unreadable) is False: for a database seqablate is building."""
    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        return _read_schema(db)[1]
    except sqlite3.Error:
        return False


def _read_schema(db: Path) -> tuple[list[str], bool]:
    """(table names, whether an alembic version is stamped) of a SQLite file, read-only."""
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        stamped = "alembic_version" in tables and (
            con.execute("SELECT version_num FROM alembic_version").fetchone() is not None
        )
        return tables, stamped
    finally:
        con.close()


def _writable(db: Path) -> bool:
    """Whether SQLite can write ``db``: the file and its folder (journal, WAL and lock files
    live beside it). ``os.access`` also says False on a read-only mount, root or not."""
    return os.access(db, os.W_OK) and os.access(db.parent, os.W_OK | os.X_OK)


def _read_only(db: Path, doing: str) -> TrackingStoreError:
    return TrackingStoreError(
        f"{db}: the tracking database is read-only (no permission to write it or its folder "
        f"{db.parent}, or a read-only file system), so {doing}; copy it (with any mlflow.db-wal "
        "file beside it) to a writable folder and pass the copy as --tracking-uri, or pass "
        "another --tracking-uri (a new .db path, or a tracking server)"
    )


def check_store(tracking_uri: str) -> None:
    """Everything a writer can check about ``tracking_uri`` before it makes any folder: a
    tracking server answers (:func:`check_reachable`); a SQLite database that exists is an
    MLflow store (:func:`db_state`) that can be written, and one that does not can be created
    (no parent is a file, its nearest existing folder is writable).

    Raises :class:`TrackingStoreError` naming the path and what to do.
    """
    check_reachable(tracking_uri)
    db = sqlite_db_path(tracking_uri)
    if db is None:
        return
    if db_state(db) == "mlflow":
        if not _writable(db):
            raise _read_only(db, "seqablate cannot log runs into it")
        return
    above = next((p for p in db.parents if p.exists() or p.is_symlink()), None)
    if above is None:
        return
    if not above.is_dir():
        raise TrackingStoreError(
            f"{db}: {above} is a file, not a folder; give --tracking-uri a folder, a path ending in "
            ".db, or a tracking server URL"
        )
    if not os.access(above, os.W_OK | os.X_OK):
        raise TrackingStoreError(
            f"{db}: cannot create the tracking database: {above} is read-only (no permission to "
            "write there, or a read-only file system); pass another --tracking-uri (a writable "
            "folder or .db path, or a tracking server)"
        )


def db_state(db: Path) -> str:
    """``'missing'`` or ``'mlflow'`` for a SQLite tracking database path.

    Raises :class:`TrackingStoreError` for anything seqablate must not touch: a folder, a
    file that is not a readable SQLite database (corrupt, truncated, another format), or a
    SQLite database without MLflow's schema (someone else's data). "Database is locked"
    errors are retried (:func:`retry`), never taken for corruption.
    """
    if not db.exists() and not db.is_symlink():
        return "missing"
    advice = (
        "seqablate never replaces or re-creates an existing database; restore it from a backup, "
        "or pass another --tracking-uri (a new .db path, or a tracking server)"
    )
    if not db.is_file():
        raise TrackingStoreError(f"{db}: the tracking database path is {'a folder' if db.is_dir() else 'not a file'}; {advice}")
    try:
        tables, stamped = retry(_read_schema, db)
    except sqlite3.Error as err:
        if not _writable(db):
            # A healthy database in WAL mode cannot be opened where SQLite may not create its
            # shared-memory file: that is the folder's permissions, not damage to restore.
            raise _read_only(db, f"SQLite cannot open it here ({err})") from None
        raise TrackingStoreError(f"{db}: cannot be read as an SQLite database ({err}); {advice}") from None
    if not stamped:
        shown = ", ".join(sorted(tables)[:8]) or "none"
        raise TrackingStoreError(
            f"{db}: an SQLite database that is not an MLflow tracking store (tables: {shown}); {advice}"
        )
    return "mlflow"


def _copy_db(src: Path, dst: Path) -> None:
    """Copy a SQLite database with the backup API (consistent even while in WAL mode)."""
    tmp = dst.with_name(temp_name(dst.name))
    try:
        a, b = sqlite3.connect(src, timeout=30), sqlite3.connect(tmp)
        try:
            with b:
                a.backup(b)
        finally:
            a.close()
            b.close()
        os.replace(tmp, dst)  # the database appears complete, or not at all
    finally:
        tmp.unlink(missing_ok=True)


def _build_db(dst: Path) -> None:
    """Let MLflow create and migrate a database beside ``dst``, then move it into place."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    work = dst.parent / temp_name("mlflow-build")
    work.mkdir()
    try:
        built = work / DB_NAME
        retry(mlflow.MlflowClient(tracking_uri=sqlite_uri(built)).search_experiments, max_results=1)
        _copy_db(built, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _seed_new_db(db: Path) -> None:
    """Create the MLflow database ``db`` so that it appears complete (WAL mode is switched
    on by the client that opens it).

    A fresh MLflow database runs dozens of schema migrations (10-30 s on a small machine);
    every new study folder would pay that. The first one built by this MLflow version is kept
    in ``$SEQABLATE_CACHE`` (default ``~/.cache/seqablate``) and byte-copied afterwards
    (``SEQABLATE_MLFLOW_TEMPLATE=0`` turns the cache off). Either way the database is built
    under a temporary name and renamed, so concurrent processes never see a half-migrated
    schema. The Default experiment's artifact location is pointed into the study folder.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get("SEQABLATE_MLFLOW_TEMPLATE", "1") != "0":
        try:
            cache = Path(os.environ.get("SEQABLATE_CACHE", Path.home() / ".cache" / "seqablate"))
            template = cache / f"mlflow-{mlflow.__version__}-empty.db"
            with _file_lock(cache / (template.name + ".lock")):
                if not _initialised(template):
                    _build_db(template)
            _copy_db(template, db)
        except (OSError, sqlite3.Error, MlflowException):
            pass  # the cache is an optimisation only: build the database directly below
    if not _initialised(db):
        _build_db(db)
    con = sqlite3.connect(db, timeout=30)
    with con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            ((db.parent.resolve() / ARTIFACTS_NAME / "0").as_uri(),),
        )
    con.close()


@functools.cache
def _client(tracking_uri: str) -> mlflow.MlflowClient:
    db = sqlite_db_path(tracking_uri)
    if db is not None:
        # MLflow imports its SQL store lazily (seconds of CPU): do it before any lock.
        importlib.import_module("mlflow.store.tracking.sqlalchemy_store")
        if db_state(db) == "missing":
            with _file_lock(db.with_name(db.name + ".init-lock")):
                if db_state(db) == "missing":
                    _seed_new_db(db)
        _enable_wal(db)
    # The model registry lives in the same store: without registry_uri MLflow would use its
    # process-wide default (a ./mlflow.db in the working directory) for registered models.
    c = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if db is not None:
        retry(c.search_experiments, max_results=1)  # builds the store, verifies the schema
    return c


def client(tracking_uri: str, *, create: bool = True) -> mlflow.MlflowClient:
    """The (per-process, cached) client for ``tracking_uri``; SQLite stores are initialised here.

    A SQLite database that does not exist yet is created only with ``create`` (writers);
    readers (``create=False``: reports, predict by run id, metric histories) get a
    :class:`TrackingStoreError` naming the path instead of a new empty database. An existing
    database that is not a readable MLflow store is never replaced (:func:`db_state`).

    Several processes opening a *fresh* SQLite database at once would each run MLflow's
    schema migrations and collide ("table already exists"); the first creation is serialised
    by an inter-process file lock beside the database and the database only ever appears
    complete (see :func:`_seed_new_db`). Opening an existing database takes no lock. A
    tracking server (``http(s)://``) is asked once per process whether it answers
    (:func:`check_reachable`); other URIs (``postgresql://``, ...) make a plain client.

    MLflow's per-download progress bars are turned off here (unless the user set
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``): a report or predict reads dozens of small
    artifacts, and a bar for each would bury the command's own progress.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    db = sqlite_db_path(tracking_uri)
    if db is not None and db_state(db) == "missing":
        if not create:
            raise TrackingStoreError(
                f"no MLflow database at {db} (nothing was created); pass the study folder or "
                "--tracking-uri of the runs you mean"
            )
        above = next((p for p in db.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise TrackingStoreError(
                f"{db}: {above} is a file, not a folder; give --tracking-uri a folder, a path "
                "ending in .db, or a tracking server URL"
            )
        _forget_stores()  # a database deleted under a cached client (--overwrite) starts afresh
    _reachable(tracking_uri)
    return _client(tracking_uri)


def _forget_stores() -> None:
    """Drop cached clients and MLflow's cached stores (their connection pools may still hold a
    deleted database file open; the next client must open the new one)."""
    _client.cache_clear()
    with contextlib.suppress(Exception):  # MLflow internals: best effort, they may move
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    with contextlib.suppress(Exception):
        from mlflow.tracking._model_registry import utils as registry_utils

        if registry_utils._model_registry_store_registry is not None:
            registry_utils._model_registry_store_registry._get_store_with_resolved_uri.cache_clear()


@functools.cache
def _reachable(tracking_uri: str) -> None:
    """:func:`check_reachable`, once per process and URI (a failure is not cached)."""
    check_reachable(tracking_uri)


def check_reachable(tracking_uri: str, *, timeout_s: float = 10.0) -> None:
    """Fail fast, naming the URI, when an ``http(s)://`` tracking server does not answer.

    MLflow's own client retries an unreachable server for minutes; a study checks once,
    before Ray starts or any file is written. Any HTTP answer (even an error status) counts
    as reachable. Other URIs are not checked here (:func:`client` checks SQLite files).
    """
    import urllib.error
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):  # noqa: S310 - the user's server
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingStoreError(
            f"cannot reach the MLflow tracking server at {tracking_uri} ({reason}); start it "
            "(mlflow server ...), fix --tracking-uri / MLFLOW_TRACKING_URI, or leave both unset "
            "to use a SQLite database in the study folder"
        ) from None
