"""Where runs go: the tracking URI policy (flag, environment, study folder, working directory).

MLflow 3 refuses the plain file store, so a bare path becomes a SQLite database; a tracking
server (``http://...``) is used by configuration alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
DEFAULT_DIR = "seqablate-runs"


#: URI schemes MLflow has a tracking store for (a database URL may name its driver,
#: ``postgresql+psycopg2``); a bare path or ``file://`` becomes a SQLite database.
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc", "file")


class TrackingURIError(ValueError):
    """A tracking URI no MLflow store can serve (an unknown scheme); names where it came from."""


def check_scheme(uri: str, source: str = "--tracking-uri") -> None:
    """Raise :class:`TrackingURIError` naming ``source`` when ``uri``'s scheme is none of
    :data:`SCHEMES` (MLflow would fail later with a traceback, after folders were made)."""
    scheme = urlparse(uri).scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return
    if scheme.split("+", 1)[0] not in SCHEMES:
        raise TrackingURIError(
            f"{source} {uri}: unknown scheme {scheme!r}; use a folder or a .db path (a SQLite database), "
            "sqlite:///<path>, http(s)://<host>:<port> (an MLflow server), or a database URL "
            "(postgresql://, mysql://, mssql://)"
        )


def local_path(uri_or_path: str) -> Path | None:
    """The local filesystem path of a bare path or ``file://`` URI; None for other schemes."""
    parsed = urlparse(uri_or_path)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # C:\ on Windows
        return Path(uri_or_path)
    return None


def sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db.expanduser().resolve()}"


def _normalise_uri(uri: str) -> str:
    """A bare path or ``file://`` URI becomes a SQLite database (MLflow 3 has no file store).

    A path ending in ``.db`` is the database itself; any other path is a folder that gets
    ``mlflow.db``. Other URIs (``sqlite://``, ``http(s)://``, ``postgresql://``, ...) pass.
    """
    local = local_path(uri)
    if local is None:
        return uri
    return sqlite_uri(local if local.suffix == ".db" else local / DB_NAME)


def default_tracking_uri(storage: str | None = None, explicit: str | None = None) -> str:
    """The tracking URI a study uses.

    Precedence: ``explicit`` (the ``--tracking-uri`` flag) > ``MLFLOW_TRACKING_URI`` >
    ``sqlite:///<storage>/mlflow.db`` when ``storage`` is a local path or ``file://`` URI >
    ``sqlite:///<cwd>/seqablate-runs/mlflow.db``. Bare paths given as explicit/env URIs are
    turned into SQLite databases (see :func:`_normalise_uri`); an unknown scheme is a
    :class:`TrackingURIError` naming the flag or the variable. Paths are made absolute, so
    trial processes with another working directory (Ray workers) write the same database.
    """
    if explicit:
        check_scheme(explicit, "--tracking-uri")
        return _normalise_uri(explicit)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        check_scheme(env, "MLFLOW_TRACKING_URI")
        return _normalise_uri(env)
    if storage:
        local = local_path(storage)
        if local is not None:
            return sqlite_uri(local / DB_NAME)
    return sqlite_uri(Path.cwd() / DEFAULT_DIR / DB_NAME)


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


def ui_hint(tracking_uri: str, ui_path: str = "", grouped_path: str = "") -> list[str]:
    """How to look at runs in the MLflow UI, as lines to print.

    A tracking server is opened at ``<server>/<ui_path>``; a SQLite store needs ``mlflow ui``
    first, which serves on 127.0.0.1:5000 by default. ``ui_path`` is the fragment of a saved
    runs view (:func:`seqablate.tracking.publish_view`), or "" for the experiments page;
    ``grouped_path`` that of the view with each configuration's seeds grouped (a line of its own).
    """
    if tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri.rstrip("/")
        lines = [f"{base}/{ui_path}"]
        if grouped_path:
            lines.append(f"seeds grouped per configuration: {base}/{grouped_path}")
        return lines
    lines = [f"mlflow ui --backend-store-uri {tracking_uri}"]
    if ui_path:
        lines.append(f"then open http://127.0.0.1:5000/{ui_path}")
    if grouped_path:
        lines.append(f"seeds grouped per configuration: http://127.0.0.1:5000/{grouped_path}")
    return lines
