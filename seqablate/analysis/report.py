"""A study's report: findings, tables, HPO, a multi-objective study's Pareto front, consistency,
figures and where the trials' time went -> report.md + report.html.

:func:`build_document` assembles the report from a :class:`~seqablate.analysis.study.StudyRuns`
(pure apart from reading metric histories and artifacts); :func:`write_report` writes
``report.md``, ``report.html`` and ``figures/*.png`` into a fresh folder that replaces the old
one in one rename, and logs it as the ``report/`` artifact of the study's parent run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from seqablate.analysis.cohort_sweep import sweep_blocks
from seqablate.analysis.document import Document, Figure, Frame, Heading, PaperTable, Paragraph
from seqablate.analysis.figures import best_runs, evaluation_figures
from seqablate.analysis.findings import RULES, build_findings
from seqablate.analysis.hpo import OBJECTIVES, summarize_hpo
from seqablate.analysis.pareto import PARETO_PNG, compute_front, pareto_blocks, tag_front
from seqablate.analysis.runs import (
    Run,
    group_by_config,
    study_censored,
    study_sequences,
    timed_runs,
    timing_summary,
)
from seqablate.analysis.scaling import scaling_blocks
from seqablate.analysis.shapley import shapley_blocks
from seqablate.analysis.study import StudyRuns, load_study
from seqablate.analysis.tables import build_tables, row_order
from seqablate.analysis.traces import collect_traces, consistency_comparisons, consistency_frame
from seqablate.tracking.names import TAG_OBJECTIVE

FORMATS = ("html", "md")
#: The forest plot of the findings, under the report's figures/ folder.
FOREST_PNG = "findings_forest.png"
#: Each trial's time by phase, under figures/ (only when some run logged its time).
TIME_PNG = "trial_time.png"


def _is_search(data: StudyRuns) -> bool:
    space = data.space or {}
    return space.get("kind") == "search" or "hpo" in str(space.get("name") or "")


def build_document(
    data: StudyRuns, figdir: Path, *, progress: bool = True, overlays: bool = True, max_configs: int = 12
) -> Document:
    """The whole report as a :class:`Document`; figures are written into ``figdir``. Every
    run's evaluation tables are downloaded once, for the findings and the tables' intervals."""
    from seqablate.analysis.detections import StudyDetections

    with StudyDetections(data) as detections:
        return _document(data, figdir, detections, progress=progress, overlays=overlays, max_configs=max_configs)


def _document(
    data: StudyRuns, figdir: Path, detections: Any, *, progress: bool, overlays: bool, max_configs: int
) -> Document:
    """The report, section by section (each ``_*_section`` returns its blocks). What the
    sections computed and the caller reads back (findings, tables, the Pareto front) is set on
    ``data`` here, in one place."""
    from tqdm.auto import tqdm

    figdir.mkdir(parents=True, exist_ok=True)
    runs = data.runs
    doc = Document(f"seqablate study report: {data.name}")
    doc.add(*_overview(data))
    groups = sorted(group_by_config(runs), key=row_order)
    traces = collect_traces(data, groups, progress=progress)
    censored = study_censored(runs)
    best = best_runs(runs)
    found = build_findings(data, runs, traces, detections=detections)
    tables = build_tables(runs, intervals=detections.mean_interval, baselines=data.baselines)
    front = compute_front(runs)
    data.findings, data.tables, data.pareto = found, tables, front
    sections = (
        lambda: _findings_section(found, figdir),
        lambda: _tables_section(runs, tables, figdir, detections, censored),
        lambda: _search_section(data, front, figdir, detections),
        lambda: _saliency_section(traces, figdir, max_configs),
        lambda: _curves_section(data, best, figdir),
        lambda: _overlay_section(data, best, figdir, censored, overlays),
        lambda: [Heading("Trial time"), *time_blocks(runs, figdir)],
    )
    for section in tqdm(sections, desc="report", disable=not progress, leave=False):
        doc.add(*section())
    return doc


def _overview(data: StudyRuns) -> list[Any]:
    """The study in two paragraphs: its runs and their states, sequences, where the runs are,
    and the provenance."""
    runs = data.runs
    statuses = pd.Series([r.status for r in runs]).value_counts().to_dict() if runs else {}
    return [
        Paragraph(
            f"Study `{data.name}`: {len(runs)} trial runs ("
            + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + f"); sequences "
            f"{', '.join(study_sequences(runs))}. Tracking URI `{data.tracking_uri}`, parent run "
            f"`{data.parent_run_id}`. Open the runs with `mlflow ui --backend-store-uri {data.tracking_uri}`."
        ),
        Paragraph(provenance(runs)),
    ]


def _findings_section(found: Sequence[Any], figdir: Path) -> list[Any]:
    """Findings: the paper's claims as paired differences with both intervals, a forest plot."""
    blocks: list[Any] = [Heading("Findings")]
    if not found:
        return [*blocks, Paragraph("No configuration was trained both without and with sequence dropout; "
                                   "the paper's claims compare such pairs.")]
    from seqablate.analysis.forest import findings_table, plot_forest

    forest = plot_forest(found, figdir / FOREST_PNG)
    if forest is not None:
        blocks.append(Figure(forest, "Forest plot of the findings: every claim's paired difference (mAP points) with "
                                     "the interval of these trained networks and of the training recipe, under both "
                                     "statistics policies"))
    blocks.append(Frame(findings_table(found), "The findings under the configured statistics policy."))
    blocks.append(Paragraph(
        "Each part of the paper's finding, tested on this study's runs: paired differences of pooled "
        "lesion-level mAP over the same patients (test or external). Two intervals are given: 'these "
        "trained networks' resamples patients with the seeds fixed (it says nothing about a new seed); "
        "'the training recipe' adds the seed-to-seed variance (seed as a random factor, t quantiles "
        "with Welch-Satterthwaite degrees of freedom; needs >= 3 seeds per configuration) and decides "
        "the verdicts. Each claim is a one-sided test of the claim against its margin; Holm's procedure "
        "runs over the claims of one comparison, and each interval is shown at its claim's Holm-adjusted "
        f"level (1 - 2 alpha_i). Rules: {RULES.describe()}. (d) is an exact one-sided permutation test "
        "over seeds."
    ))
    blocks += [Paragraph(f.text) for f in found]
    return blocks


def _tables_section(runs: Sequence[Run], tables: Sequence[Any], figdir: Path, detections: Any,
                    censored: str) -> list[Any]:
    """The paper's tables, then (when the study has them) Shapley values, learning curves and
    the censoring cost across cohorts."""
    blocks: list[Any] = [Heading("Tables (paper section V)"), *(PaperTable(t) for t in tables)]
    for heading, extra in (
        ("How much each sequence contributes (Shapley values)", shapley_blocks(runs, figdir, detections)),
        ("How results scale with training data", scaling_blocks(runs, figdir, detections)),
        (f"Across cohorts: the cost of censoring {censored}", sweep_blocks(runs, figdir, detections, censored)),
    ):
        if extra:
            blocks += [Heading(heading), *extra]
    return blocks


def _search_section(data: StudyRuns, front: Any, figdir: Path, detections: Any) -> list[Any]:
    """A search's best trials, parameter importances and objective plots; a multi-objective
    study's Pareto front (validation) with the test numbers beside it."""
    from seqablate.analysis.plots import plot_objective_vs_params

    runs = data.runs
    blocks: list[Any] = []
    if _is_search(data):
        blocks.append(Heading("Hyperparameter search"))
        summary = summarize_hpo(runs)
        if summary is None:
            blocks.append(Paragraph("No finished trial logged an objective (" + ", ".join(OBJECTIVES) + ")."))
        else:
            # What the trials selected by, in words, when they agree (the objective.definition tag).
            defs = sorted({r.tags[TAG_OBJECTIVE] for r in runs if r.usable and r.tags.get(TAG_OBJECTIVE)})
            what = f": {defs[0]}" if len(defs) == 1 and summary.objective in OBJECTIVES[:2] else ""
            blocks.append(Frame(summary.best, f"Best trials by {summary.objective}{what} (of {len(summary.frame)} finished)."))
            if summary.importances:
                imp = pd.DataFrame({"parameter": list(summary.importances), "importance": list(summary.importances.values())})
                blocks.append(Frame(imp, "Optuna fANOVA parameter importances for the objective (sum to 1)."))
            else:
                blocks.append(Paragraph("Parameter importances need two or more finished trials with a varying parameter."))
            path = plot_objective_vs_params(summary.frame, summary.objective, summary.params, figdir / "hpo_objective.png")
            blocks.append(Figure(path, f"{summary.objective} against each searched parameter"))
    if front is not None:
        blocks += [Heading("Multi-objective search: the Pareto front"), *pareto_blocks(front, figdir, detections)]
    return blocks


def _saliency_section(traces: Sequence[Any], figdir: Path, max_configs: int) -> list[Any]:
    """Saliency and multi-seed consistency: the spread and Kendall's W table, comparisons, and
    the per-seed saliency figures of the first ``max_configs`` configurations."""
    from seqablate.analysis.plots import plot_consistency, plot_saliency_seeds

    blocks: list[Any] = [Heading("Saliency and multi-seed consistency")]
    if not traces:
        return [*blocks, Paragraph("No run logged saliency traces (train.saliency_every = 0?).")]
    frame = consistency_frame(traces)
    if frame.empty:
        blocks.append(Paragraph("Consistency needs two or more seeds of a configuration with saliency traces; none has."))
    else:
        blocks.append(Frame(frame, (
            "Per configuration: spread = mean over training of the across-seed std of each sequence's "
            "share of cumulative saliency (0 = all seeds learn identically); Kendall's W of the seeds' "
            "sequence rankings by final cumulative saliency (1 = identical rankings); mean final shares."
        )))
        blocks += [Paragraph(line) for line in consistency_comparisons(traces)]
        bars = [(st.group.label, st.consistency.spread, st.consistency.kendall_w) for st in traces if st.consistency]
        blocks.append(Figure(plot_consistency(bars, figdir / "consistency.png"),
                             "Across-seed spread of saliency shares per configuration"))
    for i, st in enumerate(traces[:max_configs]):
        for kind, title in (("sequence", "per sequence"), ("slice", "per slice offset")):
            seeds = getattr(st, kind)
            if seeds:
                path = plot_saliency_seeds(
                    dict(sorted(seeds.items())), figdir / f"saliency_{kind}_{i}.png",
                    title=f"{st.group.label}: cumulative saliency {title}",
                )
                blocks.append(Figure(path, f"Cumulative saliency aggregate {title}, one panel per seed: {st.group.label}"))
    if len(traces) > max_configs:
        blocks.append(Paragraph(f"Saliency figures shown for the first {max_configs} of {len(traces)} configurations."))
    return blocks


def _curves_section(data: StudyRuns, best: dict[str, Run], figdir: Path) -> list[Any]:
    """PR and FROC curves of the best full-protocol models."""
    blocks: list[Any] = [Heading("Evaluation curves")]
    if not best:
        blocks.append(Paragraph("No finished full-protocol run; no curves."))
    with tempfile.TemporaryDirectory(prefix="seqablate-report-") as tmp:
        for label, run in best.items():
            figs, notes = evaluation_figures(data, run, label, figdir, Path(tmp))
            blocks += [*figs, *(Paragraph(n) for n in notes)]
    return blocks


def _overlay_section(data: StudyRuns, best: dict[str, Run], figdir: Path, censored: str, overlays: bool) -> list[Any]:
    """Predictions of the best models on one test patient, with all sequences and with
    ``censored`` censored (they need the model artifact and the cohort)."""
    blocks: list[Any] = [Heading(f"Predictions with all sequences and with {censored} censored")]
    if not (overlays and best):
        return [*blocks, Paragraph("Overlays not drawn (" + ("disabled" if not overlays else "no best model") + ").")]
    from seqablate.analysis.overlays import overlay_figures

    figs, notes = overlay_figures(data, list(best.items()), figdir, censored)
    return [*blocks, *figs, *(Paragraph(n) for n in notes)]


def time_blocks(runs: Sequence[Run], figdir: Path) -> list[Any]:
    """The trial-time section: a stacked bar of each finished trial's phases
    (:data:`TIME_PNG`) and the study's seconds per phase with their shares; a note instead
    when no run logged ``time.*`` (runs of a seqablate that did not time trials)."""
    from seqablate.analysis.plots import plot_trial_time
    from seqablate.analysis.runs import timing_columns

    timed = timed_runs(runs)
    if not timed:
        return [Paragraph("No finished run logged its time per phase (`time.*` metrics: runs of an older "
                          "seqablate); no timeline.")]
    phases = [c for c in timing_columns() if c != "total"]
    path = plot_trial_time(timed, figdir / TIME_PNG, phases=phases)
    table = timing_summary(runs)
    table["share"] = [f"{100 * v:.1f} %" if v == v else "-" for v in table["share"]]
    table = table.rename(columns={"seconds": "seconds (all trials)", "median_s": "median trial (s)"})
    return [
        Figure(path, "Each trial's wall time by phase (seconds): start-up (driver start to the first optimiser "
                     "step, less data loading), data, training batches, optimiser steps, saliency, validation, "
                     "per-subset statistics, evaluation, bootstrap, checkpoints, logging, and the rest"),
        Frame(table.drop(columns=["runs"]),
              f"The study's time per phase, summed over its {len(timed)} timed trials, its share of their "
              "total, and the median trial's. A phase inside another is counted once (bootstrap is not in "
              "evaluation), so the phases and 'other' sum to 'total'.", floatfmt="{:.2f}"),
    ]


def provenance(runs: Sequence[Run]) -> str:
    """Which seqablate version and git commit trained the runs, and which wrote the report."""
    from seqablate.provenance import version_string

    def listed(tag: str) -> str:
        vals = sorted({r.tags.get(tag, "unknown") for r in runs}) or ["no runs"]
        return ", ".join(f"`{v}`" for v in vals)

    return (f"Trained with seqablate {listed('seqablate.version')} at commit {listed('git_commit')}; "
            f"this report by {version_string()}.")


def _default_out(data: StudyRuns) -> Path:
    if data.folder is not None:
        return data.folder / "report"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in data.name)
    return Path.cwd() / "seqablate-reports" / safe


@dataclass
class ReportResult:
    out: Path
    files: list[Path]
    logged: bool
    summary: str = ""  # the console's view: the paper's tables I-IV and VI, then the findings
    forest: Path | None = None  # the findings' forest plot (also under report/ in MLflow)
    pareto: Path | None = None  # a multi-objective study's Pareto front (also under report/ in MLflow)


#: Paper tables shown in the console summary.
SUMMARY_TABLES = ("I", "II", "III", "IV", "VI")


def summary_text(data: StudyRuns) -> str:
    """Markdown tables (those of :data:`SUMMARY_TABLES` that are available), then one line per
    finding."""
    from seqablate.analysis.render import table_markdown

    parts = [table_markdown(t) for t in data.tables if t.available and t.id.split(".")[0] in SUMMARY_TABLES]
    parts.append("Findings (paired differences; intervals of these trained networks and of the training recipe "
                 "at each claim's Holm-adjusted level; verdicts from the recipe interval):")
    parts += [f.text for f in data.findings] or ["no configuration pair without / with dropout in this study"]
    return "\n\n".join(parts)


def write_report(
    study: str,
    *,
    out: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
    tracking_uri: str | None = None,
    progress: bool = True,
    overlays: bool = True,
    log: bool = True,
) -> ReportResult:
    """Write the report of STUDY into ``out`` (replaced as a whole) and log it to MLflow.

    ``formats``: any of 'html', 'md' (ValueError on others). Returns the folder and the
    report files (``report.html`` first when written).
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"--format: unknown {bad or 'empty'}; choose from {list(FORMATS)}")
    from seqablate import folders

    if out is not None:  # refuse before anything is read or built
        folders.check_replaceable(out, "report", flag="--out")
    data = load_study(study, tracking_uri=tracking_uri)
    target = Path(out) if out is not None else _default_out(data)
    flag = "--out" if out is not None else "the report folder"
    folders.check_replaceable(target, "report", flag=flag)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise folders.OutputRefused(f"{flag} {target}: a parent of this path is a file, not a folder") from None
    folders.sweep_temp(target.parent)
    tmp = target.parent / folders.temp_name(f"report-{target.name}")
    tmp.mkdir()
    try:
        doc = build_document(data, tmp / "figures", progress=progress, overlays=overlays)
        written = []
        if "html" in formats:
            (tmp / "report.html").write_text(doc.html(), encoding="utf-8")
            written.append("report.html")
        if "md" in formats:
            (tmp / "report.md").write_text(doc.markdown(tmp), encoding="utf-8")
            written.append("report.md")
        for png in (FOREST_PNG, PARETO_PNG):  # beside the report too: the study's one-look summaries
            if (tmp / "figures" / png).is_file():
                shutil.copyfile(tmp / "figures" / png, tmp / png)
        if "md" not in formats:  # figures are embedded in the HTML; keep the folder lean
            shutil.rmtree(tmp / "figures", ignore_errors=True)
        folders.replace_own_dir(tmp, target, "report", flag=flag)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logged = False
    if log:
        from seqablate import tracking

        tracking.log_report(data.parent_run_id, target, tracking_uri=data.tracking_uri)
        if data.pareto is not None and data.pareto.points:
            # The runs' pareto tags follow the front the report shows (as `study run` left them,
            # or anew for runs a resumed study added since).
            tag_front(data.pareto, data.tracking_uri)
        logged = True
    forest, pareto = target / FOREST_PNG, target / PARETO_PNG
    return ReportResult(target, [target / f for f in written], logged, summary_text(data),
                        forest if forest.is_file() else None, pareto if pareto.is_file() else None)
