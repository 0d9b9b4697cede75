"""PR and FROC figures of a study's best models, drawn from their logged evaluation artifacts.

Each trial logs ``eval/pr_curves.csv`` and ``eval/froc.csv`` (:mod:`seqablate.metric_names`);
the figures plot those curves as logged, so a figure always matches the run's ``mAP`` and
``froc_mean``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from seqablate import metric_names as mn
from seqablate import tracking
from seqablate.analysis.document import Figure
from seqablate.analysis.runs import Run, study_sequences
from seqablate.analysis.study import StudyRuns

#: Validation scores a seed is picked by, first found first: the objective the trial selected
#: its checkpoint by, then its first name (runs logged before it had its own).
SELECTION_KEYS: tuple[str, ...] = (mn.VAL_BEST_OBJECTIVE, mn.VAL_BEST)


def best_runs(runs: Sequence[Run], key: str | None = None) -> dict[str, Run]:
    """The finished full-protocol run without and with dropout whose *validation* score
    ``key`` (default: the first of :data:`SELECTION_KEYS` the candidates logged) is best (a
    seed picked on test would flatter every figure drawn from it); runs that logged no such
    score fall back to the lowest seed."""
    seqs = study_sequences(runs)
    out: dict[str, Run] = {}
    for label, want_dropout in (("no dropout", False), ("dropout", True)):
        cands = [r for r in runs if r.usable and r.sequences == seqs and r.has_dropout == want_dropout]
        if not cands:
            continue
        for k in (key,) if key else SELECTION_KEYS:
            scored = [r for r in cands if k in r.metrics and not math.isnan(r.metrics[k])]
            if scored:
                out[label] = max(scored, key=lambda r, k=k: r.metrics[k])
                break
        else:
            out[label] = min(cands, key=lambda r: str(r.seed))
    return out


def _find_artifacts(data: StudyRuns, run_id: str, stem: str, depth: int = 2) -> list[str]:
    """Artifact paths named ``<stem>.csv`` or under a ``<stem>/`` folder (CSV), to ``depth``."""
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


def _condition_maps(run: Run, conditions: Sequence[str]) -> dict[str, float]:
    return {c: run.metrics[k] for c in conditions for k in (f"test.{c}.mAP", f"{c}.mAP") if k in run.metrics}


def evaluation_figures(data: StudyRuns, run: Run, label: str, figdir: Path, tmp: Path) -> tuple[list[Figure], list[str]]:
    """PR and FROC figures of one run from its ``pr_curves`` and ``froc`` artifacts.

    Returns the figures and notes for what could not be drawn (runs logged before an
    artifact existed, or an unreadable artifact store).
    """
    from seqablate.analysis.plots import plot_froc, plot_pr_curves

    figs: list[Figure] = []
    notes: list[str] = []
    safe = "".join(ch if ch.isalnum() else "_" for ch in label)
    pr = _read_csvs(data, run.run_id, _find_artifacts(data, run.run_id, Path(mn.PR_CSV).stem), tmp)
    if not pr.empty:
        pr["condition"] = pr["condition"].map(_short_condition)
        maps = _condition_maps(run, list(pr["condition"].unique()))
        path = plot_pr_curves(pr, figdir / f"pr_{safe}.png", title=f"PR curves: {run.name}", maps=maps)
        figs.append(Figure(path, f"Precision-recall per evaluation condition, best {label} model ({run.name})"))
    else:
        notes.append(f"{run.name}: no {mn.PR_CSV} artifact; PR curves not drawn")
    fr = _read_csvs(data, run.run_id, _find_artifacts(data, run.run_id, Path(mn.FROC_CSV).stem), tmp)
    if not fr.empty and {"fps_per_patient", "sensitivity"} <= set(fr.columns):
        curves = {
            _short_condition(str(cond)): (sub["fps_per_patient"].to_numpy(float), sub["sensitivity"].to_numpy(float))
            for cond, sub in fr.groupby("condition", sort=False)
        }
        path = plot_froc(curves, figdir / f"froc_{safe}.png", title=f"FROC: {run.name}")
        figs.append(Figure(path, f"FROC per evaluation condition, best {label} model ({run.name})"))
    else:
        notes.append(f"{run.name}: no {mn.FROC_CSV} artifact; FROC not drawn")
    return figs, notes
