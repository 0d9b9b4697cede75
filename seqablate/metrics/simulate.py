"""Simulated multi-seed studies with a known truth, to check the calibration of intervals.

The model (all effects on the logit scale):

* patient p has ``n_truth_p = 1 + Poisson(extra_lesions)`` truth lesions and an effect
  ``v_p ~ N(0, sd_patient)`` (how easy its lesions are); each truth lesion j has its own
  effect ``w_j ~ N(0, sd_lesion)``; both are shared by every network;
* the network trained with seed s in arm a has an effect ``u_{a,s} ~ N(0, sd_seed)``, drawn
  independently per arm and seed (the training seed as a random draw of the recipe);
* truth lesion j of patient p is detected by that network with probability
  ``sigmoid(eta)``, ``eta = quality_a + u_{a,s} + v_p + w_j``, independently per network;
  a detected lesion gives one true-positive prediction with score
  ``sigmoid(eta + score_noise * z)`` (z standard normal, drawn per network and lesion);
* each network also predicts ``Poisson(fp_rate)`` false positives per patient with scores
  ``sigmoid(fp_offset + fp_seed_coef * u_{a,s} + fp_score_noise * z)`` (lower on average).

A seed effect moves recall, the TP scores and the FP scores together, so the pooled mAP of a
network moves by several mAP points from seed to seed (with the defaults, a network's pooled
mAP on a large population has a seed SD of about 5 points: see :func:`network_map`).

Two entry points: :func:`simulate_study` draws one study (per arm, per seed, the per-patient
:class:`~seqablate.metrics.detection.PatientDetection` lists that
:func:`seqablate.metrics.recipe.recipe_contrast` takes), and :func:`true_recipe_difference`
computes what the "training recipe" interval should cover: ``E_u[mAP_A(u)] - E_u[mAP_B(u)]``
with ``mAP_a(u)`` the pooled mAP of a network with seed effect u on an (effectively)
infinite patient population.

Several test conditions of the same networks (the full protocol and each sequence
censored; a worst-case objective takes each network's minimum over them): :class:`Conditions`
shifts each network's ``eta`` per condition (a condition effect, a seed-by-condition
interaction, a lesion-by-condition effect) and correlates its own draws across conditions;
:func:`simulate_condition_study` draws one configuration's study, :func:`true_recipe_worst`
computes ``E_u[min_c mAP_c(u)]`` on a large population as :func:`true_recipe_difference`
does, and :func:`population_map` / :func:`network_population_maps` give a network's mAP on
the infinite population by quadrature (each study's "these networks" truth;
:func:`exact_recipe_worst` is the recipe truth from them).

Only what the pooled metrics read is simulated: scores, ``is_tp`` and the number of truth
lesions. The geometry (centres, volumes, distances) is NaN, ``candidates`` is the matched
truth label (1-based) or -1, ``dice`` is a placeholder (``0.5 + 0.4 * score`` for true
positives, NaN otherwise) and ``voxel_dice`` is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import expit, ndtr

from seqablate.metrics.detection import PatientDetection


@dataclass(frozen=True)
class SimulationModel:
    """Parameters of the simulator (module docstring); all effects on the logit scale.

    ``sd_patient``: SD of the patient effect v_p. ``sd_lesion``: SD of the truth-lesion effect
    w_j (shared by all networks: the larger, the more different networks agree on which
    lesions they find). ``sd_seed``: SD of the seed effect u.
    ``extra_lesions``: mean of the Poisson number of truth lesions beyond the first.
    ``score_noise``: SD of the logit noise of a TP score. ``fp_rate``: mean number of false
    positives per patient and network. ``fp_offset``, ``fp_seed_coef``, ``fp_score_noise``:
    FP score logit = ``fp_offset + fp_seed_coef * u + fp_score_noise * z``.
    """

    sd_patient: float = 0.8
    sd_lesion: float = 1.0
    sd_seed: float = 0.25
    extra_lesions: float = 1.5
    score_noise: float = 1.0
    fp_rate: float = 1.5
    fp_offset: float = -1.0
    fp_seed_coef: float = 0.5
    fp_score_noise: float = 1.0


@dataclass(frozen=True)
class _Patients:
    """A drawn patient population: ``n_truth`` int64[P] (>= 1), ``owner`` int64[T] (the
    patient of each truth lesion, T = sum n_truth) and ``effect`` float64[T] (v_p + w_j of
    each truth lesion)."""

    n_truth: np.ndarray
    owner: np.ndarray
    effect: np.ndarray


def _draw_patients(model: SimulationModel, n_patients: int, rng: np.random.Generator) -> _Patients:
    n_truth = (1 + rng.poisson(model.extra_lesions, size=n_patients)).astype(np.int64)
    owner = np.repeat(np.arange(n_patients), n_truth)
    v = rng.normal(0.0, model.sd_patient, size=n_patients)
    effect = v[owner] + rng.normal(0.0, model.sd_lesion, size=owner.size)
    return _Patients(n_truth, owner, effect)


def _draw_network(
    model: SimulationModel, quality: float, u: float, patients: _Patients, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One network's predictions on ``patients``, pooled (N predictions, T truth lesions).

    Returns ``(scores float64[N], is_tp bool[N], owner int64[N], detected bool[T])``:
    ``owner`` is each prediction's patient index; ``detected`` follows the truth lesions in
    patient order (``patients.owner``). Predictions are TPs first, then FPs.
    """
    n_pat = patients.n_truth.size
    truth_owner = patients.owner
    eta = quality + u + patients.effect
    detected = rng.random(truth_owner.size) < expit(eta)
    # Noise drawn for every truth lesion, so the stream stays aligned across qualities.
    tp_scores = expit(eta + model.score_noise * rng.standard_normal(eta.size))[detected]
    fp_owner = np.repeat(np.arange(n_pat), rng.poisson(model.fp_rate, size=n_pat))
    fp_scores = expit(model.fp_offset + model.fp_seed_coef * u
                      + model.fp_score_noise * rng.standard_normal(fp_owner.size))
    scores = np.concatenate([tp_scores, fp_scores])
    is_tp = np.zeros(scores.size, dtype=bool)
    is_tp[: tp_scores.size] = True
    owner = np.concatenate([truth_owner[detected], fp_owner])
    return scores, is_tp, owner, detected


def _patient_detections(
    ids: Sequence[str], patients: _Patients, scores: np.ndarray, is_tp: np.ndarray,
    owner: np.ndarray, detected: np.ndarray,
) -> list[PatientDetection]:
    """Split pooled predictions into one :class:`PatientDetection` per patient (array views
    of a few pooled arrays, so building a study stays cheap)."""
    n_pat = patients.n_truth.size
    order = np.argsort(owner, kind="stable")
    scores, is_tp, owner = scores[order], is_tp[order], owner[order]
    n = scores.size
    pred_ends = np.cumsum(np.bincount(owner, minlength=n_pat))
    truth_ends = np.cumsum(patients.n_truth)
    # Truth label (1-based within its patient) of each TP: TPs keep truth order after the
    # stable sort, so the k-th TP of a patient is its k-th detected lesion.
    truth_label = np.arange(detected.size) - np.repeat(truth_ends - patients.n_truth, patients.n_truth) + 1
    candidates = np.full(n, -1, dtype=np.int64)
    candidates[is_tp] = truth_label[detected]
    dice = np.where(is_tp, 0.5 + 0.4 * scores, np.nan)
    distances = np.where(is_tp, 0.0, np.nan)
    nan_pred = np.full(n, np.nan)
    centres = np.full((n, 3), np.nan)
    nan_truth = np.full(detected.size, np.nan)
    out = []
    p0 = t0 = 0
    for i in range(n_pat):
        p1, t1 = int(pred_ends[i]), int(truth_ends[i])
        out.append(PatientDetection(
            patient_id=ids[i], scores=scores[p0:p1], centres_mm=centres[p0:p1],
            volumes_mm3=nan_pred[p0:p1], distances_mm=distances[p0:p1],
            candidates=candidates[p0:p1], is_tp=is_tp[p0:p1], dice=dice[p0:p1],
            truth_volumes_mm3=nan_truth[t0:t1], truth_detected=detected[t0:t1],
            voxel_dice=float("nan"),
        ))
        p0, t0 = p1, t1
    return out


def simulate_study(
    qualities: Sequence[float],
    n_seeds: int | Sequence[int],
    n_patients: int,
    rng: np.random.Generator,
    model: SimulationModel = SimulationModel(),
) -> list[list[list[PatientDetection]]]:
    """One multi-seed study: every arm's networks scored on the same drawn test patients.

    Args:
        qualities: one logit quality per arm (A arms).
        n_seeds: seeds per arm (an int for all arms, or one per arm).
        n_patients: test patients P, shared by all arms and seeds (same ids, truth lesions,
            patient and lesion effects).
        rng: source of all randomness.
        model: the simulator's parameters.

    Returns:
        ``out[a][s]``: the list of P :class:`PatientDetection` (ids ``"p000"``...) of arm a's
        seed s; each network has its own seed effect and its own detection draws.
    """
    seeds = [n_seeds] * len(qualities) if isinstance(n_seeds, int | np.integer) else list(n_seeds)
    if len(seeds) != len(qualities):
        raise ValueError(f"{len(qualities)} arms but {len(seeds)} seed counts")
    patients = _draw_patients(model, n_patients, rng)
    ids = [f"p{i:03d}" for i in range(n_patients)]
    out = []
    for q, k in zip(qualities, seeds, strict=True):
        effects = rng.normal(0.0, model.sd_seed, size=k)
        out.append([_patient_detections(ids, patients, *_draw_network(model, q, float(u), patients, rng))
                    for u in effects])
    return out


def pooled_ap(scores: np.ndarray, is_tp: np.ndarray, n_truth: int) -> float:
    """Pooled AP of many predictions (``scores`` float[N], ``is_tp`` bool[N]; recall over
    ``n_truth`` truth lesions), equal to :func:`seqablate.metrics.ranking.average_precision`
    (ties included) but faster on large pools: ``AP = sum over TPs of the precision at their
    score / n_truth``, the precision from two sorted arrays (TP and FP scores)."""
    tp = np.sort(np.asarray(scores, dtype=np.float64)[is_tp])
    fp = np.sort(np.asarray(scores, dtype=np.float64)[~is_tp])
    if n_truth <= 0:
        return float("nan")
    n_tp_ge = tp.size - np.searchsorted(tp, tp, side="left")
    n_fp_ge = fp.size - np.searchsorted(fp, tp, side="left")
    return float(np.sum(n_tp_ge / (n_tp_ge + n_fp_ge)) / n_truth)


def network_map(
    quality: float, u: float, n_patients: int, rng: np.random.Generator,
    model: SimulationModel = SimulationModel(),
) -> float:
    """Pooled mAP of one network (quality, seed effect ``u``) on ``n_patients`` fresh patients."""
    patients = _draw_patients(model, n_patients, rng)
    scores, is_tp, _, _ = _draw_network(model, quality, u, patients, rng)
    return pooled_ap(scores, is_tp, int(patients.n_truth.sum()))


@dataclass(frozen=True)
class TrueDifference:
    """Monte Carlo value of a recipe difference ``E_u[mAP_A] - E_u[mAP_B]`` (mAP in [0, 1]).

    ``value``: the difference. ``mc_se``: an upper bound on its Monte Carlo standard error
    (the i.i.d. formula, sd of the per-seed differences / sqrt(n_seeds); the stratified seed
    draws only lower it). ``mean_a``/``mean_b``: the two recipe means. ``seed_sd_a``: SD over
    seeds of arm A's large-population mAP (how much the seed matters).
    """

    value: float
    mc_se: float
    mean_a: float
    mean_b: float
    seed_sd_a: float
    n_seeds: int
    n_patients: int


def true_recipe_difference(
    quality_a: float,
    quality_b: float,
    model: SimulationModel = SimulationModel(),
    *,
    n_seeds: int = 256,
    n_patients: int = 20_000,
    seed: int = 0,
) -> TrueDifference:
    """The recipe difference that a "training recipe" interval should cover.

    ``E_u[mAP(quality_a, u)] - E_u[mAP(quality_b, u)]``, ``u ~ N(0, sd_seed)``, where
    ``mAP(q, u)`` is a network's pooled mAP on an infinite population, approximated on
    ``n_patients`` fresh patients per seed. The seed effects are stratified
    (``u_i = sd_seed * Phi^-1((i + U_i) / n_seeds)``, one uniform U_i per stratum: unbiased,
    with a much smaller error than independent draws), and each seed's A and B networks share
    the seed effect and the patients (common random numbers; each arm's expectation is
    unchanged, the difference is much more precise).

    Monte Carlo error, measured with 256 seeds x 20,000 patients (about 4 s on one core),
    qualities 0.5 vs 0.2 (a difference of ~6.8 mAP points): over 4 replicates the values
    spread by an SD of 0.00003 (seed SD 0.25, the default) and 0.00005 (seed SD 0.6), i.e.
    0.005 mAP points; ``mc_se`` reports 0.0001 and 0.0003 (the i.i.d. bound). Recipe
    half-widths of studies of 3 to 8 seeds on 30-40 patients are 5 to 30 points. The
    finite-population bias of pooled AP at 20,000 patients is O(1/N), negligible here.

    Returns:
        A :class:`TrueDifference` (mAP on the [0, 1] scale).
    """
    rng = np.random.default_rng(seed)
    u = model.sd_seed * stats.norm.ppf((np.arange(n_seeds) + rng.random(n_seeds)) / n_seeds)
    a = np.empty(n_seeds)
    b = np.empty(n_seeds)
    for i, ui in enumerate(u):
        patients = _draw_patients(model, n_patients, rng)
        n_truth = int(patients.n_truth.sum())
        state = rng.bit_generator.state
        for q, out in ((quality_a, a), (quality_b, b)):
            rng.bit_generator.state = state  # the same uniforms and normals for both arms
            scores, is_tp, _, _ = _draw_network(model, q, float(ui), patients, rng)
            out[i] = pooled_ap(scores, is_tp, n_truth)
    d = a - b
    return TrueDifference(
        value=float(d.mean()), mc_se=float(d.std(ddof=1) / np.sqrt(n_seeds)),
        mean_a=float(a.mean()), mean_b=float(b.mean()), seed_sd_a=float(a.std(ddof=1)),
        n_seeds=n_seeds, n_patients=n_patients,
    )


# ------------------------------------------------------------------------------------------
# several test conditions of the same networks (the worst-case objective)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conditions:
    """Several test conditions of the same networks, e.g. the full protocol and each MRI
    sequence censored (all effects on the logit scale, added to the model's ``eta``).

    Under condition c the network of seed s detects truth lesion j of patient p with
    ``eta_c = quality + effects[c] + u_s + g_{s,c} + v_p + w_j + h_{j,c}``:

    * ``effects[c]``: the condition effect (0 for the full protocol, negative for a
      censored sequence); C = ``len(effects)`` >= 1 conditions;
    * ``g_{s,c} ~ N(0, sd_seed_condition)``: seed-by-condition interaction, drawn per network
      and condition (one seed leans on one sequence, another seed on another), so the worst
      condition can differ between seeds;
    * ``h_{j,c} ~ N(0, sd_lesion_condition)``: lesion-by-condition effect shared by every
      network (a lesion seen mostly on one sequence is missed by all when it is censored);
      it makes the conditions' difference on a finite test set noisy, which is what biases a
      minimum over conditions low;
    * ``noise_correlation`` (in [0, 1]): the correlation, between two conditions of the same
      network, of the network's own draws (detection, TP score noise, false-positive count
      and FP score noise; a Gaussian copula): 1 gives the same draws under every condition
      (only ``eta`` moves), 0 independent ones.

    The seed effect ``u_s`` is shared by a network's conditions (the same trained network).
    """

    effects: tuple[float, ...]
    sd_seed_condition: float = 0.1
    sd_lesion_condition: float = 0.5
    noise_correlation: float = 0.5

    def __post_init__(self) -> None:
        if len(self.effects) < 1:
            raise ValueError("Conditions needs at least one condition effect")
        if not 0.0 <= self.noise_correlation <= 1.0:
            raise ValueError(f"noise_correlation must be in [0, 1], got {self.noise_correlation!r}")
        if self.sd_seed_condition < 0.0 or self.sd_lesion_condition < 0.0:
            raise ValueError("condition SDs must be >= 0")

    @property
    def n(self) -> int:
        """Number of conditions C."""
        return len(self.effects)


def _draw_network_conditions(
    model: SimulationModel, conditions: Conditions, quality: float, u: float, g: np.ndarray,
    patients: _Patients, lesion_condition: np.ndarray, rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """One network (seed effect ``u``, interactions ``g`` float[C]) under every condition.

    ``lesion_condition``: float[C, T], the h_{j,c} of ``patients``' truth lesions. Returns one
    :func:`_draw_network`-like tuple ``(scores, is_tp, owner, detected)`` per condition. Each
    draw is ``sqrt(rho) * shared + sqrt(1 - rho) * own`` in normal scores, so every condition's
    marginal law is the one :func:`_draw_network` gives for its ``eta``.
    """
    n_cond = conditions.n
    n_pat = patients.n_truth.size
    a, b = np.sqrt(conditions.noise_correlation), np.sqrt(1.0 - conditions.noise_correlation)

    def mixed(size: int) -> np.ndarray:  # float[C, size], standard normal per condition
        return a * rng.standard_normal(size) + b * rng.standard_normal((n_cond, size))

    det_z, score_z, fp_z = mixed(patients.owner.size), mixed(patients.owner.size), mixed(n_pat)
    if model.fp_rate > 0.0:
        # Poisson counts through the copula; the clip keeps ppf finite for extreme normals.
        fp_counts = stats.poisson.ppf(np.minimum(stats.norm.cdf(fp_z), 1.0 - 1e-12), model.fp_rate).astype(np.int64)
    else:
        fp_counts = np.zeros((n_cond, n_pat), dtype=np.int64)
    # FP score noise per slot: slot k of patient p is used by the conditions with > k FPs there.
    slots = fp_counts.max(axis=0)
    slot_owner = np.repeat(np.arange(n_pat), slots)
    slot_rank = np.arange(slot_owner.size) - np.repeat(np.cumsum(slots) - slots, slots)
    fp_noise = mixed(slot_owner.size)
    out = []
    for c in range(n_cond):
        eta = quality + conditions.effects[c] + u + g[c] + patients.effect + lesion_condition[c]
        detected = stats.norm.cdf(det_z[c]) < expit(eta)
        tp_scores = expit(eta + model.score_noise * score_z[c])[detected]
        keep = slot_rank < fp_counts[c, slot_owner]
        fp_scores = expit(model.fp_offset + model.fp_seed_coef * u + model.fp_score_noise * fp_noise[c, keep])
        scores = np.concatenate([tp_scores, fp_scores])
        is_tp = np.zeros(scores.size, dtype=bool)
        is_tp[: tp_scores.size] = True
        owner = np.concatenate([patients.owner[detected], slot_owner[keep]])
        out.append((scores, is_tp, owner, detected))
    return out


@dataclass(frozen=True)
class ConditionStudy:
    """One simulated multi-seed study of one configuration under several conditions.

    ``runs[c][s]``: the P :class:`PatientDetection` (ids ``"p000"``...) of seed s's network
    under condition c (the same seed order in every condition, as
    :meth:`seqablate.metrics.recipe.RecipeData.minimum` needs). ``seed_effects``: float[S],
    each network's u_s; ``interactions``: float[S, C], its g_{s,c}: with
    :func:`network_population_maps` they give each network's mAP on the population.
    """

    runs: list[list[list[PatientDetection]]]
    seed_effects: np.ndarray
    interactions: np.ndarray


def simulate_condition_study(
    quality: float,
    conditions: Conditions,
    n_seeds: int,
    n_patients: int,
    rng: np.random.Generator,
    model: SimulationModel = SimulationModel(),
) -> ConditionStudy:
    """One configuration's ``n_seeds`` networks, each scored under every condition on the same
    ``n_patients`` drawn test patients (same truth lesions, patient, lesion and
    lesion-by-condition effects for every network; :class:`Conditions` for the model)."""
    if n_seeds < 1 or n_patients < 1:
        raise ValueError("simulate_condition_study needs >= 1 seed and >= 1 patient")
    patients = _draw_patients(model, n_patients, rng)
    h = rng.normal(0.0, conditions.sd_lesion_condition, size=(conditions.n, patients.owner.size))
    ids = [f"p{i:03d}" for i in range(n_patients)]
    u = rng.normal(0.0, model.sd_seed, size=n_seeds)
    g = rng.normal(0.0, conditions.sd_seed_condition, size=(n_seeds, conditions.n))
    runs: list[list[list[PatientDetection]]] = [[] for _ in range(conditions.n)]
    for s in range(n_seeds):
        draws = _draw_network_conditions(model, conditions, quality, float(u[s]), g[s], patients, h, rng)
        for c, draw in enumerate(draws):
            runs[c].append(_patient_detections(ids, patients, *draw))
    return ConditionStudy(runs, u, g)


def population_map(
    location: np.ndarray | float, fp_shift: np.ndarray | float = 0.0,
    model: SimulationModel = SimulationModel(), extra_sd: float = 0.0, *, n_grid: int = 801,
    n_nodes: int = 40,
) -> np.ndarray:
    """Pooled mAP of a network on an infinite patient population, by quadrature (no Monte Carlo).

    A network whose truth lesions have ``eta ~ N(location, sd)`` over the population, with
    ``sd**2 = sd_patient**2 + sd_lesion**2 + extra_sd**2`` (the patient effect is shared
    within a patient, which does not change the pooled law), detects a lesion with
    probability ``sigmoid(eta)`` and scores it with logit ``N(eta, score_noise)``; its false
    positives, ``fp_rate / (1 + extra_lesions)`` per truth lesion, have score logits
    ``N(fp_offset + fp_shift, fp_score_noise)`` (``fp_shift = fp_seed_coef * u``). On an
    infinite population the pooled AP is ``integral of precision(t) d recall(t)`` over the
    score threshold t, the limit of :func:`pooled_ap`; it is evaluated on ``n_grid`` logit
    thresholds (midpoint rule) with ``n_nodes``-node Gauss-Hermite quadrature over ``eta``.
    The defaults are within 2e-5 (0.002 mAP points) of 8001 thresholds and 64 nodes, at
    about 1 ms per value; the result agrees with :func:`network_map` on 200,000 patients
    within its Monte Carlo error (``tests/metrics/test_metrics_recipe_worst.py``).

    Args:
        location, fp_shift: broadcastable arrays (or floats) of ``eta`` locations and FP
            score shifts.
        model: the simulator's parameters (``score_noise`` and ``fp_score_noise`` > 0).
        extra_sd: SD added to the lesion effects (a condition's ``sd_lesion_condition``).

    Returns:
        float64 array of the broadcast shape (0-d for float inputs), mAP in [0, 1].
    """
    if model.score_noise <= 0.0 or model.fp_score_noise <= 0.0:
        raise ValueError("population_map needs score_noise > 0 and fp_score_noise > 0")
    x, y = np.broadcast_arrays(np.asarray(location, dtype=np.float64), np.asarray(fp_shift, dtype=np.float64))
    shape = x.shape
    x, y = x.reshape(-1), y.reshape(-1)
    tau = float(np.sqrt(model.sd_patient ** 2 + model.sd_lesion ** 2 + extra_sd ** 2))
    sigma, sigma_fp = model.score_noise, model.fp_score_noise
    fp_per_truth = model.fp_rate / (1.0 + model.extra_lesions)
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    w = weights / np.sqrt(np.pi)
    spread = float(np.sqrt(tau ** 2 + sigma ** 2))
    out = np.empty(x.size)
    chunk = max(1, 4_000_000 // (n_nodes * n_grid))  # bounds the [chunk, K, G] array
    frac = np.linspace(0.0, 1.0, n_grid)
    for i in range(0, x.size, chunk):
        xi, mu_fp = x[i:i + chunk], model.fp_offset + y[i:i + chunk]
        # Thresholds spanning every TP and FP score logit (9 SD either side).
        lo = np.minimum(xi - 9.0 * spread, mu_fp - 9.0 * sigma_fp)
        hi = np.maximum(xi + 9.0 * spread, mu_fp + 9.0 * sigma_fp)
        t = lo[:, None] + (hi - lo)[:, None] * frac[None, :]  # [N, G]
        eta = xi[:, None] + np.sqrt(2.0) * tau * nodes[None, :]  # [N, K]
        above = ndtr((eta[:, :, None] - t[:, None, :]) / sigma)  # [N, K, G]
        recall = np.einsum("nk,nkg->ng", w[None, :] * expit(eta), above)  # TPs above t per truth lesion
        fps = fp_per_truth * ndtr((mu_fp[:, None] - t) / sigma_fp)
        tp_mid = 0.5 * (recall[:, 1:] + recall[:, :-1])
        fp_mid = 0.5 * (fps[:, 1:] + fps[:, :-1])
        precision = np.where(tp_mid > 0, tp_mid / np.where(tp_mid > 0, tp_mid + fp_mid, 1.0), 1.0)
        out[i:i + chunk] = np.sum(precision * (recall[:, :-1] - recall[:, 1:]), axis=1)
    return out.reshape(shape)


def network_population_maps(
    quality: float, conditions: Conditions, seed_effects: np.ndarray, interactions: np.ndarray,
    model: SimulationModel = SimulationModel(),
) -> np.ndarray:
    """Each network's mAP under each condition on the infinite population: float64[S, C].

    ``seed_effects`` float[S] (u_s), ``interactions`` float[S, C] (g_{s,c}), as
    :class:`ConditionStudy` holds them. Its row minima are the networks' population worst
    cases; their mean over a study's seeds is what that study's "these networks" interval of
    the worst case claims to cover.
    """
    u = np.asarray(seed_effects, dtype=np.float64)
    g = np.asarray(interactions, dtype=np.float64).reshape(u.size, conditions.n)
    location = quality + np.asarray(conditions.effects)[None, :] + u[:, None] + g
    return population_map(location, model.fp_seed_coef * u[:, None], model, conditions.sd_lesion_condition)


@dataclass(frozen=True)
class TrueWorst:
    """Monte Carlo value of a recipe's expected worst case ``E_seed[min_c mAP_c]`` (mAP in [0, 1]).

    ``value``: the expectation. ``mc_se``: the i.i.d. bound on its Monte Carlo standard error
    (SD of the per-seed minima / sqrt(n_seeds); the Latin hypercube seed draws only lower it).
    ``condition_means``: ``E_seed[mAP_c]`` per condition. ``worst_share``: per condition, the
    fraction of seeds whose population worst case it is. ``seed_sd``: SD over seeds of the
    per-seed worst case.
    """

    value: float
    mc_se: float
    condition_means: tuple[float, ...]
    worst_share: tuple[float, ...]
    seed_sd: float
    n_seeds: int
    n_patients: int


def true_recipe_worst(
    quality: float,
    conditions: Conditions,
    model: SimulationModel = SimulationModel(),
    *,
    n_seeds: int = 256,
    n_patients: int = 20_000,
    seed: int = 0,
) -> TrueWorst:
    """The recipe's worst case that a worst-case "training recipe" interval should cover.

    ``E_{u, g}[min_c mAP_c(u, g)]``, ``u ~ N(0, sd_seed)``, ``g_c ~ N(0, sd_seed_condition)``,
    where ``mAP_c(u, g)`` is the pooled mAP under condition c of the network with those seed
    effects on an infinite population, approximated on ``n_patients`` fresh patients per seed
    (as :func:`true_recipe_difference`). The seed effects are a Latin hypercube (each of
    ``u, g_1 .. g_C`` stratified into ``n_seeds`` strata, the strata paired at random:
    unbiased, and much more precise than independent draws for the smooth part), and each
    seed's conditions share the patients and the network's draws (common random numbers:
    on an infinite population only each condition's marginal law matters, and shared draws
    keep a finite population's noise from biasing the minimum low).

    Monte Carlo error, measured over 4 replicates (seed-dominated model, two tied censored
    conditions): values spread by an SD of 0.0006 (0.06 mAP points) with 256 seeds x 20,000
    patients (about 10 s on one loaded core) and 0.0011 with 64 seeds x 10,000 patients
    (about 1 s); ``mc_se`` reports 0.007 and 0.014 (the i.i.d. bound, loose here). The mean
    agrees with :func:`exact_recipe_worst` (no patient Monte Carlo) within 0.0002, so the
    finite population's own downward bias of the minimum is below that.

    Returns:
        A :class:`TrueWorst` (mAP on the [0, 1] scale).
    """
    rng = np.random.default_rng(seed)
    n_cond = conditions.n

    def stratified(sd: float) -> np.ndarray:
        return sd * stats.norm.ppf((rng.permutation(n_seeds) + rng.random(n_seeds)) / n_seeds)

    u = stratified(model.sd_seed)
    g = np.stack([stratified(conditions.sd_seed_condition) for _ in range(n_cond)], axis=1)  # [n, C]
    maps = np.empty((n_seeds, n_cond))
    for i in range(n_seeds):
        patients = _draw_patients(model, n_patients, rng)
        h = rng.normal(0.0, conditions.sd_lesion_condition, size=(n_cond, patients.owner.size))
        n_truth = int(patients.n_truth.sum())
        state = rng.bit_generator.state
        for c in range(n_cond):
            rng.bit_generator.state = state  # the same uniforms and normals for every condition
            shifted = _Patients(patients.n_truth, patients.owner, patients.effect + h[c])
            q = quality + conditions.effects[c] + float(g[i, c])
            scores, is_tp, _, _ = _draw_network(model, q, float(u[i]), shifted, rng)
            maps[i, c] = pooled_ap(scores, is_tp, n_truth)
    worst = maps.min(axis=1)
    share = np.bincount(np.argmin(maps, axis=1), minlength=n_cond) / n_seeds
    return TrueWorst(
        value=float(worst.mean()), mc_se=float(worst.std(ddof=1) / np.sqrt(n_seeds)),
        condition_means=tuple(float(m) for m in maps.mean(axis=0)),
        worst_share=tuple(float(s) for s in share), seed_sd=float(worst.std(ddof=1)),
        n_seeds=n_seeds, n_patients=n_patients,
    )


def exact_recipe_worst(
    quality: float,
    conditions: Conditions,
    model: SimulationModel = SimulationModel(),
    *,
    n_seeds: int = 1024,
    seed: int = 0,
) -> TrueWorst:
    """:func:`true_recipe_worst` with each network's population mAP by quadrature
    (:func:`network_population_maps`) instead of a large patient draw: only the seed effects
    are Monte Carlo (the same Latin hypercube). Measured replicate SD 0.00016 with 1024
    seeds (about 2 s), against 0.0006 for :func:`true_recipe_worst`'s 256 seeds x 20,000
    patients (about 10 s). ``TrueWorst.n_patients`` is 0: the population is exact.
    """
    rng = np.random.default_rng(seed)

    def stratified(sd: float) -> np.ndarray:
        return sd * stats.norm.ppf((rng.permutation(n_seeds) + rng.random(n_seeds)) / n_seeds)

    u = stratified(model.sd_seed)
    g = np.stack([stratified(conditions.sd_seed_condition) for _ in range(conditions.n)], axis=1)
    maps = network_population_maps(quality, conditions, u, g, model)  # [n, C]
    worst = maps.min(axis=1)
    share = np.bincount(np.argmin(maps, axis=1), minlength=conditions.n) / n_seeds
    return TrueWorst(
        value=float(worst.mean()), mc_se=float(worst.std(ddof=1) / np.sqrt(n_seeds)),
        condition_means=tuple(float(m) for m in maps.mean(axis=0)),
        worst_share=tuple(float(x) for x in share), seed_sd=float(worst.std(ddof=1)),
        n_seeds=n_seeds, n_patients=0,
    )
