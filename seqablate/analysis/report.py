"""A study's report: tables, consistency, HPO and figures -> report.md + report.html.

:func:`load_study` reads the trial runs (and the search space) back through
:mod:`seqablate.tracking`; :func:`build_document` assembles the report (pure apart from
reading metric histories and artifacts); :func:`write_report` writes ``report.md``,
``report.html`` and ``figures/*.png`` into a fresh folder that replaces the old one in one
rename, and logs it as the ``report/`` artifact of the study's parent run.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seqablate.analysis.consistency import (
    Consistency,
    SaliencyTrace,
    consistency,
    trace_from_history,
)
from seqablate.analysis.document import Document, Figure, Frame, Heading, PaperTable, Paragraph
from seqablate.analysis.findings import RULES, build_findings
from seqablate.analysis.hpo import summarize_hpo
from seqablate.analysis.runs import (
    ConfigGroup,
    Run,
    group_by_config,
    runs_from_frame,
    study_sequences,
    twin_key,
)
from seqablate.analysis.tables import CENSORED, build_tables, row_order

FORMATS = ("html", "md")


@dataclass
class StudyRuns:
    """What the report reads from MLflow about one study."""

    name: str
    tracking_uri: str
    parent_run_id: str
    runs: list[Run]
    space: dict[str, Any] | None = None  # the parent run's space.json, when logged
    folder: Path | None = None  # the study folder when STUDY was one
    findings: list[Any] = field(default_factory=list)  # filled by build_document
    tables: list[Any] = field(default_factory=list)  # filled by build_document

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        from seqablate import tracking

        return tracking.metric_history(run_id, key, tracking_uri=self.tracking_uri)


def load_study(study: str, *, tracking_uri: str | None = None) -> StudyRuns:
    """Resolve STUDY (folder, experiment name, or parent/trial run id) and read its trials.

    Raises ValueError (from :func:`seqablate.tracking.resolve_study`) naming what was tried.
    """
    from seqablate import tracking

    ref = tracking.resolve_study(study, tracking_uri)
    c = tracking.client(ref.tracking_uri)
    parent = c.get_run(ref.parent_run_id)
    name = parent.data.tags.get(tracking.TAG_STUDY) or parent.info.run_name or study
    runs = runs_from_frame(tracking.list_trials(ref))
    space = None
    with contextlib.suppress(Exception):  # older studies / other tools: no space.json
        import json

        tmp = tempfile.mkdtemp(prefix="seqablate-space-")
        try:
            p = tracking.download_artifact(ref.parent_run_id, "space.json", tmp, tracking_uri=ref.tracking_uri)
            space = json.loads(Path(p).read_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    folder = Path(study) if Path(study).is_dir() else None
    return StudyRuns(str(name), ref.tracking_uri, ref.parent_run_id, runs, space, folder)


# ----------------------------------------------------------------------------- saliency


def run_traces(data: StudyRuns, run: Run, kind: str) -> SaliencyTrace | None:
    """A run's cumulative saliency trace of ``kind`` ('sequence' | 'slice'), or None."""
    prefixes = (f"saliency.cumulative.{kind}.", f"saliency.{kind}.")
    keys = [k for k in run.metrics if k.startswith(prefixes)]
    if not keys:
        return None
    cumulative = [k for k in keys if k.startswith(prefixes[0])]
    history = {k: data.history(run.run_id, k) for k in (cumulative or keys)}
    return trace_from_history(history, kind, order=run.sequences if kind == "sequence" else None)


@dataclass
class SeedTraces:
    """Saliency traces of one configuration, by seed."""

    group: ConfigGroup
    sequence: dict[str, SaliencyTrace] = field(default_factory=dict)
    slice: dict[str, SaliencyTrace] = field(default_factory=dict)
    consistency: Consistency | None = None


def collect_traces(data: StudyRuns, groups: Sequence[ConfigGroup], *, progress: bool = True) -> list[SeedTraces]:
    """Saliency traces (sequence and slice) of every finished run, grouped by configuration."""
    from tqdm.auto import tqdm

    out = []
    todo = [(g, r) for g in groups for r in g.usable if any(k.startswith("saliency.") for k in r.metrics)]
    bar = tqdm(total=len(todo), desc="saliency traces", disable=not progress or not todo, leave=False)
    by_group: dict[int, SeedTraces] = {}
    for g, r in todo:
        st = by_group.setdefault(id(g), SeedTraces(g))
        for kind in ("sequence", "slice"):
            tr = run_traces(data, r, kind)
            if tr is not None:
                getattr(st, kind)[r.seed] = tr
        bar.update(1)
    bar.close()
    for g in groups:
        st = by_group.get(id(g))
        if st is None:
            continue
        if len(st.sequence) >= 2:
            with contextlib.suppress(ValueError):
                st.consistency = consistency(list(st.sequence.values()))
        out.append(st)
    return out


def consistency_frame(traces: Sequence[SeedTraces]) -> pd.DataFrame:
    """One row per configuration with >= 2 seeds: spread, Kendall's W, mean final shares."""
    rows = []
    for st in traces:
        c = st.consistency
        if c is None:
            continue
        row: dict[str, Any] = {
            "configuration": st.group.label,
            "seeds": c.n_seeds,
            "spread (std of shares)": c.spread,
            "Kendall's W": c.kendall_w,
        }
        for name, share in c.mean_final_shares.items():
            row[f"share {name}"] = share
        rows.append(row)
    return pd.DataFrame(rows)


def _consistency_comparisons(traces: Sequence[SeedTraces]) -> list[str]:
    """Sentences comparing each dropout configuration with its no-dropout twin."""
    by_twin: dict[tuple, list[SeedTraces]] = {}
    for st in traces:
        if st.consistency is not None:
            by_twin.setdefault(twin_key(st.group), []).append(st)
    lines = []
    for same in by_twin.values():
        base = [s for s in same if s.group.dropout_p == 0]
        if not base:
            continue
        b = base[0].consistency
        for s in same:
            if s.group.dropout_p == 0:
                continue
            d = s.consistency
            verdict = "more" if d.spread < b.spread else "less" if d.spread > b.spread else "equally"
            lines.append(
                f"{s.group.label}: spread {d.spread:.4f} vs {b.spread:.4f} without dropout, "
                f"Kendall's W {d.kendall_w:.3f} vs {b.kendall_w:.3f}: dropout training is {verdict} "
                "consistent across seeds (lower spread = more consistent)."
            )
    return lines


# ----------------------------------------------------------------------------- evaluation figures


def best_runs(runs: Sequence[Run], key: str = "test.full.mAP") -> dict[str, Run]:
    """The best finished full-protocol run without and with dropout, by ``key``."""
    seqs = study_sequences(runs)
    out: dict[str, Run] = {}
    for label, want_dropout in (("no dropout", False), ("dropout", True)):
        cands = [
            r for r in runs
            if r.usable and r.sequences == seqs and (r.dropout_p > 0) == want_dropout
            and key in r.metrics and not math.isnan(r.metrics[key])
        ]
        if cands:
            out[label] = max(cands, key=lambda r: r.metrics[key])
    return out


def _find_artifacts(data: StudyRuns, run_id: str, stem: str, depth: int = 2) -> list[str]:
    """Artifact paths named ``<stem>.csv`` or under a ``<stem>/`` folder (CSV), to ``depth``."""
    from seqablate import tracking

    found: list[str] = []

    def walk(path: str | None, d: int) -> None:
        try:
            items = tracking.list_artifacts(run_id, path, tracking_uri=data.tracking_uri)
        except Exception:  # noqa: BLE001 - an unreadable artifact store means: no figure
            return
        for it in items:
            name = it.rstrip("/").rsplit("/", 1)[-1]
            if it.endswith("/"):
                if name == stem:
                    found.extend(x for x in tracking.list_artifacts(run_id, it.rstrip("/"), tracking_uri=data.tracking_uri) if x.endswith(".csv"))
                elif d > 0 and name not in ("model", "checkpoint", "report"):
                    walk(it.rstrip("/"), d - 1)
            elif name == f"{stem}.csv":
                found.append(it)

    walk(None, depth)
    return found


def _read_csvs(data: StudyRuns, run_id: str, paths: list[str], tmp: Path) -> pd.DataFrame:
    from seqablate import tracking

    frames = []
    for p in paths:
        local = tracking.download_artifact(run_id, p, tmp / run_id, tracking_uri=data.tracking_uri)
        df = pd.read_csv(local)
        if "condition" not in df.columns:  # pr_curves/<condition>.csv
            df.insert(0, "condition", Path(p).stem)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _short_condition(cond: str) -> str:
    return cond[len("test."):] if cond.startswith("test.") else cond


def evaluation_figures(data: StudyRuns, run: Run, label: str, figdir: Path, tmp: Path) -> tuple[list[Figure], list[str]]:
    """PR and FROC figures of one run from its ``pr_curves`` / ``lesions`` artifacts."""
    from seqablate.analysis.plots import froc_points, plot_froc, plot_pr_curves

    figs: list[Figure] = []
    notes: list[str] = []
    safe = "".join(ch if ch.isalnum() else "_" for ch in label)
    pr = _read_csvs(data, run.run_id, _find_artifacts(data, run.run_id, "pr_curves"), tmp)
    if not pr.empty:
        pr["condition"] = pr["condition"].map(_short_condition)
        maps = {
            c: run.metrics[k]
            for c in pr["condition"].unique()
            for k in (f"test.{c}.mAP", f"{c}.mAP")
            if k in run.metrics
        }
        path = plot_pr_curves(pr, figdir / f"pr_{safe}.png", title=f"PR curves: {run.name}", maps=maps)
        figs.append(Figure(path, f"Precision-recall per evaluation condition, best {label} model ({run.name})"))
    else:
        notes.append(f"{run.name}: no pr_curves artifact; PR curves not drawn")
    les = _read_csvs(data, run.run_id, _find_artifacts(data, run.run_id, "lesions"), tmp)
    curves = {}
    if not les.empty and "score" in les.columns:
        for cond, sub in les.groupby("condition", sort=False):
            c = _short_condition(str(cond))
            n_truth = run.metrics.get(f"test.{c}.n_truth", run.metrics.get(f"{c}.n_truth"))
            n_pat = run.metrics.get(f"test.{c}.n_patients", run.metrics.get(f"{c}.n_patients"))
            if n_pat is None and "patient" in sub.columns:
                n_pat = sub["patient"].nunique()  # patients with >= 1 prediction (a lower bound)
            if n_truth and n_pat:
                fp, sens = froc_points(sub, int(n_truth), int(n_pat))
                curves[c] = (fp, sens.clip(max=1.0))
    if curves:
        path = plot_froc(curves, figdir / f"froc_{safe}.png", title=f"FROC: {run.name}")
        figs.append(Figure(path, f"FROC per evaluation condition, best {label} model ({run.name})"))
    else:
        notes.append(f"{run.name}: no lesions artifact with scores; FROC not drawn")
    return figs, notes


# ----------------------------------------------------------------------------- document


def _is_search(data: StudyRuns) -> bool:
    space = data.space or {}
    return space.get("kind") == "search" or "hpo" in str(space.get("name") or "")


def build_document(
    data: StudyRuns, figdir: Path, *, progress: bool = True, overlays: bool = True, max_configs: int = 12
) -> Document:
    """The whole report as a :class:`Document`; figures are written into ``figdir``."""
    from tqdm.auto import tqdm

    from seqablate.analysis.plots import (
        plot_consistency,
        plot_objective_vs_params,
        plot_saliency_seeds,
    )

    figdir.mkdir(parents=True, exist_ok=True)
    runs = data.runs
    doc = Document(f"seqablate study report: {data.name}")
    statuses = pd.Series([r.status for r in runs]).value_counts().to_dict() if runs else {}
    doc.add(Paragraph(
        f"Study `{data.name}`: {len(runs)} trial runs ("
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + f"); sequences "
        f"{', '.join(study_sequences(runs))}. Tracking URI `{data.tracking_uri}`, parent run "
        f"`{data.parent_run_id}`. Open the runs with `mlflow ui --backend-store-uri {data.tracking_uri}`."
    ))
    doc.add(Paragraph(provenance(runs)))
    steps = tqdm(total=6, desc="report", disable=not progress, leave=False)
    groups = sorted(group_by_config(runs), key=row_order)
    traces = collect_traces(data, groups, progress=progress)

    # 0. Findings: the paper's claims as paired differences with CIs
    doc.add(Heading("Findings"))
    found = build_findings(data, runs, traces)
    if found:
        doc.add(Paragraph(
            "Each part of the paper's finding, tested on this study's runs: paired differences of "
            "lesion-level mAP over the same test patients (patients resampled jointly, each seed's "
            "pooled mAP recomputed, seeds averaged), 95 % bootstrap CIs, in mAP points. Rules: "
            f"'close' = the CI lies within +-{100 * RULES['close']:.0f} points; 'most of the mAP' = "
            f"the CI's lower bound exceeds {100 * RULES['most']:.0f} % of the full-protocol mAP; "
            f"consistency needs a permutation p < {RULES['alpha']}."
        ))
        for f in found:
            doc.add(Paragraph(f.text))
    else:
        doc.add(Paragraph("No configuration was trained both without and with sequence dropout; "
                          "the paper's claims compare such pairs."))
    data.findings = found
    steps.update(1)

    # 1. Paper tables
    doc.add(Heading("Tables (paper section V)"))
    tables = build_tables(runs)
    data.tables = tables
    for t in tables:
        doc.add(PaperTable(t))
    steps.update(1)

    # 2. HPO
    if _is_search(data):
        doc.add(Heading("Hyperparameter search"))
        summary = summarize_hpo(runs)
        if summary is None:
            doc.add(Paragraph("No finished trial logged an objective (val.best_mAP, val.mAP or test.full.mAP)."))
        else:
            doc.add(Frame(summary.best, f"Best trials by {summary.objective} (of {len(summary.frame)} finished)."))
            if summary.importances:
                imp = pd.DataFrame({"parameter": list(summary.importances), "importance": list(summary.importances.values())})
                doc.add(Frame(imp, "Optuna fANOVA parameter importances for the objective (sum to 1)."))
            else:
                doc.add(Paragraph("Parameter importances need two or more finished trials with a varying parameter."))
            path = plot_objective_vs_params(summary.frame, summary.objective, summary.params, figdir / "hpo_objective.png")
            doc.add(Figure(path, f"{summary.objective} against each searched parameter"))
    steps.update(1)

    # 3. Saliency and consistency
    doc.add(Heading("Saliency and multi-seed consistency"))
    if not traces:
        doc.add(Paragraph("No run logged saliency traces (train.saliency_every = 0?)."))
    else:
        frame = consistency_frame(traces)
        if frame.empty:
            doc.add(Paragraph("Consistency needs two or more seeds of a configuration with saliency traces; none has."))
        else:
            doc.add(Frame(frame, (
                "Per configuration: spread = mean over training of the across-seed std of each sequence's "
                "share of cumulative saliency (0 = all seeds learn identically); Kendall's W of the seeds' "
                "sequence rankings by final cumulative saliency (1 = identical rankings); mean final shares."
            )))
            for line in _consistency_comparisons(traces):
                doc.add(Paragraph(line))
            bars = [(st.group.label, st.consistency.spread, st.consistency.kendall_w) for st in traces if st.consistency]
            doc.add(Figure(plot_consistency(bars, figdir / "consistency.png"), "Across-seed spread of saliency shares per configuration"))
        for i, st in enumerate(traces[:max_configs]):
            for kind, title in (("sequence", "per sequence"), ("slice", "per slice offset")):
                seeds = getattr(st, kind)
                if seeds:
                    path = plot_saliency_seeds(
                        dict(sorted(seeds.items())), figdir / f"saliency_{kind}_{i}.png",
                        title=f"{st.group.label}: cumulative saliency {title}",
                    )
                    doc.add(Figure(path, f"Cumulative saliency aggregate {title}, one panel per seed: {st.group.label}"))
        if len(traces) > max_configs:
            doc.add(Paragraph(f"Saliency figures shown for the first {max_configs} of {len(traces)} configurations."))
    steps.update(1)

    # 4. PR / FROC of the best models
    doc.add(Heading("Evaluation curves"))
    best = best_runs(runs)
    if not best:
        doc.add(Paragraph("No finished full-protocol run logged test.full.mAP; no curves."))
    with tempfile.TemporaryDirectory(prefix="seqablate-report-") as tmp:
        for label, run in best.items():
            figs, notes = evaluation_figures(data, run, label, figdir, Path(tmp))
            doc.add(*figs)
            for n in notes:
                doc.add(Paragraph(n))
    steps.update(1)

    # 5. Overlays (need the model artifact and the cohort)
    doc.add(Heading(f"Predictions with all sequences and with {CENSORED} censored"))
    if overlays and best:
        from seqablate.analysis.overlays import overlay_figures

        figs, notes = overlay_figures(data, list(best.items()), figdir)
        doc.add(*figs)
        for n in notes:
            doc.add(Paragraph(n))
    else:
        doc.add(Paragraph("Overlays not drawn (" + ("disabled" if not overlays else "no best model") + ")."))
    steps.update(1)
    steps.close()
    return doc


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


#: Paper tables shown in the console summary.
SUMMARY_TABLES = ("I", "II", "III", "IV", "VI")


def summary_text(data: StudyRuns) -> str:
    """Markdown tables (those of :data:`SUMMARY_TABLES` that are available), then one line per
    finding."""
    from seqablate.analysis.render import table_markdown

    parts = [table_markdown(t) for t in data.tables if t.available and t.id.split(".")[0] in SUMMARY_TABLES]
    parts.append("Findings (paired differences, 95 % bootstrap CIs over test patients):")
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
        logged = True
    return ReportResult(target, [target / f for f in written], logged, summary_text(data))
