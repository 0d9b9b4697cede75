"""The names of what a trial logs and what the analysis reads back, defined once.

Evaluation metrics::

    test.<condition>.<metric>[_lo|_hi]          the test split under a condition
    external.<cohort>.<metric>[_lo|_hi]         an external cohort (its own sequences)
    test_<policy>.<condition>.<metric>          the same under the *other* BatchNorm
    external_<policy>.<cohort>.<metric>         statistics policy (stored / per_subset)

``test.`` and ``external.`` hold the model's own policy (``eval.norm_stats``); a BatchNorm
model also logs the other policy under ``test_<policy>.`` / ``external_<policy>.``, so the
two sit side by side. Conditions: ``full``, ``censor_<seq>``, ``subset_<a>-<b>`` (the
sequences kept, in study order; :func:`condition_subset` reads them back).

Validation, at every validation of a trial::

    val.<condition>.<metric>    each condition of ``train.val_conditions`` (mAP, max_sensitivity,
                                tp_dice), under the run's statistics policy
    val.objective               the trial's objective (``train.objective``) at this validation
    val.best_objective          the best ``val.objective`` so far: what checkpoint selection,
                                Tune's schedulers and Optuna use, and the report picks seeds by
    val.mAP, val.best_mAP       the same two numbers under their first names (reports and tools
                                that read them keep working); ``val.max_sensitivity`` and
                                ``val.tp_dice`` are the selection condition's when the objective
                                is one condition

A multi-objective trial (``train.objectives``, objective ``i`` counted from 1, objective 1 being
``train.objective``) also logs, at every validation::

    val.objective.<i>           objective i at this validation
    val.best_objective.<i>      the best objective i so far, on its own: the bests of different
                                objectives may come from different validations, so no one model
                                need reach them all (it says what selecting by i would give)
    val.selected_objective.<i>  objective i at the selected checkpoint (the validation where
                                objective 1 was best, ``val.best_step``; the latest with
                                ``train.select: last``): what the evaluated model does. Optuna's
                                objectives and the Pareto front's coordinates; with
                                ``select: best`` ``val.selected_objective.1`` equals
                                ``val.best_objective``

Saliency traces (per step and cumulative)::

    saliency.sequence.<name>      saliency.cumulative.sequence.<name>
    saliency.slice.<offset>       saliency.cumulative.slice.<offset>

Time, once per trial, in seconds of wall time (:mod:`seqablate.timing`)::

    time.<phase>    each phase of :data:`TIME_PHASES`: startup, data, batches, steps, saliency,
                    validation, norm_stats, evaluation, bootstrap, checkpoint, logging; a second
                    is in one phase only (a phase inside another is taken out of it)
    time.other      the seconds in no phase, so that the phases and other sum to total
    time.total      the trial driver's start to its end

Sequence contributions, when every sequence subset was evaluated (``eval.all_subsets``)::

    test.shapley.<seq>              the exact Shapley value of the sequence for test lesion mAP
    test_<policy>.shapley.<seq>     (:mod:`seqablate.metrics.shapley`), under each policy

The trial's training set, once::

    data.n_train                    patients trained on (the x of a learning curve)

Artifacts of a trial run: :data:`EVAL_DIR` (``lesions.csv``, ``patients.csv``,
``pr_curves.csv``, ``froc.csv``, ``pr_curves.png``), :data:`MODEL_DIR` (the MLflow model),
:data:`SPLIT_JSON` (the trial's split: patient ids of train, val and test, the training
cohort and the sequences; also inside ``model/``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from seqablate.vocabulary import PER_SUBSET, STORED

SPLITS = ("test", "external")
POLICIES = (STORED, PER_SUBSET)
#: Lesion-level metrics an evaluation logs per condition (CI bounds: ``mAP_lo``/``mAP_hi``).
EVAL_METRICS = ("mAP", "max_sensitivity", "tp_dice", "froc_mean", "n_truth", "n_pred", "n_tp", "n_patients")

#: Validation metrics logged per condition (``val.<condition>.<metric>``).
VAL_METRICS = ("mAP", "max_sensitivity", "tp_dice")
#: The trial's objective at one validation, and the best of it so far: the score a trial selects
#: its checkpoint by, Tune's metric, and what the report picks a seed by.
VAL_OBJECTIVE = "val.objective"
VAL_BEST_OBJECTIVE = "val.best_objective"
#: Their first names, kept for the readers of older runs (equal to the two above).
VAL_MAP = "val.mAP"
VAL_BEST = "val.best_mAP"
VAL_BEST_STEP = "val.best_step"
#: The per-objective validation metrics of a multi-objective trial (:func:`objective_key`).
OBJECTIVE_KINDS: tuple[str, ...] = ("objective", "best_objective", "selected_objective")

#: What a trial's wall time is divided into (``time.<phase>``), in the order a trial meets them.
TIME_PHASES: tuple[str, ...] = ("startup", "data", "batches", "steps", "saliency", "validation", "norm_stats",
                                "evaluation", "bootstrap", "checkpoint", "logging")
#: The seconds in no phase, and the trial's wall time (the phases and other sum to it).
TIME_OTHER = "other"
TIME_TOTAL = "total"
TIME = "time"

EVAL_DIR = "eval"
LESIONS_CSV = "lesions.csv"
PATIENTS_CSV = "patients.csv"
PR_CSV = "pr_curves.csv"
PR_PNG = "pr_curves.png"
FROC_CSV = "froc.csv"
MODEL_DIR = "model"
SPLIT_JSON = "split.json"

SHAPLEY = "shapley"
#: How many patients the trial trained on (``data.train_patients`` / ``train_fraction`` of the
#: training split, else all of it): a learning curve's x.
N_TRAIN = "data.n_train"

SALIENCY = "saliency"
SALIENCY_KINDS = ("sequence", "slice")

_EVAL_RE = re.compile(
    rf"^(?P<split>test|external)(?:_(?P<policy>{'|'.join(POLICIES)}))?\."
    r"(?P<rest>.+)\.(?P<metric>[A-Za-z_]+?)(?P<bound>_lo|_hi)?$"
)


@dataclass(frozen=True)
class MetricName:
    """A parsed evaluation metric name."""

    split: str  # 'test' or 'external'
    condition: str  # 'full', 'censor_t1_gre_post', ... ('full' for external cohorts)
    cohort: str | None  # external cohort name
    metric: str  # 'mAP', 'max_sensitivity', ...
    bound: str | None = None  # None, '_lo' or '_hi'
    policy: str | None = None  # None = the model's own policy; else 'stored' / 'per_subset'

    @property
    def key(self) -> str:
        return metric_key(self.split, self.condition, self.metric + (self.bound or ""),
                          cohort=self.cohort, policy=self.policy)


def prefix(split: str, condition: str = "full", *, cohort: str | None = None, policy: str | None = None) -> str:
    """``test.<condition>`` / ``external.<cohort>`` (with ``_<policy>`` after the split)."""
    if split not in SPLITS:
        raise ValueError(f"unknown metric split {split!r}; valid: {list(SPLITS)}")
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"unknown norm policy {policy!r}; valid: {list(POLICIES)}")
    head = split if policy is None else f"{split}_{policy}"
    if split == "external":
        if not cohort:
            raise ValueError("an external metric needs its cohort name")
        return f"{head}.{cohort}" if condition == "full" else f"{head}.{cohort}.{condition}"
    return f"{head}.{condition}"


def metric_key(split: str, condition: str, metric: str, *, cohort: str | None = None, policy: str | None = None) -> str:
    """The full metric name; inverse of :func:`parse_metric`."""
    return f"{prefix(split, condition, cohort=cohort, policy=policy)}.{metric}"


def parse_metric(key: str) -> MetricName | None:
    """Parse an evaluation metric name (None for any other name)."""
    m = _EVAL_RE.match(key)
    if not m:
        return None
    split, rest, metric, bound, policy = m["split"], m["rest"], m["metric"], m["bound"], m["policy"]
    if split == "test":
        if rest == SHAPLEY:
            return None  # a sequence's contribution, not a condition (parse_shapley_key)
        return MetricName(split, rest, None, metric, bound, policy)
    cohort, _, cond = rest.partition(".")
    return MetricName(split, cond or "full", cohort, metric, bound, policy)


@dataclass(frozen=True)
class ValMetricName:
    """A parsed per-condition validation metric name (``val.<condition>.<metric>``)."""

    condition: str  # 'full', 'censor_t1_gre_post', 'subset_flair-t1_fse_post', ...
    metric: str  # 'mAP', 'max_sensitivity', 'tp_dice'

    @property
    def key(self) -> str:
        return val_key(self.condition, self.metric)


_VAL_RE = re.compile(r"^val\.(?P<condition>full|(?:censor|subset)_[A-Za-z0-9_\-]+)\.(?P<metric>[A-Za-z_]+)$")


def val_key(condition: str, metric: str = "mAP") -> str:
    """``val.<condition>.<metric>``, e.g. ``val.censor_t1_gre_post.mAP``; inverse of
    :func:`parse_val_metric`. Raises ValueError for a condition that is not ``full``,
    ``censor_<...>`` or ``subset_<...>`` (the names :mod:`seqablate.objectives` writes)."""
    key = f"val.{condition}.{metric}"
    if not _VAL_RE.match(key):
        raise ValueError(f"not a validation condition and metric: {condition!r}, {metric!r} "
                         "(conditions are 'full', 'censor_<seq>' or 'subset_<a>-<b>')")
    return key


def parse_val_metric(key: str) -> ValMetricName | None:
    """Parse ``val.<condition>.<metric>`` (None for any other name, ``val.mAP`` and
    ``val.objective`` included)."""
    m = _VAL_RE.match(key)
    return ValMetricName(m["condition"], m["metric"]) if m else None


def objective_key(i: int, kind: str = "objective") -> str:
    """``val.<kind>.<i>`` of objective ``i`` (counted from 1) of a multi-objective trial:
    ``kind`` one of :data:`OBJECTIVE_KINDS` (module docstring); inverse of
    :func:`parse_objective_key`. Raises ValueError for another kind or ``i`` < 1."""
    if kind not in OBJECTIVE_KINDS:
        raise ValueError(f"objective metric kind must be one of {list(OBJECTIVE_KINDS)}, got {kind!r}")
    if isinstance(i, bool) or not isinstance(i, int) or i < 1:
        raise ValueError(f"objectives are counted from 1, got {i!r}")
    return f"val.{kind}.{i}"


_OBJECTIVE_RE = re.compile(r"^val\.(?P<kind>objective|best_objective|selected_objective)\.(?P<i>[1-9][0-9]*)$")


def parse_objective_key(key: str) -> tuple[str, int] | None:
    """``(kind, i)`` of an :func:`objective_key` name, None for any other name (``val.objective``
    itself included)."""
    m = _OBJECTIVE_RE.match(key)
    return (m["kind"], int(m["i"])) if m else None


def shapley_key(sequence: str, *, policy: str | None = None) -> str:
    """``test.shapley.<sequence>`` (``test_<policy>.shapley.<sequence>`` for the other
    statistics policy); inverse of :func:`parse_shapley_key`."""
    if not sequence or "." in sequence:
        raise ValueError(f"not a sequence name: {sequence!r}")
    return f"{prefix('test', SHAPLEY, policy=policy)}.{sequence}"


_SHAPLEY_RE = re.compile(rf"^test(?:_(?P<policy>{'|'.join(POLICIES)}))?\.shapley\.(?P<seq>[^.]+)$")


def parse_shapley_key(key: str) -> tuple[str, str | None] | None:
    """``(sequence, policy)`` of a :func:`shapley_key` name (policy None: the run's own), None
    for any other name."""
    m = _SHAPLEY_RE.match(key)
    return (m["seq"], m["policy"]) if m else None


def saliency_key(kind: str, name: str | int, *, cumulative: bool = False) -> str:
    """``saliency[.cumulative].<kind>.<name>`` (kind: 'sequence' or 'slice')."""
    if kind not in SALIENCY_KINDS:
        raise ValueError(f"saliency kind must be one of {list(SALIENCY_KINDS)}, got {kind!r}")
    return f"{SALIENCY}.{'cumulative.' if cumulative else ''}{kind}.{name}"


def saliency_prefix(kind: str, *, cumulative: bool = False) -> str:
    """The prefix of :func:`saliency_key` names (ends with a dot)."""
    return saliency_key(kind, "", cumulative=cumulative)


def time_key(phase: str) -> str:
    """``time.<phase>`` of a phase of :data:`TIME_PHASES`, :data:`TIME_OTHER` or
    :data:`TIME_TOTAL`; inverse of :func:`parse_time_key`. Raises ValueError for another name."""
    if phase not in (*TIME_PHASES, TIME_OTHER, TIME_TOTAL):
        raise ValueError(f"unknown time phase {phase!r}; valid: {[*TIME_PHASES, TIME_OTHER, TIME_TOTAL]}")
    return f"{TIME}.{phase}"


def parse_time_key(key: str) -> str | None:
    """The phase (or ``other``, ``total``) of a :func:`time_key` name, None for any other name
    (a phase this version does not know included)."""
    head, _, phase = key.partition(".")
    return phase if head == TIME and phase in (*TIME_PHASES, TIME_OTHER, TIME_TOTAL) else None


# ----------------------------------------------------------------------------- conditions

FULL = "full"


def censor_condition(sequence: str) -> str:
    """``censor_<sequence>``: every sequence but one."""
    return f"censor_{sequence}"


#: The full-protocol test mAP under the model's own statistics policy (``test.full.mAP``): the
#: number a trial's line, a runs view and a search's fallback objective lead with.
TEST_FULL_MAP = metric_key("test", FULL, "mAP")


def censored_map_keys(keys: Iterable[str]) -> list[tuple[str, str]]:
    """``(sequence, key)`` for every ``test.censor_<sequence>.mAP`` among ``keys`` (the model's
    own policy, one censored sequence, no interval bound), sorted by key: what a study
    evaluated with ``eval.censor``, whichever sequences that named."""
    out = []
    for k in keys:
        m = parse_metric(k)
        if (m is not None and m.split == "test" and m.policy is None and m.bound is None and m.metric == "mAP"
                and m.condition.startswith("censor_") and "-" not in m.condition):
            out.append((m.condition[len("censor_"):], k))
    return sorted(out, key=lambda t: t[1])


def subset_condition(kept: Sequence[str]) -> str:
    """``subset_<a>-<b>``: only the sequences ``kept`` (pass them in study order).

    '-' joins them because MLflow metric names allow no '+' and sequence names hold no '-'.
    """
    if not kept:
        raise ValueError("a subset condition needs at least one sequence")
    return "subset_" + "-".join(kept)


def condition_subset(condition: str, sequences: Sequence[str]) -> tuple[str, ...] | None:
    """The sequences given to the model under an evaluation condition, in study order.

    ``full`` -> all; ``censor_<names>`` -> all but the named ones; ``subset_<names>`` or
    ``only_<names>`` -> the named ones. Several names may be joined by any separator
    (``censor_t1_fse_pre-flair``); names are matched against ``sequences`` (longest
    first, since canonical names contain underscores). Unknown shapes give None.
    """
    seqs = tuple(sequences)
    if condition == "full":
        return seqs
    m = re.match(r"^(censor|subset|only|with)[_.-]?(.*)$", condition)
    if not m:
        return None
    kind, rest = m.groups()
    named: set[str] = set()
    for name in sorted(seqs, key=len, reverse=True):
        if re.search(rf"(^|[^a-z0-9]){re.escape(name)}($|[^a-z0-9])", rest):
            named.add(name)
            rest = rest.replace(name, " ")
    if not named or rest.strip(" _-+.,"):
        return None
    if kind == "censor":
        kept = tuple(s for s in seqs if s not in named)
    else:
        kept = tuple(s for s in seqs if s in named)
    return kept or None
