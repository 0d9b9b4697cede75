"""The Pareto front of a multi-objective study: computed on validation, reported with test.

A multi-objective study (``train.objectives``, ``study run --objectives A B ...``) scores each
trial on several validation objectives; every trial selects its checkpoint on the FIRST one.
A configuration's point is, for each objective ``i``, the mean over its finished seeds of
``val.selected_objective.<i>``: objective i of the checkpoint the trial selected (its value
at ``val.best_step``; for objective 1 that is its best, ``val.best_objective``, unless ``train.select: last``). That is what
the model the trial keeps does under each objective, not each objective's own best over
training, which no single checkpoint need reach. The front
(:func:`seqablate.metrics.pareto.pareto_front`, every objective maximised: they are mAPs) is
taken over those points; a configuration whose point has an undefined value is left out and
named.

The front is chosen on validation only. Its test numbers are shown beside it, never used to
choose it: a front chosen on test would flatter the configurations that happened to do well on
these test patients. A configuration's test value of an objective is that objective applied to
the test mAPs of the same conditions (a condition's mAP, the worst or the mean over the
validation conditions, a profile's share-weighted mean), per seed, averaged over the seeds,
with the training recipe's interval (:mod:`seqablate.metrics.recipe`) when the configuration
has >= 3 seeds and the interval of these trained networks (patients resampled) otherwise;
the table says which.

:func:`tag_front` writes the ``pareto`` tag (``true`` / ``false``) on every finished trial run
with the objectives, through :mod:`seqablate.tracking`; ``study run`` / ``study resume`` call
:func:`tag_study` when the trials are done and the report calls it again, so the tags follow
the runs a resumed study adds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqablate import metric_names as mn
from seqablate import objectives as ob
from seqablate.analysis.runs import ConfigGroup, Run, group_by_config
from seqablate.config import dropout_probabilities
from seqablate.metrics.pareto import pareto_front
from seqablate.tracking.names import TAG_PARETO

#: The report's figure of the front (under ``figures/``, and beside the report).
PARETO_PNG = "pareto_front.png"
#: The paper's dropout settings, marked on the scatter: no dropout (Table I) and p = 0.25 for
#: every sequence (Table II).
PAPER_DROPOUT: dict[float, str] = {0.0: "paper: no dropout", 0.25: "paper: p = 0.25"}
LEVEL = 0.95


@dataclass
class ParetoPoint:
    """One configuration: its validation objectives (seed means) and whether it is on the front."""

    group: ConfigGroup
    runs: list[Run]  # the finished runs with every objective (the seeds averaged)
    values: tuple[float, ...]  # validation objective i at the selected checkpoint, seed mean
    on_front: bool = False

    @property
    def label(self) -> str:
        return self.group.label

    @property
    def run_values(self) -> list[tuple[float, ...]]:
        """Each run's (seed's) validation objectives."""
        return [selected_values(r, len(self.values)) or () for r in self.runs]


@dataclass
class ParetoFront:
    """The front of a study's finished configurations on their validation objectives."""

    objectives: list[ob.Objective]
    val_conditions: list[str]
    points: list[ParetoPoint]
    left_out: list[str] = field(default_factory=list)  # configurations without every objective, and why

    @property
    def labels(self) -> list[str]:
        """``1: full``, ``2: worst``, ...: objective i as the metric names count them."""
        return [f"{i}: {ob.objective_text(o)}" for i, o in enumerate(self.objectives, start=1)]

    @property
    def definitions(self) -> list[str]:
        return [ob.definition(o, self.val_conditions) for o in self.objectives]

    @property
    def front(self) -> list[ParetoPoint]:
        return [p for p in self.points if p.on_front]

    def tags(self) -> dict[str, dict[str, str]]:
        """run id -> ``{pareto: "true" | "false"}`` for every run of a placed configuration."""
        return {r.run_id: {TAG_PARETO: "true" if p.on_front else "false"} for p in self.points for r in p.runs}


def study_objectives(runs: Sequence[Run]) -> tuple[list[ob.Objective], list[str]] | None:
    """``(objectives, validation conditions)`` of a multi-objective study, read from its
    finished runs' params (``train.objectives``, ``train.val_conditions``); the most common
    when runs disagree; None when no finished run has two or more objectives."""
    seen: Counter[tuple[str, str]] = Counter()
    for r in runs:
        text = r.params.get("train.objectives", "")
        if r.usable and text and text != "None" and len(ob.parse_objectives(text)) >= 2:
            seen[(text, r.params.get("train.val_conditions", mn.FULL))] += 1
    if not seen:
        return None
    (text, conds), _ = seen.most_common(1)[0]
    return ob.parse_objectives(text), [c for c in conds.split(",") if c]


def selected_values(run: Run, n: int) -> tuple[float, ...] | None:
    """A run's ``val.selected_objective.<1..n>``, or None when one is missing or not finite."""
    out = []
    for i in range(1, n + 1):
        v = run.metrics.get(mn.objective_key(i, "selected_objective"))
        if v is None or not math.isfinite(v):
            return None
        out.append(float(v))
    return tuple(out)


def compute_front(runs: Sequence[Run]) -> ParetoFront | None:
    """The front of the finished configurations of ``runs`` (module docstring); None for a
    study without several objectives. A configuration is placed with the mean of its finished
    runs that logged every objective; one with none such is left out and named."""
    found = study_objectives(runs)
    if found is None:
        return None
    objs, conds = found
    n = len(objs)
    text = ob.objectives_text(objs)
    points: list[ParetoPoint] = []
    left_out: list[str] = []
    for g in group_by_config(r for r in runs if r.usable and r.params.get("train.objectives") == text):
        placed = [r for r in g.runs if selected_values(r, n) is not None]
        if not placed:
            left_out.append(f"{g.label}: no finished run logged every objective at its selected checkpoint "
                            f"({', '.join(mn.objective_key(i, 'selected_objective') for i in range(1, n + 1))})")
            continue
        values = tuple(float(np.mean([selected_values(r, n)[i] for r in placed])) for i in range(n))  # type: ignore[index]
        points.append(ParetoPoint(g, placed, values))
    for p, on in zip(points, pareto_front([p.values for p in points], ["max"] * n), strict=True):
        p.on_front = on
    return ParetoFront(objs, conds, points, left_out)


def tag_front(front: ParetoFront, tracking_uri: str) -> int:
    """Write the ``pareto`` tag on every placed run; returns how many runs were tagged."""
    from seqablate import tracking

    tags = front.tags()
    tracking.tag_runs(tracking_uri, tags)
    return len(tags)


def tag_study(study: str, *, tracking_uri: str | None = None) -> ParetoFront | None:
    """Compute the front of STUDY (folder, experiment name, parent run id) from MLflow and tag
    its trial runs; None (and nothing written) for a study without several objectives."""
    from seqablate.analysis.study import load_study

    data = load_study(study, tracking_uri=tracking_uri)
    front = compute_front(data.runs)
    if front is not None and front.points:
        tag_front(front, data.tracking_uri)
    return front


# ------------------------------------------------------------------------------------------
# test numbers of the same objectives
# ------------------------------------------------------------------------------------------


@dataclass
class ObjectiveOnTest:
    """A configuration's test value of one objective, with its interval and which it is."""

    estimate: float | None  # mean over seeds of the objective on the test mAPs (a worst case bias-corrected where an interval is computed, see note); None = missing
    interval: tuple[float, float] | None = None
    kind: str = ""  # 'recipe' (>= 3 seeds: seeds and patients), 'networks' (patients only) or ''
    note: str = ""  # why something is missing


def _components(objective: ob.Objective, conditions: Sequence[str]) -> list[str]:
    """The conditions an objective's value is computed from."""
    if objective is None:
        return [conditions[0]]
    if isinstance(objective, str):
        return list(conditions) if objective in ob.AGGREGATES else [objective]
    return list(objective)


def _test_condition(run: Run, condition: str, sequences: Sequence[str]) -> str | None:
    """The name ``run`` logged the test of ``condition`` under: itself, or a logged condition
    giving the model the same sequences (``subset_`` of all but one is ``censor_``)."""
    if mn.metric_key("test", condition, "mAP") in run.metrics:
        return condition
    want = mn.condition_subset(condition, sequences)
    for k in run.metrics:
        p = mn.parse_metric(k)
        if (p is not None and p.split == "test" and p.policy is None and p.metric == "mAP" and p.bound is None
                and mn.condition_subset(p.condition, sequences) == want):
            return p.condition
    return None


def objective_on_test(point: ParetoPoint, objective: ob.Objective, conditions: Sequence[str],
               detections: Any = None) -> ObjectiveOnTest:
    """``objective`` on the test mAPs of ``point``'s runs (module docstring). ``detections``:
    a :class:`~seqablate.analysis.detections.StudyDetections` for the interval (None: the
    estimate alone)."""
    comps = _components(objective, conditions)
    per_run: list[dict[str, str]] = []
    values: list[float] = []
    for r in point.runs:
        names = {c: _test_condition(r, c, r.sequences) for c in comps}
        missing = [c for c, n in names.items() if n is None]
        if missing:
            return ObjectiveOnTest(None, note=f"{r.name} has no test mAP under {', '.join(missing)}")
        maps = {c: r.metrics[mn.metric_key("test", n, "mAP")] for c, n in names.items()}  # type: ignore[arg-type]
        values.append(ob.objective_value(objective, comps, maps))
        per_run.append(names)  # type: ignore[arg-type]
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return ObjectiveOnTest(None, note="undefined for a seed (a condition without a test lesion)")
    out = ObjectiveOnTest(float(np.mean(values)))
    if detections is None:
        return out
    est = _interval(point, objective, comps, per_run, detections)
    if est is not None and est.bias:
        # A worst case: the seed mean of each network's smallest test mAP is biased low when
        # conditions are close; the interval is centred on the corrected value, so is the estimate.
        out.estimate = float(est.estimate)
        # est.bias <= 0 (a mean of minima is below the minimum of means): say how far it moved up.
        out.note = f"bias-corrected: {-100 * est.bias:+.1f} points on the seed mean of the minima {_pct(est.estimate + est.bias)}"
    if est is None:
        out.note = "no interval (the evaluation tables could not be read)"
    elif est.recipe is not None:
        out.interval, out.kind = est.recipe, "recipe"
    elif all(math.isfinite(v) for v in est.networks):
        out.interval, out.kind = est.networks, "networks"
    return out


def _interval(point: ParetoPoint, objective: ob.Objective, comps: list[str], names: list[dict[str, str]],
              detections: Any) -> Any:
    """The :class:`~seqablate.metrics.recipe.RecipeEstimate` of the objective's seed mean, on
    the test patients every run and condition scored; None without the detections."""
    from seqablate.metrics.recipe import Arm, RecipeData

    sets: list[list[list[Any]]] = []  # [condition][run] -> detections
    for c in comps:
        per_cond = []
        for r, nm in zip(point.runs, names, strict=True):
            d = detections.get(r).get(mn.prefix("test", nm[c]))
            if d is None:
                return None
            per_cond.append(d)
        sets.append(per_cond)
    common = set.intersection(*({p.patient_id for p in d} for per_cond in sets for d in per_cond))
    if not common:
        return None
    arms = [Arm([[p for p in d if p.patient_id in common] for d in per_cond], point.group.key) for per_cond in sets]
    data = RecipeData(arms, "mAP", n=2000, seed=0)
    if isinstance(objective, str) and objective == ob.WORST:
        return data.minimum(list(range(len(arms))), LEVEL)
    if isinstance(objective, str) and objective == ob.MEAN:
        return data.contrast([1.0 / len(arms)] * len(arms), LEVEL)
    if isinstance(objective, dict):
        return data.contrast([objective[c] for c in comps], LEVEL)
    return data.mean(0, LEVEL)


# ------------------------------------------------------------------------------------------
# report: table, figure, section
# ------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "missing" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def paper_mark(group: ConfigGroup) -> str | None:
    """The paper's label of a configuration's dropout setting (:data:`PAPER_DROPOUT`), or None:
    no dropout, or the same p = 0.25 for every sequence (scalar or mapping)."""
    probs = set(dropout_probabilities(group.dropout_p, group.sequences))
    if len(probs) != 1:
        return None
    (p,) = probs
    return next((label for q, label in PAPER_DROPOUT.items() if math.isclose(p, q)), None)


def front_table(front: ParetoFront, detections: Any = None) -> pd.DataFrame:
    """One row per placed configuration, front first (each part by objective 1, best first):
    configuration, seeds, on the front, each validation objective and its test value with
    interval (mAP percent), and which interval that is."""
    rows = []
    order = sorted(front.points, key=lambda p: (not p.on_front, -p.values[0], p.label))
    for p in order:
        row: dict[str, Any] = {"configuration": p.label + (f" ({m})" if (m := paper_mark(p.group)) else ""),
                               "seeds": len(p.runs), "Pareto": "yes" if p.on_front else "no"}
        kinds = set()
        for label, obj, v in zip(front.labels, front.objectives, p.values, strict=True):
            row[f"val {label}"] = _pct(v)
            t = objective_on_test(p, obj, front.val_conditions, detections)
            text = _pct(t.estimate)
            if t.interval is not None:
                text += f" ({_pct(t.interval[0])}, {_pct(t.interval[1])})"
                kinds.add(t.kind)
                if t.note:
                    text += f" [{t.note}]"
            elif t.note:
                text += f" [{t.note}]"
            row[f"test {label}"] = text
        row["test interval"] = (", ".join(sorted(kinds)) if kinds else "-").replace(
            "recipe", "training recipe (seeds and patients)").replace("networks", "these networks (patients)")
        rows.append(row)
    cols = ["configuration", "seeds", "Pareto", *[f"val {lb}" for lb in front.labels],
            *[f"test {lb}" for lb in front.labels], "test interval"]
    return pd.DataFrame(rows, columns=cols)


def plot_front(front: ParetoFront, path: str | Path) -> Path:
    """Scatter of every configuration on validation objectives 1 and 2 (mAP percent; a
    configuration's seeds as small dots around its mean), the front drawn through its points,
    the paper's dropout settings marked. With more than two objectives the front is the one of
    all of them, drawn in the first two (the title says so). Raises ValueError without points."""
    from seqablate.analysis.plots import headless_pyplot, save_figure

    if not front.points:
        raise ValueError("no configuration to plot: none logged every objective")
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for p in front.points:
        if len(p.runs) > 1:
            seeds = np.array(p.run_values, dtype=float) * 100
            ax.scatter(seeds[:, 0], seeds[:, 1], s=8, color="#9aa5b1", alpha=0.6, zorder=1)
    off = [p for p in front.points if not p.on_front]
    on = sorted(front.front, key=lambda p: p.values[0])
    if off:
        ax.scatter([100 * p.values[0] for p in off], [100 * p.values[1] for p in off], s=30, facecolors="white",
                   edgecolors="#57606a", label="dominated", zorder=2)
    if on:
        ax.plot([100 * p.values[0] for p in on], [100 * p.values[1] for p in on], color="#cf222e", lw=1, ls="--",
                zorder=2)
        ax.scatter([100 * p.values[0] for p in on], [100 * p.values[1] for p in on], s=42, color="#cf222e",
                   label="Pareto front", zorder=3)
    marked = False
    for p in front.points:
        mark = paper_mark(p.group)
        if mark is not None:
            ax.scatter([100 * p.values[0]], [100 * p.values[1]], s=160, marker="*", color="#0969da", zorder=4,
                       edgecolors="#cf222e" if p.on_front else "#0969da", linewidths=1.2,
                       label=None if marked else "paper's dropout settings")
            ax.annotate(mark.removeprefix("paper: "), (100 * p.values[0], 100 * p.values[1]), fontsize=7,
                        xytext=(5, 5), textcoords="offset points")
            marked = True
    ax.set_xlabel(f"validation objective {front.labels[0]} (mAP %)", fontsize=8)
    ax.set_ylabel(f"validation objective {front.labels[1]} (mAP %)", fontsize=8)
    title = "Validation objectives at each trial's selected checkpoint (selected on objective 1)"
    if len(front.objectives) > 2:
        title += (f"\nfront over all {len(front.objectives)} objectives, drawn in the first two: "
                  "a front point may look dominated here")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def pareto_blocks(front: ParetoFront, figdir: Path, detections: Any = None) -> list[Any]:
    """The report's blocks for the front: definitions, the scatter, the table, what was left out."""
    from seqablate.analysis.document import Figure, Frame, Paragraph

    defs = "; ".join(f"objective {i}: {d}" for i, d in enumerate(front.definitions, start=1))
    blocks: list[Any] = [Paragraph(
        f"A multi-objective study ({defs}). Each trial selected its checkpoint on objective 1; a configuration's point "
        "is every objective's validation value at that selected checkpoint (what the selected model does; "
        "`val.selected_objective.<i>`), averaged over its seeds. The Pareto front is the set of configurations no "
        "other is at least as good as on every objective and better on one (equal points are on it together). It "
        "is chosen on validation only; the test numbers beside it are the same objectives on the test mAPs of the "
        "same conditions, never used to choose (choosing on test would flatter the front). Finished trial runs "
        f"carry the tag `{TAG_PARETO}` = true / false in MLflow."
    )]
    if not front.points:
        blocks.append(Paragraph("No finished configuration logged every objective at its selected checkpoint; "
                                "no front."))
    else:
        path = plot_front(front, figdir / PARETO_PNG)
        extra = (f" The front is over all {len(front.objectives)} objectives; the figure shows the first two."
                 if len(front.objectives) > 2 else "")
        blocks.append(Figure(path, f"Pareto front of {len(front.front)} of {len(front.points)} configurations on "
                                   f"validation objectives {front.labels[0]} and {front.labels[1]}." + extra))
        blocks.append(Frame(front_table(front, detections), (
            "Configurations, front first: validation objectives (mAP %, at the selected checkpoint, seed mean) and "
            f"the test value of each objective with its {int(100 * LEVEL)} % interval: the training recipe's (seeds "
            "and patients) with >= 3 seeds, else that of these trained networks (patients resampled), as the last "
            "column says. Paper's dropout settings marked in the configuration's name.")))
    for note in front.left_out:
        blocks.append(Paragraph(f"Left out of the front: {note}."))
    return blocks
