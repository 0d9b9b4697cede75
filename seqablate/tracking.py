"""The one module that talks to MLflow: where runs go, how trials log, how runs are read back.

Sections:

1. **Where** — :func:`default_tracking_uri`: an explicit URI, else ``MLFLOW_TRACKING_URI``,
   else a SQLite database inside the study folder (``<storage>/mlflow.db``, artifacts in
   ``<storage>/mlartifacts``), else ``./seqablate-runs/mlflow.db``. MLflow 3 refuses the plain
   file store, so SQLite is the embedded default; a tracking server (``http://...``) is used
   by configuration alone.
2. **Robust writes** — every MLflow call goes through :func:`_retry`, which retries
   "database is locked"/busy errors with exponential backoff and full jitter; SQLite
   databases are switched to WAL journaling once (readers never block the writer); metrics are
   buffered and written with ``log_batch``, so N concurrent trial processes each hold the
   write lock rarely and briefly.
3. **Writing** — :func:`study_run` (the parent run of a study) and :func:`trial_run` (one child
   run per trial, a :class:`TrialLogger`) are context managers that always close their run:
   FINISHED, or FAILED with an ``error`` tag and an ``error.txt`` traceback, also on
   ``KeyboardInterrupt``; the exception is re-raised. :func:`get_or_create_trial_run` finds a
   trial's run by its stable ``seqablate.trial_key`` tag so a resumed study makes no duplicates.
4. **Reading back** — :func:`resolve_study`, :func:`list_trials`, :func:`metric_history`,
   :func:`download_artifact`, :func:`download_model`, :func:`log_report` (for ``analysis`` and
   the CLI).

Only :class:`mlflow.MlflowClient` with explicit run ids is used, never the fluent
``mlflow.start_run`` global state, so many trials in one process (threads, Tune's function
trainables) or in many processes are safe.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
import random
import re
import shutil
import sqlite3
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlparse

# A report or predict reads dozens of small artifacts; MLflow would draw a progress bar for
# each download, burying the command's own progress. Users can still turn them back on.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException

from seqablate import __version__ as _VERSION
from seqablate.config import TrialConfig, flatten, to_yaml
from seqablate.provenance import git_commit

if TYPE_CHECKING:
    import pandas as pd
    from pydantic import BaseModel

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Tag names (the analysis engineer and the CLI read these)
# --------------------------------------------------------------------------------------------

TAG_KIND = "seqablate.kind"  # 'study' (parent run) or 'trial' (child run)
TAG_STUDY = "seqablate.study"  # study name, on parent and trial runs
TAG_TRIAL_KEY = "seqablate.trial_key"  # stable key of a trial's overrides (resume idempotency)
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own parent link (nests runs in the UI)
TAG_ERROR = "error"  # on FAILED runs: '<ExceptionType>: <message>'
TAG_GIT = "git_commit"
TAG_VERSION = "seqablate.version"
#: Human-facing tags of a trial (what the UI's run table can be grouped by).
TRIAL_TAGS = ("integration", "integration_point", "fusion", "sharing", "dropout", "dropout_mode", "seed")
MODEL_DIR = "model"  # artifact folder of the best checkpoint (+ its config.yaml)
CONFIG_ARTIFACT = "config.yaml"
DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
DEFAULT_DIR = "seqablate-runs"

# --------------------------------------------------------------------------------------------
# 1. Where runs go
# --------------------------------------------------------------------------------------------


def _local_path(uri_or_path: str) -> Path | None:
    """The local filesystem path of a bare path or ``file://`` URI; None for other schemes."""
    parsed = urlparse(uri_or_path)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # C:\ on Windows
        return Path(uri_or_path)
    return None


def _sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db.expanduser().resolve()}"


def _normalise_uri(uri: str) -> str:
    """A bare path or ``file://`` URI becomes a SQLite database (MLflow 3 has no file store).

    A path ending in ``.db`` is the database itself; any other path is a folder that gets
    ``mlflow.db``. Other URIs (``sqlite://``, ``http(s)://``, ``postgresql://``, ...) pass.
    """
    local = _local_path(uri)
    if local is None:
        return uri
    return _sqlite_uri(local if local.suffix == ".db" else local / DB_NAME)


def default_tracking_uri(storage: str | None = None, explicit: str | None = None) -> str:
    """The tracking URI a study uses.

    Precedence: ``explicit`` (the ``--tracking-uri`` flag) > ``MLFLOW_TRACKING_URI`` >
    ``sqlite:///<storage>/mlflow.db`` when ``storage`` is a local path or ``file://`` URI >
    ``sqlite:///<cwd>/seqablate-runs/mlflow.db``. Bare paths given as explicit/env URIs are
    turned into SQLite databases (see :func:`_normalise_uri`). Paths are made absolute, so
    trial processes with another working directory (Ray workers) write the same database.
    """
    if explicit:
        return _normalise_uri(explicit)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return _normalise_uri(env)
    if storage:
        local = _local_path(storage)
        if local is not None:
            return _sqlite_uri(local / DB_NAME)
    return _sqlite_uri(Path.cwd() / DEFAULT_DIR / DB_NAME)


def sqlite_db_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """``file://<db folder>/mlartifacts/<experiment>`` for SQLite stores; None for servers.

    With a server, the server's ``--default-artifact-root`` / artifact proxy decides.
    """
    db = sqlite_db_path(tracking_uri)
    if db is None:
        return None
    safe = re.sub(r"[^\w.\-]+", "_", experiment) or "study"
    return (db.parent.resolve() / ARTIFACTS_NAME / safe).as_uri()


# --------------------------------------------------------------------------------------------
# 2. Robust writes: retries, WAL, one client per URI
# --------------------------------------------------------------------------------------------

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


def _retry(fn: Callable[..., T], *args: Any, policy: RetryPolicy | None = None, **kwargs: Any) -> T:
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
    if os.environ.get("SEQABLATE_SQLITE_WAL", "1") == "0":
        return
    con = sqlite3.connect(db, timeout=30)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            _retry(con.execute, "PRAGMA journal_mode=WAL")
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

    For seqablate's own template database only (any doubt means: build a new template).
    """
    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT version_num FROM alembic_version").fetchone() is not None
        finally:
            con.close()
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


def db_state(db: Path) -> str:
    """``'missing'`` or ``'mlflow'`` for a SQLite tracking database path.

    Raises :class:`TrackingStoreError` for anything seqablate must not touch: a folder, a
    file that is not a readable SQLite database (corrupt, truncated, another format), or a
    SQLite database without MLflow's schema (someone else's data). "Database is locked"
    errors are retried (:func:`_retry`), never taken for corruption.
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
        tables, stamped = _retry(_read_schema, db)
    except sqlite3.Error as err:
        raise TrackingStoreError(f"{db}: cannot be read as an SQLite database ({err}); {advice}") from None
    if not stamped:
        shown = ", ".join(sorted(tables)[:8]) or "none"
        raise TrackingStoreError(
            f"{db}: an SQLite database that is not an MLflow tracking store (tables: {shown}); {advice}"
        )
    return "mlflow"


def _copy_db(src: Path, dst: Path) -> None:
    """Copy a SQLite database with the backup API (consistent even while in WAL mode)."""
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    a, b = sqlite3.connect(src, timeout=30), sqlite3.connect(tmp)
    try:
        with b:
            a.backup(b)
    finally:
        a.close()
        b.close()
    os.replace(tmp, dst)  # the database appears complete, or not at all


def _build_db(dst: Path) -> None:
    """Let MLflow create and migrate a database beside ``dst``, then move it into place."""
    work = dst.parent / f".mlflow-build-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        built = work / DB_NAME
        _retry(mlflow.MlflowClient(tracking_uri=_sqlite_uri(built)).search_experiments, max_results=1)
        _copy_db(built, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _seed_new_db(db: Path) -> None:
    """Create the MLflow database ``db`` so that it appears complete, in WAL mode.

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
    c = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if db is not None:
        _retry(c.search_experiments, max_results=1)  # builds the store, verifies the schema
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
    """
    db = sqlite_db_path(tracking_uri)
    if db is not None and db_state(db) == "missing":
        if not create:
            raise TrackingStoreError(
                f"no MLflow database at {db} (nothing was created); pass the study folder or "
                "--tracking-uri of the runs you mean"
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


# --------------------------------------------------------------------------------------------
# 3. Writing: study (parent) and trial (child) runs
# --------------------------------------------------------------------------------------------


class StudyRef(NamedTuple):
    """Where a study lives; plain strings, so it pickles into Ray workers."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def _now_ms() -> int:
    return int(time.time() * 1000)


def _str(v: Any) -> str:
    return "None" if v is None else str(v)


_VALID_KEY = re.compile(r"^[/\w.\- :]+$")


def _check_key(key: str, what: str) -> str:
    """Refuse keys MLflow would reject at flush time (which would lose a whole batch)."""
    if not isinstance(key, str) or not _VALID_KEY.match(key) or ".." in key or key.startswith("/"):
        raise ValueError(
            f"{what} name {key!r} is not valid for MLflow: use letters, digits, '_', '-', '.', "
            "' ', ':' and '/' (no leading '/', no '..')"
        )
    return key


def _log_params_tags(
    c: mlflow.MlflowClient,
    run_id: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    ps = [Param(_check_key(k, "param"), _str(v)) for k, v in (params or {}).items()]
    ts = [RunTag(k, _str(v)) for k, v in (tags or {}).items()]
    if ps or ts:
        _retry(c.log_batch, run_id, params=ps, tags=ts)


def _mark_failed(c: mlflow.MlflowClient, run_id: str, err: BaseException) -> None:
    """FAILED status, ``error`` tag and ``error.txt`` traceback; never raises (best effort)."""
    msg = f"{type(err).__name__}: {err}".strip()
    if len(msg) > 7900:  # MLflow's tag value limit is 8000 characters
        msg = msg[:7900] + " ..."
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    with contextlib.suppress(Exception):
        _retry(c.set_tag, run_id, TAG_ERROR, msg)
    with contextlib.suppress(Exception):
        _retry(c.log_text, run_id, tb, "error.txt")
    with contextlib.suppress(Exception):
        _retry(c.set_terminated, run_id, RunStatus.to_string(RunStatus.FAILED))


class RunLogger:
    """Logs to one run by id: buffered metrics, params, tags, artifacts.

    Metrics are buffered and written with ``log_batch`` when ``flush_every`` values are
    pending or ``flush_seconds`` have passed since the last write (checked on each call), and
    always on :meth:`flush`/close. A failed flush keeps the buffer (nothing is lost; the next
    flush retries it). Not thread-safe: one logger per thread/trial.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        *,
        flush_every: int = 500,
        flush_seconds: float = 10.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.client = client(tracking_uri)
        self.flush_every = max(1, int(flush_every))
        self.flush_seconds = float(flush_seconds)
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self.metrics_logged = 0  # values handed to log_batch successfully

    # ---- metrics ----
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer ``{key: value}`` at ``step`` (default 0). Non-numeric values raise ValueError."""
        ts = _now_ms()
        for key, value in metrics.items():
            _check_key(key, "metric")
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"metric {key!r}: value {value!r} is not a number") from None
            self._buffer.append(Metric(key, v, ts, int(step or 0)))
        if len(self._buffer) >= self.flush_every or (
            time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def flush(self) -> None:
        """Write buffered metrics (chunks of 1000 per MLflow batch), retrying lock errors."""
        while self._buffer:
            chunk = self._buffer[:1000]
            _retry(self.client.log_batch, self.run_id, metrics=chunk)
            del self._buffer[: len(chunk)]
            self.metrics_logged += len(chunk)
        self._last_flush = time.monotonic()

    # ---- params / tags ----
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params now (values stringified; re-logging an equal value is allowed)."""
        _log_params_tags(self.client, self.run_id, params=params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        _log_params_tags(self.client, self.run_id, tags=tags)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    # ---- artifacts ----
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under ``artifact_path`` (None = run root)."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: cannot log as an artifact, it does not exist")
        if p.is_dir():
            _retry(self.client.log_artifacts, self.run_id, str(p), artifact_path)
        else:
            _retry(self.client.log_artifact, self.run_id, str(p), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        _retry(self.client.log_text, self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """JSON, or YAML when ``artifact_file`` ends in .yaml/.yml."""
        _retry(self.client.log_dict, self.run_id, dict(data), artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as an image artifact (e.g. ``plots/pr_full.png``)."""
        _retry(self.client.log_figure, self.run_id, figure, artifact_file)

    def log_table(self, df: pd.DataFrame, artifact_file: str) -> None:
        """A DataFrame as CSV (e.g. the per-lesion table ``lesions/test_full.csv``)."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            df.to_csv(local, index=False)
            parent = str(Path(artifact_file).parent)
            self.log_artifact(local, None if parent in ("", ".") else parent)

    def log_pr_curve(
        self, name: str, precision: Any, recall: Any, thresholds: Any | None = None
    ) -> None:
        """A PR curve as ``pr_curves/<name>.csv`` (columns precision, recall[, threshold]).

        ``precision``/``recall`` are 1-D arrays of equal length N; ``thresholds`` has N or
        N - 1 values (scikit-learn's convention: the last point has none -> NaN).
        """
        import numpy as np
        import pandas as pd

        p, r = np.asarray(precision, float).ravel(), np.asarray(recall, float).ravel()
        if p.shape != r.shape:
            raise ValueError(f"PR curve {name!r}: precision {p.shape} and recall {r.shape} differ")
        cols: dict[str, Any] = {"precision": p, "recall": r}
        if thresholds is not None:
            t = np.asarray(thresholds, float).ravel()
            if len(t) == len(p) - 1:
                t = np.append(t, np.nan)
            if len(t) != len(p):
                raise ValueError(f"PR curve {name!r}: {len(t)} thresholds for {len(p)} points")
            cols["threshold"] = t
        self.log_table(pd.DataFrame(cols), f"pr_curves/{name}.csv")

    def log_model(self, model: Any, *, example: Mapping[str, Any] | None = None) -> None:
        """The trained model under ``model/`` as an MLflow PyTorch model.

        ``model`` is a :class:`~seqablate.models.deployed.DeployedModel` (it carries its config
        and normalisation statistics); ``example`` (``{"image": float32[N, S, K, H, W],
        "present": bool[N, S]}``) gives the signature. Saved in MLflow's ``pickle`` format:
        the default ``pt2`` traces the forward pass with ``torch.export``, which cannot
        follow the data-dependent branches on ``present``. ``mlflow.pytorch.load_model`` on
        ``runs:/<run id>/model`` (or a registered version) returns the module. The resolved
        config is also written as ``model/config.yaml``.
        """
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        from seqablate import __version__

        signature = None
        if example is not None:
            with torch.no_grad():
                out = model(torch.as_tensor(example["image"]), torch.as_tensor(example["present"]))
            signature = infer_signature({k: v for k, v in example.items()}, out.float().numpy())
        meta = {"seqablate_version": __version__, "git_commit": git_commit(),
                "norm_stats": getattr(model, "policy", "stored"),
                "sequences": list(getattr(model, "sequences", ()))}
        import logging

        # The pickle format is chosen deliberately (see above); MLflow warns about it each time.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory(prefix="seqablate-model-") as tmp:
            path = Path(tmp) / MODEL_DIR
            mlflow.pytorch.save_model(
                model, str(path), serialization_format="pickle", signature=signature, metadata=meta,
                pip_requirements=[f"seqablate=={__version__}", f"torch=={torch.__version__.split('+')[0]}",
                                  f"mlflow=={mlflow.__version__}"],
            )
            cfg = getattr(model, "config", None)
            if cfg:
                (path / CONFIG_ARTIFACT).write_text(_yaml(dict(cfg)))
            self.log_artifact(path, MODEL_DIR)

    # ---- end ----
    def finish(self, status: str = "FINISHED") -> None:
        """Flush and set the terminal status (FINISHED, FAILED or KILLED)."""
        self.flush()
        _retry(self.client.set_terminated, self.run_id, status)

    def fail(self, err: BaseException) -> None:
        """Flush what can be flushed, then mark FAILED with the error (never raises)."""
        with contextlib.suppress(Exception):
            self.flush()
        _mark_failed(self.client, self.run_id, err)


class TrialLogger(RunLogger):
    """The logger a trial gets from :func:`trial_run` (a :class:`RunLogger` plus its study)."""

    def __init__(self, study: StudyRef, run_id: str, *, resumed: bool = False, **kw: Any) -> None:
        super().__init__(study.tracking_uri, run_id, **kw)
        self.study = study
        self.resumed = resumed  # True when an existing (unfinished) run was reopened


class StudyHandle(RunLogger):
    """The parent run of a study (from :func:`study_run`)."""

    def __init__(self, ref: StudyRef, name: str, *, resumed: bool = False) -> None:
        super().__init__(ref.tracking_uri, ref.parent_run_id)
        self.ref = ref
        self.name = name
        self.resumed = resumed  # True when an existing parent run was reopened

    @property
    def experiment_id(self) -> str:
        return self.ref.experiment_id

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """``summary.json`` artifact; its numeric entries also as ``summary.<key>`` metrics."""
        self.log_dict(summary, "summary.json")
        nums = {
            f"summary.{k}": float(v)
            for k, v in summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and _VALID_KEY.match(str(k))
        }
        if nums:
            self.log_metrics(nums)
            self.flush()


#: Experiment tag that makes MLflow 3's UI open an experiment in its model-training view (runs
#: table, charts) instead of the GenAI overview (traces, token usage).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _get_or_create_experiment(c: mlflow.MlflowClient, tracking_uri: str, name: str) -> str:
    exp = _retry(c.get_experiment_by_name, name)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise ValueError(
                f"MLflow experiment {name!r} ({tracking_uri}) is deleted; restore it or pick "
                "another study name"
            )
        if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            _retry(c.set_experiment_tag, exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        return _retry(
            c.create_experiment, name, artifact_location=default_artifact_location(tracking_uri, name),
            tags=dict([EXPERIMENT_KIND]),
        )
    except MlflowException as err:  # created meanwhile by another process
        exp = _retry(c.get_experiment_by_name, name)
        if exp is None:
            raise err from None
        return exp.experiment_id


def get_or_create_experiment(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name`` at ``tracking_uri`` (created, with its artifacts beside a
    SQLite database, when missing)."""
    return _get_or_create_experiment(client(tracking_uri), tracking_uri, name)


def create_run(tracking_uri: str, experiment_id: str, *, run_name: str, tags: Mapping[str, Any] | None = None) -> str:
    """A new RUNNING run (with the git commit and seqablate version tags); returns its id.
    Close it with :class:`RunLogger` ``finish`` / ``fail``."""
    c = client(tracking_uri)
    all_tags = {TAG_GIT: git_commit(), TAG_VERSION: _VERSION, **{k: _str(v) for k, v in (tags or {}).items()}}
    return _retry(c.create_run, experiment_id, run_name=run_name, tags=all_tags).info.run_id


#: Key of the study view stored on the experiment (MLflow's shared-view mechanism).
VIEW_KEY = "seqablate"


def publish_view(ref: StudyRef, *, metrics: Sequence[str], params: Sequence[str] = (), order_by: str | None = None) -> str:
    """Store a runs-table view of the study on its experiment and return its UI path.

    MLflow's experiment page restores a shared view from the experiment tag
    ``mlflow.sharedViewState.<key>`` when the URL carries ``?viewStateShareKey=<key>``: the
    study's parent run expanded (its trials visible), the given metric and param columns
    shown, ordered by ``order_by`` (a metric, descending), in the model-training view.
    """
    import json

    def col(kind: str, key: str) -> str:
        return f"{kind}.`{key}`"

    state: dict[str, Any] = {
        "selectedColumns": [col("metrics", m) for m in metrics] + [col("params", p) for p in params],
        "runsExpanded": {ref.parent_run_id: True},
        "runsHiddenMode": "SHOW_ALL",
    }
    if order_by:
        state.update({"orderByKey": col("metrics", order_by), "orderByAsc": False})
    c = client(ref.tracking_uri)
    _retry(c.set_experiment_tag, ref.experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(state))
    # workflowType: MLflow 3's UI otherwise opens every experiment in its GenAI overview
    # (traces, token usage), whatever the experiment's kind tag says.
    return f"#/experiments/{ref.experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def _latest_study_parent(c: mlflow.MlflowClient, experiment_id: str, name: str | None) -> Any:
    flt = f"tags.`{TAG_KIND}` = 'study'"
    if name is not None:
        flt += f" and tags.`{TAG_STUDY}` = '{_quote(name)}'"
    runs = _retry(
        c.search_runs, [experiment_id], flt, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


@contextlib.contextmanager
def study_run(
    name: str,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    config: BaseModel | Mapping[str, Any] | None = None,
    space: Any | None = None,
    tags: Mapping[str, Any] | None = None,
    resume: bool = False,
) -> Iterator[StudyHandle]:
    """The parent run of study ``name`` (experiment ``name``), closed on exit.

    ``config`` (a StudyConfig or mapping) is logged as flattened params and ``study.yaml``;
    ``space`` (a :class:`~seqablate.search_spaces.Space`, a list of override dicts, or a
    description string) as ``space.json``. With ``resume`` the latest parent run of the study
    is reopened (status RUNNING again) instead of a new one being created. On exit the run is
    FINISHED; on any exception (KeyboardInterrupt included) FAILED with the error, re-raised.
    """
    uri = default_tracking_uri(storage, tracking_uri)
    c = client(uri)
    exp_id = _get_or_create_experiment(c, uri, name)
    parent = _latest_study_parent(c, exp_id, name) if resume else None
    if parent is not None:
        run_id = parent.info.run_id
        _retry(c.update_run, run_id, status="RUNNING")
    else:
        run = _retry(
            c.create_run,
            exp_id,
            run_name=name,
            tags={TAG_KIND: "study", TAG_STUDY: name, TAG_GIT: git_commit(), TAG_VERSION: _VERSION, **(tags or {})},
        )
        run_id = run.info.run_id
    handle = StudyHandle(StudyRef(uri, exp_id, run_id), name, resumed=parent is not None)
    try:
        if config is not None:
            flat = flatten(config)
            if parent is None:
                handle.log_params(flat)
            handle.log_text(
                to_yaml(config) if hasattr(config, "model_dump") else _yaml(dict(config)),
                "study.yaml",
            )
        if space is not None:
            handle.log_dict(_describe_space(space), "space.json")
        yield handle
    except BaseException as err:
        with contextlib.suppress(Exception):
            close_dangling_trials(handle.ref)
        handle.fail(err)
        raise
    else:
        close_dangling_trials(handle.ref)
        handle.finish()


def _yaml(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False)


def _describe_space(space: Any) -> dict[str, Any]:
    """A JSON-able description of a search space (grid points, or a search's name)."""
    if isinstance(space, str):
        return {"description": space}
    if isinstance(space, list | tuple):
        return {"kind": "grid", "points": [dict(p) for p in space]}
    out: dict[str, Any] = {
        "name": getattr(space, "name", None),
        "description": getattr(space, "description", None),
        "kind": getattr(space, "kind", None),
        "source": getattr(space, "source", None),
    }
    points = getattr(space, "points", None)
    if points is not None:
        out["points"] = [dict(p) for p in points]
    return out


def _trial_tags(cfg: TrialConfig) -> dict[str, str]:
    m, t = cfg.model, cfg.train
    return {
        "integration": m.integration,
        "integration_point": m.integration_point if m.integration == "mid" else "-",
        "fusion": m.fusion if m.integration == "mid" else "-",
        "sharing": m.sharing if m.integration != "input" else "-",
        "dropout": _str(t.dropout_p),
        "dropout_mode": t.dropout_mode,
        "seed": _str(t.seed),
    }


def find_trial_run(study: StudyRef, trial_key: str) -> Any:
    """The newest trial run of ``study`` tagged with ``trial_key`` (an MLflow Run), or None."""
    c = client(study.tracking_uri)
    flt = (
        f"tags.`{TAG_PARENT}` = '{_quote(study.parent_run_id)}' and "
        f"tags.`{TAG_TRIAL_KEY}` = '{_quote(trial_key)}'"
    )
    runs = _retry(
        c.search_runs, [study.experiment_id], flt, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def get_or_create_trial_run(
    study: StudyRef,
    trial_key: str,
    *,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
) -> tuple[str, str | None]:
    """``(run_id, previous_status)``: the trial's existing run, or a new one (status None).

    A resumed study calls this for every trial: a FINISHED run is returned as is (the caller
    skips the trial); an unfinished one (FAILED, KILLED, or RUNNING left by a killed process)
    is reopened as RUNNING, so no duplicate runs appear.
    """
    c = client(study.tracking_uri)
    existing = find_trial_run(study, trial_key)
    if existing is not None:
        status = existing.info.status
        if status != "FINISHED":
            _retry(c.update_run, existing.info.run_id, status="RUNNING")
            with contextlib.suppress(Exception):
                _retry(c.delete_tag, existing.info.run_id, TAG_ERROR)
        return existing.info.run_id, status
    all_tags = {
        TAG_PARENT: study.parent_run_id,
        TAG_KIND: "trial",
        TAG_TRIAL_KEY: trial_key,
        **{k: _str(v) for k, v in (tags or {}).items()},
    }
    run = _retry(c.create_run, study.experiment_id, run_name=run_name, tags=all_tags)
    return run.info.run_id, None


def close_dangling_trials(study: StudyRef) -> list[str]:
    """Mark the study's trial runs still RUNNING as KILLED; returns their run ids.

    A trial process killed without Python cleanup (SIGKILL, a Ray actor stopped early by a
    scheduler, a lost node) cannot close its own run. :func:`study_run` calls this on exit,
    when no trial of the study can still be running, so no run is left RUNNING; each gets an
    ``error`` tag saying so.
    """
    c = client(study.tracking_uri)
    flt = f"tags.`{TAG_PARENT}` = '{_quote(study.parent_run_id)}' and attributes.status = 'RUNNING'"
    closed = []
    for run in _search_all(c, study.experiment_id, flt):
        run_id = run.info.run_id
        _retry(
            c.set_tag,
            run_id,
            TAG_ERROR,
            "trial process ended without closing its run (killed, or stopped early by the scheduler)",
        )
        _retry(c.set_terminated, run_id, RunStatus.to_string(RunStatus.KILLED))
        closed.append(run_id)
    return closed


class TrialAlreadyFinished(RuntimeError):
    """:func:`trial_run` was asked to reopen a trial whose run already FINISHED."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"trial run {run_id} already FINISHED; skip this trial on resume")
        self.run_id = run_id


@contextlib.contextmanager
def trial_run(
    study: StudyRef,
    config: TrialConfig,
    *,
    overrides: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    trial_key: str | None = None,
    study_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    flush_every: int = 500,
    flush_seconds: float = 10.0,
) -> Iterator[TrialLogger]:
    """A child run of ``study`` for one trial, as a :class:`TrialLogger`; always closed.

    On entry: the run is found by ``trial_key`` (default: the key of ``overrides``, or of the
    config's flattened params) or created, named ``run_name`` (default:
    ``search_spaces.run_name(overrides)``, else ``config.name``); params = the flattened
    config; tags = integration, integration_point, fusion, sharing, dropout, dropout_mode,
    seed, git_commit, study; artifact ``config.yaml``. Raises :class:`TrialAlreadyFinished` if
    that run already FINISHED. On exit: FINISHED; on any exception (KeyboardInterrupt
    included) FAILED with the ``error`` tag and ``error.txt`` traceback, then re-raised.
    """
    from seqablate import search_spaces

    if trial_key is None:
        trial_key = search_spaces.trial_key(overrides if overrides is not None else flatten(config))
    if run_name is None:
        run_name = search_spaces.run_name(overrides) if overrides else config.name
    c = client(study.tracking_uri)
    if study_name is None:
        parent = _retry(c.get_run, study.parent_run_id)
        study_name = parent.data.tags.get(TAG_STUDY, "")
    all_tags = {**_trial_tags(config), TAG_GIT: git_commit(), TAG_VERSION: _VERSION, TAG_STUDY: study_name,
                **(tags or {})}
    run_id, previous = get_or_create_trial_run(study, trial_key, run_name=run_name, tags=all_tags)
    if previous == "FINISHED":
        raise TrialAlreadyFinished(run_id)
    logger = TrialLogger(
        study, run_id, resumed=previous is not None, flush_every=flush_every, flush_seconds=flush_seconds
    )
    try:
        logger.log_params(flatten(config))
        logger.set_tags(all_tags)
        if overrides:
            logger.log_dict(dict(overrides), "overrides.json")
        logger.log_text(to_yaml(config), CONFIG_ARTIFACT)
        yield logger
    except BaseException as err:
        logger.fail(err)
        raise
    else:
        logger.finish()


# --------------------------------------------------------------------------------------------
# 4. Reading back (analysis, CLI)
# --------------------------------------------------------------------------------------------

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _study_from_db(db: Path, uri: str) -> StudyRef:
    if not db.is_file():
        raise ValueError(f"{db.parent}: no MLflow database ({DB_NAME}) in this study folder")
    c = client(uri, create=False)
    parents = []
    for exp in _retry(c.search_experiments, view_type=ViewType.ACTIVE_ONLY):
        run = _latest_study_parent(c, exp.experiment_id, None)
        if run is not None:
            parents.append(run)
    if not parents:
        raise ValueError(f"{db}: holds no seqablate study (no run tagged {TAG_KIND}=study)")
    names = sorted({p.data.tags.get(TAG_STUDY, "?") for p in parents})
    if len(names) > 1:
        raise ValueError(
            f"{db} holds several studies {names}; name one: STUDY may be an experiment name "
            f"with --tracking-uri {uri}"
        )
    run = max(parents, key=lambda r: r.info.start_time or 0)
    return StudyRef(uri, run.info.experiment_id, run.info.run_id)


STUDY_RECORD = "study.yaml"  # the resolved StudyConfig the study driver writes into its folder


def _recorded_study(folder: Path) -> tuple[str, str | None] | None:
    """``(name, tracking_uri)`` from a study folder's ``study.yaml``, or None."""
    import yaml

    p = folder / STUDY_RECORD
    if not p.is_file():
        return None
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        return None
    uri = raw.get("tracking_uri")
    return raw["name"], uri if isinstance(uri, str) and uri else None


def resolve_study(study: str | StudyRef, tracking_uri: str | None = None) -> StudyRef:
    """A study folder, a ``.db`` file, an experiment name or a parent run id -> :class:`StudyRef`.

    A folder (or file:// URI) reads ``<folder>/mlflow.db`` (unless ``tracking_uri`` is given);
    a folder without one whose ``study.yaml`` names a tracking server is looked up there by
    the study's name; a name or run id is looked up at ``tracking_uri`` (default
    :func:`default_tracking_uri`).
    A trial's run id resolves to its study. Raises ValueError naming what was tried.
    """
    if isinstance(study, StudyRef):
        return study
    local = _local_path(study)
    if local is not None and (local.is_dir() or local.suffix == ".db"):
        recorded = _recorded_study(local) if local.is_dir() else None
        if tracking_uri:
            uri = default_tracking_uri(explicit=tracking_uri)
        elif local.is_dir() and not (local / DB_NAME).is_file() and recorded and recorded[1]:
            uri = default_tracking_uri(explicit=recorded[1])  # runs went to a tracking server
        else:
            uri = _sqlite_uri(local if local.suffix == ".db" else local / DB_NAME)
        db = sqlite_db_path(uri)
        if db is not None and (db.is_file() or recorded is None or recorded[1] is None):
            return _study_from_db(db, uri)
        if recorded is not None:  # a study folder whose runs live elsewhere: find by name
            return resolve_study(recorded[0], uri)
    uri = default_tracking_uri(explicit=tracking_uri)
    db = sqlite_db_path(uri)
    if db is not None and not db.is_file():
        raise ValueError(
            f"study {study!r}: not a folder, and no MLflow database at {db} to look it up in "
            "(pass the study folder, or --tracking-uri)"
        )
    c = client(uri, create=False)
    if _RUN_ID.match(study):
        try:
            run = _retry(c.get_run, study)
        except MlflowException:
            run = None
        if run is not None:
            tags = run.data.tags
            if tags.get(TAG_KIND) == "trial" and TAG_PARENT in tags:
                return StudyRef(uri, run.info.experiment_id, tags[TAG_PARENT])
            return StudyRef(uri, run.info.experiment_id, run.info.run_id)
    exp = _retry(c.get_experiment_by_name, study)
    if exp is None:
        raise ValueError(
            f"study {study!r}: no study folder, parent run id or MLflow experiment of that "
            f"name at {uri}"
        )
    run = _latest_study_parent(c, exp.experiment_id, None)
    if run is None:
        raise ValueError(f"experiment {study!r} at {uri} has no seqablate study run")
    return StudyRef(uri, exp.experiment_id, run.info.run_id)


def _search_all(c: mlflow.MlflowClient, exp_id: str, flt: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = _retry(
            c.search_runs,
            [exp_id],
            flt,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def list_trials(study: str | StudyRef, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per trial run of the study, oldest first.

    Columns: ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time`` (ms since the
    epoch; end is NaN while running), then ``params.<key>`` (strings, as MLflow stores them),
    ``tags.<key>``, and ``metrics.<key>`` (the latest value of each metric, float). A study
    without trials gives an empty frame with the five leading columns.
    """
    import pandas as pd

    ref = resolve_study(study, tracking_uri)
    c = client(ref.tracking_uri, create=False)
    runs = _search_all(c, ref.experiment_id, f"tags.`{TAG_PARENT}` = '{_quote(ref.parent_run_id)}'")
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            "start_time": r.info.start_time,
            "end_time": r.info.end_time,
        }
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        rows.append(row)
    lead = ["run_id", "run_name", "status", "start_time", "end_time"]
    if not rows:
        return pd.DataFrame(columns=lead)
    df = pd.DataFrame(rows)
    rest = sorted(c for c in df.columns if c not in lead)
    return df[lead + rest]


def metric_history(
    run_id: str, key: str, *, tracking_uri: str | None = None
) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of one metric, sorted by step; one value per step.

    When a step was logged more than once (a trial resumed from a checkpoint re-logs the steps
    after it) the most recently logged value wins. Unknown keys give an empty list.
    """
    c = client(default_tracking_uri(explicit=tracking_uri), create=False)
    latest: dict[int, Metric] = {}
    for m in _retry(c.get_metric_history, run_id, key):
        old = latest.get(m.step)
        if old is None or m.timestamp >= old.timestamp:
            latest[m.step] = m
    return [(s, latest[s].value) for s in sorted(latest)]


def list_artifacts(run_id: str, path: str | None = None, *, tracking_uri: str | None = None) -> list[str]:
    """Artifact paths directly under ``path`` of a run (folders end with '/')."""
    c = client(default_tracking_uri(explicit=tracking_uri), create=False)
    return [f.path + ("/" if f.is_dir else "") for f in _retry(c.list_artifacts, run_id, path)]


def download_artifact(
    run_id: str, path: str, dst: str | Path | None = None, *, tracking_uri: str | None = None
) -> Path:
    """Download a run's artifact file or folder to ``dst`` (a new temp dir if None)."""
    c = client(default_tracking_uri(explicit=tracking_uri), create=False)
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="seqablate-artifact-"))
    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(_retry(c.download_artifacts, run_id, path, str(target)))
    except MlflowException as err:
        raise ValueError(f"run {run_id}: cannot download artifact {path!r}: {err.message}") from None


_MODELS_URI = re.compile(r"^models:/[^/]+/.+$")


def download_model(
    ref: str | Path, dst: str | Path | None = None, *, tracking_uri: str | None = None
) -> Path:
    """The local folder of a model reference.

    ``ref``: an existing local path (returned unchanged), an MLflow run id, ``runs:/<id>[/path]``
    (default path ``model``), or a registered model ``models:/<name>/<version or alias>``.
    Raises ValueError naming the reference when it is none of these or cannot be found.
    """
    text = str(ref)
    if Path(text).exists():
        return Path(text)
    uri = default_tracking_uri(explicit=tracking_uri)
    if _MODELS_URI.match(text):
        import mlflow.artifacts

        client(uri, create=False)  # an unreachable server or a missing database is named here
        target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="seqablate-model-"))
        try:
            return Path(_retry(mlflow.artifacts.download_artifacts, artifact_uri=text, dst_path=str(target),
                               tracking_uri=uri))
        except MlflowException as err:
            raise ValueError(f"--model {text!r}: no such registered model version at {uri} ({err.message})") from None
    m = re.match(r"^runs:/([0-9a-f]{32})(?:/(.*))?$", text)
    run_id, sub = (m.group(1), m.group(2) or MODEL_DIR) if m else (text, MODEL_DIR)
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"--model {text!r}: not an existing path, an MLflow run id, runs:/<run id>/model or "
            "models:/<name>/<version>"
        )
    c = client(uri, create=False)
    try:
        _retry(c.get_run, run_id)
    except MlflowException:
        raise ValueError(f"--model {text!r}: no such run at {uri}") from None
    return download_artifact(run_id, sub, dst, tracking_uri=tracking_uri)


def load_deployed(folder: str | Path) -> Any:
    """The :class:`~seqablate.models.deployed.DeployedModel` of an MLflow model folder (one
    with an ``MLmodel`` file, as :meth:`RunLogger.log_model` writes). Raises ValueError when
    the folder holds no MLflow model or a model of another kind."""
    import mlflow.pytorch

    from seqablate.models.deployed import DeployedModel

    folder = Path(folder)
    if not (folder / "MLmodel").is_file():
        raise ValueError(f"{folder}: not an MLflow model folder (no MLmodel file)")
    model = mlflow.pytorch.load_model(str(folder), map_location="cpu")
    if not isinstance(model, DeployedModel):
        raise ValueError(f"{folder}: holds a {type(model).__name__}, not a seqablate model")
    return model


def register_model(run_id: str, name: str, *, tracking_uri: str | None = None) -> str:
    """Register a trial's ``model/`` as a version of registered model ``name``; returns the
    ``models:/<name>/<version>`` URI."""
    uri = default_tracking_uri(explicit=tracking_uri)
    c = client(uri, create=False)
    try:
        _retry(c.get_registered_model, name)
    except MlflowException:
        _retry(c.create_registered_model, name)
    run = _retry(c.get_run, run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_DIR}"
    mv = _retry(c.create_model_version, name, source, run_id=run_id)
    return f"models:/{name}/{mv.version}"


def log_report(
    parent_run_id: str, path: str | Path, *, tracking_uri: str | None = None, artifact_path: str = "report"
) -> None:
    """Attach a report file or folder to a study's parent run under ``report/``."""
    logger = RunLogger(default_tracking_uri(explicit=tracking_uri), parent_run_id)
    logger.log_artifact(path, artifact_path)


def finite_or_nan(x: Any) -> float:
    """A float for MLflow (None -> NaN); helper for callers logging optional metrics."""
    return math.nan if x is None else float(x)
