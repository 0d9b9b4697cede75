"""Validation conditions and the objective a trial selects with: parsing, canonical names, value.

A trial validates its weights under every condition of ``train.val_conditions`` (``full``,
``censor_<seq>``, ``subset_<a>-<b>``: the evaluation's vocabulary, :mod:`seqablate.metric_names`)
and reduces the per-condition validation mAPs to ONE number, ``train.objective``:

- ``None`` (the default): the mAP of the first validation condition (``full`` unless told
  otherwise), what every trial selected by before there were several conditions;
- a condition name: that condition's mAP (added to the validation conditions if missing);
- ``worst`` / ``mean``: the minimum / the arithmetic mean over the validation conditions
  (at least two of them);
- a **deployment profile** ``{condition: share}``: the share of patients expected to arrive
  with each sequence subset, e.g. ``{full: 0.7, censor_t1_gre_post: 0.3}`` ("30 % of our
  referrals come without BRAVO"). Shares are >= 0 and sum to 1 (within
  :data:`SHARE_TOLERANCE`); conditions missing from the validation conditions are added. Its
  value is the share-weighted MEAN of the per-condition validation mAPs, not the mAP of a
  pooled cohort mixing those patients: lesion-level AP pools detections across patients, so a
  pooled mixed cohort's AP is not linear in the subsets' APs (and would depend on how many
  lesions each subset's patients have). The weighted mean is what the profile can promise:
  each arrival type's own expected score, weighted by how often it arrives.

The objective is computed at every validation (``val.objective``); checkpoint selection
(``trainables/loop.py::keep_best``), Tune's schedulers and Optuna all use the best of it
(``val.best_objective``), so they optimise the same number. A component that is NaN (a
condition without any validation lesion) makes the objective NaN, which never counts as a
best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from seqablate import metric_names as mn
from seqablate.naming import mapping_text, parse_mapping_text
from seqablate.sequences import UnknownSequenceError, canonical

WORST = "worst"
MEAN = "mean"
#: Objectives that reduce over all validation conditions.
AGGREGATES: tuple[str, ...] = (WORST, MEAN)
#: How far a profile's shares may sum from 1.
SHARE_TOLERANCE = 1e-6

Objective = str | dict[str, float] | None


def canonical_condition(name: str, sequences: Sequence[str], *, field: str = "train.val_conditions") -> str:
    """The one name of the sequence subset a condition gives the model, for ``sequences``.

    ``full`` (every sequence), ``censor_<seq>`` (every sequence but one), ``subset_<a>-<b>``
    (any other non-empty subset, in study order). Sequences may be named by alias
    (``censor_bravo``); other spellings of the same subset (``subset_`` of all but one,
    ``censor_a-b`` of several) are renamed to these, so one subset is logged under one name. Raises ValueError naming ``field`` and the value for a name
    that is not a condition over ``sequences`` or leaves no sequence.
    """
    seqs = tuple(sequences)
    kept = _kept(name, seqs)
    if not kept:
        raise ValueError(
            f"{field}: {name!r} is not a validation condition over the study's sequences {list(seqs)}; "
            "use 'full', 'censor_<sequence>' or 'subset_<a>-<b>' (the sequences kept, joined by '-')"
        )
    if len(kept) == len(seqs):
        return mn.FULL
    if len(kept) == len(seqs) - 1:
        (gone,) = (s for s in seqs if s not in kept)
        return mn.censor_condition(gone)
    return mn.subset_condition(kept)


def _kept(name: Any, seqs: tuple[str, ...]) -> tuple[str, ...] | None:
    """The sequences a condition keeps (study order), or None when it is not one: ``full``,
    or ``censor_`` / ``subset_`` and sequence names or aliases joined by ``-`` (``censor_bravo``)."""
    if not isinstance(name, str):
        return None
    text = name.strip()
    if text == mn.FULL:
        return seqs
    kind, sep, rest = text.partition("_")
    if kind not in ("censor", "subset") or not sep or not rest:
        return None
    try:
        named = {canonical(part) for part in rest.split("-")}
    except UnknownSequenceError:
        return None
    if not named <= set(seqs):
        return None
    kept = tuple(s for s in seqs if (s in named) == (kind == "subset"))
    return kept or None


def condition_censored(condition: str, sequences: Sequence[str]) -> tuple[str, ...]:
    """The sequences a (canonical) condition censors, in study order (``()`` for ``full``)."""
    kept = mn.condition_subset(condition, tuple(sequences))
    if kept is None:
        raise ValueError(f"{condition!r} is not a condition over {list(sequences)}")
    return tuple(s for s in sequences if s not in kept)


def robustness_conditions(sequences: Sequence[str]) -> list[str]:
    """The full protocol and each sequence censored alone (``[full]`` for one sequence): the
    validation conditions ``--objective worst|mean`` uses when a study names none."""
    seqs = tuple(sequences)
    return [mn.FULL] + ([mn.censor_condition(s) for s in seqs] if len(seqs) > 1 else [])


def _share(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"train.objective: the share of {name!r} must be a number, got {v!r}")
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"train.objective: the share of {name!r} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"train.objective: the share of {name!r} must be a finite number >= 0, got {v!r}")
    return float(f"{f:.12g}")


def parse_objective(value: Any) -> Objective:
    """The structure of a ``train.objective`` value, checked without the study's sequences.

    ``None`` stays None; a string is ``worst``, ``mean``, a condition name, or a profile
    written ``full=0.7,censor_t1_gre_post=0.3``; a mapping is a profile. A profile's shares
    must be numbers >= 0 summing to 1 within :data:`SHARE_TOLERANCE` (kept to 12 significant
    digits). Condition names are checked by :func:`resolve`. Raises ValueError naming
    ``train.objective`` and the value.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("train.objective: empty; give a condition ('full', 'censor_<seq>'), 'worst', 'mean' "
                             "or a deployment profile 'full=0.7,censor_t1_gre_post=0.3'")
        if "=" not in text:
            return text
        try:
            value = parse_mapping_text(text)
        except ValueError as err:
            raise ValueError(f"train.objective: a deployment profile is CONDITION=SHARE pairs: {err}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"train.objective: expected a condition, 'worst', 'mean' or a deployment profile "
                         f"{{condition: share}}, got {value!r}")
    if not value:
        raise ValueError("train.objective: an empty deployment profile; name at least one condition and its share")
    profile = {str(k).strip(): _share(str(k), v) for k, v in value.items()}
    total = math.fsum(profile.values())
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ValueError(
            f"train.objective: the deployment profile's shares sum to {total:.9g}, not 1 "
            f"(within {SHARE_TOLERANCE:g}): {mapping_text(profile)}; each share is the fraction of patients "
            "expected to arrive with that condition's sequences"
        )
    return profile


def resolve(objective: Objective, conditions: Sequence[str], sequences: Sequence[str]) -> tuple[Objective, list[str]]:
    """``(objective, validation conditions)`` in canonical form for ``sequences``.

    The conditions are canonicalised (:func:`canonical_condition`; a subset named twice is an
    error); a condition the objective names (alone or in a profile) that is not among them is
    appended, in the order named. ``worst`` / ``mean`` need at least two validation
    conditions. Raises ValueError naming ``train.val_conditions`` or ``train.objective``.
    """
    seqs = tuple(sequences)
    if not conditions:
        raise ValueError("train.val_conditions: empty; name at least one condition (e.g. [full])")
    canon: list[str] = []
    for c in conditions:
        name = canonical_condition(c, seqs)
        if name in canon:
            raise ValueError(f"train.val_conditions: {c!r} repeats {name!r} (the same sequence subset); "
                             f"got {list(conditions)}")
        canon.append(name)
    if objective is None:
        return None, canon
    if isinstance(objective, str):
        if objective in AGGREGATES:
            if len(canon) < 2:
                raise ValueError(
                    f"train.objective: {objective!r} over one validation condition ({canon[0]}) is that "
                    f"condition itself; give train.val_conditions two or more conditions (e.g. [full, "
                    f"censor_{seqs[0]}]), or set train.objective: {canon[0]}"
                )
            return objective, canon
        name = canonical_condition(objective, seqs, field="train.objective")
        return name, canon + ([name] if name not in canon else [])
    profile: dict[str, float] = {}
    for c, share in objective.items():
        name = canonical_condition(c, seqs, field="train.objective")
        if name in profile:
            raise ValueError(f"train.objective: {c!r} repeats {name!r} in the deployment profile "
                             f"{mapping_text(objective)}")
        profile[name] = share
    return profile, canon + [c for c in profile if c not in canon]


def selection_condition(objective: Objective, conditions: Sequence[str]) -> str | None:
    """The one condition the objective is the mAP of (the first validation condition by
    default), or None for ``worst``, ``mean`` and profiles."""
    if objective is None:
        return conditions[0] if conditions else None
    if isinstance(objective, str) and objective not in AGGREGATES:
        return objective
    return None


def objective_value(objective: Objective, conditions: Sequence[str], maps: Mapping[str, float]) -> float:
    """The objective from per-condition validation mAPs ``maps`` (condition -> mAP).

    NaN when a component it needs is NaN. Raises KeyError naming a condition ``maps`` lacks.
    """
    def get(c: str) -> float:
        if c not in maps:
            raise KeyError(f"no validation mAP for condition {c!r} (have {sorted(maps)})")
        return float(maps[c])

    if objective is None or (isinstance(objective, str) and objective not in AGGREGATES):
        return get(selection_condition(objective, conditions))  # type: ignore[arg-type]
    if isinstance(objective, str):
        values = [get(c) for c in conditions]
        if any(math.isnan(v) for v in values):
            return math.nan
        return min(values) if objective == WORST else math.fsum(values) / len(values)
    values = [get(c) for c in objective]
    if any(math.isnan(v) for v in values):
        return math.nan
    return math.fsum(share * v for share, v in zip(objective.values(), values, strict=True))


def objective_text(objective: Objective) -> str:
    """The one-string form of an objective (its MLflow param): ``None``, ``worst``,
    ``censor_t1_gre_post`` or ``full=0.7,censor_t1_gre_post=0.3``."""
    if objective is None:
        return "None"
    return objective if isinstance(objective, str) else mapping_text(objective)


def definition(objective: Objective, conditions: Sequence[str]) -> str:
    """The objective in words (the ``objective.definition`` tag of a trial's run)."""
    if objective is None:
        return f"validation mAP under {conditions[0]} (the first of train.val_conditions)"
    if objective == WORST:
        return f"worst (lowest) validation mAP over {', '.join(conditions)}"
    if objective == MEAN:
        return f"mean validation mAP over {', '.join(conditions)}"
    if isinstance(objective, str):
        return f"validation mAP under {objective}"
    terms = " + ".join(f"{share:g} x mAP({c})" for c, share in objective.items())
    return (f"deployment profile: {terms} (the share-weighted mean of the conditions' validation mAPs, "
            "not the mAP of one pooled cohort mixing them)")


# ------------------------------------------------------------------------------------------
# several objectives (multi-objective studies)
# ------------------------------------------------------------------------------------------

#: How the objectives of ``train.objectives`` are joined in their one-string form (a profile's
#: own text uses ',' and '=').
OBJECTIVES_SEPARATOR = "; "


def parse_objectives(value: Any) -> list[Objective]:
    """The structure of a ``train.objectives`` value: a list of objectives (each as
    :func:`parse_objective` reads one; None is not an objective), or their one-string form
    ``full; worst; full=0.7,censor_t1_gre_post=0.3`` (:func:`objectives_text`, the MLflow
    param). ``None`` or an empty list: no objectives (a single-objective trial). Names are
    checked by :func:`resolve_all`. Raises ValueError naming ``train.objectives`` and the value.
    """
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in value.split(OBJECTIVES_SEPARATOR.strip()) if part.strip()]
    if isinstance(value, Mapping) or not isinstance(value, Sequence):
        raise ValueError(f"train.objectives: expected a list of objectives (e.g. [full, worst]), got {value!r}")
    out: list[Objective] = []
    for i, item in enumerate(value):
        if item is None:
            raise ValueError(f"train.objectives[{i}]: empty; each entry is a condition, 'worst', 'mean' or a "
                             "deployment profile")
        try:
            out.append(parse_objective(item))
        except ValueError as err:
            raise ValueError(f"train.objectives[{i}]: {str(err).removeprefix('train.objective: ')}") from None
    return out


def objectives_text(objs: Sequence[Objective]) -> str:
    """The one-string form of several objectives (their MLflow param): ``full; worst``;
    :func:`parse_objectives` reads it back."""
    return OBJECTIVES_SEPARATOR.join(objective_text(o) for o in objs)


def resolve_all(objs: Sequence[Objective], conditions: Sequence[str],
                sequences: Sequence[str]) -> tuple[list[Objective], list[str]]:
    """``(objectives, validation conditions)`` in canonical form, for several objectives.

    Every condition an objective names (alone or in a profile) is added to ``conditions``
    first, in the order named, so ``worst`` / ``mean`` reduce over ALL the validation
    conditions whatever the objectives' order (``[censor_flair, worst]`` and ``[worst,
    censor_flair]`` mean the same). Two objectives that are the same once canonical
    (``censor_bravo`` and ``censor_t1_gre_post``) are an error, as is None. Raises ValueError
    naming ``train.objectives`` (or ``train.val_conditions``) and the value.
    """
    _, canon = resolve(None, conditions, sequences)
    named: list[Objective] = [None] * len(objs)
    for i, obj in enumerate(objs):
        if obj is None:
            raise ValueError(f"train.objectives[{i}]: empty; name a condition, 'worst', 'mean' or a profile")
        if isinstance(obj, str) and obj in AGGREGATES:
            continue
        try:
            named[i], canon = resolve(obj, canon, sequences)
        except ValueError as err:
            raise ValueError(f"train.objectives[{i}]: {str(err).removeprefix('train.objective: ')}") from None
    out: list[Objective] = []
    for i, obj in enumerate(objs):
        if isinstance(obj, str) and obj in AGGREGATES:
            try:
                named[i], canon = resolve(obj, canon, sequences)
            except ValueError as err:
                raise ValueError(f"train.objectives[{i}]: {str(err).removeprefix('train.objective: ')}") from None
        if named[i] in out:
            raise ValueError(f"train.objectives: {objective_text(obj)!r} repeats {objective_text(named[i])!r}; "
                             f"got {objectives_text(objs)}")
        out.append(named[i])
    return out, canon
