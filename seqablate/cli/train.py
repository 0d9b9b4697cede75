"""CLI: ``seqablate train``, ``seqablate study spaces|run|resume``, ``seqablate predict``,
``seqablate evaluate`` (a model, or another tool's predictions).

Heavy imports (torch, Ray, MLflow) happen inside the command functions. User errors raise
ValueError subclasses with a message naming the file/field/value; :mod:`seqablate.cli` prints
them and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _external(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--external {v!r}: expected NAME=PATH (e.g. oslo=/data/oslo)")
        out[name] = path
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``study``, ``predict`` and ``evaluate``."""
    tr = subparsers.add_parser("train", help="train + evaluate one trial from a config YAML (no Tune)",
                               description="Runs the same per-worker training function as a study "
                               "trial, in this process, then evaluates the best model; logs to MLflow.")
    tr.add_argument("config", help="TrialConfig YAML (unknown keys are errors)")
    tr.add_argument("--out", default=None, help="run folder (checkpoints, mlflow.db); default ./seqablate-runs/<name>")
    tr.add_argument("--tracking-uri", default=None, help="MLflow URI (default: SQLite in --out)")
    tr.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    tr.add_argument("--overwrite", action="store_true",
                    help="delete the run already in --out (only if seqablate made it) and start afresh")
    tr.set_defaults(func=_train)

    st = subparsers.add_parser("study", help="run search-space studies on Ray Tune")
    ssub = st.add_subparsers(dest="study_command", metavar="ACTION")
    sp = ssub.add_parser("spaces", help="list the named search spaces")
    sp.set_defaults(func=_spaces)
    run = ssub.add_parser("run", help="run a study: SPACE over a cohort, every trial in MLflow")
    run.add_argument("space", help="space name (see `seqablate study spaces`) or a .py file defining SPACE")
    run.add_argument("--cohort", default=None, help="training cohort folder (default: the first of --cohorts)")
    run.add_argument("--cohorts", nargs="+", metavar="PATH", default=None,
                     help="grids: train every point on each of these cohorts (data.cohort per trial; e.g. phantoms "
                     "that differ in one parameter); the report then draws the cost of censoring t1_gre_post per "
                     "cohort. --cohort (default: the first) plans the target spacing every trial uses")
    run.add_argument("--external", action="append", metavar="NAME=PATH", help="external test cohort (repeatable)")
    run.add_argument("--base", default=None, help="base TrialConfig YAML every trial overrides")
    run.add_argument("--name", default=None, help="study name (MLflow experiment; default: the space name)")
    run.add_argument("--num-samples", type=int, default=None, help="searches: trials to sample")
    run.add_argument("--seeds", type=int, default=None, help="repeat every config with N seeds")
    run.add_argument("--scheduler", choices=["none", "asha"], default=None)
    run.add_argument("--max-concurrent", type=int, default=None)
    run.add_argument("--workers-per-trial", type=int, default=None)
    run.add_argument("--gpus-per-worker", type=float, default=None)
    run.add_argument("--cpus-per-worker", type=float, default=None)
    run.add_argument("--storage", default=None, help="study folder or URI (default ./seqablate-runs/<name>)")
    run.add_argument("--tracking-uri", default=None, help="MLflow URI (default: SQLite in the study folder)")
    run.add_argument("--smoke", action="store_true", help="tiny, fast trials (CI, job-submission checks)")
    run.add_argument("--objective", default=None, metavar="OBJ",
                     help="what every trial selects its checkpoint by and Tune/Optuna maximise (train.objective): "
                     "full (the default), a condition such as censor_t1_gre_post, worst or mean over the validation "
                     "conditions (without train.val_conditions in --base: the full protocol and each sequence "
                     "censored alone), or a deployment profile full=0.7,censor_t1_gre_post=0.3 (the share of "
                     "patients arriving with each condition's sequences, summing to 1)")
    run.add_argument("--objectives", nargs="+", default=None, metavar="OBJ",
                     help="a multi-objective study: two or more objectives, each as --objective takes them (e.g. "
                     "--objectives full worst). Every trial reports each one's validation value at its selected "
                     "checkpoint; searches run Optuna's multi-objective TPE on them, and the study tags the Pareto "
                     "front of the finished trials (tag pareto=true/false; the report draws it with test numbers). "
                     "Each trial's checkpoint is selected on the FIRST objective (it is train.objective). worst/mean "
                     "reduce over every validation condition (without train.val_conditions in --base: the full "
                     "protocol, each sequence censored alone, and those the other objectives name). Not with "
                     "--objective, nor with --scheduler asha (ASHA stops trials by one metric)")
    run.add_argument("--trials", action="append", metavar="GLOB",
                     help="grids: run only the points whose name matches (e.g. 'mid@*'; repeatable)")
    run.add_argument("--overwrite", action="store_true",
                     help="delete the study already in --storage (only if seqablate made it) and start afresh")
    run.add_argument("--verbose", action="store_true",
                     help="show Ray's own output and Tune's status table (default: one line per trial)")
    run.set_defaults(func=_study_run)
    res = ssub.add_parser("resume", help="continue a killed study (finished trials are not re-run)")
    res.add_argument("path", help="study folder")
    res.add_argument("--verbose", action="store_true", help="show Ray's own output and Tune's status table")
    res.set_defaults(func=_study_resume)
    st.set_defaults(func=lambda args: (st.print_help(), 2)[1])

    pr = subparsers.add_parser("predict", help="segment one patient folder with a trained model")
    pr.add_argument("--model", required=True, help="MLflow run id, runs:/<id>/model, models:/<name>/<version>, or a model/checkpoint folder")
    pr.add_argument("--input", required=True, help="patient folder (one NIfTI per sequence)")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--sequences", nargs="+", default=None, help="use only these sequences (others treated as missing)")
    pr.add_argument("--force", action="store_true", help="predict with missing sequences even if the model was trained without sequence dropout")
    pr.add_argument("--tracking-uri", default=None)
    pr.set_defaults(func=_predict)

    ev = subparsers.add_parser(
        "evaluate", help="score a trained model, or another tool's predictions, on a labelled cohort, with CIs",
        description="Evaluate a model on every labelled patient of a cohort under the full protocol, "
        "each sequence censored and (--all-subsets) every sequence subset; prints the paper-style table, "
        "writes per-lesion and per-patient CSVs and logs an MLflow run nested under the model's run. "
        "On the cohort the model was trained on, its training and validation patients are left out "
        "(--include-training scores them). With --predictions instead of --model, scores another tool's "
        "probability maps or binary masks (one NIfTI per patient: <case>.nii.gz as nnU-Net writes them, or "
        "<patient>/probability.nii.gz) with the same metrics, logged as an outside baseline "
        "(beside the runs of --study).")
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--model",
                      help="MLflow run id, runs:/<id>/model, models:/<name>/<version>, or a model/checkpoint folder")
    what.add_argument("--predictions", metavar="DIR",
                      help="folder of another tool's predictions of --cohort (probability maps or 0/1 masks)")
    ev.add_argument("--cohort", required=True,
                    help="labelled cohort folder (nifti, brainmetshare, brats-mets, ucsf-bmsr, nnunet)")
    ev.add_argument("--layout", default="auto", help="force a cohort layout (default: detected)")
    ev.add_argument("--sequences", nargs="+", default=None, help="use only these sequences (the others censored)")
    ev.add_argument("--all-subsets", action="store_true", help="also every non-empty sequence subset")
    ev.add_argument("--external", action="append", metavar="NAME=PATH", help="another cohort scored as is (repeatable)")
    ev.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for the CIs (default: the model's)")
    ev.add_argument("--out", default=None, help="folder for the tables (default ./seqablate-evaluations/<cohort>)")
    ev.add_argument("--tracking-uri", default=None, help="MLflow URI of the model's runs and of the new run")
    ev.add_argument("--no-log", action="store_true", help="do not log an MLflow run")
    ev.add_argument("--cache-dir", default=None,
                    help="preprocessing cache (default: beside the cohort, or $SEQABLATE_CACHE / "
                    "~/.cache/seqablate when the cohort's folder is read-only)")
    ev.add_argument("--include-training", action="store_true",
                    help="on the cohort the model (or --study) was trained on, also score its training and "
                    "validation patients (left out by default: their scores are optimistic)")
    ev.add_argument("--name", default=None,
                    help="--predictions: the tool's name, tagged on the run (e.g. nnunet-2d; default: the folder's name)")
    ev.add_argument("--study", default=None,
                    help="--predictions: the study to compare with (study folder, train --out folder, run id, or a "
                    "split.json): its split and evaluation protocol are used and the run is logged beside its trials")
    ev.add_argument("--alias", action="append", metavar="NAME=SEQUENCE",
                    help="nnunet layout: read channel NAME as canonical SEQUENCE (repeatable)")
    ev.set_defaults(func=_evaluate)

def _train(args: argparse.Namespace) -> int:
    import contextlib

    from seqablate import folders, tracking
    from seqablate.config import TrialConfig, absolute_paths, config_diff, load_yaml, to_yaml
    from seqablate.evaluation.cohort import check_cohorts, plan_geometry
    from seqablate.trainables.loop import fit_trial
    from seqablate.trainables.memory import check_training_memory

    # Relative paths in the YAML mean this directory; the run keeps them absolute, so a rerun
    # or a report from another directory reads the same cohorts.
    cfg = absolute_paths(load_yaml(args.config, TrialConfig))
    # The target spacing is planned (from the headers) before the run is recorded, so its
    # config.yaml holds the numbers it trains with.
    cfg = plan_geometry(cfg)
    out = Path(args.out or Path.cwd() / tracking.DEFAULT_DIR / cfg.name).resolve()
    # Refuse a foreign --out before any preprocessing (with --overwrite too: it deletes only ours).
    if args.overwrite:
        folders.check_removable(out, "train", flag="--overwrite")
    else:
        folders.check_replaceable(out, "train", flag="--out")
    # The tracking store too, before any folder is made: a URI that cannot be used would
    # otherwise leave a half-made --out behind.
    uri = tracking.default_tracking_uri(str(out), args.tracking_uri)
    tracking.check_store(uri)  # an unreadable, foreign or read-only database is refused, never replaced
    import torch

    check_training_memory(cfg, gpu=not args.cpu and torch.cuda.is_available())  # before minutes of preprocessing
    with contextlib.ExitStack() as held:
        if folders.marker_kind(out) == "train":
            held.enter_context(folders.locked(out, flag="--out"))  # a live run there: refused now
        _, split = check_cohorts(cfg, progress=True)  # every cohort of the config, before any training
        if args.overwrite:
            folders.remove_own(out, "train", flag="--overwrite")
        existed = out.exists()
        resume = folders.claim(out, "train", flag="--out")
        held.enter_context(folders.locked(out, flag="--out"))
        record, run_file = out / "config.yaml", out / "run.json"
        if resume and record.is_file():
            # A run recorded before paths were stored absolute compares as run from here.
            diff = config_diff(absolute_paths(load_yaml(record, TrialConfig, stored=True)), cfg)
            old_uri = json.loads(run_file.read_text()).get("tracking_uri") if run_file.is_file() else uri
            if old_uri != uri:
                diff.append(f"tracking URI: {old_uri!r} -> {uri!r}")
            if diff:
                raise folders.OutputRefused(
                    f"--out {out} holds a run of a different configuration ({record}):\n  "
                    + "\n  ".join(diff)
                    + "\nUse another --out, or --overwrite to delete that run and start afresh"
                )
            print(f"{out} holds this run already: resuming it", file=sys.stderr)
        try:
            folders.write_text_atomic(record, to_yaml(cfg))
            with tracking.study_run(f"train-{cfg.name}", storage=str(out), tracking_uri=uri, resume=resume) as study:
                # Recorded once the store took the run: a store that failed leaves no URI
                # behind for the corrected rerun to be compared with.
                folders.write_text_atomic(run_file, json.dumps({"tracking_uri": uri}))
                try:
                    with tracking.trial_run(study.ref, cfg, run_name=cfg.name) as tlog:
                        result = fit_trial(cfg, storage=out / "checkpoints", split=split, use_gpu=not args.cpu,
                                           tracking={"tracking_uri": study.ref.tracking_uri, "run_id": tlog.run_id})
                except tracking.TrialAlreadyFinished as done:
                    metrics = tracking.run_info(done.run_id, tracking_uri=study.ref.tracking_uri).data.metrics
                    print(f"{cfg.name} finished already (MLflow run {done.run_id}); its test metrics:")
                    _print_metrics(dict(metrics))
                    return 0
        except BaseException:
            if not resume and not (out / "checkpoints").exists():
                _discard_new_run(out, existed)  # nothing trained: leave no half-made run folder
            raise
    from seqablate.objectives import definition

    print(f"trained {cfg.name}: {result.state.step} steps, best validation objective {result.state.best_metric:.3f} "
          f"at step {result.state.best_step} ({definition(cfg.train.objective, cfg.train.val_conditions)})")
    _print_metrics(result.metrics)
    print(f"MLflow run {tlog.run_id} in {study.ref.tracking_uri}")
    return 0


def _discard_new_run(out: Path, existed: bool) -> None:
    """Undo a run folder this command made and that holds no training yet: delete it, or, when
    it was the user's empty folder before, empty it again (the folder itself is theirs)."""
    import shutil

    from seqablate import folders

    if not existed:
        folders.remove_own(out, "train", flag="--out")
        return
    for p in out.iterdir():  # the lock file too: this process's lock outlives its name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _print_metrics(metrics: dict[str, float]) -> None:
    for k in sorted(metrics):
        if k.endswith((".mAP", ".max_sensitivity", ".tp_dice")):
            print(f"  {k:<45} {metrics[k]:.3f}")


def _spaces(args: argparse.Namespace) -> int:
    from seqablate.search_spaces import get_space, list_spaces

    for name, desc in list_spaces().items():
        print(f"{name:<15} {get_space(name).kind:<7} {desc}")
    return 0


def study_config_from_args(args: argparse.Namespace) -> Any:
    """The StudyConfig of ``study run`` flags (flags override the --base config)."""
    from seqablate.config import (
        ConfigError,
        StudyConfig,
        TrialConfig,
        absolute_paths,
        load_yaml,
        parse,
    )
    from seqablate.search_spaces import get_space

    get_space(args.space)  # unknown space: error listing the spaces, before anything else
    several = list(getattr(args, "cohorts", None) or [])
    if args.cohort is None and not several:
        raise ValueError("--cohort PATH (or --cohorts PATH ...) is required: the training cohort")
    for flag, path in [("--cohort", args.cohort), *(("--cohorts", c) for c in several)]:
        if path is not None and not Path(path).exists():
            raise ValueError(f"{flag} {path}: no such file or directory")
    cohort = Path(args.cohort if args.cohort is not None else several[0])
    raw: dict[str, Any] = {
        "name": args.name or Path(args.space).stem,
        "space": args.space,
        "cohort": str(cohort.resolve()),
        "cohorts": [str(Path(c).resolve()) for c in several],
        "external": {k: str(Path(v).resolve()) for k, v in _external(args.external).items()},
        "smoke": bool(args.smoke),
        "trials": list(args.trials or []),
    }
    if args.base:
        raw["base"] = absolute_paths(load_yaml(args.base, TrialConfig)).model_dump(mode="json")
    for flag, key in [("num_samples", "num_samples"), ("seeds", "seeds"), ("scheduler", "scheduler"),
                      ("max_concurrent", "max_concurrent"), ("workers_per_trial", "workers_per_trial"),
                      ("gpus_per_worker", "gpus_per_worker"), ("cpus_per_worker", "cpus_per_worker"),
                      ("storage", "storage"), ("tracking_uri", "tracking_uri")]:
        v = getattr(args, flag)
        if v is not None:
            raw[key] = v
    # Local paths are stored absolute (study.yaml, the MLflow params): `study resume` and
    # `report` from another directory must find the same folders.
    for key in ("storage", "tracking_uri"):
        if isinstance(raw.get(key), str) and "://" not in raw[key]:
            raw[key] = os.path.abspath(Path(raw[key]).expanduser())
    objective = getattr(args, "objective", None)
    several = getattr(args, "objectives", None)
    if objective is not None and several is not None:
        raise ValueError(f"--objective {objective!r} and --objectives {' '.join(several)}: give one of them "
                         "(--objectives' first objective is the one each checkpoint is selected by)")
    if several is not None:
        if len(several) < 2:
            raise ValueError(f"--objectives {' '.join(several)}: give two or more objectives (one objective is "
                             "--objective)")
        raw["base"] = with_objectives(raw.get("base"), list(several))
        flag = f"--objectives {' '.join(several)}"
    elif objective is not None:
        raw["base"] = with_objective(raw.get("base"), objective)
        flag = f"--objective {objective!r}"
    else:
        return parse(StudyConfig, raw, source="study run")
    try:
        return parse(StudyConfig, raw, source="study run")
    except ConfigError as err:
        if any(k in str(err) for k in ("train.objective", "train.val_conditions", "scheduler")):
            raise ConfigError(f"{flag}: {err}") from None
        raise


def with_objective(base: dict[str, Any] | None, objective: str) -> dict[str, Any]:
    """A base config mapping with ``train.objective`` set to ``objective`` (``--objective``).

    ``worst`` / ``mean`` over the base's validation conditions need several: a base that
    names none beyond the default ``[full]`` (and no ``train.val_censor``) validates under the
    full protocol and each of its sequences censored alone. A condition or a profile adds the
    conditions it names (:func:`seqablate.objectives.resolve`).
    """
    from seqablate.objectives import AGGREGATES, robustness_conditions
    from seqablate.sequences import PAPER_SEQUENCES

    out = dict(base or {})
    train = dict(out.get("train") or {})
    train["objective"] = objective
    if (objective.strip() in AGGREGATES and list(train.get("val_conditions") or ["full"]) == ["full"]
            and not train.get("val_censor")):
        train["val_conditions"] = robustness_conditions((out.get("data") or {}).get("sequences") or PAPER_SEQUENCES)
    out["train"] = train
    return out


def with_objectives(base: dict[str, Any] | None, objectives: list[str]) -> dict[str, Any]:
    """A base config mapping with ``train.objectives`` set (``--objectives``) and
    ``train.objective`` their first, the one each checkpoint is selected by.

    As for ``--objective``: with a ``worst`` or ``mean`` among them and a base that names no
    validation conditions beyond the default ``[full]`` (and no ``train.val_censor``), the
    trials validate under the full protocol and each sequence censored alone; the other
    objectives add the conditions they name (:func:`seqablate.objectives.resolve_all`).
    """
    from seqablate.objectives import AGGREGATES, robustness_conditions
    from seqablate.sequences import PAPER_SEQUENCES

    out = dict(base or {})
    train = dict(out.get("train") or {})
    train["objective"], train["objectives"] = objectives[0], list(objectives)
    if (any(o.strip() in AGGREGATES for o in objectives)
            and list(train.get("val_conditions") or ["full"]) == ["full"] and not train.get("val_censor")):
        train["val_conditions"] = robustness_conditions((out.get("data") or {}).get("sequences") or PAPER_SEQUENCES)
    out["train"] = train
    return out


def _study_run(args: argparse.Namespace) -> int:
    from seqablate.trainables.driver import run_study

    cfg = study_config_from_args(args)
    result = run_study(cfg, overwrite=args.overwrite, verbose=args.verbose)
    _tag_pareto(cfg, result)
    return _report_study(result)


def _study_resume(args: argparse.Namespace) -> int:
    from seqablate.trainables.driver import load_study_config, run_study

    cfg = load_study_config(args.path)
    if cfg.storage is None or "://" not in cfg.storage:
        # The folder given is the study's, whatever directory the study was started from
        # (older studies stored a relative --storage, or none: ./seqablate-runs/<name>).
        cfg = cfg.model_copy(update={"storage": str(Path(args.path).resolve())})
    result = run_study(cfg, resume=True, verbose=args.verbose)
    _tag_pareto(cfg, result)
    return _report_study(result)


def _tag_pareto(cfg: Any, result: Any) -> None:
    """A multi-objective study's trials done (not interrupted): tag each finished trial run
    ``pareto`` = true / false by the front of the validation objectives, and say how many
    configurations are on it. A failure to tag does not fail the study (its runs are logged):
    it is reported with the command that tags them again."""
    if not cfg.base.train.objectives or getattr(result, "interrupted", False):
        return
    from seqablate.analysis.pareto import tag_study

    try:
        front = tag_study(result.parent_run_id, tracking_uri=result.tracking_uri)
    except Exception as err:  # noqa: BLE001 - the study's results are logged; tagging can be redone
        print(f"could not tag the Pareto front ({type(err).__name__}: {err}); `seqablate report "
              f"{result.storage}` computes and tags it", file=sys.stderr)
        return
    if front is None or not front.points:
        print("no finished trial logged every objective: no Pareto front", file=sys.stderr)
        return
    names = ", ".join(p.label for p in front.front)
    print(f"\nPareto front on the validation objectives ({'; '.join(front.labels)}; each trial's checkpoint "
          f"selected on objective 1): {len(front.front)} of {len(front.points)} configuration(s): {names}; "
          "their runs are tagged pareto=true (`seqablate report` shows the front with test numbers)")


def _report_study(result: Any) -> int:
    """Print every trial's state and how to see the runs; the exit code.

    An interrupted study (Ctrl-C) exits 130 and says so, lists the trials that finished, were
    interrupted or never started, and prints the command that continues it; a study whose
    every trial failed exits 1.
    """
    from seqablate import metric_names as mn

    print(f"\nstudy folder: {result.storage}")
    for r in result.trials:
        m = r.get(mn.TEST_FULL_MAP)
        extra = f"  test mAP {m:.3f}" if isinstance(m, float) else ""
        for seq, key in mn.censored_map_keys(r):
            extra += f"  censored {seq} {r[key]:.3f}" if isinstance(r[key], float) else ""
        print(f"  {r['status']:<11} {r['name']:<40}{extra}  {r.get('error', '')[:120]}")
    if getattr(result, "interrupted", False):
        done = sum(r["status"] == "TERMINATED" for r in result.trials)
        print(f"\ninterrupted: {done} of {len(result.trials)} trial(s) finished; the others are "
              "INTERRUPTED (stopped mid-training) or NOT STARTED. Continue the study with:\n"
              f"  seqablate study resume {result.storage}", file=sys.stderr)
        return 130
    print_ui(result.tracking_uri, result.ui_path, getattr(result, "ui_grouped_path", ""))
    failed = sum(r["status"] == "ERROR" for r in result.trials)
    if failed:
        print(f"{failed} trial(s) failed (marked FAILED in MLflow); the others completed", file=sys.stderr)
    return 1 if failed == len(result.trials) else 0


def print_ui(tracking_uri: str, ui_path: str, grouped_path: str = "") -> None:
    """Print how to open the study's runs in the MLflow UI (both views when there are two)."""
    from seqablate.tracking.uris import ui_hint

    first, *rest = ui_hint(tracking_uri, ui_path, grouped_path)
    print(f"\nMLflow: {first}")
    for line in rest:
        print(f"        {line}")


def _predict(args: argparse.Namespace) -> int:
    from seqablate.cli.checks import check_predict_args

    check_predict_args(args)  # before the heavy imports: a mistyped flag is answered at once
    from seqablate.evaluation.predict import predict_patient

    out = predict_patient(args.model, args.input, args.out, sequences=args.sequences,
                          force=args.force, tracking_uri=args.tracking_uri)
    for p in out.files:
        print(p)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from seqablate.cli.checks import check_evaluate_args

    check_evaluate_args(args)  # before the heavy imports: a mistyped flag is answered at once
    if args.predictions is not None:
        return _evaluate_predictions(args)
    for flag, value in (("--name", args.name), ("--study", args.study), ("--alias", args.alias)):
        if value:
            raise ValueError(f"{flag} goes with --predictions (a model knows its own study and sequences)")
    from seqablate.evaluation.score import evaluate_cohort

    res = evaluate_cohort(args.model, args.cohort, out=args.out, layout=args.layout, sequences=args.sequences,
                          all_subsets=args.all_subsets, externals=_external(args.external),
                          tracking_uri=args.tracking_uri, bootstrap=args.bootstrap, log=not args.no_log,
                          include_training=args.include_training, cache_dir=args.cache_dir)
    print(res.table)
    print(f"\ntables: {res.out}")
    if res.run_id:
        print(f"MLflow run {res.run_id} in {res.tracking_uri}")
    return 0


def _evaluate_predictions(args: argparse.Namespace) -> int:
    from seqablate.cli.data import parse_aliases
    from seqablate.evaluation.outside import score_predictions

    for flag, value in (("--sequences", args.sequences), ("--all-subsets", args.all_subsets),
                        ("--external", args.external)):
        if value:
            raise ValueError(f"{flag} goes with --model: predictions are scored as they were made")
    res = score_predictions(args.predictions, args.cohort, name=args.name, study=args.study, out=args.out,
                            layout=args.layout, aliases=parse_aliases(args.alias),
                            include_training=args.include_training, tracking_uri=args.tracking_uri,
                            bootstrap=args.bootstrap, log=not args.no_log)
    print(res.table)
    print(f"\n{len(res.scored)} patients scored ({res.kind} predictions); tables: {res.out}")
    if res.run_id:
        print(f"MLflow run {res.run_id} (outside baseline '{args.name or Path(args.predictions).name}') "
              f"in {res.tracking_uri}")
    return 0
