"""Intervals that treat the training seed as random: "these networks" versus "the recipe".

A multi-seed study trains each configuration (a *recipe*: architecture, data, schedule) with
several seeds and scores every network on the same test patients. Two questions have two
intervals:

* **these N trained networks**: how much would the seed-averaged pooled mAP move if other
  patients had been tested? Patients are resampled (jointly for every run, so pairs stay
  paired), each seed's pooled mAP recomputed, seeds averaged: a percentile bootstrap over
  patients. The seeds are fixed: it says nothing about a new seed.
* **the training recipe**: what would a new seed of the same recipe, tested on new patients,
  give on average? Its variance has two levels (Bouthillier et al., MLSys 2021; rliable's
  stratified bootstrap over runs, Agarwal et al., NeurIPS 2021): the patients and the seeds.
  Seeds are "readers" and patients "cases" of a multi-reader multi-case study, and the
  variance is the Obuchowski-Rockette-Hillis one (Hillis, Stat Med 2007). The seed part is
  the spread of the per-seed values of the contrast within each configuration (sample
  variance, ddof=1, over that configuration's n seeds, divided by n). That spread already
  holds each network's own patient-by-network noise (which lesions this network happens to
  find on these patients), so the patient part is only what the seeds share: the patient
  bootstrap variance of the contrast minus, per configuration, ``(mean_s Var_b(x_s) -
  Var_b(mean_s x_s)) / (n - 1)`` (its average covariance between distinct seeds instead of
  their variance; floored at 0). Adding the full bootstrap variance instead counts that
  noise twice: on the simulator of :mod:`seqablate.metrics.simulate` such an interval
  covers 99-100 % where it claims 95 % (97-98 % when the seed variance dominates), and is
  15-40 % too wide. The interval is ``estimate +- t * SE`` with ``SE**2 = V_patients +
  V_seeds`` and ``t`` a Student quantile whose degrees of freedom come from
  Welch-Satterthwaite over the seed components (the patient component, estimated from
  hundreds of patients' resamples, counts as known). Resampling seeds with replacement
  instead (a two-level percentile bootstrap) shrinks the seed variance by (n-1)/n and uses
  normal quantiles for a variance estimated from n values: where the seed variance
  dominates, it covers about 87 % with 3 seeds per arm where it claims 95 % (about 80 % in
  the limit of seed variance alone).
  ``tests/metrics/test_metrics_recipe_calibration.py`` checks the coverage of both
  intervals against that simulator, which has a known truth.

Any linear contrast of configuration means is supported (``sum_k w_k * mean_k``): a
difference of two arms, a difference of two conditions of the same networks (paired within
each seed), or ``without - 0.5 * with`` (how a ratio is tested, see :func:`ratio_interval`).
Conditions evaluated on the same networks belong to one *group*: their per-seed values are
combined seed by seed before the seed variance is taken, which is what makes such a
comparison paired across seeds.

A worst case over conditions (:meth:`RecipeData.minimum`: each seed's smallest value among
conditions of the same networks, seeds averaged) is not linear: the minimum of noisy values
is biased low when conditions are close, and it is corrected by the patient bootstrap's own
estimate of that bias; ``tests/metrics/test_metrics_recipe_worst.py`` measures its coverage
against a simulator with several conditions per network.

Fewer than :data:`MIN_SEEDS` seeds in any group: the recipe interval is unavailable (a
variance from two values with one degree of freedom gives an interval of no use), and
:attr:`RecipeEstimate.recipe_reason` says so.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from seqablate.metrics.bootstrap import (
    METRICS,
    align_patients,
    percentile_interval,
    vectorised_metric,
)
from seqablate.metrics.detection import DetectionResult, PatientDetection

#: Fewest seeds per configuration for a recipe interval.
MIN_SEEDS = 3


@dataclass(frozen=True)
class Arm:
    """One configuration scored under one condition: one per-patient list per seed.

    ``runs[i]`` is seed i's :class:`PatientDetection` list (or :class:`DetectionResult`);
    all arms of one estimate must hold the same patients. ``group`` identifies the trained
    networks: arms with equal ``group`` are the same seeds' networks under other conditions
    (their ``runs`` must be in the same seed order) and are paired seed by seed.
    """

    runs: Sequence[DetectionResult | Sequence[PatientDetection]]
    group: Hashable
    fixed: bool = False  # one given network (an outside baseline): no seed variance, no seed minimum


@dataclass(frozen=True)
class RecipeEstimate:
    """A linear contrast of configuration means with both intervals.

    ``estimate``: on the observed patients and seeds. ``networks``: percentile bootstrap
    interval over patients at ``level`` (seeds fixed). ``recipe``: ``estimate +- t * se`` at
    ``level``, or None (``recipe_reason`` says why). ``se_patients``/``se_seeds``: the two
    standard-error components (``se_patients``: the patient variance the seeds share, below
    the spread of ``distribution``, which also holds each network's own noise); ``df``:
    Welch-Satterthwaite degrees of freedom of the t quantile (inf when the seed component
    is 0). ``seed_values``: per group, the per-seed values of its part of the contrast.
    ``distribution``: float64[B] contrast on the patient resamples (NaN where undefined).
    ``bias``: the bootstrap estimate of the estimator's finite-test-set bias that was
    subtracted from ``estimate``, ``seed_values`` and ``distribution`` (only
    :meth:`RecipeData.minimum` sets it, usually <= 0; 0 for linear contrasts): the
    uncorrected value is ``estimate + bias``.
    """

    metric: str
    estimate: float
    level: float
    networks: tuple[float, float]
    recipe: tuple[float, float] | None
    recipe_reason: str
    se_patients: float
    se_seeds: float
    df: float
    n_patients: int
    n_seeds: dict[Hashable, int]
    seed_values: dict[Hashable, np.ndarray] = field(repr=False)
    distribution: np.ndarray = field(repr=False)
    bias: float = 0.0

    @property
    def se(self) -> float:
        """Recipe standard error ``sqrt(se_patients**2 + se_seeds**2)``."""
        return math.hypot(self.se_patients, self.se_seeds)

    @property
    def recipe_available(self) -> bool:
        return self.recipe is not None

    def _quantile(self, q: float) -> float:
        return float(stats.norm.ppf(q) if math.isinf(self.df) else stats.t.ppf(q, self.df))

    def recipe_at(self, level: float) -> tuple[float, float] | None:
        """The recipe interval at another two-sided ``level`` (None when unavailable)."""
        if self.recipe is None:
            return None
        h = self._quantile(0.5 + level / 2.0) * self.se
        return self.estimate - h, self.estimate + h

    def networks_at(self, level: float) -> tuple[float, float]:
        """The patients-only percentile interval at another two-sided ``level``."""
        return percentile_interval(self.distribution, level)

    def p_greater(self, margin: float) -> float:
        """One-sided p-value of H0: contrast <= ``margin`` against H1: contrast > ``margin``,
        from the recipe's t distribution (NaN when the recipe interval is unavailable)."""
        if self.recipe is None or not math.isfinite(self.estimate):
            return float("nan")
        if self.se == 0.0:
            return 0.0 if self.estimate > margin else 1.0
        z = (self.estimate - margin) / self.se
        return float(stats.norm.sf(z) if math.isinf(self.df) else stats.t.sf(z, self.df))

    def p_less(self, margin: float) -> float:
        """One-sided p-value of H0: contrast >= ``margin`` against H1: contrast < ``margin``."""
        if self.recipe is None or not math.isfinite(self.estimate):
            return float("nan")
        if self.se == 0.0:
            return 0.0 if self.estimate < margin else 1.0
        z = (self.estimate - margin) / self.se
        return float(stats.norm.cdf(z) if math.isinf(self.df) else stats.t.cdf(z, self.df))


def resample_counts(n_patients: int, n: int, seed: int) -> np.ndarray:
    """Patient multiplicities of ``n`` bootstrap resamples: int64[n, n_patients]."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_patients, size=(n, n_patients))
    flat = (np.arange(n)[:, None] * n_patients + idx).reshape(-1)
    return np.bincount(flat, minlength=n * n_patients).reshape(n, n_patients)


def per_seed_values(
    runs: Sequence[Sequence[PatientDetection]], metric: str, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(observed[S], resampled[S, B])``: each seed's pooled metric on the observed patients
    and on each resample of ``counts[B, P]`` (runs aligned to one patient order)."""
    ones = np.ones((1, counts.shape[1]))
    obs = np.array([vectorised_metric(tuple(r), metric, ones)[0] for r in runs])
    res = np.stack([vectorised_metric(tuple(r), metric, counts) for r in runs])
    return obs, res


def satterthwaite_df(components: Sequence[tuple[float, int]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance components, each
    ``(variance of the mean, n values it was estimated from)``; inf when all are 0."""
    num = sum(v for v, _ in components) ** 2
    den = sum(v * v / (n - 1) for v, n in components if n > 1)
    if num == 0.0 or den == 0.0:
        return math.inf
    return float(num / den)


@dataclass(frozen=True)
class ArmValues:
    """One arm's per-seed pooled metric: ``observed[S]`` and on the resamples ``resampled[S, B]``."""

    group: Hashable
    observed: np.ndarray
    resampled: np.ndarray
    fixed: bool = False


class RecipeData:
    """Arms on one shared set of patient resamples, ready for any number of contrasts.

    Each seed's pooled metric is computed once per resample here; every
    :meth:`contrast` (and :meth:`ratio`'s search) is then arithmetic on those arrays.
    Arguments as :func:`recipe_contrast`.
    """

    def __init__(self, arms: Sequence[Arm], metric: str = "mAP", *, n: int = 2000, seed: int = 0,
                 counts: np.ndarray | None = None) -> None:
        if not arms:
            raise ValueError("recipe estimates need at least one arm")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {list(METRICS)}")
        sizes = [len(a.runs) for a in arms]
        if min(sizes) < 1:
            raise ValueError("every arm needs at least one seed")
        aligned = align_patients([r for a in arms for r in a.runs])
        self.n_patients = len(aligned[0])
        if self.n_patients == 0:
            raise ValueError("recipe estimates need at least one patient")
        if counts is None:
            counts = resample_counts(self.n_patients, n, seed)
        elif counts.shape[1] != self.n_patients:
            raise ValueError(f"counts has {counts.shape[1]} patients, the arms {self.n_patients}")
        self.metric = metric
        self.values: list[ArmValues] = []
        start = 0
        for arm, k in zip(arms, sizes, strict=True):
            obs, res = per_seed_values(aligned[start:start + k], metric, counts)
            start += k
            self.values.append(ArmValues(arm.group, obs, res, arm.fixed))

    def contrast(self, weights: Sequence[float], level: float = 0.95) -> RecipeEstimate:
        """``sum_k weights[k] * mean_k`` over this data's arms, with both intervals."""
        if len(weights) != len(self.values):
            raise ValueError(f"one weight per arm: {len(self.values)} arms, {len(weights)} weights")
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        groups: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}
        fixed = {v.group for v in self.values if v.fixed}
        for v, w in zip(self.values, weights, strict=True):
            if w == 0.0:
                continue
            if v.group in groups:
                g_obs, g_res = groups[v.group]
                if g_obs.size != v.observed.size:
                    raise ValueError(f"group {v.group!r}: arms with {g_obs.size} and {v.observed.size} seeds cannot be paired")
                groups[v.group] = (g_obs + w * v.observed, g_res + w * v.resampled)
            else:
                groups[v.group] = (w * v.observed, w * v.resampled)
        return _estimate(self.metric, groups, float(level), self.n_patients, fixed)

    def mean(self, index: int, level: float = 0.95) -> RecipeEstimate:
        """Arm ``index``'s mean over its seeds, with both intervals."""
        return self.contrast([1.0 if i == index else 0.0 for i in range(len(self.values))], level)

    def minimum(self, indices: Sequence[int], level: float = 0.95, *,
                bias_correction: bool = True) -> RecipeEstimate:
        """The mean over seeds of each seed's smallest value among arms ``indices``, with
        both intervals: the test value of a ``worst`` objective (each network's weakest
        condition, averaged over the networks).

        What the intervals cover: the recipe interval, ``E_seed[min_c mAP_c]`` with each
        condition's mAP on the patient population (a new seed's worst case, on average);
        the networks interval, the mean over these seeds of each network's population worst
        case. The arms must be one group (the same networks under several conditions, same
        seed order). Each seed's minimum is taken on the observed patients and on every
        resample alike, then treated as that seed's value, as :meth:`contrast` treats a
        linear one.

        Bias correction (``bias_correction=True``, the default): the minimum of noisy
        per-condition values is below the minimum of their expectations when conditions
        are close (two tied conditions whose test-set difference has SD d: d / sqrt(2 pi),
        0.4 d, low per seed). Per seed, the patient bootstrap estimates that gap as
        ``mean_b min_c x*_c - min_c mean_b x*_c`` (the resampled minima against the minimum
        of the resampled means; 0 when one condition is the minimum on every resample, so
        ``minimum([i])`` is :meth:`mean` ``(i)``); it is subtracted from the seed's value,
        and the seed's resampled values are shifted by twice it, so the percentile interval
        is centred on the corrected value. ``RecipeEstimate.bias`` holds the seed average of
        what was subtracted (print ``estimate``, not the plain seed average, beside these
        intervals). Measured on the simulator (``simulate_condition_study``,
        ``tests/metrics/test_metrics_recipe_worst.py``, 1000 studies per setting, nominal
        95 %, 3 and 5 seeds; ``benchmarks/RESULTS.md``, "Recipe intervals of a worst case"):

        * one condition clearly worst: nothing to correct; recipe interval 99 %, networks
          92-94 % (a single condition's networks interval: 92-94 % too, the percentile
          bootstrap's own shortfall on 40 patients);
        * two or four tied conditions (40 patients, or 20 patient-dominated): uncorrected,
          0.8-2.3 points low and the networks interval covers 85-92 %; corrected, 0.2-1.0
          points low and 92-93 %; the recipe interval covers 98-100 % corrected, 97-100 %
          uncorrected;
        * stress case, four tied conditions nearly independent on 20 patients: 4.2 points
          low uncorrected, 1.9 corrected; networks 78-80 % -> 89-90 %, recipe 94-99 % ->
          96-100 %.

        The correction is partial: the bootstrap sees the observed gap between conditions,
        which is wider on average than the true one, so it under-estimates the bias of tied
        conditions. The recipe interval's coverage above 95 % is its t quantile's (n - 1
        degrees of freedom: the patient variance is left out of the Satterthwaite
        numerator), which makes an interval of a level (not a difference) conservative, as
        for :meth:`mean`; with Hillis' degrees of freedom (the patient variance in the
        numerator) the corrected worst case's recipe interval would cover 91-95 %, 88-90 %
        in the stress case. ``bias_correction=False`` gives the uncorrected minimum.

        A NaN among a seed's values (a condition without a truth lesion in a resample)
        makes that seed's minimum NaN there, as it makes the objective undefined; the bias
        is estimated on the resamples where every value is finite (0 when none is). Raises
        ValueError for no indices or arms of several groups.
        """
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        group, obs, res, bias, fixed = self._seed_minima(indices, bias_correction)
        est = _estimate(self.metric, {group: (obs, res)}, float(level), self.n_patients, {group} if fixed else set())
        return replace(est, bias=float(np.mean(bias)))

    def minimum_difference(self, first: Sequence[int], second: Sequence[int], level: float = 0.95, *,
                           bias_correction: bool = True) -> RecipeEstimate:
        """``minimum(first) - minimum(second)``: how much one configuration's worst case
        (its networks' weakest condition among arms ``first``) exceeds another's (arms
        ``second``), on the same patients and resamples, with both intervals.

        Each side is one group of networks, as in :meth:`minimum` (its per-seed minima,
        bias-corrected the same way); the two groups must differ (two configurations'
        networks, seeds independent), so the seed component adds the two groups' seed
        variances and the patient component is that of the difference, as in
        :meth:`contrast` with weights ``[1, -1]`` (which this equals when each side has
        one arm). ``RecipeEstimate.bias`` is the first side's mean correction minus the
        second's. Raises ValueError for an empty side, a side of several groups, or both
        sides of one group.
        """
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        ga, oa, ra, ba, fa = self._seed_minima(first, bias_correction)
        gb, ob, rb, bb, fb = self._seed_minima(second, bias_correction)
        if ga == gb:
            raise ValueError(f"minimum_difference: both sides are group {ga!r}; compare two configurations' networks")
        fixed = ({ga} if fa else set()) | ({gb} if fb else set())
        est = _estimate(self.metric, {ga: (oa, ra), gb: (-ob, -rb)}, float(level), self.n_patients, fixed)
        return replace(est, bias=float(np.mean(ba) - np.mean(bb)))

    def _seed_minima(self, indices: Sequence[int], bias_correction: bool,
                     ) -> tuple[Hashable, np.ndarray, np.ndarray, np.ndarray, bool]:
        """(group, corrected per-seed minima float[S], their resamples float[S, B], the
        per-seed bias float[S] subtracted, whether the group is fixed) of arms ``indices``
        (:meth:`minimum`'s docstring)."""
        if not indices:
            raise ValueError("minimum: no arms")
        arms = [self.values[i] for i in indices]
        groups = {a.group for a in arms}
        if len(groups) != 1:
            raise ValueError(f"minimum: the arms must be one group (the same networks), got {sorted(map(str, groups))}")
        if len({a.observed.size for a in arms}) != 1:
            raise ValueError("minimum: arms of one group with different numbers of seeds cannot be paired")
        obs = np.min(np.stack([a.observed for a in arms]), axis=0)  # [S]
        res_all = np.stack([a.resampled for a in arms])  # [C, S, B]
        res = np.min(res_all, axis=0)  # [S, B]
        bias = np.zeros(obs.size)
        if bias_correction:
            ok = np.all(np.isfinite(res_all), axis=(0, 1))  # resamples where every value is defined
            if ok.any():
                # The min's own Jensen gap, not the metric's: a single condition gets 0.
                bias = res[:, ok].mean(axis=1) - res_all[:, :, ok].mean(axis=2).min(axis=0)
        (group,) = groups
        return group, obs - bias, res - 2.0 * bias[:, None], bias, all(a.fixed for a in arms)

    def ratio(self, numerator: int, denominator: int, level: float = 0.95,
              ) -> tuple[float, tuple[float, float] | None]:
        """``(mean_num / mean_den, Fieller recipe interval)`` of arms ``numerator`` and
        ``denominator`` (indices): every rho for which ``num - rho * den`` is not rejected at
        ``level``. ``(-inf, inf)`` when the denominator is not distinguishable from 0; None
        when the recipe interval is unavailable."""
        def contrast(rho: float) -> RecipeEstimate:
            w = [0.0] * len(self.values)
            w[numerator] += 1.0
            w[denominator] -= rho
            return self.contrast(w, level)

        num, den = contrast(0.0), self.mean(denominator, level)
        ratio = num.estimate / den.estimate if den.estimate else float("nan")
        if num.recipe is None or den.recipe is None:
            return ratio, None
        if den.recipe[0] <= 0.0 or not math.isfinite(ratio):
            return ratio, (-math.inf, math.inf)  # a denominator indistinguishable from 0 bounds nothing

        def inside(rho: float) -> bool:
            c = contrast(rho)
            return c.recipe is not None and c.recipe[0] <= 0.0 <= c.recipe[1]

        def edge(direction: float) -> float:
            """The accepted set's end on one side of the estimate: grow a bracket, bisect."""
            step = max(abs(ratio), 0.05)
            while inside(ratio + direction * step):
                step *= 2.0
                if step > 1e6:
                    return direction * math.inf
            inner, outer = ratio, ratio + direction * step
            for _ in range(40):
                mid = (inner + outer) / 2.0
                inner, outer = (mid, outer) if inside(mid) else (inner, mid)
            return inner

        return ratio, (edge(-1.0), edge(1.0))


def _estimate(metric: str, groups: dict[Hashable, tuple[np.ndarray, np.ndarray]], level: float,
              n_pat: int, fixed: set[Hashable] | frozenset[Hashable] = frozenset()) -> RecipeEstimate:
    with np.errstate(invalid="ignore"):
        estimate = float(sum(np.mean(o) for o, _ in groups.values()))
        dist = np.sum([np.mean(r, axis=0) for _, r in groups.values()], axis=0)
    ok = np.isfinite(dist)
    finite = dist[ok]
    v_p = float(np.var(finite, ddof=1)) if finite.size > 1 else float("nan")
    # Each group's seed variance already holds its networks' own patient-by-network noise;
    # keep only the part of the patient variance the seeds share (module docstring).
    for o, r in groups.values():
        if o.size > 1 and finite.size > 1:
            rf = r[:, ok]
            v_p -= (float(np.mean(np.var(rf, axis=1, ddof=1)))
                    - float(np.var(np.mean(rf, axis=0), ddof=1))) / (o.size - 1)
    se_p = math.sqrt(max(v_p, 0.0)) if math.isfinite(v_p) else float("nan")
    n_seeds = {g: int(o.size) for g, (o, _) in groups.items()}
    seed_values = {g: o for g, (o, _) in groups.items()}
    comps = [(float(np.var(o, ddof=1)) / o.size, int(o.size)) for g, o in seed_values.items()
             if o.size > 1 and g not in fixed]
    se_s = math.sqrt(sum(v for v, _ in comps)) if comps else (0.0 if fixed else float("nan"))
    df = satterthwaite_df(comps)
    few = {g: k for g, k in n_seeds.items() if k < MIN_SEEDS and g not in fixed}
    reason = ""
    if few:
        reason = (f"the recipe interval needs >= {MIN_SEEDS} seeds per configuration; "
                  + ", ".join(f"{g} has {k}" for g, k in few.items()))
    elif not (math.isfinite(estimate) and math.isfinite(se_p) and math.isfinite(se_s)):
        reason = "undefined: no truth lesion in a resample or seed"
    out = RecipeEstimate(metric, estimate, level, percentile_interval(dist, level), None, reason,
                         se_p, se_s, df, n_pat, n_seeds, seed_values, dist)
    if reason:
        return out
    h = out._quantile(0.5 + level / 2.0) * out.se
    return RecipeEstimate(metric, estimate, level, out.networks, (estimate - h, estimate + h), "",
                          se_p, se_s, df, n_pat, n_seeds, seed_values, dist)


def recipe_contrast(
    arms: Sequence[Arm],
    weights: Sequence[float],
    metric: str = "mAP",
    *,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    counts: np.ndarray | None = None,
) -> RecipeEstimate:
    """``sum_k weights[k] * (mean over arm k's seeds of the pooled metric)`` with the
    patients-only and the recipe interval (module docstring).

    Args:
        arms: the configurations/conditions; all on the same patients (ValueError naming the
            extra and missing ones otherwise). Arms sharing a ``group`` must have the same
            number of seeds, in the same order.
        weights: one float per arm (e.g. ``[1, -1]`` for A - B).
        metric: one of :data:`~seqablate.metrics.bootstrap.METRICS`.
        n, seed: patient resamples and their RNG seed. ``counts``: precomputed multiplicities
            ``int[n, P]`` instead (so several contrasts share resamples).
        level: two-sided level of both intervals.
    """
    return RecipeData(arms, metric, n=n, seed=seed, counts=counts).contrast(weights, level)


def ratio_interval(
    numerator: Arm, denominator: Arm, metric: str = "mAP", *, n: int = 2000, seed: int = 0, level: float = 0.95,
) -> tuple[float, tuple[float, float] | None]:
    """``(ratio, recipe interval)`` of ``mean(numerator) / mean(denominator)`` by Fieller's
    method (:meth:`RecipeData.ratio`)."""
    return RecipeData([numerator, denominator], metric, n=n, seed=seed).ratio(0, 1, level)
