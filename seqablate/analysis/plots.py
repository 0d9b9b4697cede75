"""Report figures (matplotlib, Agg backend, PNG written atomically).

- :func:`plot_saliency_seeds`: cumulative saliency aggregate per sequence (or slice offset)
  over training, one panel per seed (the paper's Figures 5-8).
- :func:`plot_pr_curves`: precision-recall curves, one line per evaluation condition.
- :func:`plot_froc`: FROC curves (sensitivity vs false positives per patient).
- :func:`plot_objective_vs_params`: an HPO objective against each searched parameter.
- :func:`plot_overlay`: an axial slice with prediction and truth outlines in two colours
  (the paper's Figure 1), one panel per model/condition.
- :func:`plot_trial_time`: each trial's wall time as a stacked bar of its phases.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqablate.analysis.consistency import SaliencyTrace

#: Outline colours of the overlays: truth and prediction.
TRUTH_COLOUR = "#00e000"
PRED_COLOUR = "#ff2020"


def headless_pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in workers and CI
    import matplotlib.pyplot as plt

    return plt


def interval_yerr(estimate: float, interval: tuple[float, float], scale: float = 100.0) -> list[list[float]]:
    """matplotlib's ``yerr`` ``[[below], [above]]`` of an interval around ``estimate``, in units of
    ``scale``. A percentile-bootstrap interval need not contain a bias-corrected estimate; the arm
    on the side the interval does not reach is then drawn as 0 (matplotlib refuses negative
    error bars) and the table beside the plot keeps the interval's own ends."""
    lo, hi = interval
    return [[max(0.0, scale * (estimate - lo))], [max(0.0, scale * (hi - estimate))]]


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` via a temp file + rename (never a half-written PNG)."""
    plt = headless_pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def plot_saliency_seeds(
    traces: Mapping[str, SaliencyTrace], path: str | Path, *, title: str, ylabel: str = "cumulative saliency"
) -> Path:
    """One panel per seed (``traces``: seed label -> trace), one line per sequence/offset.

    Panels share the y axis so seeds are comparable at a glance. Raises ValueError when
    ``traces`` is empty.
    """
    if not traces:
        raise ValueError(f"{title}: no saliency traces to plot")
    plt = headless_pyplot()
    n = len(traces)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.4), sharey=True, squeeze=False)
    for ax, (seed, tr) in zip(axes.flat, traces.items(), strict=False):
        for j, name in enumerate(tr.names):
            ax.plot(tr.steps, tr.cumulative[:, j], label=name)
        ax.set_title(f"seed {seed}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel(ylabel, fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pr_curves(pr: pd.DataFrame, path: str | Path, *, title: str, maps: Mapping[str, float] | None = None) -> Path:
    """PR curves, one step line per ``condition`` (``pr`` columns: condition, precision, recall).

    ``maps`` (condition -> mAP) labels the legend. Raises ValueError on missing columns.
    """
    need = {"condition", "precision", "recall"}
    if not need <= set(pr.columns):
        raise ValueError(f"{title}: PR table lacks columns {sorted(need - set(pr.columns))}")
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4))
    for cond, sub in pr.groupby("condition", sort=False):
        sub = sub.sort_values("recall", kind="stable")
        label = str(cond)
        if maps and cond in maps:
            label += f" (mAP {100 * maps[cond]:.1f})"
        ax.step(sub["recall"], sub["precision"], where="post", label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (lesion sensitivity)")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_froc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *, title: str) -> Path:
    """FROC curves: ``curves`` maps a condition to (FP per patient, sensitivity)."""
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4))
    for cond, (fp, sens) in curves.items():
        if len(fp):
            ax.step(fp, sens, where="post", label=str(cond))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per patient")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=9)
    if curves:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_objective_vs_params(frame: pd.DataFrame, objective: str, params: Sequence[str], path: str | Path) -> Path:
    """One panel per searched param: objective against its value (log x for wide ranges)."""
    if not params:
        raise ValueError("no searched parameters to plot")
    plt = headless_pyplot()
    cols = min(len(params), 3)
    rows = int(np.ceil(len(params) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), sharey=True, squeeze=False)
    y = frame[objective].to_numpy(dtype=float)
    for ax, p in zip(axes.flat, params, strict=False):
        x = frame[p]
        numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
        if numeric:
            xs = x.to_numpy(dtype=float)
            ax.scatter(xs, y, s=14)
            pos = xs[np.isfinite(xs)]
            if len(pos) and pos.min() > 0 and pos.max() / pos.min() >= 100:
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v in x})
            xi = np.array([cats.index(str(v)) for v in x], dtype=float)
            jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(xi))
            ax.scatter(xi + jitter, y, s=14)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=7)
        ax.set_title(p, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    axes[0, 0].set_ylabel(objective, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_overlay(
    background: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """Figure-1-style overlays: one panel per prediction, truth and prediction outlined.

    ``background`` float[H, W] (an axial slice of one sequence), ``truth`` bool[H, W],
    ``predictions``: label -> bool[H, W] (binary prediction of that model/condition). Truth is
    outlined in green, prediction in red. Raises ValueError on shape mismatches.
    """
    shape = np.shape(background)
    for name, arr in [("truth", truth), *predictions.items()]:
        if np.shape(arr) != shape:
            raise ValueError(f"{title}: {name} has shape {np.shape(arr)}, background {shape}")
    plt = headless_pyplot()
    n = max(len(predictions), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (label, pred) in zip(axes.flat, predictions.items(), strict=False):
        # Transpose: arrays are [X, Y] in RAS; imshow wants rows = anterior-posterior.
        ax.imshow(np.asarray(background, dtype=float).T, cmap="gray", origin="lower")
        if np.any(truth):
            ax.contour(np.asarray(truth, dtype=float).T, levels=[0.5], colors=TRUTH_COLOUR, linewidths=1.0)
        if np.any(pred):
            ax.contour(np.asarray(pred, dtype=float).T, levels=[0.5], colors=PRED_COLOUR, linewidths=1.0)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{title} (truth green, prediction red)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_consistency(rows: Sequence[tuple[str, float, float]], path: str | Path) -> Path:
    """Bar chart of the across-seed spread of saliency shares per configuration.

    ``rows``: (configuration label, spread, Kendall's W). Lower spread = more consistent.
    """
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(rows) + 1), 3.2))
    labels = [r[0] for r in rows]
    ax.bar(range(len(rows)), [r[1] for r in rows], color="#4472c4")
    for i, r in enumerate(rows):
        ax.text(i, r[1], f"W={r[2]:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("across-seed std of saliency shares", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_trial_time(timing: Mapping[str, Mapping[str, float]], path: str | Path, *, phases: Sequence[str],
                    max_runs: int = 60) -> Path:
    """One horizontal bar per trial (``timing``: run name -> seconds per phase), stacked in the
    order of ``phases`` (a phase a run lacks counts 0; same colour for a phase in every bar), so
    each bar's length is the trial's wall time. The ``max_runs`` longest trials are drawn, in
    the order given (a note in the title says how many were left out). Raises ValueError when
    ``timing`` is empty."""
    if not timing:
        raise ValueError("no timed trials to plot")
    names = list(timing)
    if len(names) > max_runs:
        keep = set(sorted(names, key=lambda n: -sum(timing[n].get(p, 0.0) for p in phases))[:max_runs])
        names = [n for n in names if n in keep]
    plt = headless_pyplot()
    # Tall enough for the legend (one line per phase) however few trials there are.
    fig, ax = plt.subplots(figsize=(8.0, max(1.2 + 0.32 * len(names), 0.8 + 0.2 * len(phases))))
    cmap = plt.get_cmap("tab20")
    y = np.arange(len(names))
    left = np.zeros(len(names))
    for i, p in enumerate(phases):
        width = np.array([float(timing[n].get(p, 0.0)) for n in names])
        ax.barh(y, width, left=left, height=0.7, color=cmap(i % 20), label=p)
        left += width
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()  # the first trial on top, as in the tables
    ax.set_xlabel("seconds of wall time", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    left_out = len(timing) - len(names)
    ax.set_title("Where each trial's time went" + (f" ({left_out} shorter trials not shown)" if left_out else ""),
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
