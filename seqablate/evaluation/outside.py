"""``seqablate evaluate --predictions``: score another tool's predictions as a trial is scored.

An outside baseline (nnU-Net trained on ``cohort export-nnunet``'s dataset, any other tool)
hands in one probability map or binary mask per patient (:mod:`seqablate.data.predictions`).
Each is scored against the patient's lesion mask on the prediction's own grid, which must be
the cohort's, with the trials' metric code (:func:`seqablate.evaluation.evaluate.score_condition`:
lesion-level mAP with its bootstrap CI, max sensitivity, TP Dice, FROC) under the trials'
names (``test.full.*``, or ``external.<cohort>.*`` for a study's external cohort) and the
trials' tables (``patients.csv``, ``lesions.csv``, ...). With ``study`` the study's evaluation
protocol (threshold, distance, bootstrap) is used, the study's training and validation
patients are left out (the baseline is compared on the study's test patients), and the MLflow
run is nested under the study's parent run, tagged ``seqablate.kind = baseline`` and
``seqablate.baseline = <name>`` (``tracking.list_baselines`` lists them; they are not trials).

A binary mask gives every predicted lesion the score 1, so its PR curve is a single point and
its mAP is that point's precision x recall; the table says so.

The truth is the mask as stored (reoriented to RAS), as for a trial of the ``spacing``
geometry; a trial of the ``resize`` geometry scores against its cached mask resized back from
``data.image_size``, which is the same mask whenever the in-plane grid is ``image_size``
square (and within a voxel's rim otherwise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqablate import metric_names as mn
from seqablate.config import TrialConfig, with_overrides

#: Experiment of baseline runs scored without a study.
EXPERIMENT = "seqablate-evaluate"


@dataclass
class OutsideResult:
    """What ``evaluate --predictions`` produced."""

    out: Path  # folder with the tables
    metrics: dict[str, float]
    table: str  # markdown
    prefix: str  # metric prefix: 'test.full' or 'external.<cohort>'
    kind: str  # 'probability' or 'binary'
    scored: list[str]  # patient ids scored
    run_id: str | None = None
    tracking_uri: str | None = None
    excluded: list[str] = field(default_factory=list)  # the study's training/validation patients left out
    unpredicted: list[str] = field(default_factory=list)  # labelled patients without a prediction


def _prefix(source: Any, cohort: Path) -> str:
    """``test.full`` on the study's own cohort (or without a study); ``external.<name>`` on one
    of the study's external cohorts (``external.<folder name>`` on any other cohort)."""
    from seqablate.evaluation.splits import same_cohort

    if source is None or source.config is None:
        return mn.prefix("test")
    cfg: TrialConfig = source.config
    if same_cohort(source.split.cohort or cfg.data.cohort, cohort):
        return mn.prefix("test")
    for ext, path in cfg.eval.external.items():
        if same_cohort(path, cohort):
            return mn.prefix("external", cohort=ext)
    return mn.prefix("external", cohort=cohort.name)


def _table(metrics: dict[str, float], prefix: str, name: str) -> str:
    """One row in the paper's shape (percent), as ``evaluate --model``'s table."""

    def pct(key: str) -> str:
        v = metrics.get(f"{prefix}.{key}")
        return "-" if v is None else f"{100 * v:.1f}"

    ci = f" ({pct('mAP_lo')}, {pct('mAP_hi')})" if f"{prefix}.mAP_lo" in metrics else ""
    return "\n".join([
        "| Predictions | Metrics | mAP (95 % CI) | Max Sens. | TP Dice | FROC mean | Patients |",
        "|---|---|---|---|---|---|---|",
        f"| {name} | {prefix} | {pct('mAP')}{ci} | {pct('max_sensitivity')} | {pct('tp_dice')} | "
        f"{pct('froc_mean')} | {int(metrics.get(prefix + '.n_patients', 0))} |",
    ])


def score_predictions(
    predictions: str | Path,
    cohort: str | Path,
    *,
    name: str | None = None,
    study: str | None = None,
    out: str | Path | None = None,
    layout: str = "auto",
    aliases: dict[str, str] | None = None,
    include_training: bool = False,
    tracking_uri: str | None = None,
    bootstrap: int | None = None,
    log: bool = True,
) -> OutsideResult:
    """Score the predictions in ``predictions`` of the labelled patients of ``cohort`` (see the
    module docstring); ``name`` is the tool's name (default: the predictions folder's name).

    Patients with a prediction are scored; labelled patients without one are counted in
    ``<prefix>.n_skipped`` and listed. Raises ValueError (:class:`~seqablate.data.errors.DataError`)
    naming the file or the problem: a prediction for no patient of the cohort, a grid other
    than the patient's, values that are neither probabilities nor 0/1, binary masks mixed with
    probability maps, no labelled patient left to score, an ``--out`` that is not seqablate's.
    """
    from seqablate import folders
    from seqablate.data.errors import DataError
    from seqablate.data.layouts import discover
    from seqablate.data.predictions import BINARY, PROBABILITY, find_predictions, load_prediction
    from seqablate.data.volumes import load_patient
    from seqablate.evaluation.evaluate import EvalReport, score_condition
    from seqablate.evaluation.splits import same_cohort, study_source

    predictions, cohort = Path(predictions).resolve(), Path(cohort).resolve()
    name = name or predictions.name
    out_dir = Path(out) if out is not None else Path.cwd() / "seqablate-evaluations" / f"{name}-{cohort.name}"
    folders.check_replaceable(out_dir, "evaluate", flag="--out")
    if not cohort.is_dir():
        raise ValueError(f"--cohort {cohort}: {'not a folder' if cohort.exists() else 'no such folder'}")
    source = study_source(study, tracking_uri=tracking_uri) if study else None
    base = source.config if source is not None and source.config is not None else TrialConfig()
    overrides: dict[str, Any] = {"data.cohort": str(cohort), "data.layout": layout}
    if aliases:
        overrides["data.aliases"] = {**base.data.aliases, **aliases}
    if bootstrap is not None:
        overrides["eval.bootstrap"] = bootstrap
    cfg = with_overrides(base, overrides)
    found = discover(cohort, layout, lesion_labels=cfg.data.lesion_labels, default_spacing=cfg.data.default_spacing,
                     aliases=cfg.data.aliases)
    files = find_predictions(predictions, found.ids())
    prefix = _prefix(source, cohort)
    labelled = [p for p in found.patients if p.mask is not None]
    if not labelled:
        raise ValueError(f"--cohort {cohort}: no labelled patient (no lesion masks); scoring needs masks")
    notes: list[str] = []
    excluded: list[str] = []
    if source is not None and prefix == mn.prefix("test") and same_cohort(source.split.cohort or cohort, cohort):
        training = source.split.training
        if include_training:
            n = sum(p.patient_id in training for p in labelled if p.patient_id in files)
            notes.append(f"--include-training: {n} scored patient(s) trained or validated the study's models "
                         f"({source.split.source})")
        else:
            excluded = [p.patient_id for p in labelled if p.patient_id in training]
            labelled = [p for p in labelled if p.patient_id not in training]
            if excluded:
                notes.append(f"the study's {len(excluded)} training and validation patients ({source.split.source}) "
                             f"are left out{' (their predictions too)' if any(e in files for e in excluded) else ''}; "
                             "--include-training scores them")
    unlabelled = sorted(pid for pid in files if pid not in {p.patient_id for p in found.patients if p.mask is not None})
    if unlabelled:
        notes.append(f"{len(unlabelled)} prediction(s) of patients without a lesion mask are not scored: "
                     f"{', '.join(unlabelled[:10])}")
    unpredicted = [p.patient_id for p in labelled if p.patient_id not in files]
    scored = [p for p in labelled if p.patient_id in files]
    if unpredicted:
        notes.append(f"{len(unpredicted)} labelled patient(s) have no prediction and are not scored (a paired "
                     f"comparison uses the patients both sides scored): {', '.join(unpredicted[:10])}"
                     f"{' ...' if len(unpredicted) > 10 else ''}")
    if not scored:
        raise ValueError(f"--predictions {predictions}: none of the {len(labelled)} labelled patients to score "
                         f"has a prediction (expected <case>.nii.gz or <patient>/probability.nii.gz)")
    probs, truths, spacings, kinds, problems = [], [], [], {}, []
    for pf in scored:
        try:
            vol = load_patient(pf, list(pf.files)[:1])  # one sequence: the patient's grid, checked with its mask
            prob, kind = load_prediction(files[pf.patient_id], vol.shape, vol.affine)
        except DataError as err:
            problems.append(str(err))
            continue
        probs.append(prob)
        truths.append(vol.mask)
        spacings.append(tuple(vol.spacing))
        kinds[pf.patient_id] = kind
    if problems:
        raise DataError(f"--predictions {predictions}: {len(problems)} problem(s):\n  " + "\n  ".join(problems), problems)
    seen = set(kinds.values()) - {None}
    if len(seen) > 1:
        bins = [p for p, k in kinds.items() if k == BINARY]
        raise DataError(f"--predictions {predictions}: binary masks ({len(bins)}, e.g. {bins[:3]}) mixed with "
                        "probability maps; a ranking over both is meaningless: hand in one kind")
    kind = PROBABILITY if PROBABILITY in seen else BINARY
    result = score_condition(prefix, probs, truths, spacings, [p.patient_id for p in scored], cfg)
    result.metrics[f"{prefix}.n_skipped"] = float(len(unpredicted))
    metrics = dict(result.metrics)
    table = _table(metrics, prefix, name)
    if kind == BINARY:
        notes.insert(0, "binary masks: every predicted lesion has the score 1, so the PR curve is one point and "
                        "mAP is that point's precision x recall (a probability map's mAP ranks its lesions)")
    if notes:
        table += "\n\n" + "\n".join(f"- {n}" for n in notes)
    folders.claim(out_dir, "evaluate", flag="--out")
    EvalReport(results=[result]).write_artifacts(out_dir)
    folders.write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True))
    folders.write_text_atomic(out_dir / "table.md", table + "\n")
    res = OutsideResult(out_dir, metrics, table, prefix, kind, [p.patient_id for p in scored],
                        excluded=excluded, unpredicted=unpredicted)
    if log:
        res.run_id, res.tracking_uri = _log(res, name, predictions, cohort, cfg, source, tracking_uri)
    return res


def _log(res: OutsideResult, name: str, predictions: Path, cohort: Path, cfg: TrialConfig, source: Any,
         tracking_uri: str | None) -> tuple[str, str]:
    """A baseline run: nested under the study's parent run (or in experiment
    :data:`EXPERIMENT`), the trials' metric names, ``eval/`` tables, ``split.json``."""
    from seqablate import tracking

    tags: dict[str, Any] = {tracking.TAG_KIND: tracking.KIND_BASELINE, tracking.TAG_BASELINE: name,
                            "seqablate.predictions": str(predictions), "seqablate.cohort": str(cohort),
                            "seqablate.prediction_kind": res.kind, "seqablate.excluded_training": len(res.excluded),
                            "seqablate.unpredicted_patients": len(res.unpredicted)}
    if source is not None and source.ref is not None:
        uri, experiment_id = source.ref.tracking_uri, source.ref.experiment_id
        tags[tracking.TAG_PARENT] = source.ref.parent_run_id
        if source.name:
            tags[tracking.TAG_STUDY] = source.name
    else:
        uri = tracking.default_tracking_uri(explicit=tracking_uri)
        experiment_id = tracking.get_or_create_experiment(uri, EXPERIMENT)
    if source is not None:
        tags["seqablate.split_source"] = source.split.source
    run_id = tracking.create_run(uri, experiment_id, run_name=name, tags=tags)
    logger = tracking.RunLogger(uri, run_id)
    try:
        logger.log_params({"baseline.name": name, "baseline.predictions": str(predictions),
                           "baseline.prediction_kind": res.kind, "data.cohort": str(cohort),
                           "eval.threshold": cfg.eval.threshold, "eval.max_distance_mm": cfg.eval.max_distance_mm,
                           "eval.bootstrap": cfg.eval.bootstrap})
        logger.log_metrics(res.metrics)
        logger.log_artifact(res.out, mn.EVAL_DIR)
        if source is not None:
            logger.log_dict(source.split.record(), mn.SPLIT_JSON)
        logger.finish()
    except BaseException as err:
        logger.fail(err)
        raise
    return run_id, uri
