"""``seqablate evaluate``: score a trained model on any labelled cohort (a hospital's, a public set).

The model (run id, ``runs:/``, ``models:/``, an MLflow model folder or a checkpoint folder) is
evaluated on every labelled patient of the cohort, whatever its layout, under the full
protocol, each sequence censored alone, ``t1_gre_post`` censored and, with ``all_subsets``,
every sequence subset: the same conditions, metric code (:mod:`seqablate.metrics`), inference
path (:class:`~seqablate.models.inference.Predictor`) and metric names as a study's test
evaluation. A patient who lacks a sequence is scored with the subset it has; when the model
was trained without sequence dropout its rows say so (``evaluate`` measures; ``predict`` keeps
refusing such patients without ``--force``). Writes the per-lesion and per-patient tables,
logs a new MLflow run nested under the model's run (so two hospitals' results sit side by
side in the UI), and returns the paper-style table.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqablate import metric_names as mn
from seqablate.config import TrialConfig, dropout_active, with_overrides


@dataclass
class ScoreResult:
    """What ``seqablate evaluate`` produced."""

    out: Path  # folder with the tables
    metrics: dict[str, float]
    table: str  # markdown, the paper's shape
    run_id: str | None  # the new MLflow run
    tracking_uri: str | None
    partial: list[str] = field(default_factory=list)  # patients scored on a subset of the sequences
    excluded: list[str] = field(default_factory=list)  # the model's training/validation patients left out


def _source_run(ref: str, tracking_uri: str) -> str | None:
    """The MLflow run a model reference comes from (None for local folders)."""
    import re

    from seqablate import tracking

    text = str(ref)
    if Path(text).exists():
        return None
    m = re.match(r"^(?:runs:/)?([0-9a-f]{32})(?:/.*)?$", text)
    if m:
        return m.group(1)
    m = re.match(r"^models:/([^/]+)/(.+)$", text)
    if m:
        return tracking.model_version_run(m.group(1), m.group(2), tracking_uri=tracking_uri)
    return None


def _require_masks(cohort: Path, cfg: TrialConfig) -> None:
    """ValueError when no patient of ``cohort`` has a lesion mask file (discovery reads names,
    not voxels: seconds earlier than finding out after preprocessing every patient)."""
    from seqablate.data.layouts import discover

    d = cfg.data
    found = discover(cohort, d.layout, lesion_labels=d.lesion_labels, default_spacing=d.default_spacing,
                     aliases=d.aliases)
    if not any(p.labelled for p in found.patients):
        raise ValueError(f"--cohort {cohort}: no labelled patient (no lesion masks) among its "
                         f"{len(found.patients)} patients; evaluate needs masks")


def table_markdown(metrics: dict[str, float], conditions: list[str], policies: list[str | None]) -> str:
    """A paper-style table: a row per condition (and statistics policy), mAP (CI), max
    sensitivity, TP Dice, FROC mean, patients, in percent."""
    head = "| Condition | BN statistics | mAP (95 % CI) | Max Sens. | TP Dice | FROC mean | Patients |"
    lines = [head, "|---|---|---|---|---|---|---|"]

    def pct(key: str) -> str:
        v = metrics.get(key)
        return "-" if v is None else f"{100 * v:.1f}"

    for cond in conditions:
        for policy in policies:
            p = mn.prefix("test", cond, policy=policy)
            if f"{p}.mAP" not in metrics:
                continue
            ci = f" ({pct(p + '.mAP_lo')}, {pct(p + '.mAP_hi')})" if f"{p}.mAP_lo" in metrics else ""
            lines.append(
                f"| {cond} | {policy or 'own'} | {pct(p + '.mAP')}{ci} | {pct(p + '.max_sensitivity')} | "
                f"{pct(p + '.tp_dice')} | {pct(p + '.froc_mean')} | {int(metrics.get(p + '.n_patients', 0))} |"
            )
    return "\n".join(lines)


def evaluate_cohort(
    model_ref: str,
    cohort: str | Path,
    *,
    out: str | Path | None = None,
    layout: str = "auto",
    sequences: list[str] | None = None,
    all_subsets: bool = False,
    externals: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    bootstrap: int | None = None,
    log: bool = True,
    include_training: bool = False,
    cache_dir: str | Path | None = None,
) -> ScoreResult:
    """Score ``model_ref`` on every labelled patient of ``cohort`` (see the module docstring).

    ``cache_dir``: the preprocessing cache (default: beside the cohort, or the per-user cache
    when the cohort's folder is read-only; never the training machine's ``data.cache_dir``
    recorded in the model's config).

    When ``cohort`` is the cohort the model was trained on, the patients of its recorded split
    that trained or validated it are left out (the table says how many), unless
    ``include_training``; a model without a recorded split has it recomputed from its config.

    Raises ValueError naming the problem: an unresolvable model, a cohort without labelled
    patients (or only training ones), ``sequences`` the model does not know, an ``--out``
    that is not seqablate's.
    """
    import torch

    from seqablate import folders, tracking
    from seqablate.evaluation.cohort import labelled, load_cached
    from seqablate.evaluation.evaluate import evaluate_model, evaluation_conditions, fallbacks
    from seqablate.evaluation.model_ref import load_model
    from seqablate.sequences import canonical

    cohort = Path(cohort).resolve()
    out_dir = Path(out) if out is not None else Path.cwd() / "seqablate-evaluations" / cohort.name
    folders.check_replaceable(out_dir, "evaluate", flag="--out")
    uri = tracking.default_tracking_uri(explicit=tracking_uri)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    deployed, cfg = load_model(model_ref, tracking_uri=tracking_uri, device=dev)
    known = tuple(cfg.data.sequences)
    overrides: dict[str, Any] = {"data.cohort": str(cohort), "data.layout": layout,
                                 "eval.all_subsets": all_subsets, "eval.external": dict(externals or {})}
    if bootstrap is not None:
        overrides["eval.bootstrap"] = bootstrap
    overrides["data.cache_dir"] = str(cache_dir) if cache_dir is not None else None
    ecfg: TrialConfig = with_overrides(cfg, overrides)
    censor_always: tuple[str, ...] = ()
    if sequences:
        wanted = [canonical(s) for s in sequences]
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise ValueError(f"--sequences {unknown}: the model knows only {list(known)}")
        censor_always = tuple(s for s in known if s not in wanted)
    _require_masks(cohort, ecfg)  # from the file names, before any patient is preprocessed
    patients = load_cached(ecfg.data, progress=True)
    scored = labelled(patients)
    if not scored:
        raise ValueError(f"--cohort {cohort}: no labelled patient (no lesion masks); evaluate needs masks")
    scored, excluded, split_note = _leave_out_training(model_ref, uri, ecfg, cfg.data.cohort, cohort, patients,
                                                       scored, include_training)
    ext = {name: load_cached(ecfg.data, cohort=path, progress=True) for name, path in (externals or {}).items()}
    partial = [p.patient_id for p in scored if not all(bool(x) for x in p.present)]
    conds = [(n, tuple(dict.fromkeys(censor_always + c))) for n, c in evaluation_conditions(ecfg)]
    if censor_always:
        # Every condition then lacks the unwanted sequences: name it by what it keeps, once.
        named: dict[frozenset[str], tuple[str, tuple[str, ...]]] = {}
        for _, c in conds:
            kept = [s for s in known if s not in c]
            if kept and frozenset(c) not in named:
                named[frozenset(c)] = (mn.subset_condition(kept), c)
        conds = list(named.values())
    report = evaluate_model(deployed.net, ecfg, scored, externals=ext, device=dev,
                            norm_stats=deployed.norm_stats or None, conditions_override=conds)
    metrics = report.metrics
    policies = sorted({mn.parse_metric(f"{r.name}.mAP").policy for r in report.results}, key=lambda x: x or "")
    table = table_markdown(metrics, [n for n, _ in conds], policies)
    shapley = [(k, mn.parse_shapley_key(k)) for k in sorted(metrics) if mn.parse_shapley_key(k)]
    if shapley:
        own = [f"{seq} {100 * metrics[k]:+.1f}" for k, (seq, pol) in shapley if pol is None]
        table += ("\n\nEach sequence's contribution to test mAP (exact Shapley values over the subsets, mAP points; "
                  f"they sum to the full-protocol mAP): {', '.join(own)}")
    fell_back = fallbacks(report)
    if fell_back:
        lines = "; ".join(f"{c}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}" for c, ids in fell_back.items())
        warning = ("warning: per-subset BatchNorm statistics were never estimated for some patients' sequence "
                   f"subsets; they were scored with the training statistics (patients.csv, norm_stats_fallback): {lines}")
        print(warning, file=sys.stderr)
        table += f"\n\n{warning}"
    if partial:
        trained = "with" if dropout_active(cfg.train.dropout_p) else "without"
        table += (f"\n\n{len(partial)} of {len(scored)} patients lack a sequence and were scored on the "
                  f"sequences they have; the model was trained {trained} sequence dropout"
                  + (" (it never saw an input without all of them)" if trained == "without" else "")
                  + f": {', '.join(partial[:10])}{' ...' if len(partial) > 10 else ''}")
    if split_note:
        table += f"\n\n{split_note}"
    folders.claim(out_dir, "evaluate", flag="--out")
    report.write_artifacts(out_dir)
    folders.write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True))
    folders.write_text_atomic(out_dir / "table.md", table + "\n")
    run_id = None
    if log:
        run_id = _log(uri, model_ref, cohort, ecfg, metrics, out_dir, partial, excluded)
    return ScoreResult(out_dir, metrics, table, run_id, uri if log else None, partial, excluded)


def _leave_out_training(model_ref: str, uri: str, cfg: TrialConfig, trained_cohort: str | None, cohort: Path,
                        patients: list[Any], scored: list[Any], include: bool) -> tuple[list[Any], list[str], str]:
    """``(patients to score, patient ids left out, a note for the table)``.

    ``cfg``: the evaluation config (the model's, on ``cohort``); ``trained_cohort``: the
    model's ``data.cohort``. On the model's own training cohort (its recorded split's cohort,
    else ``trained_cohort``) the split's train and validation patients are left out unless
    ``include``; elsewhere nothing is left out, but patients whose ids are the model's
    training patients are pointed out.
    """
    from seqablate.evaluation.cohort import plan_split, split_record
    from seqablate.evaluation.splits import RecordedSplit, local_split, run_split, same_cohort

    source = _source_run(model_ref, uri)
    recorded = run_split(source, uri) if source is not None else (
        local_split(model_ref) if Path(str(model_ref)).is_dir() else None)
    trained_on = recorded.cohort if recorded is not None and recorded.cohort else trained_cohort
    if not same_cohort(trained_on, cohort):
        if recorded is None:
            return scored, [], ""
        shared = [p.patient_id for p in scored if p.patient_id in recorded.training]
        if not shared:
            return scored, [], ""
        return scored, [], (f"{len(shared)} scored patient(s) have the ids of the model's training/validation "
                            f"patients ({recorded.source}), in another cohort than its training cohort "
                            f"({trained_on}): if they are the same patients, their scores are optimistic: "
                            f"{', '.join(shared[:10])}{' ...' if len(shared) > 10 else ''}")
    if recorded is None:  # a model from before splits were recorded: the split is its config's
        recorded = RecordedSplit.from_record(split_record(cfg, plan_split(cfg, patients)),
                                             "the model's config (recomputed)")
    if include:
        n = sum(p.patient_id in recorded.training for p in scored)
        return scored, [], (f"--include-training: {n} of the {len(scored)} scored patients trained or validated "
                            f"the model ({recorded.source}); their scores are optimistic")
    left = [p for p in scored if p.patient_id not in recorded.training]
    out = [p.patient_id for p in scored if p.patient_id in recorded.training]
    if not left:
        raise ValueError(f"--cohort {cohort}: the model was trained on this cohort and all {len(scored)} labelled "
                         f"patients trained or validated it ({recorded.source}); --include-training scores them anyway")
    n_train = sum(pid in set(recorded.train) for pid in out)
    return left, out, (f"This is the cohort the model was trained on: its {n_train} training and "
                       f"{len(out) - n_train} validation patients ({recorded.source}) are left out; "
                       f"{len(left)} patients scored. --include-training scores them too")


def _log(uri: str, model_ref: str, cohort: Path, cfg: TrialConfig, metrics: dict[str, float], out_dir: Path,
         partial: list[str], excluded: list[str] | None = None) -> str:
    """A new MLflow run: nested under the model's run when it has one, else in experiment
    ``seqablate-evaluate``; params = the evaluation config, metrics, the tables as artifacts."""
    from seqablate import tracking
    from seqablate.config import flatten

    source = _source_run(model_ref, uri)
    if source is not None:
        parent = tracking.run_info(source, tracking_uri=uri)
        experiment_id, tags = parent.info.experiment_id, {tracking.TAG_PARENT: source}
    else:
        experiment_id = tracking.get_or_create_experiment(uri, "seqablate-evaluate")
        tags = {}
    tags.update({tracking.TAG_KIND: "evaluation", "seqablate.model": str(model_ref),
                 "seqablate.cohort": str(cohort), "seqablate.partial_patients": str(len(partial)),
                 "seqablate.excluded_training": str(len(excluded or []))})
    run_id = tracking.create_run(uri, experiment_id, run_name=f"evaluate {cohort.name}", tags=tags)
    logger = tracking.RunLogger(uri, run_id)
    try:
        logger.log_params(flatten(cfg))
        logger.log_metrics(metrics)
        logger.log_artifact(out_dir, "eval")
        logger.finish()
    except BaseException as err:
        logger.fail(err)
        raise
    return run_id
