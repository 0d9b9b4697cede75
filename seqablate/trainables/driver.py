"""Studies on Ray: the Tune trial driver and :func:`run_study`.

Each Tune trial runs :func:`trial_driver`, which resolves the trial's config (the study's base
config + the trial's overrides), opens the trial's MLflow child run (found again by its
stable trial key on resume, so no duplicates), and builds and fits a Ray Train V2
``TorchTrainer`` running :func:`~seqablate.trainables.loop.train_loop_per_worker` on
``workers_per_trial`` workers. ``TuneReportCallback`` forwards the workers' reports to Tune
(so ASHA and Optuna see the best validation objective, ``train.objective``); the trainer's
``FailureConfig`` restarts failed workers from the last checkpoint. A trial that still fails has its run marked FAILED by
``tracking.trial_run`` and Tune records the error; the study carries on.

:func:`run_study` prepares everything once on the driver (cohort cache, patient split, GPU
check, the MLflow parent run), then runs ``Tuner.fit`` over a grid (``tune.grid_search`` of
override dicts) or an Optuna define-by-run search, or ``Tuner.restore`` to resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from seqablate import metric_names as mn
from seqablate.config import StudyConfig, TrialConfig, parse, to_yaml, with_overrides
from seqablate.evaluation.cohort import TrialSplit
from seqablate.naming import run_name
from seqablate.search_spaces.registry import BUILTIN_HELPERS
from seqablate.tracking.names import STUDY_FILE
from seqablate.trainables.trial_names import config_name, trial_overrides

#: Metric Tune/Optuna/ASHA optimise: the best validation objective so far (``train.objective``;
#: the validation mAP by default), reported at each validation; checkpoint selection uses it too.
#: A multi-objective search (``train.objectives``) gives Optuna :func:`search_metrics` instead;
#: Tune's own metric stays this one, the first objective's, which selects each checkpoint.
OBJECTIVE = mn.VAL_BEST_OBJECTIVE
SPLIT_FILE = "split.json"
#: Reported only by a trial driver that finished (trained and evaluated its config): a trial
#: stopped before, by Ctrl-C, reports no such key.
DONE = "seqablate.trial_done"


class StudySetupError(ValueError):
    """A study that cannot start (bad cohort, no GPUs, ...); the CLI exits 2 with the message."""


@dataclass(frozen=True)
class StudyContext:
    """What every trial driver needs besides its overrides (pickled once by Tune)."""

    name: str
    base: dict[str, Any]  # base TrialConfig as a JSON-able dict
    split: dict[str, list[str]]  # the base config's split
    study_ref: tuple[str, str, str]  # tracking.StudyRef fields (tracking_uri, experiment_id, parent_run_id)
    train_storage: str  # storage_path of the trials' Ray Train runs
    workers_per_trial: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_failures: int = 1
    seeds: int = 1  # searches only: each sampled config is trained with seeds 0..seeds-1
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> FaultPlan fields (tests)
    # split_key(config) -> split, for grid points whose split settings differ from the base's
    splits: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # searches: the Optuna parameters the space folds into overrides (never config keys)
    helpers: tuple[str, ...] = ()

    def split_for(self, cfg: TrialConfig) -> dict[str, list[str]]:
        """The patient split planned for ``cfg``'s split settings (the base's when they match)."""
        return self.splits.get(split_key(cfg), self.split)


#: Data settings that decide a trial's patient split: a space may vary them in a grid (each
#: distinct setting is planned on the driver before Ray starts), never in a search. The cohort
#: (``data.cohort``) decides it too, and a grid may vary it the same way.
SPLIT_FIELDS = ("fold", "folds", "split_seed", "test_fraction", "val_patients", "val_fraction", "val_min_lesions",
                "train_patients", "train_fraction")


def _cohort(cfg: TrialConfig) -> str | None:
    """``data.cohort`` resolved (two spellings of one folder are one cohort)."""
    return str(Path(cfg.data.cohort).resolve()) if cfg.data.cohort else None


def split_key(cfg: TrialConfig) -> str:
    """The cohort and split settings of ``cfg`` as one string (equal strings, equal splits)."""
    return json.dumps({"cohort": _cohort(cfg), **{f: getattr(cfg.data, f) for f in SPLIT_FIELDS}}, sort_keys=True)


def plan_splits(cfg: StudyConfig, space: Any, points: list[dict[str, Any]], patients: list[Any],
                base_split: TrialSplit, *, progress: bool = False) -> dict[str, dict[str, list[str]]]:
    """Each distinct split of the space's points, keyed by :func:`split_key`.

    A trial's split must follow its own config, or its logged params would not describe the
    patients it trained and was tested on. A grid point with another ``data.cohort`` has that
    cohort checked and preprocessed here, before Ray starts (trials only read caches), and its
    split planned on it; the target spacing stays the base's (planned once, so cohorts that
    differ in one property are resampled alike). Raises :class:`StudySetupError` for a search
    that varies the cohort or split settings (its points are drawn during the study, after the
    split is planned), or a cohort that cannot be used (named with its point).
    """
    from seqablate.evaluation.cohort import check_cohorts, plan_split

    varied = sorted({k for p in points for k in p if k == "data.cohort" or k.removeprefix("data.") in SPLIT_FIELDS})
    if varied and space.kind != "grid":
        raise StudySetupError(f"space {space.name!r} is a search that varies {', '.join(varied)}: each trial's "
                              "split is planned before Ray starts, so only a grid may vary the cohort or the split")
    out = {split_key(cfg.base): base_split.as_dict()}
    cohorts = {_cohort(cfg.base): patients}  # resolved cohort -> its patients
    for p in points:
        trial = with_overrides(cfg.base, p)
        key = split_key(trial)
        if key in out:
            continue
        try:
            cohort = _cohort(trial)
            if cohort not in cohorts:
                cohorts[cohort] = check_cohorts(trial, progress=progress)[0]
            out[key] = plan_split(trial, cohorts[cohort]).as_dict()
        except ValueError as err:
            raise StudySetupError(f"space {space.name!r} point {run_name(p)}: {err}") from None
    return out


def _scaling(ctx: StudyContext) -> Any:
    import ray.train

    resources = {"CPU": ctx.cpus_per_worker}
    if ctx.gpus_per_worker > 0:
        resources["GPU"] = ctx.gpus_per_worker
    return ray.train.ScalingConfig(
        num_workers=ctx.workers_per_trial, use_gpu=ctx.gpus_per_worker > 0, resources_per_worker=resources
    )


def _fit_one(ctx: StudyContext, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train + evaluate one config as one MLflow child run; returns its final metrics.

    Its start is the trial's time zero (:mod:`~seqablate.timing`): the workers book
    what came before them (the MLflow run, the worker group) as start-up, and once the trainer
    has returned this driver logs ``time.other`` and ``time.total`` beside their phases.
    """
    from seqablate.timing import DriverClock, close_books

    clock = DriverClock.start()  # before the imports below: the first trial of a process pays for them
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from seqablate import search_spaces, tracking
    from seqablate.trainables.loop import FaultPlan, WorkerRun, train_loop_per_worker, worker_config

    base = parse(TrialConfig, ctx.base, source="study base config")
    name = search_spaces.run_name(overrides)
    cfg = with_overrides(base, overrides).model_copy(update={"name": name})
    key = search_spaces.trial_key(overrides)
    ref = tracking.StudyRef(*ctx.study_ref)
    try:
        with tracking.trial_run(ref, cfg, overrides=overrides, run_name=name, trial_key=key,
                                study_name=ctx.name) as tlog:
            config = worker_config(cfg, WorkerRun(
                TrialSplit.from_dict(ctx.split_for(cfg)), cpus_per_worker=int(max(1, ctx.cpus_per_worker)),
                tracking={"tracking_uri": ref.tracking_uri, "run_id": tlog.run_id},
                faults=FaultPlan(**ctx.faults.get(name, {})), timing=clock.for_worker(),
            ))
            trainer = TorchTrainer(
                train_loop_per_worker,
                train_loop_config=config,
                scaling_config=_scaling(ctx),
                run_config=ray.train.RunConfig(
                    # Stable per trial: a restored study resumes the trial's Train run from
                    # its latest checkpoint instead of starting over.
                    name=f"{name}-{key}",
                    storage_path=ctx.train_storage,
                    failure_config=ray.train.FailureConfig(max_failures=ctx.max_failures),
                    # One checkpoint per trial: the optimiser state exists once, and Ray deletes
                    # the previous checkpoint only after the new one is registered.
                    checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
                    callbacks=[TuneReportCallback()],
                ),
            )
            result = trainer.fit()  # raises TrainingFailedError after max_failures
            # Train V2's result.metrics belong to the last *checkpointed* report; the test
            # metrics come in the final report (no checkpoint), which rank 0 also logged to
            # the run: read them back from MLflow (latest value of every metric).
            logged = tracking.run_info(tlog.run_id, tracking_uri=ref.tracking_uri).data.metrics
            tlog.set_tags({"seqablate.train_path": str(result.path)})
            # The books close here: what remains (closing the run) is too short to matter.
            books = close_books(logged, clock.elapsed())
            tlog.log_metrics(books, step=cfg.train.steps)
            metrics = {**dict(result.metrics or {}), **dict(logged), **books}
            return {**metrics, "mlflow_run_id": tlog.run_id}
    except tracking.TrialAlreadyFinished as done:
        # MLflow holds a FINISHED run for this trial (the study was killed after logging it):
        # report its metrics instead of training it again.
        run = tracking.run_info(done.run_id, tracking_uri=ref.tracking_uri)
        return {**dict(run.data.metrics), "mlflow_run_id": done.run_id, "already_finished": 1.0}


def trial_driver(config: dict[str, Any], ctx: StudyContext) -> None:
    """One Tune trial (a function trainable; wrap with ``tune.with_parameters(..., ctx=...)``)."""
    import numpy as np
    import ray.tune

    overrides = trial_overrides(config, BUILTIN_HELPERS | frozenset(ctx.helpers))
    if ctx.seeds > 1 and "train.seed" not in overrides:
        # Searches: the sampled config is trained once per seed; Optuna sees the mean.
        finals = [_fit_one(ctx, {**overrides, "train.seed": s}) for s in range(ctx.seeds)]
        keys = set.intersection(*(set(k for k, v in f.items() if isinstance(v, int | float)) for f in finals))
        final = {k: float(np.mean([f[k] for f in finals])) for k in keys}
        final["mlflow_run_ids"] = ",".join(str(f["mlflow_run_id"]) for f in finals)
    else:
        final = _fit_one(ctx, overrides)
    final = {k: v for k, v in final.items() if k != "checkpoint_path"}
    # Runs logged before the objective had its name report their best validation mAP.
    final.setdefault(OBJECTIVE, final.get(mn.VAL_BEST, final.get(mn.VAL_MAP, 0.0)))
    final[DONE] = 1.0
    ray.tune.report(final)


# --------------------------------------------------------------------------------------------
# run_study
# --------------------------------------------------------------------------------------------


SMOKE: dict[str, Any] = {  # --smoke: tiny everything, for CI and `ray job submit` checks
    "data.image_size": 32,
    "data.slices": 3,
    "data.val_patients": 1,
    "model.backbone": "tiny",
    "eval.norm_batches": 2,
    "eval.norm_batch_size": 4,
    "train.steps": 4,
    "train.batch_size": 2,
    "train.val_every": 2,
    "train.saliency_every": 2,
    "eval.bootstrap": 20,
    "eval.each_sequence": False,
}


def study_storage(cfg: StudyConfig) -> str:
    """The study folder (local absolute path or URI)."""
    from seqablate.tracking.uris import DEFAULT_DIR

    s = cfg.storage or str(Path.cwd() / DEFAULT_DIR / cfg.name)
    return s if "://" in s else str(Path(s).expanduser().resolve())


def _is_local(storage: str) -> bool:
    return "://" not in storage or storage.startswith("file://")


def _local(storage: str) -> Path:
    return Path(storage[len("file://"):] if storage.startswith("file://") else storage)


def apply_smoke(cfg: StudyConfig) -> StudyConfig:
    """Apply ``--smoke`` to the base config (explicit study values win)."""
    if not cfg.smoke:
        return cfg
    base = with_overrides(cfg.base, SMOKE)
    return cfg.model_copy(update={"base": base})


def _init_ray(cfg: StudyConfig, verbose: bool = False) -> None:
    """Connect to the cluster (``RAY_ADDRESS``, set by ``ray job submit``) or start local Ray.

    Without ``verbose`` Ray's own output stays out of the console: workers' logs are not
    streamed to the driver and Ray's driver-side logging shows errors only (the study
    console prints a line per trial; the logs are copied into the study folder).
    """
    import logging

    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # Train V2 (the default since Ray 2.5x)
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    if not verbose:
        # Tune's new console output prints an experiment box and a TensorBoard hint even at
        # verbose=0; the legacy reporter prints nothing then.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if os.environ.get("RAY_ADDRESS"):
        _ray_init(address=os.environ["RAY_ADDRESS"], **quiet)
    else:
        # Locally, trial drivers hold only 0.01 CPU while their Train workers run; one spare
        # logical CPU lets `cpus` trials of 1-CPU workers run side by side on `cpus` cores.
        # address="local": always a fresh local instance, never someone's `ray start` cluster.
        # The commit is read here, where the checkout is, and handed to the trial processes
        # (on a cluster `ray job submit --runtime-env-json` does it: README, "ray job submit").
        from seqablate.provenance import git_commit

        env = {"RAY_TRAIN_V2_ENABLED": "1", "SEQABLATE_GIT_COMMIT": git_commit()}
        # worker_maximum_startup_concurrency: each trial starts a handful of 0-CPU processes
        # (driver, Train controller, queue, cleaner); the raylet would otherwise warn, on every
        # study on a 2-core machine, that more processes started than it has cores.
        _ray_init(address="local", num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False,
                  runtime_env={"env_vars": env,
                               "worker_process_setup_hook": "seqablate.trainables.driver.quiet_local_workers"},
                  _system_config={"worker_maximum_startup_concurrency": 16}, **quiet)


def _startup_timeout(err: BaseException) -> bool:
    """Whether ``err`` is Ray giving up on starting or reaching its processes in time (what a
    loaded machine or a slow cluster head produces), not a configuration error."""
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, TimeoutError) or any(
        m in text for m in ("timed out", "timeout", "failed to connect to gcs", "failed to start the gcs"))


def _ray_init(**kwargs: Any) -> None:
    """``ray.init``, tried twice when it times out (Ray's startup waits are fixed, and a
    machine busy with other work can miss them once); then :class:`StudySetupError` saying
    what happened and what to do, instead of Ray's traceback."""
    import ray

    for attempt in (1, 2):
        try:
            ray.init(**kwargs)
            return
        except Exception as err:  # noqa: BLE001 - Ray raises bare Exception for startup timeouts
            if not _startup_timeout(err):
                raise
            ray.shutdown()  # whatever half-started is stopped before the second try
            if attempt == 2:
                where = (f"the Ray cluster at {kwargs['address']}" if kwargs.get("address") not in (None, "local")
                         else "local Ray on this machine")
                raise StudySetupError(
                    f"{where} did not start in time, twice ({type(err).__name__}: {err}); the machine "
                    "may be overloaded: try again when it is less busy, lower --max-concurrent, or "
                    "connect to a running cluster (RAY_ADDRESS)"
                ) from None
            print(f"Ray did not start in time ({err}); trying once more", file=sys.stderr)


def quiet_local_workers() -> None:
    """Ray worker-process setup hook of local studies (no dashboard, so no state API).

    Ray Train's PlacementGroupCleaner asks the state API every second whether its controller
    lives; without a dashboard each ask fails and logs a warning, ~20 lines a second for a
    4-trial study, drowning the progress output. Its failure is harmless here: a local Ray
    instance dies with the study and takes its placement groups along.
    """
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def check_gpus(cfg: StudyConfig) -> None:
    """Refuse GPU trials when Ray sees too few GPUs (before any trial starts).

    On a cluster (``RAY_ADDRESS`` set, or Ray already initialised) the cluster's GPUs count;
    a local Ray would see this machine's CUDA devices, so those are counted without starting it.
    """
    import ray

    need = cfg.gpus_per_worker * cfg.workers_per_trial
    if need <= 0:
        return
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        _init_ray(cfg, verbose=False)
        have = float(ray.cluster_resources().get("GPU", 0.0))
    else:
        import torch

        have = float(torch.cuda.device_count())
    if have < need:
        raise StudySetupError(
            f"--gpus-per-worker {cfg.gpus_per_worker} x --workers-per-trial {cfg.workers_per_trial} "
            f"needs {need:g} GPU(s) per trial, but Ray sees {have:g} GPU(s) in this cluster; "
            "use --gpus-per-worker 0 for CPU training or connect to a GPU cluster (RAY_ADDRESS)"
        )


@dataclass
class StudyResult:
    """Outcome of a study."""

    storage: str  # study folder
    tracking_uri: str
    parent_run_id: str
    trials: list[dict[str, Any]]  # one row per trial: name, status, error, final metrics
    ui_path: str = ""  # MLflow UI path of the study's runs view (append to the server's URL)
    # Ctrl-C stopped it: rows are TERMINATED (finished), ERROR, INTERRUPTED (stopped while
    # training) or NOT STARTED, and `study resume` continues it.
    interrupted: bool = False
    ui_grouped_path: str = ""  # the view with seeds grouped per configuration (metric means)


def study_space(cfg: StudyConfig) -> Any:
    """The study's space: the named or file space, restricted to ``cfg.trials`` if given."""
    from seqablate import search_spaces

    space = search_spaces.get_space(cfg.space)
    space = space.select(cfg.trials) if cfg.trials else space
    return space.crossed("data.cohort", cfg.cohorts) if cfg.cohorts else space


def prepare(cfg: StudyConfig) -> tuple[StudyConfig, TrialSplit, list[Any]]:
    """Validate the study before Ray starts: space, cohorts (cached once), split, externals.
    Returns the config (smoke applied), the base config's split and the cohort's patients."""
    from seqablate.evaluation.cohort import check_cohorts, plan_geometry

    cfg = apply_smoke(cfg)
    space = study_space(cfg)  # unknown space or --trials pattern -> SpaceError listing the choices
    if cfg.base.data.cohort is None:
        raise StudySetupError("no cohort: pass --cohort PATH (or set cohort in the study config)")
    if not os.environ.get("RAY_ADDRESS"):  # a cluster's workers are other machines: not known here
        from seqablate.trainables.memory import check_study_memory

        points = space.grid(seeds=1) if space.kind == "grid" else []
        check_study_memory(cfg.base, points, gpu=cfg.gpus_per_worker > 0)  # before minutes of preprocessing
    # The target spacing is planned once, from the base cohort, so every trial (and the study's
    # record) carries the same concrete numbers.
    cfg = cfg.model_copy(update={"base": plan_geometry(cfg.base)})
    patients, split = check_cohorts(cfg.base, progress=True)
    return cfg, split, patients


#: StudyConfig fields that decide what a study's trials are (the rest is how they are run:
#: concurrency, resources, storage); a study folder only ever holds one set of them.
IDENTITY_FIELDS = ("name", "space", "trials", "seeds", "num_samples", "scheduler", "workers_per_trial",
                   "tracking_uri", "base")
SPACE_FILE = "space.json"


def study_identity(cfg: StudyConfig, space: Any) -> dict[str, Any]:
    """What must match for a rerun into a study folder to continue it (see :func:`claim_study`)."""
    ident = {k: v for k, v in cfg.model_dump(mode="json").items() if k in IDENTITY_FIELDS}
    ident["space_points"] = [json.dumps(p, sort_keys=True) for p in (space.describe().get("points") or [])]
    return ident


def claim_study(folder: Path, cfg: StudyConfig, space: Any, *, resume: bool, overwrite: bool) -> bool:
    """Make ``folder`` this study's folder; returns whether the study resumes.

    A new or empty folder starts the study. A seqablate study folder holding the same study
    (:func:`study_identity`) resumes it: finished trials are not re-run, and no duplicate
    MLflow runs appear. One holding a different study is refused, naming the differing keys;
    ``overwrite`` deletes it (only if seqablate made it) and starts afresh. Anything else at
    ``folder`` is refused (:mod:`seqablate.folders`).
    """
    from seqablate import folders
    from seqablate.config import config_diff

    if overwrite:
        if resume:
            raise StudySetupError("--overwrite starts a study afresh; it cannot be combined with resume")
        folders.remove_own(folder, "study", flag="--overwrite")
    if resume:
        return True  # `study resume PATH`: the folder's own config is the study's
    existed = folders.claim(folder, "study", flag="--storage")
    if not existed or not (folder / STUDY_FILE).is_file():
        return False
    old = load_study_config(folder)
    if old.tracking_uri and "://" not in old.tracking_uri:  # recorded relative by older versions
        old = old.model_copy(update={"tracking_uri": os.path.abspath(Path(old.tracking_uri).expanduser())})
    old_space = json.loads((folder / SPACE_FILE).read_text()) if (folder / SPACE_FILE).is_file() else {}
    before = {**{k: v for k, v in old.model_dump(mode="json").items() if k in IDENTITY_FIELDS},
              "space_points": [json.dumps(p, sort_keys=True) for p in old_space.get("points") or []]}
    diff = config_diff(before, study_identity(cfg, space))
    if diff:
        raise StudySetupError(
            f"--storage {folder} holds study {old.name!r} with a different configuration:\n  "
            + "\n  ".join(diff)
            + f"\nUse another --storage, `seqablate study resume {folder}` to continue that study as "
            "it was, or --overwrite to delete it and start afresh"
        )
    print(f"{folder} already holds this study: resuming it (finished trials are not re-run)",
          file=sys.stderr)
    return True


def run_study(
    cfg: StudyConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    faults: dict[str, Any] | None = None,
    verbose: bool = False,
) -> StudyResult:
    """Run (or, with ``resume``, continue) a study; returns per-trial outcomes.

    Everything is checked before Ray starts or anything is written: the space and each of its
    points, the cohorts, the split, the GPUs, the tracking store, and the study folder
    (:func:`claim_study`: a rerun of the same study resumes it, a different one is refused
    unless ``overwrite``). ``verbose``: Ray's own output and Tune's status table on the console
    instead of one line per trial. ``faults`` (reliability tests): run name -> a
    :class:`~seqablate.trainables.loop.FaultPlan` (or its fields as a dict) for that trial.

    A local study folder is locked (:func:`seqablate.folders.locked`) for the whole study: a
    second ``study run`` or ``study resume`` into it is refused, naming this process. After
    Ctrl-C the result is ``interrupted`` and lists every trial (finished, interrupted, not
    started); ``study resume`` continues it.
    """
    with contextlib.ExitStack() as held:
        return _run_study(cfg, held, resume=resume, overwrite=overwrite, faults=faults, verbose=verbose)


def _run_study(cfg: StudyConfig, held: contextlib.ExitStack, *, resume: bool, overwrite: bool,
               faults: dict[str, Any] | None, verbose: bool) -> StudyResult:
    import ray.tune

    from seqablate import folders, search_spaces, tracking

    storage = study_storage(cfg)
    if _is_local(storage):
        # What is at --storage first (a file, a foreign folder, read-only), then another live
        # process writing this study: both refused before any work.
        folders.check_replaceable(_local(storage), "study", flag="--storage")
        if folders.marker_kind(_local(storage)) == "study":
            held.enter_context(folders.locked(_local(storage), flag="--storage"))
    # The tracking store before the cohorts are preprocessed: an unknown scheme, a path through
    # a file, a read-only or foreign database is refused, never replaced, and nothing is made.
    uri = tracking.default_tracking_uri(storage if _is_local(storage) else None, cfg.tracking_uri)
    tracking.check_store(uri)
    cfg, split, patients = prepare(cfg)
    space = study_space(cfg)
    # Every grid point / a sample of search draws must be a valid trial on this base config:
    # a bad point is an error naming it now, not a failed trial after Ray has started.
    points = search_spaces.validate_space(space, cfg.base, seeds=cfg.seeds, samples=8)
    splits = plan_splits(cfg, space, points, patients, split, progress=True)
    check_gpus(cfg)
    if _is_local(storage):
        folder = _local(storage)
        resume = claim_study(folder, cfg, space, resume=resume, overwrite=overwrite)
        held.enter_context(folders.locked(folder, flag="--storage"))
        from seqablate.folders import write_text_atomic

        # The folder is recorded absolute: `study resume` from any directory finds it.
        write_text_atomic(folder / STUDY_FILE, to_yaml(cfg.model_copy(update={"storage": storage})))
        write_text_atomic(folder / SPLIT_FILE, json.dumps(split.as_dict(), indent=1))
        write_text_atomic(folder / SPACE_FILE, json.dumps(space.describe(), indent=1, default=str))
    elif overwrite:
        raise StudySetupError(f"--overwrite needs a local --storage folder (got {storage})")
    _init_ray(cfg, verbose)
    parent, leaf = storage.rstrip("/").rsplit("/", 1)
    with tracking.study_run(cfg.name, storage=storage if _is_local(storage) else None,
                            tracking_uri=cfg.tracking_uri, config=cfg, space=space, resume=resume) as study:
        ctx = StudyContext(
            name=cfg.name, base=cfg.base.model_dump(mode="json"), split=split.as_dict(),
            study_ref=tuple(study.ref), train_storage=f"{storage}/train",
            workers_per_trial=cfg.workers_per_trial, gpus_per_worker=cfg.gpus_per_worker,
            cpus_per_worker=cfg.cpus_per_worker, seeds=cfg.seeds if space.kind == "search" else 1,
            faults={k: (asdict(v) if is_dataclass(v) else dict(v)) for k, v in (faults or {}).items()},
            splits=splits,
            helpers=tuple(sorted(search_spaces.helper_params(space.search_fn(cfg.base)))) if space.kind == "search"
            else (),
        )
        # The driver itself only waits on its trainer: no CPU, never a GPU, and it runs
        # on the head node. Ray Train V2 attaches each trial's controller to its driver's node,
        # so with drivers on the head a lost worker node takes down only training workers,
        # which the trainer's FailureConfig restarts from the last checkpoint (a driver on the
        # lost node would fail the whole trial). 0 CPUs: cluster heads offer none (infra/).
        trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_driver, ctx=ctx),
                                            {"cpu": 0, "node:__internal_head__": 0.001})
        tuner_path = f"{parent}/{leaf}"
        if resume and ray.tune.Tuner.can_restore(tuner_path):
            tuner = ray.tune.Tuner.restore(tuner_path, trainable=trainable, resume_errored=True)
        else:
            tuner = ray.tune.Tuner(trainable, **_tuner_args(cfg, space, parent, leaf, verbose))
        try:
            grid, interrupted = _fit_noting_interrupt(tuner)
        finally:
            if _is_local(storage) and not os.environ.get("RAY_ADDRESS"):
                from seqablate.trainables.console import keep_ray_logs

                keep_ray_logs(_local(storage))
        expected = ([search_spaces.run_name(p) for p in space.grid(seeds=cfg.seeds)] if space.kind == "grid"
                    else cfg.num_samples)
        rows = _rows(grid, expected=expected, interrupted=interrupted)
        ui_path, ui_grouped = _publish_view(study.ref, rows)
        study.log_summary({
            "trials": len(rows),
            "finished": sum(r["status"] == "TERMINATED" for r in rows),
            "failed": sum(r["status"] == "ERROR" for r in rows),
            "interrupted": int(interrupted),
        })
        study.log_table(_table(rows), "trials.csv")
        return StudyResult(storage, study.ref.tracking_uri, study.ref.parent_run_id, rows, ui_path, interrupted,
                           ui_grouped)


def _fit_noting_interrupt(tuner: Any) -> tuple[Any, bool]:
    """``tuner.fit()`` and whether Ctrl-C (SIGINT) stopped it.

    Tune catches the first SIGINT itself: it stops the trials, saves the experiment for
    ``Tuner.restore`` and returns a normal result, with the stopped trials TERMINATED like the
    finished ones. It installs its handler for the whole fit and puts back the handler it found
    (ours, below) only when a SIGINT arrived, so ours still being installed afterwards means
    Tune was interrupted; with Tune's handler switched off (``TUNE_DISABLE_SIGINT_HANDLER``)
    ours sees the signal itself and raises KeyboardInterrupt as Python would.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return tuner.fit(), False  # signals reach only the main thread: nothing to note
    seen = threading.Event()

    def noted(signum: int, frame: Any) -> None:
        seen.set()
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, noted)
    try:
        grid = tuner.fit()
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)
    tune_handles = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") or 0)
    return grid, seen.is_set() or (tune_handles and after is noted)


#: Columns of the study's MLflow runs view, when the trials logged them.
#: (Then the test mAP of each sequence the study censored, and of each external cohort.)
VIEW_METRICS = tuple(mn.metric_key("test", mn.FULL, m) for m in ("mAP", "mAP_lo", "mAP_hi", "max_sensitivity", "tp_dice")
                     ) + (mn.VAL_BEST_OBJECTIVE, mn.VAL_BEST_STEP)


def _publish_view(ref: Any, rows: list[dict[str, Any]]) -> tuple[str, str]:
    """The study's two runs views in MLflow (UI paths): one row per trial, and one row per
    configuration with its seeds' mean; key test metrics, the params that vary, best first."""
    from seqablate import tracking

    logged = {k for r in rows for k in r}
    # the full protocol's mAP and interval, each censored sequence's mAP, then the rest
    metrics = ([m for m in VIEW_METRICS[:3] if m in logged] + [k for _, k in mn.censored_map_keys(logged)]
               + [m for m in VIEW_METRICS[3:] if m in logged])
    metrics += sorted(k for k in logged if k.startswith("external.") and k.endswith(".mAP") and k.count(".") == 2)
    # A multi-objective study: each objective at the selected checkpoint (the front's coordinates).
    metrics += sorted(k for k in logged if (mn.parse_objective_key(k) or ("",))[0] == "selected_objective")
    params = ["model.integration", "model.integration_point", "model.sharing", "model.fusion", "model.norm",
              "train.dropout_p", "train.objective", "train.objectives", "train.seed"]
    try:
        return (tracking.publish_view(ref, metrics=metrics, params=params, order_by=mn.TEST_FULL_MAP),
                tracking.publish_view(ref, metrics=metrics, params=[p for p in params if p != "train.seed"],
                                      order_by=mn.TEST_FULL_MAP, grouped=True))
    except Exception:  # noqa: BLE001 - a view is a convenience; the study's results are logged
        return "", ""


def _tuner_args(cfg: StudyConfig, space: Any, parent: str, leaf: str, verbose: bool) -> dict[str, Any]:
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = (
        ASHAScheduler(time_attr="training_iteration", grace_period=1, reduction_factor=2)
        if cfg.scheduler == "asha" else None
    )
    from seqablate.trainables.console import StudyConsole

    if space.kind == "grid":
        points = space.grid(seeds=cfg.seeds)
        param_space: dict[str, Any] = {"overrides": ray.tune.grid_search(points)}
        search_alg, num_samples = None, 1
        total: int | None = len(points)
    else:
        from ray.tune.search.optuna import OptunaSearch

        param_space = {}
        metrics, modes = search_metrics(cfg.base)
        if len(metrics) > 1:
            import optuna

            # Multi-objective TPE, not NSGA-II (docs/design.md, "Multi-objective search"): it is
            # model-based after 10 random trials where NSGA-II's first generation (50) is random,
            # and it samples define-by-run (conditional) parameters NSGA-II draws at random.
            search_alg = OptunaSearch(space=space.search_fn(cfg.base), metric=metrics, mode=modes,
                                      sampler=optuna.samplers.TPESampler())
        else:
            search_alg = OptunaSearch(space=space.search_fn(cfg.base), metric=OBJECTIVE, mode="max")
        num_samples = total = cfg.num_samples
    return {
        "param_space": param_space,
        "tune_config": ray.tune.TuneConfig(
            metric=OBJECTIVE, mode="max", search_alg=search_alg, scheduler=scheduler,
            num_samples=num_samples, max_concurrent_trials=cfg.max_concurrent,
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
        ),
        "run_config": ray.tune.RunConfig(
            name=leaf, storage_path=parent, verbose=1 if verbose else 0,
            callbacks=[] if verbose else [StudyConsole(total)],
            failure_config=ray.tune.FailureConfig(max_failures=0),
        ),
    }


def search_metrics(base: TrialConfig) -> tuple[list[str], list[str]]:
    """``(metrics, modes)`` the Optuna searcher optimises for trials of ``base``: the best
    validation objective alone (``[OBJECTIVE]``), or for ``train.objectives`` each objective's
    value at the selected checkpoint (``val.selected_objective.<i>``: what the model a trial
    keeps does, not each objective's own best, which no one checkpoint need reach); all
    maximised (they are mAPs)."""
    n = len(base.train.objectives)
    if n < 2:
        return [OBJECTIVE], ["max"]
    return [mn.objective_key(i, "selected_objective") for i in range(1, n + 1)], ["max"] * n


def _trial_name(trial: Any) -> str:
    """Tune trial names say what differs (``mid@layer4-l2_tied-p0.25-seed1``) + Tune's id."""
    return f"{config_name(trial.config, 'trial')}_{trial.trial_id}"


def _status(r: Any, trial: Any, interrupted: bool) -> str:
    """A Tune result's state: ``ERROR``, ``TERMINATED`` (finished), and after an interrupt
    ``INTERRUPTED`` (stopped while training: Tune marks it TERMINATED too) or ``NOT STARTED``."""
    m = dict(r.metrics or {})
    if r.error:
        return "ERROR"
    # The finished driver's report carries DONE (older studies' finished trials: the run id).
    if not interrupted or m.get(DONE) or "mlflow_run_id" in m:
        return "TERMINATED"
    if getattr(trial, "status", None) == "PENDING" or not m:
        return "NOT STARTED"
    return "INTERRUPTED"


def _rows(grid: Any, *, expected: list[str] | int | None = None, interrupted: bool = False) -> list[dict[str, Any]]:
    """One row per trial: name, status (:func:`_status`), error, path, final metrics.

    ``expected``: the grid's run names, or a search's number of samples; after an interrupt
    the points Tune had not even created get a ``NOT STARTED`` row each, so every trial of
    the study is listed.
    """
    analysis = getattr(grid, "_experiment_analysis", None)  # Tune's trials, in the results' order
    trials = list(getattr(analysis, "trials", None) or [])
    rows = []
    for i, r in enumerate(grid):
        m = dict(r.metrics or {})
        cfg = dict(r.config or {})
        rows.append({
            "name": config_name(cfg, str(r.path)),
            "status": _status(r, trials[i] if i < len(trials) else None, interrupted),
            "error": f"{type(r.error).__name__}: {r.error}"[:500] if r.error else "",
            "path": str(r.path),
            **{k: v for k, v in m.items() if isinstance(v, int | float | str) and (
                k.startswith(("test.", "external.", "val.")) or k in ("mlflow_run_id", "step"))},
        })
    if interrupted and isinstance(expected, list):
        listed = [r["name"] for r in rows]
        for name in expected:
            if name in listed:
                listed.remove(name)
            else:
                rows.append({"name": name, "status": "NOT STARTED", "error": "", "path": ""})
    elif interrupted and isinstance(expected, int):
        rows += [{"name": f"sample {i + 1}", "status": "NOT STARTED", "error": "", "path": ""}
                 for i in range(len(rows), expected)]
    return rows


def _table(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows)


def load_study_config(path: str | Path) -> StudyConfig:
    """The StudyConfig saved in a study folder (for ``study resume PATH``)."""
    from seqablate.config import load_yaml

    p = Path(path)
    f = p / STUDY_FILE if p.is_dir() else p
    if not f.is_file():
        raise StudySetupError(f"{path}: not a study folder (no {STUDY_FILE})")
    return load_yaml(f, StudyConfig, stored=True)
