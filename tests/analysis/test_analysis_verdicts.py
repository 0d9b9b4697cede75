"""The verdict rules by hand: relative margins with a floor, the weak-model guard, TOST and
non-inferiority p-values, Holm's step-down levels, Fieller ratios, the policy wording."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seqablate.analysis.findings import claim_margin, claim_ratio, finish_claim
from seqablate.analysis.verdicts import ClaimTest, Rules, holm, policy_agreement
from seqablate.metrics.detection import PatientDetection
from seqablate.metrics.recipe import Arm, RecipeData, RecipeEstimate

WORDS = {"holds": "H", "does not hold": "D", "not shown": "N"}


def _patient(pid: str, n_truth: int, scores: list[float], tp: list[bool]) -> PatientDetection:
    k = len(scores)
    return PatientDetection(pid, np.array(scores, float), np.zeros((k, 3)), np.ones(k), np.zeros(k),
                            np.zeros(k, np.int64), np.array(tp, bool), np.full(k, 0.5), np.full(n_truth, np.nan),
                            np.zeros(n_truth, bool), float("nan"))


def _estimate(estimate: float, se_p: float, se_s: float = 0.0, df: float = math.inf) -> RecipeEstimate:
    return RecipeEstimate("mAP", estimate, 0.95, (estimate, estimate), (estimate - 1, estimate + 1), "", se_p, se_s,
                          df, 10, {"g": 3}, {}, np.zeros(1))


def test_margin_is_relative_with_a_floor() -> None:
    r = Rules()
    assert r.margin(0.50) == pytest.approx(0.10)  # 20 % of 50 points
    assert r.margin(0.071) == pytest.approx(0.03)  # 20 % would be 1.4 points: the 3-point floor
    assert r.margin(0.15) == pytest.approx(0.03)
    assert Rules(close_fraction=0.1, close_floor=0.01).margin(0.5) == pytest.approx(0.05)


def test_tost_and_noninferiority_p_values_by_hand() -> None:
    # estimate 2 points, SE 1 point, normal quantiles (df inf), margin d = 3 points:
    # P(Z >= (0.02 + 0.03) / 0.01) = Phi(-5); P(Z <= (0.02 - 0.03) / 0.01) = Phi(-1) = 0.158655
    e = _estimate(0.02, 0.01)
    assert e.p_greater(-0.03) == pytest.approx(2.8665e-7, rel=1e-3)
    assert e.p_less(0.03) == pytest.approx(0.158655, rel=1e-5)
    # t with 4 degrees of freedom: P(T4 >= 1) = 0.186950 (table value)
    t4 = _estimate(0.02, 0.0, 0.01, 4.0)
    assert t4.p_less(0.03) == pytest.approx(0.186950, rel=1e-4)


def test_holm_step_down_by_hand() -> None:
    ps = {"a": 0.001, "b": 0.04, "c": 0.012, "e": 0.3}
    tests = [ClaimTest(c, None, p, words=WORDS) for c, p in ps.items()]
    tests.append(ClaimTest("d", None, math.nan, blocked="model too weak to judge", words=WORDS))
    holm(tests, 0.05)
    got = {t.claim: (round(t.alpha, 5), t.outcome) for t in tests}
    # m = 4 testable: 0.001 <= 0.05/4 yes; 0.012 <= 0.05/3 yes; 0.04 <= 0.05/2 no -> stop; 0.3 at 0.05 no
    assert got["a"] == (0.0125, "holds") and got["c"] == (0.01667, "holds")
    assert got["b"] == (0.025, "not shown") and got["e"] == (0.05, "not shown")
    assert got["d"][1] == "no verdict" and "too weak" in tests[-1].verdict
    # without Holm, b (0.04 < 0.05) would have held: the family makes it "not shown"
    # a later p below its own level is not rejected once an earlier one failed (step-down)
    t2 = [ClaimTest("a", None, 0.02, words=WORDS), ClaimTest("b", None, 0.021, words=WORDS)]
    holm(t2, 0.05)
    assert [t.outcome for t in t2] == ["holds", "holds"]  # 0.02 <= 0.025, 0.021 <= 0.05
    t3 = [ClaimTest("a", None, 0.03, words=WORDS), ClaimTest("b", None, 0.031, words=WORDS)]
    holm(t3, 0.05)
    assert [t.outcome for t in t3] == ["not shown", "not shown"]  # 0.03 > 0.025 stops both


def test_reverse_claim_says_does_not_hold() -> None:
    t = ClaimTest("a", None, 0.9, reverse_p=0.001, words=WORDS)
    holm([t], 0.05)
    assert t.outcome == "does not hold" and t.verdict == "D"


def _weak_data() -> RecipeData:
    """The weak model of the issue: 7 patients x 2 lesions, one found (score 0.9) in full:
    mAP = 1/14 = 0.071; censored: nothing found (0.000). Three identical seeds; no dropout arm."""
    full = [_patient(f"p{i}", 2, [0.9] if i == 0 else [], [True] if i == 0 else []) for i in range(7)]
    cens = [_patient(f"p{i}", 2, [], []) for i in range(7)]
    return RecipeData([Arm([full] * 3, "m"), Arm([cens] * 3, "m")], "mAP", n=500, seed=0)


def test_weak_model_gets_no_verdict_where_absolute_margins_said_both() -> None:
    data = _weak_data()
    assert data.contrast([1.0, 0.0]).estimate == pytest.approx(1 / 14)
    rules = Rules()
    a = claim_ratio("a", data, 1, 0, rules.most, "the full-protocol", WORDS, rules)
    b = claim_margin("b", data, 0, 1, 0, "equivalence", "the full-protocol", WORDS, rules)
    # Under the old absolute rules both "costs most" (difference 7.1 > half of 7.1) and "within
    # 10 points" (|7.1| < 10) were true at once. The full-protocol mAP is below the 10-point floor:
    assert "too weak to judge" in a.blocked and "too weak to judge" in b.blocked
    assert b.margin == pytest.approx(0.03)  # the floor margin, not 20 % of 7.1 points
    holm([a, b], rules.alpha)
    assert a.holds is None and b.holds is None and a.outcome == b.outcome == "no verdict"
    assert "7.1" in a.blocked and "floor of 10 points" in a.blocked


def test_two_seeds_give_no_recipe_and_no_verdict() -> None:
    full = [_patient(f"p{i}", 1, [0.9], [True]) for i in range(6)]
    data = RecipeData([Arm([full] * 2, "m"), Arm([full] * 2, "m")], "mAP", n=200, seed=0)
    e = data.contrast([1.0, -1.0])
    assert e.recipe is None and "needs >= 3 seeds" in e.recipe_reason and "has 2" in e.recipe_reason
    rules = Rules()
    b = claim_margin("b", data, 0, 1, 0, "equivalence", "the full-protocol", WORDS, rules)
    holm([b], rules.alpha)
    assert b.outcome == "no verdict" and "3 seeds" in b.verdict


def test_fieller_ratio_matches_a_brute_force_scan() -> None:
    """The ratio interval equals the set of rho whose contrast num - rho * den is not rejected,
    found here by scanning a fine grid (a second method)."""
    rng = np.random.default_rng(3)

    def arm(p_found: float, seed: int) -> list[list[PatientDetection]]:
        r = np.random.default_rng(seed)
        out = []
        for s in range(4):
            pts = []
            for i in range(20):
                k = int(r.random() < p_found + 0.05 * (s - 1.5))
                pts.append(_patient(f"p{i}", 1, [float(r.uniform(0.2, 1.0))] if k else [], [True] if k else []))
            out.append(pts)
        return out

    num, den = Arm(arm(0.3, 1), "without"), Arm(arm(0.8, 2), "with")
    data = RecipeData([num, den], "mAP", n=400, seed=int(rng.integers(100)))
    ratio, ci = data.ratio(0, 1, 0.9)
    assert ci is not None and ci[0] < ratio < ci[1]
    grid = np.linspace(-0.5, 2.0, 2501)
    ok = []
    for rho in grid:
        c = data.contrast([1.0, -rho], 0.9)
        ok.append(c.recipe[0] <= 0.0 <= c.recipe[1])
    accepted = grid[np.array(ok)]
    assert ci[0] == pytest.approx(accepted.min(), abs=1.1e-3) and ci[1] == pytest.approx(accepted.max(), abs=1.1e-3)


def test_ratio_claim_interval_is_computed_at_its_holm_level() -> None:
    data = _weak_data()
    rules = Rules(floor=0.0)
    a = claim_ratio("a", data, 1, 0, rules.most, "the full-protocol", WORDS, rules)
    holm([a], rules.alpha)
    finish_claim(a)
    assert a.ratio is not None and a.ratio[0] == pytest.approx(0.0)


def test_policy_disagreement_sentence() -> None:
    s = ClaimTest("a", None, 0.001, words=WORDS)
    p = ClaimTest("a", None, 0.9, reverse_p=0.001, words=WORDS)
    holm([s], 0.05)
    holm([p], 0.05)
    text = policy_agreement({"stored": s, "per_subset": p}, "stored")
    assert text == ("Depends on the BatchNorm statistics policy: holds under stored statistics (configured), "
                    "does not hold under per-subset statistics.")
    assert policy_agreement({"stored": s, "per_subset": s}, "stored") == ""


def test_figures_pick_the_seed_by_validation_never_by_test() -> None:
    from seqablate.analysis.figures import best_runs
    from seqablate.analysis.runs import Run

    def run(seed: int, p: float, val: float | None, test: float) -> Run:
        metrics = {"test.full.mAP": test, **({"val.best_mAP": val} if val is not None else {})}
        return Run(f"r{seed}{p}", f"s{seed}", "FINISHED", {"train.seed": str(seed), "train.dropout_p": str(p)},
                   {}, metrics)

    runs = [run(0, 0.0, 0.30, 0.90), run(1, 0.0, 0.40, 0.10), run(0, 0.25, None, 0.90), run(1, 0.25, None, 0.20)]
    best = best_runs(runs)
    assert best["no dropout"].seed == "1"  # best validation, worst test
    assert best["dropout"].seed == "0"  # no validation score: the lowest seed, not the best test
