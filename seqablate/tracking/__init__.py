"""The one package that talks to MLflow: where runs go, the store, writing, lifecycle, reading.

Modules, one concern each:

- :mod:`~seqablate.tracking.uris`: where runs go (``--tracking-uri``, ``MLFLOW_TRACKING_URI``,
  the study folder's SQLite database, ``./seqablate-runs``);
- :mod:`~seqablate.tracking.store`: the SQLite store (never replaced, WAL, lock retries, the
  template database), clients, server reachability;
- :mod:`~seqablate.tracking.writing`: one run's buffered metrics, params, tags, artifacts,
  the MLflow model;
- :mod:`~seqablate.tracking.runs`: a study's parent run and its trials' child runs, resume
  without duplicates, the runs view;
- :mod:`~seqablate.tracking.reading`: studies, trials, histories, artifacts and models read
  back (analysis, the CLI);
- :mod:`~seqablate.tracking.names`: tags, artifact folders, :class:`StudyRef`.

Only :class:`mlflow.MlflowClient` with explicit run ids is used, never the fluent
``mlflow.start_run`` global state, so many trials in one process (threads, Tune's function
trainables) or in many processes are safe. The git commit and version every run is tagged
with come from :mod:`seqablate.provenance`.
"""

from __future__ import annotations

from seqablate.provenance import git_commit
from seqablate.tracking.names import (
    CONFIG_ARTIFACT,
    KIND_BASELINE,
    MODEL_DIR,
    SPLIT_ARTIFACT,
    STUDY_FILE,
    TAG_BASELINE,
    TAG_ERROR,
    TAG_GIT,
    TAG_KIND,
    TAG_OBJECTIVE,
    TAG_OBJECTIVES,
    TAG_PARENT,
    TAG_PARETO,
    TAG_STUDY,
    TAG_TRIAL_KEY,
    TAG_VERSION,
    StudyRef,
)
from seqablate.tracking.reading import (
    download_artifact,
    download_model,
    list_artifacts,
    list_baselines,
    list_trials,
    load_deployed,
    log_report,
    metric_history,
    model_version_run,
    register_model,
    resolve_study,
    run_info,
)
from seqablate.tracking.runs import (
    EXPERIMENT_KIND,
    VIEW_KEY,
    StudyHandle,
    TrialAlreadyFinished,
    TrialLogger,
    close_dangling_trials,
    create_run,
    find_trial_run,
    get_or_create_experiment,
    get_or_create_trial_run,
    publish_view,
    study_run,
    tag_runs,
    trial_run,
)
from seqablate.tracking.store import (
    RETRY,
    RetryPolicy,
    TrackingStoreError,
    check_reachable,
    check_store,
    client,
    db_state,
    is_locked_error,
)
from seqablate.tracking.uris import (
    ARTIFACTS_NAME,
    DB_NAME,
    DEFAULT_DIR,
    default_artifact_location,
    default_tracking_uri,
    sqlite_db_path,
)
from seqablate.tracking.writing import RunLogger

__all__ = [
    "ARTIFACTS_NAME", "CONFIG_ARTIFACT", "DB_NAME", "DEFAULT_DIR", "EXPERIMENT_KIND", "KIND_BASELINE", "MODEL_DIR", "RETRY",
    "SPLIT_ARTIFACT", "STUDY_FILE", "TAG_BASELINE", "TAG_ERROR", "TAG_GIT", "TAG_KIND", "TAG_OBJECTIVE", "TAG_OBJECTIVES", "TAG_PARENT", "TAG_PARETO", "TAG_STUDY", "TAG_TRIAL_KEY", "TAG_VERSION",
    "VIEW_KEY", "RetryPolicy", "RunLogger", "StudyHandle", "StudyRef", "TrackingStoreError", "TrialAlreadyFinished",
    "TrialLogger", "check_reachable", "check_store", "client", "close_dangling_trials", "create_run", "db_state",
    "default_artifact_location", "default_tracking_uri", "download_artifact", "download_model", "find_trial_run",
    "get_or_create_experiment", "get_or_create_trial_run", "git_commit", "is_locked_error", "list_artifacts",
    "list_baselines", "list_trials", "load_deployed", "log_report", "metric_history", "model_version_run", "publish_view", "register_model",
    "resolve_study", "run_info", "sqlite_db_path", "study_run", "tag_runs", "trial_run",
]
