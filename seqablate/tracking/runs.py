"""Run lifecycle: a study's parent run, its trials' child runs, resume without duplicates.

:func:`study_run` and :func:`trial_run` are context managers that always close their run:
FINISHED, or FAILED with an ``error`` tag and an ``error.txt`` traceback, also on
``KeyboardInterrupt``; the exception is re-raised. A trial's run is found again by its stable
``seqablate.trial_key`` tag, so a resumed study makes no duplicates.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import RunStatus, ViewType
from mlflow.exceptions import MlflowException

from seqablate import __version__ as _VERSION
from seqablate import naming, objectives
from seqablate.config import TrialConfig, dropout_text, flatten, to_yaml
from seqablate.provenance import git_commit
from seqablate.tracking.names import (
    CONFIG_ARTIFACT,
    TAG_ERROR,
    TAG_GIT,
    TAG_KIND,
    TAG_OBJECTIVE,
    TAG_OBJECTIVES,
    TAG_PARENT,
    TAG_STUDY,
    TAG_TRIAL_KEY,
    TAG_VERSION,
    StudyRef,
)
from seqablate.tracking.store import client, retry
from seqablate.tracking.uris import default_artifact_location, default_tracking_uri
from seqablate.tracking.writing import VALID_KEY, RunLogger, param_str, yaml_text

if TYPE_CHECKING:
    from pydantic import BaseModel

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
            if isinstance(v, int | float) and not isinstance(v, bool) and VALID_KEY.match(str(k))
        }
        if nums:
            self.log_metrics(nums)
            self.flush()


#: Experiment tag that makes MLflow 3's UI open an experiment in its model-training view (runs
#: table, charts) instead of the GenAI overview (traces, token usage).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _get_or_create_experiment(c: mlflow.MlflowClient, tracking_uri: str, name: str) -> str:
    exp = retry(c.get_experiment_by_name, name)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise ValueError(
                f"MLflow experiment {name!r} ({tracking_uri}) is deleted; restore it or pick "
                "another study name"
            )
        if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            retry(c.set_experiment_tag, exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        return retry(
            c.create_experiment, name, artifact_location=default_artifact_location(tracking_uri, name),
            tags=dict([EXPERIMENT_KIND]),
        )
    except MlflowException as err:  # created meanwhile by another process
        exp = retry(c.get_experiment_by_name, name)
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
    all_tags = {TAG_GIT: git_commit(), TAG_VERSION: _VERSION, **{k: param_str(v) for k, v in (tags or {}).items()}}
    return retry(c.create_run, experiment_id, run_name=run_name, tags=all_tags).info.run_id


#: Keys of the study views stored on the experiment (MLflow's shared-view mechanism): one row
#: per trial, and one row per configuration (seeds grouped, metrics averaged).
VIEW_KEY = "seqablate"
GROUPED_VIEW_KEY = "seqablate-seeds"
#: Trial tag naming the configuration without its seed (what the grouped view groups by).
TAG_CONFIGURATION = "configuration"


def publish_view(ref: StudyRef, *, metrics: Sequence[str], params: Sequence[str] = (), order_by: str | None = None,
                 grouped: bool = False) -> str:
    """Store a runs-table view of the study on its experiment and return its UI path.

    MLflow's experiment page restores a shared view from the experiment tag
    ``mlflow.sharedViewState.<key>`` when the URL carries ``?viewStateShareKey=<key>``: the
    given metric and param columns shown, ordered by ``order_by`` (a metric, descending), in
    the model-training view. The path's search filter keeps the study's trial runs only (the
    parent run and outside baselines are not rows). ``grouped``: the seeds of each
    configuration are grouped by the :data:`TAG_CONFIGURATION` tag, each group's row showing
    the mean of the metrics (MLflow's "group by" with the average aggregate).
    """

    def col(kind: str, key: str) -> str:
        return f"{kind}.`{key}`"

    state: dict[str, Any] = {
        "selectedColumns": [col("metrics", m) for m in metrics] + [col("params", p) for p in params],
        "runsHiddenMode": "SHOW_ALL",
        "runsExpanded": {ref.parent_run_id: True},
        # search facets travel with the shared view: only this study's trial runs match
        "searchFilter": f"tags.`{TAG_KIND}` = 'trial' and tags.`{TAG_PARENT}` = '{ref.parent_run_id}'",
    }
    if grouped:
        state["groupBy"] = {"aggregateFunction": "average",
                            "groupByKeys": [{"mode": "tag", "groupByData": TAG_CONFIGURATION}]}
        state["groupsExpanded"] = {}
    if order_by:
        state.update({"orderByKey": col("metrics", order_by), "orderByAsc": False})
    key = GROUPED_VIEW_KEY if grouped else VIEW_KEY
    c = client(ref.tracking_uri)
    retry(c.set_experiment_tag, ref.experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(state))
    # workflowType: MLflow 3's UI otherwise opens every experiment in its GenAI overview
    # (traces, token usage), whatever the experiment's kind tag says.
    return f"#/experiments/{ref.experiment_id}/runs?viewStateShareKey={key}&workflowType=machine_learning"


def latest_study_parent(c: mlflow.MlflowClient, experiment_id: str, name: str | None) -> Any:
    flt = f"tags.`{TAG_KIND}` = 'study'"
    if name is not None:
        flt += f" and tags.`{TAG_STUDY}` = '{filter_quote(name)}'"
    runs = retry(
        c.search_runs, [experiment_id], flt, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def filter_quote(value: str) -> str:
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
    parent = latest_study_parent(c, exp_id, name) if resume else None
    if parent is not None:
        run_id = parent.info.run_id
        retry(c.update_run, run_id, status="RUNNING")
    else:
        run = retry(
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
                to_yaml(config) if hasattr(config, "model_dump") else yaml_text(dict(config)),
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
        try:
            close_dangling_trials(handle.ref)
        except BaseException as err:
            handle.fail(err)
            raise
        handle.finish()


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


def configuration_name(overrides: Mapping[str, Any] | None, fallback: str) -> str:
    """A trial's configuration without its seed: the run name of its overrides less
    ``train.seed`` (``input-p0.25``), or ``fallback`` when nothing else varies."""
    rest = {k: v for k, v in (overrides or {}).items() if k != "train.seed"}
    return naming.run_name(rest) if rest else fallback


def _trial_tags(cfg: TrialConfig) -> dict[str, str]:
    m, t = cfg.model, cfg.train
    return {
        "integration": m.integration,
        "integration_point": m.integration_point if m.integration == "mid" else "-",
        "fusion": m.fusion if m.integration == "mid" else "-",
        "sharing": m.sharing if m.integration != "input" else "-",
        "dropout": dropout_text(t.dropout_p),
        "dropout_mode": t.dropout_mode,
        "seed": param_str(t.seed),
        # What the run selected its checkpoint by, in words (the param train.objective is terse).
        TAG_OBJECTIVE: objectives.definition(t.objective, t.val_conditions),
        # A multi-objective trial: every objective it reports, numbered as its metrics are.
        **({TAG_OBJECTIVES: "; ".join(f"{i}: {objectives.definition(o, t.val_conditions)}"
                                       for i, o in enumerate(t.objectives, start=1))} if t.objectives else {}),
    }


def find_trial_run(study: StudyRef, trial_key: str) -> Any:
    """The newest trial run of ``study`` tagged with ``trial_key`` (an MLflow Run), or None."""
    c = client(study.tracking_uri)
    flt = (
        f"tags.`{TAG_PARENT}` = '{filter_quote(study.parent_run_id)}' and "
        f"tags.`{TAG_TRIAL_KEY}` = '{filter_quote(trial_key)}'"
    )
    runs = retry(
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
            retry(c.update_run, existing.info.run_id, status="RUNNING")
            with contextlib.suppress(Exception):
                retry(c.delete_tag, existing.info.run_id, TAG_ERROR)
        return existing.info.run_id, status
    all_tags = {
        TAG_PARENT: study.parent_run_id,
        TAG_KIND: "trial",
        TAG_TRIAL_KEY: trial_key,
        **{k: param_str(v) for k, v in (tags or {}).items()},
    }
    run = retry(c.create_run, study.experiment_id, run_name=run_name, tags=all_tags)
    return run.info.run_id, None


def search_all(c: mlflow.MlflowClient, exp_id: str, flt: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = retry(
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


def close_dangling_trials(study: StudyRef) -> list[str]:
    """Mark the study's trial runs still RUNNING as KILLED; returns their run ids.

    A trial process killed without Python cleanup (SIGKILL, a Ray actor stopped early by a
    scheduler, a lost node) cannot close its own run. :func:`study_run` calls this on exit,
    when no trial of the study can still be running, so no run is left RUNNING; each gets an
    ``error`` tag saying so.
    """
    c = client(study.tracking_uri)
    flt = f"tags.`{TAG_PARENT}` = '{filter_quote(study.parent_run_id)}' and attributes.status = 'RUNNING'"
    closed = []
    for run in search_all(c, study.experiment_id, flt):
        run_id = run.info.run_id
        retry(
            c.set_tag,
            run_id,
            TAG_ERROR,
            "trial process ended without closing its run (killed, or stopped early by the scheduler)",
        )
        retry(c.set_terminated, run_id, RunStatus.to_string(RunStatus.KILLED))
        closed.append(run_id)
    return closed


def tag_runs(tracking_uri: str, tags: Mapping[str, Mapping[str, Any]]) -> None:
    """Set tags on existing runs: ``tags`` maps a run id to its ``{tag: value}`` (values as
    strings). Used for what is known only once a study's trials are done (the Pareto front);
    setting a tag again replaces its value, so a resumed study's tags follow its runs."""
    c = client(tracking_uri)
    for run_id, run_tags in tags.items():
        for key in run_tags:
            if not isinstance(key, str) or not VALID_KEY.match(key):
                raise ValueError(f"tag name {key!r} is not valid for MLflow")
        if run_tags:
            retry(c.log_batch, run_id, tags=[mlflow.entities.RunTag(k, param_str(v)) for k, v in run_tags.items()])


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
    ``seqablate.naming.run_name(overrides)``, else ``config.name``); params = the flattened
    config; tags = integration, integration_point, fusion, sharing, dropout, dropout_mode,
    seed, objective.definition, git_commit, seqablate.version, study; artifact ``config.yaml``. Raises :class:`TrialAlreadyFinished` if
    that run already FINISHED. On exit: FINISHED; on any exception (KeyboardInterrupt
    included) FAILED with the ``error`` tag and ``error.txt`` traceback, then re-raised.
    """
    if trial_key is None:
        trial_key = naming.trial_key(overrides if overrides is not None else flatten(config))
    if run_name is None:
        run_name = naming.run_name(overrides) if overrides else config.name
    c = client(study.tracking_uri)
    if study_name is None:
        parent = retry(c.get_run, study.parent_run_id)
        study_name = parent.data.tags.get(TAG_STUDY, "")
    all_tags = {**_trial_tags(config), TAG_GIT: git_commit(), TAG_VERSION: _VERSION, TAG_STUDY: study_name,
                TAG_CONFIGURATION: configuration_name(overrides, config.name), **(tags or {})}
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
