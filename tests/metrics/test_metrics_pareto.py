"""The Pareto front: by hand on tiny cases, against a brute-force front on made-up points with
many ties and duplicates, bad inputs; and the recipe interval of a ``worst`` objective."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from seqablate.metrics import DetectionResult
from seqablate.metrics.pareto import dominates, pareto_front
from seqablate.metrics.recipe import Arm, RecipeData
from tests._detections import cohort


def _brute_force(points: list[tuple[float, ...]], modes: list[str]) -> list[bool]:
    """The definition, literally: i is on the front unless some j is at least as good
    everywhere and strictly better somewhere (max: larger is better, min: smaller)."""
    def better_or_equal(a: float, b: float, mode: str) -> bool:
        return a >= b if mode == "max" else a <= b

    def strictly_better(a: float, b: float, mode: str) -> bool:
        return a > b if mode == "max" else a < b

    out = []
    for i, p in enumerate(points):
        beaten = False
        for j, q in enumerate(points):
            if j == i:
                continue
            if (all(better_or_equal(q[k], p[k], m) for k, m in enumerate(modes))
                    and any(strictly_better(q[k], p[k], m) for k, m in enumerate(modes))):
                beaten = True
                break
        out.append(not beaten)
    return out


def test_a_tiny_front_by_hand() -> None:
    # Two maximised objectives (full-protocol mAP, worst-condition mAP):
    points = [
        (0.60, 0.10),  # a: best full
        (0.50, 0.40),  # b
        (0.50, 0.40),  # c: b's duplicate: neither dominates the other, both on the front
        (0.45, 0.35),  # d: b is better on both
        (0.50, 0.30),  # e: ties b on full, worse on worst: dominated
        (0.20, 0.45),  # f: best worst
        (0.20, 0.45),  # g: f's duplicate
    ]
    assert pareto_front(points, ["max", "max"]) == [True, True, True, False, False, True, True]
    assert dominates((0.50, 0.40), (0.50, 0.30), ["max", "max"])
    assert not dominates((0.50, 0.40), (0.50, 0.40), ["max", "max"])  # equal: no domination
    # Minimising the second objective turns the order around on it: (0.60, 0.10) now beats
    # every point with full <= 0.60; only it survives... and nothing else has full > 0.60.
    assert pareto_front(points, ["max", "min"]) == [True, False, False, False, False, False, False]
    # One objective: every point holding the best value, ties included.
    assert pareto_front([(1.0,), (3.0,), (3.0,), (2.0,)], ["max"]) == [False, True, True, False]
    assert pareto_front([(1.0,), (3.0,), (1.0,)], ["min"]) == [True, False, True]
    assert pareto_front([], ["max", "max"]) == []


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_brute_force_front_with_ties_and_duplicates(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k in (1, 2, 3):
        for _ in range(8):
            n = int(rng.integers(1, 25))
            # Few distinct values per objective: many ties on single objectives and whole duplicates.
            points = [tuple(float(v) for v in rng.integers(0, 4, size=k)) for _ in range(n)]
            points += [points[int(i)] for i in rng.integers(0, n, size=int(rng.integers(0, 4)))]
            modes = [str(m) for m in rng.choice(["max", "min"], size=k)]
            got = pareto_front(points, modes)
            assert got == _brute_force(points, modes), (points, modes)
            assert any(got)  # a finite set always has a non-dominated point
            # Duplicates share their fate.
            for i, j in itertools.combinations(range(len(points)), 2):
                if points[i] == points[j]:
                    assert got[i] == got[j]


@pytest.mark.parametrize(("points", "modes", "message"), [
    ([(1.0, math.nan)], ["max", "max"], r"points \[0\] have values that are not finite"),
    ([(1.0, 2.0), (1.0,)], ["max", "max"], r"points \[1\] do not have 2 values"),
    ([(1.0,)], ["maximise"], r"modes must be 'max' or 'min', got \['maximise'\]"),
    ([(1.0,)], [], r"no objectives"),
])
def test_bad_inputs_are_named(points: list, modes: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pareto_front(points, modes)






def test_recipe_minimum_is_each_seeds_weakest_condition_averaged() -> None:
    # Three seeds, two conditions of the same networks; which condition is weaker varies by seed.
    full = [cohort(np.random.default_rng(s), 8, 0.7) for s in (1, 2, 3)]
    censored = [cohort(np.random.default_rng(s + 10), 8, 0.5) for s in (1, 2, 3)]
    data = RecipeData([Arm(full, "cfg"), Arm(censored, "cfg")], "mAP", n=300, seed=1)
    est = data.minimum([0, 1])
    by_hand = [min(DetectionResult.from_patients(f).mAP, DetectionResult.from_patients(c).mAP)
               for f, c in zip(full, censored, strict=True)]
    # The estimate is bias-corrected (8 patients: the conditions' minimum is biased low);
    # ``bias`` is what was subtracted, and without the correction it is the plain average.
    assert est.estimate + est.bias == pytest.approx(float(np.mean(by_hand)))
    assert est.bias <= 0.0
    assert data.minimum([0, 1], bias_correction=False).estimate == pytest.approx(float(np.mean(by_hand)))
    assert est.recipe is not None and est.recipe[0] <= est.estimate <= est.recipe[1]  # 3 seeds: the recipe's
    # The minimum over one arm, or over an arm and its copy, is that arm's mean with its intervals.
    same = RecipeData([Arm(full, "cfg"), Arm(full, "cfg")], "mAP", n=300, seed=1)
    mean = same.mean(0)
    for m in (same.minimum([0]), same.minimum([0, 1])):
        assert m.estimate == pytest.approx(mean.estimate)
        assert m.recipe == pytest.approx(mean.recipe) and m.networks == pytest.approx(mean.networks)
    # Two seeds: the networks' interval only, and the recipe's absence says why.
    two = RecipeData([Arm(full[:2], "cfg"), Arm(censored[:2], "cfg")], "mAP", n=300, seed=1).minimum([0, 1])
    assert two.recipe is None and ">= 3 seeds" in two.recipe_reason and two.networks[0] <= two.networks[1]
    with pytest.raises(ValueError, match="one group"):
        RecipeData([Arm(full, "a"), Arm(censored, "b")], "mAP", n=50).minimum([0, 1])
    with pytest.raises(ValueError, match="no arms"):
        data.minimum([])
