"""The rules that turn a claim's numbers into a verdict: margins, a floor, and Holm.

Each of the paper's claims (a)-(e) about one no-dropout / dropout pair is a one-sided
hypothesis test whose alternative is the claim (every p-value is one-sided, towards the
claim):

==== ===================================================== ===========================================
     claim                                                 H1 (the claim), decided on the recipe
==== ===================================================== ===========================================
(a)  without dropout, censoring costs most of the mAP      censored < ``most`` x full  (contrast
                                                           ``censored - most * full < 0``)
(b)  with dropout, the censored mAP stays close            ``|full - censored| < d``: two one-sided
                                                           tests (TOST), p = the larger of the two
(c)  dropout costs little on the full protocol             ``with - without > -d`` (non-inferiority)
(d)  dropout makes saliency more consistent across seeds   spread with < spread without (exact
                                                           permutation test over seeds)
(e)  on an external cohort, no dropout fails               without < ``fails`` x with  (contrast
                                                           ``without - fails * with < 0``)
==== ===================================================== ===========================================

``d = max(close_fraction x the reference arm's full-protocol mAP, close_floor)``: for (b) the
same model's full-protocol mAP, for (c) the no-dropout arm's. A ratio claim is tested as a
linear contrast so that the reference mAP's own uncertainty is in the test; its interval is
Fieller's (:func:`seqablate.metrics.recipe.ratio_interval`).

The family is the claims of one comparison under one statistics policy; Holm's step-down
procedure controls its family-wise error at ``alpha``. A claim tested at one-sided level
``a_i`` is shown with the two-sided ``1 - 2 a_i`` interval, whose bound on the claim's side
is the one-sided ``1 - a_i`` bound the test uses (TOST's 90 % interval at ``a_i = 0.05``).
A claim whose reference model is too weak (its full-protocol recipe interval's lower bound
below ``floor``), or whose recipe interval is unavailable (< 3 seeds), gets no verdict and
leaves the family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from seqablate.metrics.recipe import RecipeEstimate

CLAIMS = ("a", "b", "c", "d", "e")


@dataclass(frozen=True)
class Rules:
    """Thresholds of the verdicts (mAP as a fraction). Printed with every report."""

    alpha: float = 0.05  # family-wise error rate of one comparison's claims (Holm)
    close_fraction: float = 0.20  # "close": within +-20 % of the reference full-protocol mAP ...
    close_floor: float = 0.03  # ... and never a narrower margin than 3 points
    most: float = 0.5  # (a): censored keeps less than half of the full-protocol mAP
    fails: float = 0.5  # (e): without dropout keeps less than half of the dropout model's mAP
    floor: float = 0.10  # no verdict when the reference model's full-protocol recipe CI starts below this

    def margin(self, reference_map: float) -> float:
        """The equivalence / non-inferiority margin d for a reference full-protocol mAP."""
        return max(self.close_fraction * float(reference_map), self.close_floor)

    def describe(self) -> str:
        """One sentence naming every rule, for the report."""
        return (f"'close' = within +-d, d = max({100 * self.close_fraction:.0f} % of the reference "
                f"full-protocol mAP, {100 * self.close_floor:.0f} points); 'most of the mAP' = the censored "
                f"model keeps < {100 * self.most:.0f} %; 'fails' = keeps < {100 * self.fails:.0f} % of the "
                f"dropout model's mAP; no verdict when the reference model's full-protocol recipe interval "
                f"starts below {100 * self.floor:.0f} points; Holm at family-wise alpha = {self.alpha}")


@dataclass
class ClaimTest:
    """One claim under one statistics policy: the numbers, its p-value, and after
    :func:`holm` its level and verdict.

    ``effect``: the displayed difference (points are ``100 x``); ``p_value``: one-sided p of
    the claim (NaN: not testable); ``reverse_p``: one-sided p of the claim's opposite (used to
    say "does not hold" rather than "not shown"); ``blocked``: why there is no verdict;
    ``ratio``: ``(estimate, recipe interval)`` for (a) and (e); ``extra``: the permutation
    result for (d); ``ratio_of``: where the ratio's interval is computed once the level is known.
    """

    claim: str
    effect: RecipeEstimate | None
    p_value: float
    reverse_p: float = math.nan
    margin: float | None = None
    blocked: str = ""
    threshold: float | None = None  # (a), (e): the effect above which the claim holds (mAP)
    ratio: tuple[float, tuple[float, float] | None] | None = None
    extra: Any = None
    ratio_of: tuple[Any, int, int] | None = field(default=None, repr=False)  # (RecipeData, num, den)
    alpha: float = math.nan  # Holm-adjusted one-sided level (set by holm)
    holds: bool | None = None
    outcome: str = ""  # 'holds', 'does not hold', 'not shown', 'undecidable', 'no verdict'
    verdict: str = ""
    words: dict[str, str] = field(default_factory=dict)  # per outcome, claim-specific wording

    @property
    def level(self) -> float:
        """Two-sided level of the intervals shown with this claim (``1 - 2 alpha``)."""
        a = self.alpha if math.isfinite(self.alpha) else 0.05
        return 1.0 - 2.0 * a

    @property
    def testable(self) -> bool:
        return not self.blocked and math.isfinite(self.p_value)


def holm(tests: Sequence[ClaimTest], alpha: float) -> None:
    """Holm's step-down procedure over the testable claims, in place: sorted by p-value, the
    k-th (0-based) of m is tested at ``alpha / (m - k)`` until the first that fails; it and all
    after it are not rejected. Sets ``alpha``, ``holds``, ``outcome`` and ``verdict``."""
    family = sorted((t for t in tests if t.testable), key=lambda t: t.p_value)
    m = len(family)
    rejecting = True
    for k, t in enumerate(family):
        t.alpha = alpha / (m - k)
        rejecting = rejecting and t.p_value <= t.alpha
        t.holds = rejecting
    for t in tests:
        if not t.testable:
            if not math.isfinite(t.alpha):
                t.alpha = alpha  # outside the family: its intervals are shown at the nominal level
            t.holds, t.outcome = None, "no verdict"
            t.verdict = f"No verdict: {t.blocked}."
        elif t.holds:
            t.outcome, t.verdict = "holds", t.words["holds"]
        elif t.claim == "d" and t.extra is not None and t.extra.min_p > t.alpha:
            t.holds, t.outcome = None, "undecidable"
            t.verdict = t.words["undecidable"].replace("{alpha}", f"{t.alpha:.3g}")
        elif math.isfinite(t.reverse_p) and t.reverse_p <= t.alpha:
            t.outcome, t.verdict = "does not hold", t.words["does not hold"]
        else:
            t.outcome, t.verdict = "not shown", t.words["not shown"]


def policy_agreement(tests: dict[str | None, ClaimTest], headline: str | None) -> str:
    """The sentence that reports a claim whose outcome differs between statistics policies
    ("" when they agree or only one was logged)."""
    outcomes = {p: t.outcome for p, t in tests.items()}
    if len(set(outcomes.values())) <= 1:
        return ""
    def name(p: str | None) -> str:
        return (p or "own").replace("_", "-") + " statistics" + (" (configured)" if p == headline else "")
    parts = [f"{t.outcome} under {name(p)}" for p, t in tests.items()]
    return "Depends on the BatchNorm statistics policy: " + ", ".join(parts) + "."
