"""Multi-seed consistency: saliency shares, their across-seed spread, Kendall's W."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import friedmanchisquare

from seqablate.analysis.consistency import SaliencyTrace, consistency, kendall_w, trace_from_history

NAMES = ("a", "b", "c")


def _trace(rows, names=NAMES, steps=None):
    rows = np.asarray(rows, dtype=float)
    steps = np.arange(1, len(rows) + 1) * 10 if steps is None else np.asarray(steps)
    return SaliencyTrace(tuple(names), steps, rows)


def test_identical_traces_give_zero_spread_and_w_one():
    tr = _trace([[1, 2, 3], [2, 5, 9], [4, 7, 12]])
    c = consistency([tr, tr, tr])
    assert c.spread == 0.0
    assert c.kendall_w == pytest.approx(1.0)
    # Shares at the last step: 4/23, 7/23, 12/23 for every seed.
    np.testing.assert_allclose(c.final_shares, np.tile([4 / 23, 7 / 23, 12 / 23], (3, 1)))


def test_scaled_traces_are_identical_in_shares():
    tr = _trace([[1, 2, 3], [2, 5, 9]])
    scaled = SaliencyTrace(tr.names, tr.steps, tr.cumulative * 7.5)
    assert consistency([tr, scaled]).spread == pytest.approx(0.0, abs=1e-15)


def test_permuted_rankings_give_expected_w():
    # Final cumulative saliency per seed (rows) over sequences a, b, c; ranks low->high.
    # Cyclic permutations (1,2,3), (2,3,1), (3,1,2): rank sums R = (6, 6, 6), all equal to
    # their mean 6, so S = 0 and W = 0.
    cyclic = [_trace([[1, 2, 3]]), _trace([[2, 3, 1]]), _trace([[3, 1, 2]])]
    assert consistency(cyclic).kendall_w == pytest.approx(0.0)
    # Rankings (1,2,3), (1,2,3), (1,3,2): R = (3, 7, 8), mean 6, S = 9 + 1 + 4 = 14;
    # W = 12 S / (m^2 (n^3 - n)) = 168 / (9 * 24) = 7/9.
    two_agree = [_trace([[1, 2, 3]]), _trace([[1, 2, 3]]), _trace([[1, 3, 2]])]
    assert consistency(two_agree).kendall_w == pytest.approx(7 / 9)


def test_kendall_w_tie_correction():
    # Two raters, both tie a and b below c: average ranks (1.5, 1.5, 3) each; R = (3, 3, 6),
    # mean 4, S = 6; T = 2 * (2^3 - 2) = 12; W = 12 * 6 / (4 * 24 - 2 * 12) = 72 / 72 = 1.
    assert kendall_w(np.array([[1.0, 1.0, 2.0], [5.0, 5.0, 9.0]])) == pytest.approx(1.0)
    assert np.isnan(kendall_w(np.ones((3, 4))))  # every rater ties everything: undefined
    assert np.isnan(kendall_w(np.ones((1, 4))))  # one rater
    with pytest.raises(ValueError, match="2-D"):
        kendall_w(np.ones(3))


def test_kendall_w_matches_friedman_statistic():
    # Second method: W = chi2_Friedman / (m (n - 1)) (scipy's Friedman test is tie-corrected).
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 4, size=(6, 5)).astype(float)  # many ties
        chi2 = friedmanchisquare(*x.T).statistic
        assert kendall_w(x) == pytest.approx(chi2 / (6 * 4))


def test_spread_by_hand():
    # Step 1: shares (0.75, 0.25) vs (0.25, 0.75): across-seed population std 0.25 for each.
    # Step 2: cumulative (4, 4) vs (2, 2): shares (0.5, 0.5) both, std 0. Mean = 0.125.
    s1 = _trace([[3, 1], [4, 4]], names=("a", "b"))
    s2 = _trace([[1, 3], [2, 2]], names=("a", "b"))
    assert consistency([s1, s2]).spread == pytest.approx(0.125)


def test_alignment_reorders_names_and_uses_common_steps():
    s1 = _trace([[3, 1], [4, 4], [5, 5]], names=("a", "b"), steps=[10, 20, 30])
    s2 = SaliencyTrace(("b", "a"), np.array([20, 30]), np.array([[4.0, 4.0], [5.0, 5.0]]))
    c = consistency([s1, s2])
    assert c.steps.tolist() == [20, 30] and c.spread == 0.0


def test_zero_total_steps_are_skipped_and_bad_inputs_raise():
    s1 = _trace([[0, 0], [1, 1]], names=("a", "b"))
    assert consistency([s1, s1]).steps.tolist() == [20]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        consistency([s1])
    with pytest.raises(ValueError, match="different sequences"):
        consistency([s1, _trace([[1, 1], [1, 1]], names=("a", "c"))])
    with pytest.raises(ValueError, match="shape"):
        SaliencyTrace(("a",), np.array([1, 2]), np.zeros((2, 2)))


def test_trace_from_history_prefers_cumulative_and_sums_steps_otherwise():
    per_step = {
        "saliency.sequence.flair": [(10, 1.0), (20, 2.0)],
        "saliency.sequence.t1_gre_post": [(10, 3.0), (20, 4.0)],
        "saliency.slice.-1": [(10, 1.0)],
        "saliency.slice.1": [(10, 2.0)],
        "saliency.slice.0": [(10, 5.0)],
    }
    tr = trace_from_history(per_step, "sequence", order=("t1_gre_post", "flair"))
    assert tr.names == ("t1_gre_post", "flair")
    np.testing.assert_allclose(tr.cumulative, [[3, 1], [7, 3]])  # summed here
    cum = {"saliency.cumulative.sequence.flair": [(10, 9.0)], **per_step}
    assert trace_from_history(cum, "sequence").cumulative.tolist() == [[9.0]]
    sl = trace_from_history(per_step, "slice")
    assert sl.names == ("-1", "0", "1")  # numeric order of offsets
    assert trace_from_history({"val.mAP": [(1, 0.5)]}, "sequence") is None
    with pytest.raises(ValueError, match="kind"):
        trace_from_history(per_step, "voxel")
