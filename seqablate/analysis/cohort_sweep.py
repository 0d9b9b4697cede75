"""A study over cohorts that differ in one property: the censoring cost against that property.

A grid may vary ``data.cohort`` (e.g. phantom cohorts that differ only in the residual
misregistration of the non-reference sequences, ``seqablate phantom --misregistration-mm``).
For each arm (every other setting, e.g. dropout off / on) and cohort, the *censoring cost* of a
sequence is the seed mean of ``full mAP - mAP with the sequence censored`` on that cohort's
test patients, paired within each network, with the training recipe's 95 % interval (seed
random; >= 3 seeds) or else that of these networks. A cohort's x is the parameter recorded in
its ``phantom.json`` (:data:`PHANTOM_PARAMS`, the first that differs between the cohorts),
else its folder name. The trend (cost at the largest x minus at the smallest) is given with its
interval too: it is what tests "the sequence matters because the others are misregistered".
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqablate import metric_names as mn
from seqablate.analysis.runs import ConfigGroup, Run, config_items, group_by_config

#: Phantom parameters a cohort sweep is read against (phantom.json keys), in this order.
PHANTOM_PARAMS = ("misregistration_mm", "lesion_diameter_mm")
SWEEP_PNG = "cohort_sweep.png"
LEVEL = 0.95


@dataclass
class CostPoint:
    """One arm on one cohort (mAP fractions)."""

    arm: str
    cohort: str  # the cohort's folder name
    x: float | None  # the phantom parameter's value (None: no numeric parameter)
    estimate: float
    seeds: int
    interval: tuple[float, float] | None = None
    kind: str = ""  # 'recipe', 'networks' or ''
    group: ConfigGroup | None = None


def varies_cohort(runs: Sequence[Run]) -> bool:
    """Whether the usable runs trained on more than one cohort."""
    return len({r.param("data.cohort") for r in runs if r.usable}) > 1


def _phantom(cohort: str | None) -> dict[str, Any]:
    try:
        return json.loads((Path(str(cohort)) / "phantom.json").read_text()) if cohort else {}
    except (OSError, ValueError):
        return {}


def _sweep_param(cohorts: Sequence[str]) -> str | None:
    """The first :data:`PHANTOM_PARAMS` key whose recorded value differs between ``cohorts``."""
    metas = [_phantom(c) for c in cohorts]
    for key in PHANTOM_PARAMS:
        values = [json.dumps(m.get(key)) for m in metas]
        if len(set(values)) > 1:
            return key
    return None


def _x(meta: dict[str, Any], key: str | None) -> float | None:
    if key is None:
        return None
    v = meta.get(key)
    if isinstance(v, list):  # a (min, max) range: its middle
        v = float(np.mean(v))
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _arms(runs: Sequence[Run]) -> dict[tuple, str]:
    cohortless = [replace(r, params={k: v for k, v in r.params.items() if k != "data.cohort"}) for r in runs]
    return {g.key: g.label for g in group_by_config(cohortless)}


def _estimate(group: ConfigGroup, condition: str, detections: Any) -> Any:
    """RecipeEstimate of ``full - condition`` over the group's seeds; None without the tables."""
    from seqablate.metrics.recipe import Arm, RecipeData

    sets = []
    for prefix in (mn.prefix("test", mn.FULL), mn.prefix("test", condition)):
        per = []
        for r in group.usable:
            d = detections.get(r).get(prefix)
            if d is None:
                return None
            per.append(d)
        sets.append(per)
    common = set.intersection(*({p.patient_id for p in d} for per in sets for d in per))
    if not common:
        return None
    arms = [Arm([[p for p in d if p.patient_id in common] for d in per], group.key) for per in sets]
    return RecipeData(arms, "mAP", n=2000, seed=0).contrast([1.0, -1.0], LEVEL)


def censoring_costs(runs: Sequence[Run], detections: Any = None,
                    censored: str = "t1_gre_post") -> tuple[list[CostPoint], str | None]:
    """Every arm's censoring cost of ``censored`` on every cohort, and the phantom parameter the
    cohorts differ in (None: none recorded). Empty when the study has one cohort or no run
    logged the censored condition."""
    if not varies_cohort(runs):
        return [], None
    usable = [r for r in runs if r.usable]
    cond = mn.censor_condition(censored)
    key_full, key_cens = mn.metric_key("test", mn.FULL, "mAP"), mn.metric_key("test", cond, "mAP")
    cohorts = sorted({str(r.param("data.cohort")) for r in usable})
    param = _sweep_param(cohorts)
    arms = _arms(usable)
    out: list[CostPoint] = []
    for g in group_by_config(usable):
        runs_g = [r for r in g.usable if key_full in r.metrics and key_cens in r.metrics]
        if not runs_g or len(runs_g) != len(g.usable):
            continue
        cohort = str(g.first.param("data.cohort"))
        point = CostPoint(arms[config_items(g.first, drop=("data.cohort",))], Path(cohort).name,
                          _x(_phantom(cohort), param),
                          float(np.mean([r.metrics[key_full] - r.metrics[key_cens] for r in runs_g])), len(runs_g),
                          group=g)
        est = _estimate(g, cond, detections) if detections is not None else None
        if est is not None:
            point.estimate = est.estimate
            if est.recipe is not None:
                point.interval, point.kind = est.recipe, "recipe"
            elif all(math.isfinite(v) for v in est.networks):
                point.interval, point.kind = est.networks, "networks"
        out.append(point)
    return sorted(out, key=lambda p: (p.arm, p.x if p.x is not None else math.inf, p.cohort)), param


def trends(points: Sequence[CostPoint], detections: Any = None, censored: str = "t1_gre_post") -> pd.DataFrame:
    """Per arm: the cost at the largest x minus at the smallest, with its interval (the two
    cohorts' networks are different seeds' networks: independent groups)."""
    from seqablate.metrics.recipe import Arm, RecipeData

    rows = []
    for arm in dict.fromkeys(p.arm for p in points):
        pts = [p for p in points if p.arm == arm and p.x is not None]
        if len(pts) < 2:
            continue
        lo, hi = min(pts, key=lambda p: p.x), max(pts, key=lambda p: p.x)
        row = {"arm": arm, "from": f"{lo.x:g}", "to": f"{hi.x:g}", "change of cost (mAP points)":
               f"{100 * (hi.estimate - lo.estimate):+.1f}", "95 % interval": "-", "interval": "-"}
        if detections is not None:
            sets = []
            for p in (hi, lo):
                for prefix in (mn.prefix("test", mn.FULL), mn.prefix("test", mn.censor_condition(censored))):
                    per = [detections.get(r).get(prefix) for r in p.group.usable]
                    sets.append((per, p.group.key))
            if all(d is not None for per, _ in sets for d in per):
                ids = [{x.patient_id for x in d} for per, _ in sets for d in per]
                common = set.intersection(*ids)
                if not common:
                    # the resampling pairs patients across cohorts: without shared patients there is
                    # nothing to pair, and the point estimate above stays the runs' own
                    row["interval"] = "none: the two cohorts share no test patients"
                else:
                    arms_ = [Arm([[x for x in d if x.patient_id in common] for d in per], key) for per, key in sets]
                    est = RecipeData(arms_, "mAP", n=2000, seed=0).contrast([1.0, -1.0, -1.0, 1.0], LEVEL)
                    iv, kind = (est.recipe, "training recipe") if est.recipe else (est.networks, "these networks")
                    row["change of cost (mAP points)"] = f"{100 * est.estimate:+.1f}"
                    row["95 % interval"] = f"({100 * iv[0]:+.1f}, {100 * iv[1]:+.1f})"
                    row["interval"] = kind
                    if len(common) < len(set.union(*ids)):
                        row["interval"] += f" (on the {len(common)} test patients both cohorts have)"
        rows.append(row)
    return pd.DataFrame(rows)


def plot_costs(points: Sequence[CostPoint], param: str | None, path: str | Path, censored: str) -> Path:
    """Censoring cost (mAP points) against the cohort parameter, a line per arm with intervals
    (solid: training recipe; dashed: these networks). Raises ValueError without points."""
    from seqablate.analysis.plots import headless_pyplot, interval_yerr, save_figure

    if not points:
        raise ValueError("no censoring costs to plot")
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    numeric = all(p.x is not None for p in points)
    names = list(dict.fromkeys(p.cohort for p in sorted(points, key=lambda p: p.cohort)))
    for arm in dict.fromkeys(p.arm for p in points):
        pts = [p for p in points if p.arm == arm]
        xs = [p.x if numeric else names.index(p.cohort) for p in pts]
        ys = [100 * p.estimate for p in pts]
        line = ax.plot(xs, ys, marker="o", label=arm)[0]
        for x, p in zip(xs, pts, strict=True):
            if p.interval is not None:
                eb = ax.errorbar(x, 100 * p.estimate, color=line.get_color(), capsize=3, lw=1,
                                 yerr=interval_yerr(p.estimate, p.interval))
                if p.kind != "recipe":
                    eb[-1][0].set_linestyle("--")
    ax.axhline(0, color="black", lw=0.6)
    if not numeric:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=7, rotation=20)
    ax.set_xlabel(param or "cohort", fontsize=8)
    ax.set_ylabel(f"cost of censoring {censored}\n(full - censored test mAP, points)", fontsize=8)
    ax.set_title("Censoring cost per cohort; 95 % interval of the training recipe (solid) or these networks (dashed)",
                 fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def sweep_blocks(runs: Sequence[Run], figdir: Path, detections: Any = None,
                 censored: str | None = None) -> list[Any]:
    """The report's blocks for a study over several cohorts (else empty); ``censored``
    defaults to the study's (:func:`~seqablate.analysis.runs.study_censored`)."""
    from seqablate.analysis.document import Figure, Frame, Paragraph
    from seqablate.analysis.runs import study_censored

    censored = censored or study_censored(runs)

    points, param = censoring_costs(runs, detections, censored)
    if not points:
        return []
    table = pd.DataFrame([{
        "arm": p.arm, "cohort": p.cohort, param or "cohort parameter": "-" if p.x is None else f"{p.x:g}",
        "seeds": p.seeds, "censoring cost (mAP points)": f"{100 * p.estimate:+.1f}",
        "95 % interval": "-" if p.interval is None else f"({100 * p.interval[0]:+.1f}, {100 * p.interval[1]:+.1f})"
                                                         + ("" if p.kind == "recipe" else " †"),
    } for p in points])
    blocks: list[Any] = [
        Paragraph(
            f"The study trained on {len({p.cohort for p in points})} cohorts"
            + (f" that differ in the phantom's {param}" if param else "")
            + f". The cost of censoring {censored} is each network's full-protocol test mAP minus its mAP with "
            f"{censored} censored, averaged over seeds, on its own cohort's test patients; 95 % intervals of the "
            "training recipe (seed random, >= 3 seeds), else of these networks († in the table)."
        ),
        Figure(plot_costs(points, param, figdir / SWEEP_PNG, censored), f"Cost of censoring {censored} per cohort"),
        Frame(table, f"Cost of censoring {censored} per arm and cohort."),
    ]
    tr = trends(points, detections, censored)
    if not tr.empty:
        blocks.append(Frame(tr, f"How the cost changes from the smallest to the largest {param}: the difference of "
                                "two costs, each paired within its networks, with its 95 % interval."))
    return blocks
