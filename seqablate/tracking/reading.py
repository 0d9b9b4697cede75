"""Reading studies back (analysis, the CLI): resolve a study, its trials, histories, artifacts, models."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, ViewType
from mlflow.exceptions import MlflowException

from seqablate.tracking.names import (
    KIND_BASELINE,
    MODEL_DIR,
    STUDY_FILE,
    TAG_KIND,
    TAG_PARENT,
    TAG_STUDY,
    StudyRef,
)
from seqablate.tracking.runs import filter_quote, latest_study_parent, search_all
from seqablate.tracking.store import client, retry
from seqablate.tracking.uris import (
    DB_NAME,
    default_tracking_uri,
    local_path,
    sqlite_db_path,
    sqlite_uri,
)
from seqablate.tracking.writing import RunLogger

if TYPE_CHECKING:
    import pandas as pd

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _study_from_db(db: Path, uri: str) -> StudyRef:
    if not db.is_file():
        where = f"{db.parent}: no MLflow database ({DB_NAME}) in this study folder" if db.name == DB_NAME else \
            f"{db}: no such MLflow database"
        raise ValueError(where)
    c = client(uri, create=False)
    parents = []
    for exp in retry(c.search_experiments, view_type=ViewType.ACTIVE_ONLY):
        run = latest_study_parent(c, exp.experiment_id, None)
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


def _recorded_study(folder: Path) -> tuple[str, str | None] | None:
    """``(name, tracking_uri)`` from a study folder's ``study.yaml``, or None."""
    import yaml

    p = folder / STUDY_FILE
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
    local = local_path(study)
    if local is not None and (local.is_dir() or local.suffix == ".db"):
        recorded = _recorded_study(local) if local.is_dir() else None
        if tracking_uri:
            uri = default_tracking_uri(explicit=tracking_uri)
        elif local.is_dir() and not (local / DB_NAME).is_file() and recorded and recorded[1]:
            uri = default_tracking_uri(explicit=recorded[1])  # runs went to a tracking server
        else:
            uri = sqlite_uri(local if local.suffix == ".db" else local / DB_NAME)
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
            run = retry(c.get_run, study)
        except MlflowException:
            run = None
        if run is not None:
            tags = run.data.tags
            if tags.get(TAG_KIND) == "trial" and TAG_PARENT in tags:
                return StudyRef(uri, run.info.experiment_id, tags[TAG_PARENT])
            return StudyRef(uri, run.info.experiment_id, run.info.run_id)
    exp = retry(c.get_experiment_by_name, study)
    if exp is None:
        raise ValueError(
            f"study {study!r}: no study folder, parent run id or MLflow experiment of that "
            f"name at {uri}"
        )
    run = latest_study_parent(c, exp.experiment_id, None)
    if run is None:
        raise ValueError(f"experiment {study!r} at {uri} has no seqablate study run")
    return StudyRef(uri, exp.experiment_id, run.info.run_id)


def list_trials(study: str | StudyRef, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per trial run of the study, oldest first.

    Columns: ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time`` (ms since the
    epoch; end is NaN while running), then ``params.<key>`` (strings, as MLflow stores them),
    ``tags.<key>``, and ``metrics.<key>`` (the latest value of each metric, float). A study
    without trials gives an empty frame with the five leading columns. Outside baselines
    nested under the study (:func:`list_baselines`) are not trials and are left out.
    """
    ref = resolve_study(study, tracking_uri)
    c = client(ref.tracking_uri, create=False)
    runs = search_all(c, ref.experiment_id, f"tags.`{TAG_PARENT}` = '{filter_quote(ref.parent_run_id)}'")
    return _runs_frame([r for r in runs if r.data.tags.get(TAG_KIND) != KIND_BASELINE])


def list_baselines(study: str | StudyRef, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per outside baseline of the study (another tool's predictions scored by
    ``seqablate evaluate --predictions --study``), oldest first, in :func:`list_trials`' shape.

    A baseline run is nested under the study's parent run and tagged ``seqablate.kind =
    baseline`` and ``seqablate.baseline = <tool name>``; it logs the trials' metric names
    (``test.full.*`` or ``external.<cohort>.*``) and ``eval/patients.csv``/``eval/lesions.csv``.
    """
    ref = resolve_study(study, tracking_uri)
    c = client(ref.tracking_uri, create=False)
    flt = f"tags.`{TAG_PARENT}` = '{filter_quote(ref.parent_run_id)}' and tags.`{TAG_KIND}` = '{KIND_BASELINE}'"
    return _runs_frame(search_all(c, ref.experiment_id, flt))


def _runs_frame(runs: list[Any]) -> pd.DataFrame:
    """:func:`list_trials`' table of MLflow runs."""
    import pandas as pd

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
    for m in retry(c.get_metric_history, run_id, key):
        old = latest.get(m.step)
        if old is None or m.timestamp >= old.timestamp:
            latest[m.step] = m
    return [(s, latest[s].value) for s in sorted(latest)]


def list_artifacts(run_id: str, path: str | None = None, *, tracking_uri: str | None = None) -> list[str]:
    """Artifact paths directly under ``path`` of a run (folders end with '/')."""
    c = client(default_tracking_uri(explicit=tracking_uri), create=False)
    return [f.path + ("/" if f.is_dir else "") for f in retry(c.list_artifacts, run_id, path)]


def download_artifact(
    run_id: str, path: str, dst: str | Path | None = None, *, tracking_uri: str | None = None
) -> Path:
    """Download a run's artifact file or folder to ``dst`` (a new temp dir if None)."""
    c = client(default_tracking_uri(explicit=tracking_uri), create=False)
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="seqablate-artifact-"))
    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(retry(c.download_artifacts, run_id, path, str(target)))
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

        name, _, version = text[len("models:/"):].partition("/")
        source = _model_version(name, version, uri).source  # resolved in this store's registry
        target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="seqablate-model-"))
        try:
            return Path(retry(mlflow.artifacts.download_artifacts, artifact_uri=source, dst_path=str(target),
                               tracking_uri=uri))
        except MlflowException as err:
            raise ValueError(f"--model {text!r}: its files at {source} cannot be read ({err.message})") from None
    m = re.match(r"^runs:/([0-9a-f]{32})(?:/(.*))?$", text)
    run_id, sub = (m.group(1), m.group(2) or MODEL_DIR) if m else (text, MODEL_DIR)
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"--model {text!r}: not an existing path, an MLflow run id, runs:/<run id>/model or "
            "models:/<name>/<version>"
        )
    c = client(uri, create=False)
    try:
        retry(c.get_run, run_id)
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
        retry(c.get_registered_model, name)
    except MlflowException:
        retry(c.create_registered_model, name)
    run = retry(c.get_run, run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_DIR}"
    mv = retry(c.create_model_version, name, source, run_id=run_id)
    return f"models:/{name}/{mv.version}"


def log_report(
    parent_run_id: str, path: str | Path, *, tracking_uri: str | None = None, artifact_path: str = "report"
) -> None:
    """Attach a report file or folder to a study's parent run under ``report/``."""
    logger = RunLogger(default_tracking_uri(explicit=tracking_uri), parent_run_id, create=False)
    logger.log_artifact(path, artifact_path)


def run_info(run_id: str, *, tracking_uri: str | None = None) -> Any:
    """An MLflow run (info, params, metrics, tags) by id, read-only; ValueError if missing."""
    uri = default_tracking_uri(explicit=tracking_uri)
    try:
        return retry(client(uri, create=False).get_run, run_id)
    except MlflowException:
        raise ValueError(f"no MLflow run {run_id} at {uri}") from None


def _model_version(name: str, version: str, uri: str) -> Any:
    """A registered model version (``version`` a number or ``@alias``) of the store at ``uri``;
    ValueError naming it when the registry has no such version."""
    c = client(uri, create=False)  # an unreachable server or a missing database is named here
    try:
        if version.startswith("@"):
            return retry(c.get_model_version_by_alias, name, version[1:])
        return retry(c.get_model_version, name, version)
    except MlflowException as err:
        raise ValueError(f"--model 'models:/{name}/{version}': no such registered model version at {uri} "
                         f"({err.message})") from None


def model_version_run(name: str, version: str, *, tracking_uri: str | None = None) -> str | None:
    """The run a registered model version (``version`` a number or ``@alias``) was logged from."""
    return _model_version(name, version, default_tracking_uri(explicit=tracking_uri)).run_id
