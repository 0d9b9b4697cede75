"""Trial runs as plain records: their configuration, evaluation conditions, seed groups.

The analysis never talks to MLflow: :func:`runs_from_frame` turns the runs table that
:func:`seqablate.tracking.list_trials` returns (MLflow's ``search_runs`` shape: one row per
run, columns ``run_id``, ``status``, ``params.<dotted key>``, ``tags.<key>``,
``metrics.<key>``) into :class:`Run` records; everything else here is pure.

Metric names are :mod:`seqablate.metric_names`' (the module evaluation writes them with):
``test.<condition>.<metric>`` with ``<metric>`` in :data:`METRICS` and CI bounds
``<metric>_lo`` / ``<metric>_hi``, e.g. ``test.full.mAP``, ``test.censor_t1_gre_post.mAP_lo``;
external cohorts as ``external.<cohort>.<metric>``; the other BatchNorm statistics policy
under ``test_<policy>.`` / ``external_<policy>.``. Where a trial's time went is
``time.<phase>`` (:attr:`Run.timing`, :func:`timing_summary`).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqablate import metric_names as mn
from seqablate import vocabulary as V
from seqablate.config import DropoutP, EvalConfig, ModelConfig, dropout_active, parse_dropout_p
from seqablate.metric_names import parse_metric
from seqablate.sequences import PAPER_SEQUENCES

#: Lesion-level metrics shown in the tables, in column order, with their column titles.
METRICS: dict[str, str] = {"mAP": "mAP", "max_sensitivity": "Max Sens.", "tp_dice": "TP Dice"}

#: Params that differ between the seeds of one configuration (never part of its identity).
SEED_KEYS: frozenset[str] = frozenset({"train.seed", "seed", "name"})
#: Params describing sequence dropout (a configuration's "twin" differs only by these).
DROPOUT_KEYS: frozenset[str] = frozenset({"train.dropout_p", "train.dropout_mode"})
#: Param prefixes that are bookkeeping, not configuration (Tune/Ray internals).
IGNORED_PREFIXES: tuple[str, ...] = ("tune.", "ray.", "mlflow.")

#: Statuses whose metrics are used. A FAILED/KILLED run is reported as missing, never as zeros.
USABLE_STATUSES: frozenset[str] = frozenset({"FINISHED"})


@dataclass(frozen=True)
class Run:
    """One trial run.

    ``metrics`` holds only metrics the run logged (latest value); a metric absent from the
    dict was not logged, which the tables report as missing rather than as zero.
    """

    run_id: str
    name: str
    status: str
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """True when the run finished (its metrics are final)."""
        return self.status in USABLE_STATUSES

    def param(self, key: str, tag: str | None = None, default: str | None = None) -> str | None:
        """A param by dotted key, else the tag ``tag`` (runs tagged but not parameterised)."""
        if key in self.params:
            return str(self.params[key])
        if tag is not None and tag in self.tags:
            return str(self.tags[tag])
        return default

    @property
    def integration(self) -> str:
        return self._model("integration")

    @property
    def integration_point(self) -> str:
        return self._model("integration_point")

    @property
    def fusion(self) -> str:
        return self._model("fusion")

    @property
    def sharing(self) -> str:
        return self._model("sharing")

    def _model(self, key: str) -> str:
        """``model.<key>`` (or its tag), else the config's default (a run logged before the key
        existed trained with it)."""
        default = str(getattr(_model_defaults(), key))
        return self.param(f"model.{key}", key, default) or default

    @property
    def dropout_p(self) -> DropoutP:
        """The run's ``train.dropout_p``: a number, or ``{sequence: p}`` for per-sequence
        probabilities (logged as ``t1_gre_post=0.4,flair=0.1``). Use :attr:`has_dropout` to
        ask whether it was trained with dropout. Raises ValueError naming the run and the value
        when the param is neither."""
        raw = self.param("train.dropout_p", "dropout", "0")
        if raw in (None, "None", ""):
            return 0.0
        try:
            return parse_dropout_p(raw)
        except ValueError as err:
            raise ValueError(
                f"run {self.run_id} ({self.name}): train.dropout_p is not a number in [0, 1] or a "
                f"mapping sequence=p: {raw!r} ({err})"
            ) from None

    @property
    def has_dropout(self) -> bool:
        """Trained with sequence dropout: p > 0, or a mapping with some p > 0 (a mapping of
        zeros is no dropout, so its run is a no-dropout twin)."""
        return dropout_active(self.dropout_p)

    @property
    def dropout_label(self) -> str:
        """``p=0.25`` or ``p t1_gre_post=0.4, flair=0.1`` (zeros left out); ``""`` without dropout."""
        return dropout_label(self.dropout_p)

    @property
    def dropout_order(self) -> tuple:
        """A sort key: no dropout first, then one p for all by p, then per-sequence mappings."""
        p = self.dropout_p
        if not dropout_active(p):
            return (0, 0.0, ())
        if isinstance(p, Mapping):
            return (2, max(p.values()), tuple(p.items()))
        return (1, float(p), ())

    @property
    def seed(self) -> str:
        return self.param("train.seed", "seed", "?") or "?"

    @property
    def timing(self) -> dict[str, float] | None:
        """Seconds of wall time per phase (:func:`timing_columns` order: the phases, ``other``,
        ``total``), or None when the run logged no ``time.total`` (a run of a seqablate that
        did not time trials, or one that never finished). A phase the run did not log is 0."""
        if mn.time_key(mn.TIME_TOTAL) not in self.metrics:
            return None
        return {c: float(self.metrics.get(mn.time_key(c), 0.0)) for c in timing_columns()}

    @property
    def sequences(self) -> tuple[str, ...]:
        """The sequences the model was trained on (``data.sequences``, study order)."""
        raw = self.param("data.sequences", "sequences")
        if not raw:
            return PAPER_SEQUENCES
        return tuple(s.strip() for s in re.split(r"[,+ ]+", raw.strip("[]")) if s.strip())


@functools.cache
def _model_defaults() -> ModelConfig:
    return ModelConfig()


def dropout_label(p: DropoutP) -> str:
    """How a dropout setting reads in a table: ``p=0.25``, ``p t1_gre_post=0.4, flair=0.1``
    (sequences with p = 0 left out), ``""`` without dropout."""
    if not dropout_active(p):
        return ""
    if isinstance(p, Mapping):
        return "p " + ", ".join(f"{s}={v:g}" for s, v in p.items() if v > 0)
    return f"p={float(p):g}"


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def runs_from_frame(df: Any) -> list[Run]:
    """Runs from an MLflow-style runs table (pandas DataFrame, one row per run).

    Recognised columns: ``run_id`` (required), ``status``, ``tags.mlflow.runName`` or
    ``run_name``, ``params.*``, ``tags.*``, ``metrics.*``. NaN cells are treated as "not
    logged" (``search_runs`` fills absent metrics with NaN).

    Raises ValueError naming the missing column when there is no ``run_id``.
    """
    if "run_id" not in df.columns:
        raise ValueError(f"runs table has no 'run_id' column (columns: {list(df.columns)[:12]})")
    runs: list[Run] = []
    for rec in df.to_dict("records"):
        params, tags, metrics = {}, {}, {}
        for col, v in rec.items():
            if _is_missing(v):
                continue
            if col.startswith("params."):
                params[col[7:]] = str(v)
            elif col.startswith("tags."):
                tags[col[5:]] = str(v)
            elif col.startswith("metrics."):
                metrics[col[8:]] = float(v)
        name = rec.get("run_name") or tags.get("mlflow.runName") or str(rec["run_id"])[:8]
        runs.append(
            Run(
                run_id=str(rec["run_id"]),
                name=str(name),
                status=str(rec.get("status") or "FINISHED"),
                params=params,
                tags=tags,
                metrics=metrics,
            )
        )
    return runs


def timing_columns() -> tuple[str, ...]:
    """The phases of a trial's time in the order a trial meets them, then ``other`` and
    ``total`` (:data:`seqablate.metric_names.TIME_PHASES`)."""
    return (*mn.TIME_PHASES, mn.TIME_OTHER, mn.TIME_TOTAL)


def timed_runs(runs: Iterable[Run]) -> dict[str, dict[str, float]]:
    """Run name -> :attr:`Run.timing` of every finished run that logged its time, in order
    (empty for a study whose runs predate timing)."""
    return {r.name: t for r in runs if r.usable and (t := r.timing) is not None}


def timing_summary(runs: Iterable[Run]) -> Any:
    """The study's time per phase, summed over its timed runs (:func:`timed_runs`): a pandas
    DataFrame with one row per phase, then ``other`` and ``total``, and columns ``phase``,
    ``seconds`` (the sum), ``share`` (of the total seconds, 0-1; NaN when the total is 0),
    ``median_s`` (the median trial's seconds) and ``runs``. Empty (those columns, no rows)
    without a timed run."""
    import numpy as np
    import pandas as pd

    timed = list(timed_runs(runs).values())
    cols = ["phase", "seconds", "share", "median_s", "runs"]
    if not timed:
        return pd.DataFrame(columns=cols)
    total = sum(t[mn.TIME_TOTAL] for t in timed)
    rows = []
    for c in timing_columns():
        values = [t[c] for t in timed]
        seconds = float(sum(values))
        rows.append({"phase": c, "seconds": seconds, "share": seconds / total if total > 0 else math.nan,
                     "median_s": float(np.median(values)), "runs": len(values)})
    return pd.DataFrame(rows, columns=cols)


def study_sequences(runs: Sequence[Run]) -> tuple[str, ...]:
    """The study's full protocol: the longest sequence list any run was trained on.

    Ties between equally long lists go to the most common one. Empty ``runs`` gives the
    paper's four sequences.
    """
    if not runs:
        return PAPER_SEQUENCES
    counts = Counter(r.sequences for r in runs)
    return max(counts, key=lambda s: (len(s), counts[s]))


def study_censored(runs: Sequence[Run]) -> str:
    """The sequence the study's headline claims censor: the first of ``eval.censor`` that most
    runs name (a sequence of the study's protocol), else the config's default (the paper's
    BRAVO, ``t1_gre_post``) when the protocol has it, else the protocol's first sequence.
    Runs logged ``eval.censor`` comma-joined; an empty value (``each_sequence`` studies)
    names none."""
    seqs = study_sequences(runs)
    firsts = Counter(c.split(",")[0].strip() for r in runs if (c := r.params.get("eval.censor")))
    named = [s for s, _ in firsts.most_common() if s in seqs]
    if named:
        return named[0]
    default = EvalConfig().censor
    return default[0] if default and default[0] in seqs else seqs[0]


def logged_conditions(runs: Iterable[Run]) -> list[str]:
    """Test conditions logged by any run, 'full' first, then in first-seen order."""
    seen: dict[str, None] = {}
    for r in runs:
        for k in r.metrics:
            p = parse_metric(k)
            if p and p.split == "test" and p.policy is None:
                seen.setdefault(p.condition, None)
    out = list(seen)
    return sorted(out, key=lambda c: c != "full")


def external_cohorts(runs: Iterable[Run]) -> list[str]:
    """External cohort names logged by any run, in first-seen order."""
    seen: dict[str, None] = {}
    for r in runs:
        for k in r.metrics:
            p = parse_metric(k)
            if p and p.split == "external" and p.cohort and p.policy is None:
                seen.setdefault(p.cohort, None)
    return list(seen)


def config_items(run: Run, *, drop: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
    """A run's configuration identity: its params minus seed/bookkeeping keys (sorted)."""
    skip = set(SEED_KEYS) | set(drop)
    items = [
        (k, v)
        for k, v in run.params.items()
        if k not in skip and not k.startswith(IGNORED_PREFIXES)
    ]
    if not items:  # runs without params: identify by tags (integration, sharing, ...)
        tag_keys = ("integration", "integration_point", "fusion", "sharing", "dropout", "dropout_mode")
        items = [(f"tag:{t}", str(run.tags[t])) for t in tag_keys if t in run.tags and t not in skip]
    return tuple(sorted(items))


_INTEGRATION_LABEL = V.INTEGRATION_LABELS
_SHARING_LABEL = V.SHARING_LABELS


@dataclass
class ConfigGroup:
    """The runs of one configuration (differing only by seed)."""

    key: tuple[tuple[str, str], ...]
    runs: list[Run]  # every run of the configuration, usable or not
    integration_label: str = ""
    sharing_label: str = ""
    extra: str = ""  # what distinguishes groups that would otherwise share a label

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def usable(self) -> list[Run]:
        return [r for r in self.runs if r.usable]

    @property
    def dropout_p(self) -> DropoutP:
        return self.first.dropout_p

    @property
    def has_dropout(self) -> bool:
        return self.first.has_dropout

    @property
    def dropout_label(self) -> str:
        return self.first.dropout_label

    @property
    def sequences(self) -> tuple[str, ...]:
        return self.first.sequences

    @property
    def label(self) -> str:
        """One-line label, e.g. ``Mid (layer4) / L2 Tied, p=0.25``."""
        parts = [self.integration_label]
        if self.sharing_label != "-":
            parts.append(self.sharing_label)
        text = " / ".join(parts)
        if self.has_dropout:
            text += f", dropout {self.dropout_label}"
        if self.extra:
            text += f" [{self.extra}]"
        return text

    @property
    def seeds(self) -> list[str]:
        return [r.seed for r in self.runs]


def _labels(run: Run) -> tuple[str, str]:
    integ = run.integration
    label = _INTEGRATION_LABEL.get(integ, integ)
    if integ == "mid":
        extra = [run.integration_point]
        if run.fusion not in ("concat", "subtract"):
            extra.append(run.fusion)
        label += f" ({', '.join(extra)})"
    if integ == "input":
        sharing = "-"
    else:
        sharing = _SHARING_LABEL.get(run.sharing, run.sharing)
        if run.fusion == "subtract":
            sharing += ", subtraction"
    return label, sharing


def group_by_config(runs: Iterable[Run]) -> list[ConfigGroup]:
    """Group runs that differ only by seed; label each group like the paper's row labels.

    Groups whose labels coincide although their params differ (e.g. two learning rates) get
    the differing params appended (``extra``), so every row is distinguishable.
    Order: first appearance.
    """
    groups: dict[tuple, ConfigGroup] = {}
    for r in runs:
        key = config_items(r)
        if key not in groups:
            integ, sharing = _labels(r)
            groups[key] = ConfigGroup(key, [], integ, sharing)
        groups[key].runs.append(r)
    out = list(groups.values())
    # Groups trained on different sequence lists sit in different rows/sections already.
    by_label: dict[tuple, list[ConfigGroup]] = {}
    for g in out:
        by_label.setdefault((g.label, g.sequences), []).append(g)
    for same in by_label.values():
        if len(same) < 2:
            continue
        dicts = [dict(g.key) for g in same]
        keys = sorted(set().union(*dicts))
        differing = [k for k in keys if len({d.get(k) for d in dicts}) > 1]
        for g, d in zip(same, dicts, strict=True):
            g.extra = ", ".join(f"{k.split('.')[-1]}={d.get(k, '-')}" for k in differing)
    return out


def twin_key(group: ConfigGroup) -> tuple[tuple[str, str], ...]:
    """The configuration identity without dropout (to pair a dropout model with its twin)."""
    return tuple((k, v) for k, v in group.key if k not in DROPOUT_KEYS and k != "tag:dropout")
