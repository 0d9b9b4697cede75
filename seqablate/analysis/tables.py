"""The paper's Tables I-VI, built from trial runs, seeds aggregated.

Every cell aggregates the runs of one configuration that differ only by seed:
``mean ± std`` across seeds (sample std, shown when there are two seeds or more) and, for mAP,
the 95 % bootstrap CI over test patients that each run logged as ``<metric>_lo/_hi``
(averaged over seeds). Values are shown in percent, like the paper. In each value column the
best mean is marked ``best`` (bold) and the second best ``second`` (underlined); ties on the
displayed value share the mark.

Nothing missing is ever shown as a number: a configuration whose runs lack a metric shows
``missing`` and the table's ``missing`` list names the runs and keys; a table whose runs do
not exist is not built, and :func:`build_tables` returns a :class:`Table` with
``available=False`` and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqablate import vocabulary as V
from seqablate.analysis.runs import (
    METRICS,
    ConfigGroup,
    Run,
    external_cohorts,
    group_by_config,
    logged_conditions,
    study_censored,
    study_sequences,
    twin_key,
)
from seqablate.metric_names import condition_subset, metric_key
from seqablate.sequences import subset_label, subsets
from seqablate.vocabulary import PER_SUBSET, STORED

#: Scale from logged fractions to displayed percent.
PERCENT = 100.0


@dataclass
class Cell:
    """One value cell. ``value`` (the seed mean, as logged) is what is ranked; None = missing."""

    value: float | None
    main: str  # the formatted mean (what gets bold / underline)
    detail: str = ""  # spread, CI, relative change: shown after ``main``
    emphasis: str | None = None  # 'best' | 'second' | None

    @property
    def missing(self) -> bool:
        return self.value is None


@dataclass
class Row:
    """A table row: label cells, value cells, and an optional section heading above it."""

    labels: list[str]
    cells: list[Cell]
    section: str | None = None
    run_ids: list[str] = field(default_factory=list)


@dataclass
class Table:
    """A table in the paper's shape (or the reason it could not be built)."""

    id: str  # 'I', 'II', 'V', 'VI.oslo', ...
    title: str
    label_columns: list[str]
    value_columns: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # runs/metrics that were needed but absent
    reason: str = ""  # why the table is not available

    @property
    def available(self) -> bool:
        return bool(self.rows)

    def cell(self, row_label: str, column: str) -> Cell:
        """The cell of the first row whose joined labels equal ``row_label`` (tests, scripts)."""
        j = self.value_columns.index(column)
        for r in self.rows:
            if " / ".join(r.labels) == row_label or (r.labels and r.labels[0] == row_label):
                return r.cells[j]
        raise KeyError(f"table {self.id}: no row {row_label!r}; rows: {[r.labels for r in self.rows]}")


#: ``(group, run -> metric key) -> RecipeEstimate | None``: the seed-aware interval of a
#: configuration's mean (:func:`seqablate.analysis.intervals.TableIntervals`).
IntervalFn = Callable[[ConfigGroup, Callable[[Run], str]], Any]
_INTERVALS: ContextVar[IntervalFn | None] = ContextVar("table_intervals", default=None)


@dataclass
class Aggregate:
    """A metric across the usable seeds of one configuration.

    ``interval``: the CI shown with the mean: the training recipe's (seeds and patients) with
    >= 3 seeds, else that of these networks (patients only, ``recipe=False``); None when
    neither is known.
    """

    values: list[float]
    lo: list[float]
    hi: list[float]
    missing: list[tuple[str, str]]  # (run label, what is missing): merged per run by tables
    undefined: int = 0  # seeds where the metric is undefined (TP Dice without true positives)
    interval: tuple[float, float] | None = None
    recipe: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation across seeds (None with fewer than two)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else None

    @property
    def ci(self) -> tuple[float, float] | None:
        """The interval shown: :attr:`interval`, or for a single seed its own logged bootstrap CI
        (the patients-only interval of that one network). Never an average of per-seed bounds,
        which is not a CI of anything."""
        if self.interval is not None:
            return self.interval
        if len(self.values) == 1 and len(self.lo) == 1 and len(self.hi) == 1:
            return self.lo[0], self.hi[0]
        return None


def aggregate(group: ConfigGroup, key: str | Callable[[Run], str]) -> Aggregate:
    """Aggregate metric ``key`` (and ``key_lo``/``key_hi``) over a group's usable runs.

    ``key`` may depend on the run (a callable ``run -> key``), e.g. to read the metrics of
    one BatchNorm statistics policy whatever each run's own policy was. NaN values (e.g. TP
    Dice without any true positive) are treated as not logged. Failed runs are excluded and
    named in ``missing``. Inside :func:`build_tables` with an interval function, an mAP gets
    its seed-aware interval from it.
    """
    key_of = key if callable(key) else (lambda _run, k=key: k)
    values: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    missing: list[tuple[str, str]] = []
    undefined = 0
    for r in group.runs:
        who = f"{r.name} ({r.run_id[:8]})"
        if not r.usable:
            missing.append((who, f"run {r.status}, excluded"))
            continue
        k = key_of(r)
        v = r.metrics.get(k)
        if v is None or math.isnan(v):
            if _undefined(r, k):
                undefined += 1
            else:
                missing.append((who, k))
            continue
        values.append(float(v))
        for bound, dest in (("_lo", lo), ("_hi", hi)):
            b = r.metrics.get(k + bound)
            if b is not None and not math.isnan(b):
                dest.append(float(b))
    out = Aggregate(values, lo, hi, missing, undefined)
    fn = _INTERVALS.get()
    if fn is not None and values and group.usable and key_of(group.usable[0]).endswith(".mAP"):
        est = fn(group, key_of)
        if est is not None:
            if est.recipe is not None:
                out.interval, out.recipe = est.recipe, True
            elif all(math.isfinite(v) for v in est.networks):
                out.interval = est.networks
    return out


def _undefined(run: Run, key: str) -> bool:
    """True when ``key`` is a TP Dice the run could not have: it logged zero true positives
    (``<prefix>.n_tp == 0``), so the value is undefined (the paper's "-"), not missing."""
    if not key.endswith(".tp_dice"):
        return False
    return run.metrics.get(key[: -len("tp_dice")] + "n_tp") == 0


def fmt(x: float) -> str:
    """A logged fraction as displayed percent with one decimal (0.4567 -> '45.7')."""
    return f"{PERCENT * x:.1f}"


def value_cell(agg: Aggregate, *, with_ci: bool) -> Cell:
    """``mean ± std (lo, hi)``; ``-`` when undefined for every seed (TP Dice without true
    positives), ``missing`` when no seed logged the metric."""
    if agg.mean is None:
        if agg.undefined and not agg.missing:
            return Cell(None, "-", " (no true positives)")
        return Cell(None, "missing")
    detail = ""
    if agg.std is not None:
        detail += f" ± {fmt(agg.std)}"
    if with_ci and agg.ci is not None:
        detail += f" ({fmt(agg.ci[0])}, {fmt(agg.ci[1])})" + ("" if agg.recipe else "†")
    return Cell(agg.mean, fmt(agg.mean), detail)


def relative_change(value: float, base: float) -> str:
    """``(value - base) / base`` as a signed percent with one decimal; never ``-0.0%``."""
    rel = round(100.0 * (value - base) / base, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{rel:+.1f}%"


def mark_best(rows: Sequence[Row], *, higher_is_better: bool = True) -> None:
    """Mark, per value column, the best displayed value 'best' and the second 'second'.

    Ranking uses the displayed (rounded) number so equal-looking values share a mark;
    missing cells are never marked. With a single distinct value only 'best' is given.
    """
    if not rows:
        return
    for j in range(len(rows[0].cells)):
        shown = sorted(
            {round(PERCENT * c.value, 1) for r in rows if not (c := r.cells[j]).missing},
            reverse=higher_is_better,
        )
        for r in rows:
            c = r.cells[j]
            c.emphasis = None
            if c.missing:
                continue
            v = round(PERCENT * c.value, 1)
            if shown and v == shown[0]:
                c.emphasis = "best"
            elif len(shown) > 1 and v == shown[1]:
                c.emphasis = "second"


# ----------------------------------------------------------------------------- row ordering

_INTEG_ORDER = {name: i for i, name in enumerate(V.INTEGRATIONS)}
_POINT_ORDER = {name: i for i, name in enumerate(V.INTEGRATION_POINTS)}
_SHARING_ORDER = {"shared": 0, "independent": 1, "l2_tied": 2}  # the paper's table rows: shared first

#: The paper's Table I/II rows: (integration, sharing, fusion) -> label shown when absent.
PAPER_ROWS: list[tuple[str, str, str, str]] = [
    ("input", "independent", "concat", "Input / -"),
    ("mid", "shared", "concat", "Mid / Fully Shared"),
    ("mid", "independent", "concat", "Mid / Fully Ind."),
    ("mid", "l2_tied", "concat", "Mid / L2 Tied"),
    ("end", "shared", "concat", "End / Fully Shared"),
    ("end", "independent", "concat", "End / Fully Ind."),
    ("end", "l2_tied", "concat", "End / L2 Tied"),
    ("mid", "shared", "subtract", "Mid / Fully Shared, subtraction"),
]


def row_order(g: ConfigGroup) -> tuple:
    r = g.first
    return (
        r.fusion == "subtract",
        _INTEG_ORDER.get(r.integration, 9),
        _POINT_ORDER.get(r.integration_point, 9) if r.integration == "mid" else 0,
        _SHARING_ORDER.get(r.sharing, 9) if r.integration != "input" else 0,
        r.dropout_order,
        g.extra,
    )


def _sharing_cells(groups: Sequence[ConfigGroup]) -> dict[int, str]:
    """The weight-sharing cell of each group's row, by ``id(group)``: its label, what else
    distinguishes it (``extra``), and its dropout setting when another row of the table has
    the same label but other dropout (a sweep over p, or one p for all beside per-sequence p)."""
    def base(g: ConfigGroup) -> str:
        return g.sharing_label + (f" [{g.extra}]" if g.extra else "")

    seen: dict[tuple[str, str], set[str]] = {}
    for g in groups:
        seen.setdefault((g.integration_label, base(g)), set()).add(g.dropout_label)
    return {id(g): base(g) + (f" [{g.dropout_label or 'no dropout'}]"
                              if len(seen[(g.integration_label, base(g))]) > 1 else "")
            for g in groups}


def _matches_paper_row(g: ConfigGroup, integ: str, sharing: str, fusion: str) -> bool:
    r = g.first
    if r.integration != integ:
        return False
    if integ == "input":
        return True
    return r.sharing == sharing and (r.fusion == "subtract") == (fusion == "subtract")


def _condition_for(runs: Sequence[Run], kept: tuple[str, ...], seqs: tuple[str, ...]) -> str | None:
    """The logged test condition whose input sequences are exactly ``kept``."""
    for c in logged_conditions(runs):
        if condition_subset(c, seqs) == kept:
            return c
    return None


#: The two BatchNorm statistics policies, as extra mAP columns of BatchNorm studies.
POLICY_COLUMNS = {STORED: "mAP, stored BN stats", PER_SUBSET: "mAP, per-subset BN stats"}


def policy_key(run: Run, key: str, policy: str) -> str:
    """The name under which ``run`` logged metric ``key`` (``test.``/``external.``) with
    BatchNorm statistics ``policy``: ``key`` itself for the run's own policy, else with the
    policy after the split (``test_stored.full.mAP``)."""
    own = run.params.get("eval.norm_stats", STORED)
    if own == policy:
        return key
    split, rest = key.split(".", 1)
    return f"{split}_{policy}.{rest}"


def has_policies(groups: Sequence[ConfigGroup]) -> bool:
    """Whether any run logged metrics under both statistics policies (a BatchNorm model)."""
    return any(k.startswith(("test_", "external_")) for g in groups for r in g.runs for k in r.metrics)


def _metric_row(
    g: ConfigGroup,
    key_of: Callable[[str], str],
    labels: list[str],
    missing: list[str],
    *,
    section: str | None = None,
    policies: bool = False,
) -> Row:
    cells = []
    for j, metric in enumerate(METRICS):
        agg = aggregate(g, key_of(metric))
        cells.append(value_cell(agg, with_ci=(j == 0)))
        missing.extend(agg.missing)
    if policies:
        bn = g.first.params.get("model.norm", "batch") == "batch"
        for policy in POLICY_COLUMNS:
            if not bn:
                cells.append(Cell(None, "n/a", " (no BatchNorm)"))
                continue
            agg = aggregate(g, lambda r, p=policy: policy_key(r, key_of("mAP"), p))
            cells.append(value_cell(agg, with_ci=True))
    n = max(len(aggregate(g, key_of(m)).values) for m in METRICS)
    return Row(labels + [f"{n}/{len(g.runs)}"], cells, section, [r.run_id for r in g.runs])


def _value_columns(policies: bool) -> list[str]:
    return list(METRICS.values()) + (list(POLICY_COLUMNS.values()) if policies else [])


def _dedupe(items: list) -> list[str]:
    """Merge ``(run, what)`` pairs into one line per run (``run: no a, b``); keep strings."""
    per_run: dict[str, list[str]] = {}
    for item in items:
        who, what = item if isinstance(item, tuple) else (item, "")
        lst = per_run.setdefault(who, [])
        if what and what not in lst:
            lst.append(what)
    lines = []
    for who, whats in per_run.items():
        if not whats:
            lines.append(who)
        elif whats[0].startswith("run "):  # a failed run: one reason
            lines.append(f"{who}: {whats[0]}")
        else:
            lines.append(f"{who}: no {', '.join(whats)}")
    return lines


# ----------------------------------------------------------------------------- Tables I and II


def table_integration(runs: Sequence[Run], *, dropout: bool) -> Table:
    """Table I (``dropout=False``) or II (``dropout=True``): integration x weight sharing.

    Rows: full-protocol configurations (trained on the study's sequences) without / with
    sequence dropout, in the paper's order, the pre/post subtraction ones in a section
    below. Values: ``test.full.*``. Table II adds the relative change of each mean against
    the no-dropout twin (same configuration, dropout off): ``(d - n) / n``, shown as
    ``(+x.x%)``; ``(no twin)`` when the twin was not run, ``(n/a)`` when its mean is 0.
    """
    tid = "II" if dropout else "I"
    title = (
        "Pulse sequence integration with dropout training"
        if dropout
        else "Pulse sequence integration"
    )
    seqs = study_sequences(runs)
    groups = [
        g
        for g in group_by_config(runs)
        if g.sequences == seqs and g.has_dropout == dropout
    ]
    pol = has_policies(groups)
    table = Table(tid, title, ["Integration Level", "Weight Sharing", "Seeds"], _value_columns(pol))
    if not groups:
        table.reason = (
            f"needs runs trained on all of {list(seqs)} "
            + ("with sequence dropout (train.dropout_p > 0 for some sequence)" if dropout else "without sequence dropout")
            + "; the study has none"
        )
        return table
    groups.sort(key=row_order)
    twins: dict[tuple, ConfigGroup] = {}
    if dropout:
        twins = {
            twin_key(g): g
            for g in group_by_config(runs)
            if g.sequences == seqs and not g.has_dropout
        }
    section_done = False
    sharing = _sharing_cells(groups)
    for g in groups:
        section = None
        if g.first.fusion == "subtract" and not section_done:
            section = "Pre- and post-contrast subtraction"
            section_done = True
        row = _metric_row(
            g, lambda m: metric_key("test", "full", m), [g.integration_label, sharing[id(g)]],
            table.missing, section=section, policies=pol,
        )
        if dropout:
            twin = twins.get(twin_key(g))
            for metric, cell in zip(METRICS, row.cells[: len(METRICS)], strict=True):
                if cell.missing:
                    continue
                if twin is None:
                    cell.detail += " (no twin)"
                    continue
                base = aggregate(twin, metric_key("test", "full", metric)).mean
                if base is None:
                    cell.detail += " (twin missing)"
                elif base == 0:
                    cell.detail += " (n/a)"
                else:
                    cell.detail += f" ({relative_change(cell.value, base)})"
            if twin is None:
                table.notes.append(f"{g.label}: no no-dropout twin in this study; relative change not shown")
        table.rows.append(row)
    mark_best(table.rows)
    absent = [
        label
        for integ, sharing, fusion, label in PAPER_ROWS
        if not any(_matches_paper_row(g, integ, sharing, fusion) for g in groups)
        and not (dropout and fusion == "subtract")  # the paper trains no subtraction+dropout model
    ]
    if absent:
        table.notes.append("Paper rows not run in this study: " + "; ".join(absent))
    if dropout:
        table.notes.append("In parentheses after a mean: relative change against the no-dropout twin.")
    table.missing = _dedupe(table.missing)
    return table


# ----------------------------------------------------------------------------- Tables III and IV


def table_censored(runs: Sequence[Run], *, dropout: bool, censored: str | None = None) -> Table:
    """Table III (``dropout=False``) / IV (``dropout=True``): ``censored`` removed at test time.

    Rows: full-protocol configurations without / with dropout, evaluated on the test
    condition whose inputs are all sequences but ``censored``. Table III adds, in a section,
    the models trained on exactly that subset (no dropout), evaluated on their full protocol.
    ``censored`` None: the study's (:func:`~seqablate.analysis.runs.study_censored`).
    """
    censored = censored or study_censored(runs)
    tid = "IV" if dropout else "III"
    kind = "Dropout" if dropout else "Non-dropout"
    seqs = study_sequences(runs)
    all_groups = group_by_config(runs)
    groups = sorted(
        (g for g in all_groups if g.sequences == seqs and g.has_dropout == dropout), key=row_order
    )
    pol = has_policies(groups)
    table = Table(
        tid,
        f"{kind} models on {censored}-censored data",
        ["Integration Level", "Weight Sharing", "Seeds"],
        _value_columns(pol),
    )
    if censored not in seqs:
        table.reason = f"the study's sequences {list(seqs)} do not include {censored}"
        return table
    kept = tuple(s for s in seqs if s != censored)
    cond = _condition_for(runs, kept, seqs)
    exact = sorted(
        (g for g in all_groups if g.sequences == kept and not g.has_dropout), key=row_order
    ) if not dropout else []
    if groups and cond is None:
        table.missing.append(
            f"no run logged a test condition with {censored} censored "
            f"(e.g. test.censor_{censored}.mAP)"
        )
    if cond is not None:
        sharing = _sharing_cells(groups)
        for g in groups:
            table.rows.append(
                _metric_row(
                    g, lambda m, c=cond: metric_key("test", c, m),
                    [g.integration_label, sharing[id(g)]],
                    table.missing, policies=pol,
                )
            )
    for i, g in enumerate(exact):
        table.rows.append(
            _metric_row(
                g, lambda m: metric_key("test", "full", m),
                [g.integration_label, g.sharing_label + (f" [{g.extra}]" if g.extra else "")],
                table.missing,
                section=f"Trained without {censored}" if i == 0 else None, policies=pol,
            )
        )
    if not table.rows:
        what = "with" if dropout else "without"
        table.reason = (
            f"needs full-protocol runs {what} dropout evaluated with {censored} censored"
            + ("" if dropout else f", or runs trained without {censored}")
            + "; the study has none"
        )
    elif not dropout and not exact:
        table.notes.append(f"No model trained without {censored} in this study (the paper's last row).")
    mark_best(table.rows)
    table.missing = _dedupe(table.missing)
    return table


# ----------------------------------------------------------------------------- Table V


def table_subsets(runs: Sequence[Run]) -> list[Table]:
    """Table V: each dropout configuration on every evaluated sequence subset (a row each).

    One table per full-protocol dropout configuration that logged at least two test
    conditions that are sequence subsets; columns are the sequences (✓ given, ✗ censored)
    then the metrics. Rows follow :func:`seqablate.sequences.subsets` (full protocol first).
    Without dropout configurations, the no-dropout ones are tabulated instead (noted).
    """
    seqs = study_sequences(runs)
    all_subsets = subsets(seqs)
    conds = {}
    for c in logged_conditions(runs):
        sub = condition_subset(c, seqs)
        if sub is not None:
            conds.setdefault(sub, c)
    full_groups = [g for g in group_by_config(runs) if g.sequences == seqs]
    candidates = sorted((g for g in full_groups if g.has_dropout), key=row_order)
    fallback = not candidates
    if fallback:
        candidates = sorted(full_groups, key=row_order)
    tables: list[Table] = []
    for i, g in enumerate(candidates):
        logged = {
            sub: c
            for sub, c in conds.items()
            if any(metric_key("test", c, "mAP") in r.metrics for r in g.runs)
        }
        if len(logged) < 2:
            continue
        tid = "V" if len(candidates) == 1 else f"V.{i + 1}"
        pol = has_policies([g])
        t = Table(
            tid,
            f"{g.label} on different combinations of input sequences",
            list(seqs) + ["Seeds"],
            _value_columns(pol),
        )
        for sub in all_subsets:
            if sub in logged:
                row = _metric_row(
                    g, lambda m, c=logged[sub]: metric_key("test", c, m),
                    ["✓" if s in sub else "✗" for s in seqs], t.missing, policies=pol,
                )
                t.rows.append(row)
        t.notes.append(
            f"{len(t.rows)} of the {len(all_subsets)} non-empty subsets of {len(seqs)} sequences "
            "were evaluated."
        )
        if fallback:
            t.notes.append("No dropout-trained configuration in this study: a no-dropout model is shown.")
        mark_best(t.rows)
        t.missing = _dedupe(t.missing)
        tables.append(t)
    if not tables:
        t = Table("V", "Models on different combinations of input sequences", list(seqs), list(METRICS.values()))
        t.reason = "needs a full-protocol model evaluated on two or more sequence subsets; the study has none"
        tables.append(t)
    return tables


# ----------------------------------------------------------------------------- Table VI


def _training_label(g: ConfigGroup, seqs: tuple[str, ...]) -> str:
    if g.sequences != seqs:
        left = [s for s in seqs if s not in g.sequences]
        return "without " + "+".join(left) if left else subset_label(g.sequences, g.sequences)
    return f"dropout {g.dropout_label}" if g.has_dropout else "all sequences"


def table_external(runs: Sequence[Run]) -> list[Table]:
    """Table VI: every configuration on each external cohort (one table per cohort).

    Rows: dropout configurations first, then no-dropout, then models trained on a subset
    (each in the paper's row order), with a "Training" column saying which.
    """
    seqs = study_sequences(runs)
    cohorts = external_cohorts(runs)
    if not cohorts:
        t = Table("VI", "Testing on external cohorts", [], list(METRICS.values()))
        t.reason = "no run logged external.<cohort>.* metrics (evaluate with --external NAME=PATH)"
        return [t]
    tables = []
    groups = sorted(
        group_by_config(runs),
        key=lambda g: (g.sequences != seqs, not g.has_dropout, row_order(g)),
    )
    pol = has_policies(groups)
    for cohort in cohorts:
        t = Table(
            "VI" if len(cohorts) == 1 else f"VI.{cohort}",
            f"Testing on the external cohort '{cohort}'",
            ["Integration Level", "Weight Sharing", "Training", "Seeds"],
            _value_columns(pol),
        )
        for g in groups:
            row = _metric_row(
                g, lambda m, c=cohort: metric_key("external", "full", m, cohort=c),
                [g.integration_label, g.sharing_label + (f" [{g.extra}]" if g.extra else ""), _training_label(g, seqs)],
                t.missing, policies=pol,
            )
            t.rows.append(row)
        mark_best(t.rows)
        t.missing = _dedupe(t.missing)
        tables.append(t)
    return tables


#: The note every table with intervals carries.
CI_NOTE = ("(lo, hi): 95 % CI of the configuration's mean over seeds for the training recipe (seed and "
           "patients random: what a new seed would give on new patients); † marks the CI of these trained "
           "networks only (patients resampled, seeds fixed), shown where fewer than 3 seeds make a recipe "
           "interval unavailable.")


def baseline_group(run: Run) -> ConfigGroup:
    """An outside baseline (another tool's predictions, one network) as a one-run group."""
    name = run.tags.get("seqablate.baseline") or run.name
    return ConfigGroup((("baseline", name),), [run], f"Outside: {name}", "-")


def add_baselines(tables: list[Table], baselines: Sequence[Run], cohorts: Sequence[str] = ()) -> None:
    """Append each outside baseline as a row of Table I (``test.full``) and of each Table VI
    (``external.<cohort>``) it was scored on, under an "Outside baselines" section.
    ``cohorts``: the study's external cohorts (a single one's table is "VI", several "VI.<name>")."""
    if not baselines:
        return
    for t in tables:
        if not t.available or not (t.id == "I" or t.id.startswith("VI")):
            continue
        cohort = None if t.id == "I" else (t.id.split(".", 1)[1] if "." in t.id else (cohorts[0] if cohorts else None))
        if t.id.startswith("VI") and cohort is None:
            continue
        first = True
        for b in baselines:
            key = (lambda m: metric_key("test", "full", m)) if cohort is None else \
                (lambda m, c=cohort: metric_key("external", "full", m, cohort=c))
            if key("mAP") not in b.metrics:
                continue
            g = baseline_group(b)
            labels = [g.integration_label, "-"] + (["outside tool"] if t.id.startswith("VI") else [])
            pol = len(t.value_columns) > len(METRICS)
            row = _metric_row(g, key, labels, t.missing, section="Outside baselines" if first else None, policies=False)
            if pol:  # no BatchNorm statistics policy: the model is not seqablate's
                row.cells += [Cell(None, "n/a", " (outside tool)") for _ in POLICY_COLUMNS]
            t.rows.append(row)
            first = False
        if not first:
            t.notes.append("Outside baselines: another tool's predictions scored by `seqablate evaluate "
                           "--predictions` on the same patients (one network: its CI is that of these predictions).")


def build_tables(runs: Sequence[Run], intervals: IntervalFn | None = None,
                 baselines: Sequence[Run] = ()) -> list[Table]:
    """All paper tables for a study's trial runs (unavailable ones carry their reason).

    ``intervals``: where the mAP cells' seed-aware CIs come from (the report passes one that
    reads every run's per-patient detections); without it a cell shows a CI only for a
    single seed (its own logged one). ``baselines``: outside tools' runs, added as rows of
    Tables I and VI.
    """
    censored = study_censored(runs)
    token = _INTERVALS.set(intervals)
    try:
        out = [
            table_integration(runs, dropout=False),
            table_integration(runs, dropout=True),
            table_censored(runs, dropout=False, censored=censored),
            table_censored(runs, dropout=True, censored=censored),
        ]
        out += table_subsets(runs)
        out += table_external(runs)
        add_baselines(out, list(baselines), external_cohorts(runs))
    finally:
        _INTERVALS.reset(token)
    for t in out:
        if t.available:
            t.notes.append(CI_NOTE)
        if any(c in t.value_columns for c in POLICY_COLUMNS.values()):
            t.notes.append(
                "mAP, stored / per-subset BN stats: the same BatchNorm models with the running "
                "statistics of training, or with statistics re-estimated for the sequences each patient "
                "has (eval.norm_stats); the other columns use each run's own policy."
            )
    return out
