"""Hyperparameter-search analysis: best trials and Optuna parameter importances.

The trials are rebuilt as an in-memory Optuna study (``optuna.create_study`` +
``add_trial(optuna.trial.create_trial(...))``) from each run's searched params and objective,
with distributions inferred from the logged values, so Optuna's own importance evaluator
(fANOVA, seeded) does the attribution. Works for any study, not only ones Optuna sampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from seqablate import metric_names as mn
from seqablate.analysis.runs import IGNORED_PREFIXES, SEED_KEYS, Run
from seqablate.config import dropout_probabilities

#: Objective metrics, in order of preference: what the Tune search maximised first (the best
#: validation objective; ``val.best_mAP`` is its first name, older runs log only that).
OBJECTIVES: tuple[str, ...] = (mn.VAL_BEST_OBJECTIVE, mn.VAL_BEST, mn.VAL_MAP, mn.TEST_FULL_MAP)
#: The param a per-sequence dropout mapping is spread over (``train.dropout_p.<sequence>``).
DROPOUT_PARAM = "train.dropout_p"

#: Params that never count as searched even when they vary (bookkeeping / paths).
NOT_SEARCHED: frozenset[str] = frozenset({"data.cache_dir", "data.cohort", "eval.external"})


def pick_objective(runs: Sequence[Run], preferred: str | None = None) -> str | None:
    """The objective metric: ``preferred`` if any run logged it, else the first of
    :data:`OBJECTIVES` that a finished run logged; None when none is."""
    usable = [r for r in runs if r.usable]
    for key in ((preferred,) if preferred else ()) + OBJECTIVES:
        if any(key in r.metrics and not math.isnan(r.metrics[key]) for r in usable):
            return key
    return None


def searchable(runs: Sequence[Run]) -> dict[str, dict[str, str]]:
    """run id -> the params the analysis compares: the logged ones, except that when any
    usable run has per-sequence dropout probabilities, ``train.dropout_p`` is spread into one
    numeric param per sequence (``train.dropout_p.<sequence>``; a single p counts for every
    sequence, an unnamed sequence as 0), so importance is attributed per sequence, not to
    each distinct mapping as a category."""
    usable = [r for r in runs if r.usable]
    per_sequence = any(isinstance(r.dropout_p, dict) for r in usable if DROPOUT_PARAM in r.params)
    out: dict[str, dict[str, str]] = {}
    for r in usable:
        params = dict(r.params)
        if per_sequence and DROPOUT_PARAM in params:
            del params[DROPOUT_PARAM]
            for s, p in zip(r.sequences, dropout_probabilities(r.dropout_p, r.sequences), strict=True):
                params[f"{DROPOUT_PARAM}.{s}"] = f"{p:g}"
        out[r.run_id] = params
    return out


def searched_params(runs: Sequence[Run]) -> list[str]:
    """Params whose value differs between the finished runs (seed and bookkeeping excluded;
    per-sequence dropout as one param per sequence, :func:`searchable`)."""
    views = searchable(runs)
    keys = sorted({k for v in views.values() for k in v})
    out = []
    for k in keys:
        if k in SEED_KEYS or k in NOT_SEARCHED or k.startswith(IGNORED_PREFIXES):
            continue
        if len({v.get(k) for v in views.values()}) > 1:
            out.append(k)
    return out


def _parse(v: str) -> Any:
    """Logged param text back to bool / int / float / str."""
    if v in ("True", "False", "true", "false"):
        return v.lower() == "true"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def _distribution(values: list[Any]) -> Any:
    """An Optuna distribution covering ``values`` (numeric range, or categorical choices)."""
    import optuna.distributions as d

    if all(isinstance(v, bool) for v in values) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        return d.CategoricalDistribution(sorted({str(v) for v in values}))
    lo, hi = min(values), max(values)
    if all(isinstance(v, int) for v in values):
        return d.IntDistribution(int(lo), int(hi))
    # Learning rates, lambdas: spread over decades -> a log distribution.
    log = lo > 0 and hi / lo >= 100
    return d.FloatDistribution(float(lo), float(hi), log=log)


@dataclass
class HpoSummary:
    """Outcome of the HPO analysis."""

    objective: str
    params: list[str]  # searched params
    best: pd.DataFrame  # best trials: run, objective, params (sorted, best first)
    importances: dict[str, float]  # param -> importance (sums to 1), most important first
    frame: pd.DataFrame  # every finished trial: run, objective, params (parsed values)


def trial_frame(runs: Sequence[Run], objective: str, params: Sequence[str]) -> pd.DataFrame:
    """One row per finished run with the objective: ``run``, ``run_id``, objective, params."""
    views = searchable(runs)
    rows = []
    for r in runs:
        v = r.metrics.get(objective)
        if not r.usable or v is None or math.isnan(v):
            continue
        row: dict[str, Any] = {"run": r.name, "run_id": r.run_id, objective: float(v)}
        for p in params:
            row[p] = _parse(views[r.run_id][p]) if p in views[r.run_id] else None
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", "run_id", objective, *params])


def param_importances(frame: pd.DataFrame, objective: str, params: Sequence[str], *, seed: int = 0) -> dict[str, float]:
    """Optuna (fANOVA) importances of ``params`` for maximising ``objective``.

    Params missing from some trials are left out of those trials (Optuna then uses the
    params every trial has). Returns {} when fewer than two trials or no varying param.
    """
    import optuna

    if len(frame) < 2 or not params:
        return {}
    dists = {}
    for p in params:
        vals = [v for v in frame[p].tolist() if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if len({str(v) for v in vals}) > 1:
            dists[p] = _distribution(vals)
    if not dists:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for rec in frame.to_dict("records"):
        trial_params, trial_dists = {}, {}
        for p, dist in dists.items():
            v = rec[p]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            trial_params[p] = str(v) if isinstance(dist, optuna.distributions.CategoricalDistribution) else v
            trial_dists[p] = dist
        study.add_trial(
            optuna.trial.create_trial(params=trial_params, distributions=trial_dists, value=rec[objective])
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError):
        # e.g. no param shared by every trial: importance is undefined, not zero.
        return {}
    return {k: float(v) for k, v in imp.items()}


def summarize_hpo(runs: Sequence[Run], *, objective: str | None = None, top: int = 5) -> HpoSummary | None:
    """Best trials and importances; None when no run logged an objective or nothing varied."""
    obj = pick_objective(runs, objective)
    if obj is None:
        return None
    params = searched_params(runs)
    frame = trial_frame(runs, obj, params)
    if frame.empty or not params:
        return None
    best = frame.sort_values(obj, ascending=False, kind="stable").head(top).reset_index(drop=True)
    return HpoSummary(obj, params, best, param_importances(frame, obj, params), frame)
