"""Learning curves: test mAP against the number of training patients, per arm and condition.

A study that varies the training-set size (``data.train_patients`` / ``data.train_fraction``,
e.g. the ``data-scaling`` space) trains nested subsets of one training split with validation
and test fixed, so its configurations differ in size alone within an *arm* (every other
setting, e.g. dropout on/off). Each point is an arm's seed-mean test mAP at one size, with the
training recipe's 95 % interval (seed random; >= 3 seeds) or else that of these trained
networks (patients resampled), one panel per evaluation condition and external cohort. The x
of a point is the number of patients its trials trained on (``data.n_train``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqablate import metric_names as mn
from seqablate.analysis.runs import (
    Run,
    config_items,
    external_cohorts,
    group_by_config,
    logged_conditions,
)

#: The params that set a trial's training-set size.
SIZE_PARAMS = ("data.train_patients", "data.train_fraction")
LEARNING_PNG = "learning_curves.png"
#: Most panels drawn (conditions and external cohorts, in the tables' order).
MAX_PANELS = 6


@dataclass
class CurvePoint:
    """One arm at one training-set size under one condition (mAP as a fraction)."""

    arm: str  # the arm's label (its settings other than size)
    panel: str  # 'full', 'censor_t1_gre_post', ..., or 'external <cohort>'
    n_train: float  # patients trained on (mean over the seeds; equal for nested subsets)
    estimate: float
    seeds: int
    interval: tuple[float, float] | None = None
    kind: str = ""  # 'recipe' or 'networks' (which interval), '' for none


def _size(run: Run) -> tuple[str | None, ...]:
    return tuple(run.param(k) if run.param(k) not in (None, "None") else None for k in SIZE_PARAMS)


def varies_training_size(runs: Sequence[Run]) -> bool:
    """Whether the usable runs trained on more than one training-set setting."""
    return len({_size(r) for r in runs if r.usable}) > 1


def _arm_labels(runs: Sequence[Run]) -> dict[tuple, str]:
    """arm key (a run's configuration without its size) -> the arm's label, distinct per arm."""
    sizeless = [replace(r, params={k: v for k, v in r.params.items() if k not in SIZE_PARAMS}) for r in runs]
    return {g.key: g.label for g in group_by_config(sizeless)}


def _panels(runs: Sequence[Run]) -> list[tuple[str, str, str | None, str]]:
    """``(panel name, split, cohort, condition)`` of each condition and external cohort."""
    conds = logged_conditions(runs)
    # the full protocol, each sequence censored alone, then the external cohorts, then subsets:
    # with every subset evaluated (15 conditions for 4 sequences) the first panels stay these
    first = [c for c in conds if c == mn.FULL or c.startswith(mn.censor_condition(""))]
    out = [(c, "test", None, c) for c in first]
    out += [(f"external {c}", "external", c, "full") for c in external_cohorts(runs)]
    out += [(c, "test", None, c) for c in conds if c not in first]
    return out[:MAX_PANELS]


def learning_curves(runs: Sequence[Run], detections: Any = None) -> list[CurvePoint]:
    """Every arm's point at every size and panel (empty when the study does not vary the
    training-set size). Runs without ``data.n_train`` (older runs) are left out."""
    if not varies_training_size(runs):
        return []
    usable = [r for r in runs if r.usable and mn.N_TRAIN in r.metrics]
    out: list[CurvePoint] = []
    arms = _arm_labels(usable)
    for g in group_by_config(usable):
        label = arms[config_items(g.first, drop=SIZE_PARAMS)]
        n = float(np.mean([r.metrics[mn.N_TRAIN] for r in g.usable]))
        for panel, split, cohort, cond in _panels(usable):
            key = mn.metric_key(split, cond, "mAP", cohort=cohort)
            vals = [r.metrics.get(key) for r in g.usable]
            if any(v is None for v in vals):
                continue
            point = CurvePoint(label, panel, n, float(np.mean(vals)), len(vals))
            est = detections.mean_interval(g, lambda r, k=key: k) if detections is not None else None
            if est is not None:
                point.estimate = est.estimate
                if est.recipe is not None:
                    point.interval, point.kind = est.recipe, "recipe"
                elif all(math.isfinite(v) for v in est.networks):
                    point.interval, point.kind = est.networks, "networks"
            out.append(point)
    order = {panel: i for i, (panel, *_) in enumerate(_panels(usable))}
    return sorted(out, key=lambda p: (order[p.panel], p.arm, p.n_train))


def curves_table(points: Sequence[CurvePoint]) -> pd.DataFrame:
    """One row per arm and size, one column per panel: ``mAP % (interval)``."""
    def cell(p: CurvePoint) -> str:
        text = f"{100 * p.estimate:.1f}"
        if p.interval is not None:
            text += f" ({100 * p.interval[0]:.1f}, {100 * p.interval[1]:.1f})" + ("" if p.kind == "recipe" else " †")
        return text

    rows: dict[tuple[str, float], dict[str, Any]] = {}
    for p in points:
        row = rows.setdefault((p.arm, p.n_train), {"arm": p.arm, "training patients": f"{p.n_train:g}",
                                                   "seeds": p.seeds})
        row[p.panel] = cell(p)
    return pd.DataFrame(list(rows.values()))


def plot_learning_curves(points: Sequence[CurvePoint], path: str | Path) -> Path:
    """One panel per condition / external cohort: mAP % against training patients, a line per
    arm, the interval as error bars (solid: training recipe; dashed: these networks). Raises
    ValueError without points."""
    from seqablate.analysis.plots import headless_pyplot, interval_yerr, save_figure

    if not points:
        raise ValueError("no learning-curve points to plot")
    plt = headless_pyplot()
    panels = list(dict.fromkeys(p.panel for p in points))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows + 0.5), squeeze=False)
    arms = list(dict.fromkeys(p.arm for p in points))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, panels, strict=False):
        for j, arm in enumerate(arms):
            pts = sorted((p for p in points if p.panel == panel and p.arm == arm), key=lambda p: p.n_train)
            if not pts:
                continue
            x = np.array([p.n_train for p in pts])
            y = np.array([100 * p.estimate for p in pts])
            color = colors[j % len(colors)]
            ax.plot(x, y, marker="o", ms=4, color=color, label=arm)
            for p in pts:
                if p.interval is not None:
                    eb = ax.errorbar(p.n_train, 100 * p.estimate, color=color, capsize=3, lw=1,
                                     yerr=interval_yerr(p.estimate, p.interval))
                    if p.kind != "recipe":
                        eb[-1][0].set_linestyle("--")
        ax.set_title(panel, fontsize=8)
        ax.set_xlabel("training patients", fontsize=8)
        ax.set_ylabel("test mAP (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Learning curves: seed-mean test mAP; 95 % interval of the training recipe (solid) or of these "
                 "networks (dashed)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def scaling_blocks(runs: Sequence[Run], figdir: Path, detections: Any = None) -> list[Any]:
    """The report's blocks for a study that varies the training-set size (else empty)."""
    from seqablate.analysis.document import Figure, Frame, Paragraph

    points = learning_curves(runs, detections)
    if not points:
        return []
    return [
        Paragraph(
            "Test mAP against the number of training patients. Smaller training sets are nested in larger ones "
            "(the first N of one seeded ordering of the training split); validation and test patients are the same "
            "for every size, so the curves differ by training data alone. Each arm is a setting other than size "
            "(e.g. dropout off / on). Intervals at 95 %: the training recipe's (seed random, >= 3 seeds), else that "
            "of these trained networks (patients resampled; marked † in the table)."
        ),
        Figure(plot_learning_curves(points, figdir / LEARNING_PNG),
               "Learning curves per evaluation condition and external cohort"),
        Frame(curves_table(points), "Seed-mean test mAP (%) per arm and training-set size, with its 95 % interval."),
    ]
