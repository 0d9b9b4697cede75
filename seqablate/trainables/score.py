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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqablate.config import TrialConfig, with_overrides


@dataclass
class ScoreResult:
    """What ``seqablate evaluate`` produced."""

    out: Path  # folder with the tables
    metrics: dict[str, float]
    table: str  # markdown, the paper's shape
    run_id: str | None  # the new MLflow run
    tracking_uri: str | None
    partial: list[str] = field(default_factory=list)  # patients scored on a subset of the sequences


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


def table_markdown(metrics: dict[str, float], conditions: list[str], policies: list[str | None]) -> str:
    """A paper-style table: a row per condition (and statistics policy), mAP (CI), max
    sensitivity, TP Dice, FROC mean, patients, in percent."""
    from seqablate import metric_names as mn

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
) -> ScoreResult:
    """Score ``model_ref`` on every labelled patient of ``cohort`` (see the module docstring).

    Raises ValueError naming the problem: an unresolvable model, a cohort without labelled
    patients, ``sequences`` the model does not know, an ``--out`` that is not seqablate's.
    """
    import torch

    from seqablate import folders, tracking
    from seqablate.sequences import canonical
    from seqablate.trainables.cohort import labelled, load_cached
    from seqablate.trainables.evaluate import evaluate_model, evaluation_conditions
    from seqablate.trainables.model_ref import load_model

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
    ecfg: TrialConfig = with_overrides(cfg, overrides)
    censor_always: tuple[str, ...] = ()
    if sequences:
        wanted = [canonical(s) for s in sequences]
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise ValueError(f"--sequences {unknown}: the model knows only {list(known)}")
        censor_always = tuple(s for s in known if s not in wanted)
    patients = load_cached(ecfg.data, progress=True)
    scored = labelled(patients)
    if not scored:
        raise ValueError(f"--cohort {cohort}: no labelled patient (no lesion masks); evaluate needs masks")
    ext = {name: load_cached(ecfg.data, cohort=path, progress=True) for name, path in (externals or {}).items()}
    partial = [p.patient_id for p in scored if not all(bool(x) for x in p.present)]
    conds = [(n, tuple(dict.fromkeys(censor_always + c))) for n, c in evaluation_conditions(ecfg)]
    if censor_always:
        conds = [(n, c) for n, c in conds if not set(c) >= set(known)]
    report = evaluate_model(deployed.net, ecfg, scored, externals=ext, device=dev,
                            norm_stats=deployed.norm_stats or None, conditions_override=conds)
    metrics = report.metrics
    policies = sorted({r.name.split(".")[0].partition("_")[2] or None for r in report.results}, key=lambda x: x or "")
    table = table_markdown(metrics, [n for n, _ in conds], policies)
    if partial:
        trained = "without" if cfg.train.dropout_p <= 0 else "with"
        table += (f"\n\n{len(partial)} of {len(scored)} patients lack a sequence and were scored on the "
                  f"sequences they have; the model was trained {trained} sequence dropout"
                  + (" (it never saw an input without all of them)" if trained == "without" else "")
                  + f": {', '.join(partial[:10])}{' ...' if len(partial) > 10 else ''}")
    folders.claim(out_dir, "evaluate", flag="--out")
    report.write_artifacts(out_dir)
    folders.write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True))
    folders.write_text_atomic(out_dir / "table.md", table + "\n")
    run_id = None
    if log:
        run_id = _log(uri, model_ref, cohort, ecfg, metrics, out_dir, partial)
    return ScoreResult(out_dir, metrics, table, run_id, uri if log else None, partial)


def _log(uri: str, model_ref: str, cohort: Path, cfg: TrialConfig, metrics: dict[str, float], out_dir: Path,
         partial: list[str]) -> str:
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
                 "seqablate.cohort": str(cohort), "seqablate.partial_patients": str(len(partial))})
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
