"""The report's sequence contributions: each configuration's Shapley values over its seeds.

A configuration whose every seed logged test mAP on all ``2^S - 1`` sequence subsets
(``eval.all_subsets``) gets each sequence's Shapley value (:mod:`seqablate.metrics.shapley`)
averaged over seeds. The value is a linear contrast of condition means of the same networks, so
:class:`~seqablate.metrics.recipe.RecipeData` gives both intervals: these trained networks
(patients resampled, seeds fixed) and the training recipe (seed random; needs >= 3 seeds). Each
statistics policy a run logged is shown and named: for a BatchNorm model, which statistics a
censored input runs with changes the subset scores, and so the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqablate import metric_names as mn
from seqablate.analysis.runs import ConfigGroup, Run, group_by_config
from seqablate.metrics.shapley import all_subsets, shapley_weights
from seqablate.vocabulary import PER_SUBSET, STORED

LEVEL = 0.95
SHAPLEY_PNG = "shapley.png"


@dataclass
class ShapleyValue:
    """One sequence's Shapley value for one configuration under one statistics policy (mAP,
    fractions; ``networks``/``recipe`` are None when not available, ``reason`` says why)."""

    group: ConfigGroup
    policy: str  # the statistics policy's name ('stored', 'per_subset')
    sequence: str
    estimate: float
    seeds: int
    networks: tuple[float, float] | None = None
    recipe: tuple[float, float] | None = None
    reason: str = ""


def _conditions(run: Run, policy: str | None) -> dict[frozenset[str], str] | None:
    """subset -> the run's test condition name scoring it under ``policy`` (None: the run's
    own), or None when a subset is missing."""
    seqs = run.sequences
    found: dict[frozenset[str], str] = {}
    for key in run.metrics:
        p = mn.parse_metric(key)
        if p is None or p.split != "test" or p.metric != "mAP" or p.bound is not None or p.policy != policy:
            continue
        kept = mn.condition_subset(p.condition, seqs)
        if kept:
            found.setdefault(frozenset(kept), p.condition)
    return found if len(found) == len(all_subsets(seqs)) else None


def _policies(run: Run) -> list[tuple[str | None, str]]:
    """``(logged policy or None for the run's own, its name)`` of every policy the run logged."""
    own = run.params.get("eval.norm_stats", STORED)
    out: list[tuple[str | None, str]] = [(None, own)]
    out += [(p, p) for p in mn.POLICIES if p != own and any(k.startswith(f"test_{p}.") for k in run.metrics)]
    return out


def group_values(group: ConfigGroup, detections: Any = None) -> list[ShapleyValue]:
    """Every sequence's seed-mean Shapley value of ``group`` under each policy its runs logged
    with all subsets; with ``detections`` (:class:`~seqablate.analysis.detections.StudyDetections`)
    both intervals, else the seed mean of the logged ``test.shapley.<seq>`` values without one.
    Empty when fewer than two sequences or some usable run lacks a subset."""
    runs = group.usable
    seqs = group.sequences
    if not runs or len(seqs) < 2:
        return []
    out: list[ShapleyValue] = []
    for policy, name in _policies(runs[0]):
        conds = [_conditions(r, policy) for r in runs]
        if any(c is None for c in conds):
            continue
        est = _estimates(group, conds, policy, detections) if detections is not None else None
        for seq in seqs:
            if est is not None:
                e = est[seq]
                nets = e.networks if all(math.isfinite(v) for v in e.networks) else None
                out.append(ShapleyValue(group, name, seq, e.estimate, len(runs), nets, e.recipe, e.recipe_reason))
                continue
            vals = [r.metrics.get(mn.shapley_key(seq, policy=policy), math.nan) for r in runs]
            why = "no interval: the evaluation tables could not be read" if detections is not None else "no interval"
            out.append(ShapleyValue(group, name, seq, float(np.mean(vals)), len(runs), reason=why))
    return out


def _estimates(group: ConfigGroup, conds: list[Any], policy: str | None, detections: Any) -> dict[str, Any] | None:
    """sequence -> :class:`~seqablate.metrics.recipe.RecipeEstimate` of its Shapley value, on
    the test patients every run scored under every subset; None without the detections."""
    from seqablate.metrics.recipe import Arm, RecipeData

    seqs = group.sequences
    subs = all_subsets(seqs)
    sets: list[list[list[Any]]] = []  # [subset][run] -> detections
    for t in subs:
        per = []
        for r, c in zip(group.usable, conds, strict=True):
            d = detections.get(r).get(mn.prefix("test", c[t], policy=policy))
            if d is None:
                return None
            per.append(d)
        sets.append(per)
    common = set.intersection(*({p.patient_id for p in d} for per in sets for d in per))
    if not common:
        return None
    arms = [Arm([[p for p in d if p.patient_id in common] for d in per], group.key) for per in sets]
    data = RecipeData(arms, "mAP", n=2000, seed=0)
    weights = shapley_weights(seqs)
    return {s: data.contrast([weights[s][t] for t in subs], LEVEL) for s in seqs}


def study_values(runs: list[Run], detections: Any = None) -> list[ShapleyValue]:
    """:func:`group_values` of every configuration of the study, in the tables' order."""
    from seqablate.analysis.tables import row_order

    out: list[ShapleyValue] = []
    for g in sorted(group_by_config(runs), key=row_order):
        out += group_values(g, detections)
    return out


def _pct(x: float) -> str:
    return "missing" if not math.isfinite(x) else f"{100 * x:+.1f}"


def _interval(iv: tuple[float, float] | None) -> str:
    return "-" if iv is None else f"({_pct(iv[0])}, {_pct(iv[1])})"


def shapley_table(values: list[ShapleyValue]) -> pd.DataFrame:
    """One row per configuration, statistics policy and sequence: the Shapley value (mAP
    points) and both 95 % intervals."""
    rows = [{
        "configuration": v.group.label, "statistics": v.policy, "sequence": v.sequence, "seeds": v.seeds,
        "Shapley (mAP points)": _pct(v.estimate),
        "these networks (patients)": _interval(v.networks),
        "training recipe (seeds and patients)": _interval(v.recipe) if v.recipe else (v.reason or "-"),
    } for v in values]
    return pd.DataFrame(rows, columns=["configuration", "statistics", "sequence", "seeds", "Shapley (mAP points)",
                                       "these networks (patients)", "training recipe (seeds and patients)"])


def plot_shapley(values: list[ShapleyValue], path: str | Path) -> Path:
    """One panel per configuration: a bar per sequence and policy (mAP points) with the
    training recipe's 95 % interval (solid) or, where it is unavailable, that of these networks
    (dashed caps). Raises ValueError without values."""
    from seqablate.analysis.plots import headless_pyplot, interval_yerr, save_figure

    if not values:
        raise ValueError("no Shapley values to plot")
    plt = headless_pyplot()
    groups: dict[str, list[ShapleyValue]] = {}
    for v in values:
        groups.setdefault(v.group.label, []).append(v)
    fig, axes = plt.subplots(len(groups), 1, figsize=(6.4, 2.4 * len(groups) + 0.6), squeeze=False)
    colors = {STORED: "#0969da", PER_SUBSET: "#bf8700"}
    for ax, (label, vals) in zip(axes[:, 0], groups.items(), strict=True):
        seqs = list(dict.fromkeys(v.sequence for v in vals))
        pols = list(dict.fromkeys(v.policy for v in vals))
        width = 0.8 / len(pols)
        for j, pol in enumerate(pols):
            for v in (x for x in vals if x.policy == pol):
                xpos = seqs.index(v.sequence) + (j - (len(pols) - 1) / 2) * width
                ax.bar(xpos, 100 * v.estimate, width * 0.9, color=colors.get(pol, "#57606a"),
                       label=f"{pol} statistics" if v.sequence == seqs[0] else None)
                iv, ls = (v.recipe, "-") if v.recipe is not None else (v.networks, "--")
                if iv is not None:
                    eb = ax.errorbar(xpos, 100 * v.estimate, yerr=interval_yerr(v.estimate, iv),
                                     color="black", capsize=3, lw=1)
                    eb[-1][0].set_linestyle(ls)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(seqs)))
        ax.set_xticklabels(seqs, fontsize=8)
        ax.set_ylabel("Shapley value\n(mAP points)", fontsize=8)
        ax.set_title(f"{label} ({vals[0].seeds} seeds)", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Each sequence's contribution to test lesion mAP; 95 % interval of the training recipe "
                 "(solid) or of these networks (dashed)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def shapley_blocks(runs: list[Run], figdir: Path, detections: Any = None) -> list[Any]:
    """The report's blocks: what a Shapley value is here, the chart, the table, and the caveat
    for models trained without dropout. Empty when no configuration has every subset scored."""
    from seqablate.analysis.document import Figure, Frame, Paragraph

    values = study_values(runs, detections)
    if not values:
        return []
    blocks: list[Any] = [Paragraph(
        "Each sequence's Shapley value for test lesion mAP: its marginal contribution (mAP with it minus mAP "
        "without it) averaged over every order in which the sequences could be added, from the scores of all "
        "2^S - 1 sequence subsets (Table V; the empty set scores 0). The values of a network sum to its "
        "full-protocol mAP on the same patients. Per seed, then averaged over seeds; intervals at 95 %: 'these networks' resamples "
        "patients with the seeds fixed, 'the training recipe' also treats the seed as random (>= 3 seeds). "
        "Each statistics policy the runs logged is named in the 'statistics' column: a censored input runs "
        "with the stored BatchNorm statistics or with statistics recomputed for its subset, and the subset "
        "scores, hence the values, depend on it. Estimates and intervals use the test patients scored under "
        "every subset; the values each run logged (test.shapley.<seq>) pool every subset's own scored patients, "
        "so where some patients lack a sequence (and so drop out of the subsets holding only missing ones) the "
        "two differ, and the logged values sum to the run's full-protocol mAP."
    )]
    blocks.append(Figure(plot_shapley(values, figdir / SHAPLEY_PNG), "Sequence contributions (Shapley values) with "
                                                                     "intervals, per configuration"))
    blocks.append(Frame(shapley_table(values), "Shapley values per configuration, statistics policy and sequence "
                                               "(mAP points), with both 95 % intervals."))
    plain = sorted({v.group.label for v in values if not v.group.has_dropout})
    if plain:
        blocks.append(Paragraph(
            "Trained without sequence dropout: " + "; ".join(plain) + ". Such a network never saw a sequence "
            "missing, so its subset scores, and the Shapley values built from them, measure how fragile it is to "
            "losing an input, not how much information the input carries. Read a dropout-trained configuration's "
            "values for the latter."
        ))
    return blocks
