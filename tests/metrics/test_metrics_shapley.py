"""Exact Shapley values of sequence subsets: by hand, by brute force over orders, and the
axioms (efficiency, symmetry, null player)."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest

from seqablate.metrics.shapley import MAX_SEQUENCES, all_subsets, shapley_values, shapley_weights

# A 3-sequence game by hand. Each of the 6 arrival orders gives a the marginal gain when it joins:
#   abc: v(a)=.1  acb: v(a)=.1  bac: v(ab)-v(b)=.3  bca: v(abc)-v(bc)=.4  cab: v(ac)-v(c)=.3
#   cba: v(abc)-v(bc)=.4  -> phi_a = 1.6/6
# b: .4 (abc) .3 (acb) .2 (bac) .2 (bca) .3 (cab) .2 (cba) -> 1.6/6;  c: .1 .2 .1 0 0 0 -> 0.4/6
HAND = {("a",): 0.1, ("b",): 0.2, ("c",): 0.0, ("a", "b"): 0.5, ("a", "c"): 0.3, ("b", "c"): 0.2,
        ("a", "b", "c"): 0.6}


def _by_orders(v: dict[frozenset[str], float], seqs: list[str]) -> dict[str, float]:
    """The definition: the marginal gain averaged over all S! arrival orders (v(empty) = 0)."""
    total = dict.fromkeys(seqs, 0.0)
    orders = list(permutations(seqs))
    for order in orders:
        have: frozenset[str] = frozenset()
        for s in order:
            gain = v[have | {s}] - (v[have] if have else 0.0)
            total[s] += gain
            have = have | {s}
    return {s: t / len(orders) for s, t in total.items()}


def test_a_three_sequence_game_by_hand() -> None:
    phi = shapley_values(HAND, ["a", "b", "c"])
    assert phi == pytest.approx({"a": 1.6 / 6, "b": 1.6 / 6, "c": 0.4 / 6})


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_equal_to_the_average_over_orders_and_efficient(n: int) -> None:
    rng = np.random.default_rng(n)
    seqs = [f"s{i}" for i in range(n)]
    v = {t: float(rng.random()) for t in all_subsets(seqs)}
    phi = shapley_values(v, seqs)
    assert phi == pytest.approx(_by_orders(v, seqs), abs=1e-12)
    assert math.fsum(phi.values()) == pytest.approx(v[frozenset(seqs)])  # full minus empty (0)
    assert len(all_subsets(seqs)) == 2**n - 1


def test_interchangeable_sequences_get_equal_values_and_a_useless_one_zero() -> None:
    # a and b carry the same information (either alone gives .4, both .5); c never changes the score.
    seqs = ["a", "b", "c"]
    base = {frozenset(): 0.0, frozenset("a"): 0.4, frozenset("b"): 0.4, frozenset("ab"): 0.5}
    v = {t: base[t - {"c"}] for t in all_subsets(seqs)}
    phi = shapley_values(v, seqs)
    assert phi["a"] == pytest.approx(phi["b"]) and phi["a"] == pytest.approx(0.25)
    assert phi["c"] == pytest.approx(0.0, abs=1e-15)


def test_weights_are_the_linear_form_of_the_values() -> None:
    w = shapley_weights(["a", "b", "c"])
    v = {frozenset(k): x for k, x in HAND.items()}
    assert {s: sum(w[s][t] * v[t] for t in v) for s in "abc"} == pytest.approx(shapley_values(HAND, "abc"))
    # Each sequence's weights on subsets containing it sum to 1 (it joins once per order), and its
    # weights on the others to -(1 - 1/S) (every non-empty set it could join, the empty one dropped).
    assert sum(x for t, x in w["a"].items() if "a" in t) == pytest.approx(1.0)
    assert sum(x for t, x in w["a"].items() if "a" not in t) == pytest.approx(-2 / 3)


def test_missing_subset_duplicate_and_too_many_are_errors_that_name_them() -> None:
    part = {k: x for k, x in HAND.items() if k != ("a", "c")}
    with pytest.raises(ValueError, match=r"missing 1: a\+c"):
        shapley_values(part, ["a", "b", "c"])
    with pytest.raises(ValueError, match="duplicate"):
        shapley_weights(["a", "a"])
    with pytest.raises(ValueError, match=f"at most {MAX_SEQUENCES}"):
        shapley_weights([f"s{i}" for i in range(MAX_SEQUENCES + 1)])
    nan = {**HAND, ("a",): float("nan")}
    assert all(math.isnan(x) for x in shapley_values(nan, ["a", "b", "c"]).values())


def test_seed_mean_shapley_intervals_cover_their_truths_on_the_simulator() -> None:
    """Two sequences a, b scored under {a, b}, {a} and {b} by 3 seeds' networks on 40 patients
    (:func:`seqablate.metrics.simulate.simulate_condition_study`, seed-by-condition interaction
    0.4). Each Shapley value is a linear contrast of the three conditions (its weights); the
    'these networks' interval must cover the networks' own population value, the recipe
    interval the expectation over seeds. Measured (300 studies, 600 correlated intervals: about
    1.3 points of Monte-Carlo SE): networks 91.5-95 % (a percentile bootstrap over 40 patients
    runs a little short, as it does for any contrast), recipe 97-99 %: the recipe
    interval is conservative here, its seed variance (mostly each network's own detection
    noise, which a contrast of conditions of one network does not cancel) estimated from 3
    values with 2 degrees of freedom, as for a plain difference of two conditions (97 %)."""
    from seqablate.metrics.recipe import Arm, RecipeData, resample_counts
    from seqablate.metrics.simulate import (
        Conditions,
        SimulationModel,
        network_population_maps,
        simulate_condition_study,
    )

    quality, seqs = 0.5, ["a", "b"]
    conds = [frozenset("ab"), frozenset("a"), frozenset("b")]
    w = shapley_weights(seqs)
    weights = np.array([[w[s][t] for t in conds] for s in seqs])  # [sequence, condition]
    model = SimulationModel(sd_seed=0.4, extra_lesions=2.0)
    conditions = Conditions((0.0, -0.4, -1.2), sd_seed_condition=0.4)
    rng = np.random.default_rng(1)
    u = rng.normal(0.0, model.sd_seed, 1500)
    g = rng.normal(0.0, conditions.sd_seed_condition, (1500, 3))
    truth = weights @ network_population_maps(quality, conditions, u, g, model).mean(axis=0)
    hits = {"recipe": [], "networks": []}
    for i in range(300):
        study = simulate_condition_study(quality, conditions, 3, 40, rng, model)
        own = weights @ network_population_maps(quality, conditions, study.seed_effects, study.interactions,
                                                 model).mean(axis=0)
        data = RecipeData([Arm(r, "cfg") for r in study.runs], "mAP", counts=resample_counts(40, 250, i))
        for k in range(2):
            e = data.contrast(list(weights[k]))
            hits["recipe"].append(e.recipe[0] <= truth[k] <= e.recipe[1])
            hits["networks"].append(e.networks[0] <= own[k] <= e.networks[1])
    assert 0.90 <= np.mean(hits["networks"]) <= 0.975
    assert np.mean(hits["recipe"]) >= 0.93
