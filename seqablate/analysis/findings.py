"""The paper's finding, part by part, as seed-aware paired comparisons with verdicts.

For each configuration that was trained both without and with sequence dropout (a "twin"
pair, same everything else, on the study's full protocol), five claims of the paper are
tested on the study's own runs:

(a) without dropout, censoring ``t1_gre_post`` costs most of the mAP (paper: 46 -> 0);
(b) with dropout, the censored mAP stays close to the full-protocol one (paper: ~37-40);
(c) dropout costs little on the full protocol (paper: Table II vs Table I, a few points);
(d) dropout makes per-sequence saliency more consistent across seeds (paper Figs 7-8);
(e) on an external cohort without ``t1_gre_post``, the no-dropout model fails and the
    dropout model works (paper Table VI).

(a)-(c) and (e) are built from each run's logged per-patient and per-lesion tables as
:func:`seqablate.metrics.recipe.recipe_contrast` estimates: each comes with the interval of
"these N trained networks" (patients resampled) and of "the training recipe" (seeds and
patients); verdicts use the recipe. (d) is an exact permutation test over seeds
(:func:`seqablate.analysis.consistency.consistency_difference`). The rules (margins relative
to the effect, a floor for weak models, Holm over the claims of one comparison) are
:mod:`seqablate.analysis.verdicts`'. Every claim is computed under each BatchNorm statistics
policy the runs logged; the runs' configured ``eval.norm_stats`` is the headline, and a claim
whose outcome differs between policies says so. The words come from the numbers, never from
the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from seqablate import metric_names as mn
from seqablate.analysis.detections import StudyDetections
from seqablate.analysis.runs import (
    ConfigGroup,
    Run,
    group_by_config,
    study_censored,
    study_sequences,
    twin_key,
)
from seqablate.analysis.study import StudyRuns
from seqablate.analysis.verdicts import ClaimTest, Rules, holm, policy_agreement
from seqablate.metrics.recipe import Arm
from seqablate.vocabulary import STORED

#: The rules the report states and the verdicts follow.
RULES = Rules()
#: Patient resamples per estimate.
N_BOOT = 2000
#: What each claim's effect is (the forest plot's row labels).
EFFECTS = {"a": "no dropout, full - censored", "b": "dropout, full - censored",
           "c": "full protocol, with - without dropout", "d": "saliency spread, with - without dropout",
           "e": "with - without dropout", "vs": "minus the outside baseline"}


@dataclass
class Finding:
    """One claim's outcome for one configuration pair.

    ``tests``: the claim under each statistics policy (None: a model without BatchNorm, its
    own metrics); ``headline``: the configured policy, whose outcome is ``holds``.
    """

    claim: str  # 'a' .. 'e', or '-' for a note
    configuration: str  # e.g. 'Input, dropout p=0.25'
    text: str  # what was compared, both intervals, the verdict
    holds: bool | None  # None: no verdict / undecidable
    numbers: dict[str, Any] = field(default_factory=dict)
    tests: dict[str | None, ClaimTest] = field(default_factory=dict)
    headline: str | None = None
    cohort: str | None = None
    dropped_patients: int = 0
    short: str = ""  # what the effect is, for plots: '(a) Input: no dropout, full - censored'

    @property
    def test(self) -> ClaimTest | None:
        """The headline policy's test."""
        return self.tests.get(self.headline)


def points(x: float) -> str:
    """A fraction as signed mAP points with one decimal (0.123 -> '+12.3')."""
    return "nan" if not math.isfinite(x) else f"{100 * x:+.1f}"


def interval_text(lo_hi: tuple[float, float] | None, level: float) -> str:
    """``'95 % CI +1.0 to +3.0'`` in points; level printed with up to two decimals."""
    if lo_hi is None:
        return "unavailable"
    lv = f"{100 * level:.2f}".rstrip("0").rstrip(".")
    return f"{lv} % CI {points(lo_hi[0])} to {points(lo_hi[1])}"


@dataclass
class _Pair:
    base: ConfigGroup  # no dropout
    drop: ConfigGroup  # with dropout

    @property
    def label(self) -> str:
        """The dropout configuration's label, e.g. ``Mid (layer4) / L2 Tied, dropout p=0.25``."""
        return self.drop.label


def _pairs(runs: Sequence[Run]) -> list[_Pair]:
    seqs = study_sequences(runs)
    groups = [g for g in group_by_config(runs) if g.sequences == seqs and g.usable]
    base = {twin_key(g): g for g in groups if not g.has_dropout}
    out = []
    for g in groups:
        if g.has_dropout and twin_key(g) in base:
            out.append(_Pair(base[twin_key(g)], g))
    return out


def _has_batchnorm(group: ConfigGroup) -> bool:
    return group.first.params.get("model.norm", "batch") == "batch"


@dataclass(frozen=True)
class _Side:
    """One arm of a comparison: a configuration's runs under one split and condition."""

    group: ConfigGroup
    split: str
    condition: str
    cohort: str | None = None
    fixed: bool = False  # an outside baseline: one given network, read under its own metrics


def _prepare(det: StudyDetections, sides: Sequence[_Side], policy: str | None) -> tuple[Any, int] | None:
    """``(RecipeData over the sides, patients dropped)`` on the patients every run of every
    side scored (a patient one condition could not score, no sequence left, leaves them all);
    None when a side was not logged or no patient is common."""
    from seqablate.metrics.recipe import RecipeData

    sets = [det.sets(s.group, s.split, s.condition, None if s.fixed else policy, s.cohort) for s in sides]
    if any(x is None for x in sets):
        return None
    ids = [{p.patient_id for p in run} for x in sets for run in x]
    common = set.intersection(*ids)
    if not common:
        return None
    arms = [Arm([[p for p in run if p.patient_id in common] for run in x], s.group.key, s.fixed)
            for s, x in zip(sides, sets, strict=True)]
    return RecipeData(arms, "mAP", n=N_BOOT, seed=0), len(set.union(*ids)) - len(common)


def _weak(data: Any, index: int, what: str, rules: Rules) -> str:
    """Why the reference arm ``index`` is too weak to judge (or why no recipe exists); ""."""
    ref = data.mean(index)
    if ref.recipe is None:
        return ref.recipe_reason
    if ref.recipe[0] < rules.floor:
        return (f"model too weak to judge: {what} mAP {100 * ref.estimate:.1f}, its recipe 95 % CI starts at "
                f"{100 * ref.recipe[0]:.1f}, below the floor of {100 * rules.floor:.0f} points")
    return ""


def claim_ratio(claim: str, data: Any, num: int, den: int, fraction: float, reference: str,
                words: dict[str, str], rules: Rules) -> ClaimTest:
    """(a) / (e): the numerator arm keeps less than ``fraction`` of the denominator arm's mAP.

    Shown: ``den - num`` (full minus censored; with minus without). Tested: the contrast
    ``num - fraction * den < 0``; its reverse ``> 0`` says "does not hold".
    """
    w = [0.0] * len(data.values)
    w[den], w[num] = 1.0, -1.0
    effect = data.contrast(w)
    w = [0.0] * len(data.values)
    w[num], w[den] = 1.0, -fraction
    test = data.contrast(w)
    ref = data.mean(den).estimate
    return ClaimTest(claim, effect, test.p_less(0.0), test.p_greater(0.0), None, _weak(data, den, reference, rules),
                     threshold=(1.0 - fraction) * ref, words=words, ratio_of=(data, num, den))


def claim_margin(claim: str, data: Any, a: int, b: int, ref: int, kind: str, reference: str,
                 words: dict[str, str], rules: Rules) -> ClaimTest:
    """(b) equivalence ``|A - B| < d`` (TOST) or (c) non-inferiority ``A - B > -d``, with
    ``d = rules.margin(mean full-protocol mAP of arm ref)``."""
    w = [0.0] * len(data.values)
    w[a], w[b] = 1.0, -1.0
    effect = data.contrast(w)
    ref_map = float(data.mean(ref).estimate)
    d = rules.margin(ref_map) if math.isfinite(ref_map) else math.nan
    if kind == "equivalence":
        p = max(effect.p_greater(-d), effect.p_less(d))
        reverse = min(effect.p_less(-d), effect.p_greater(d))  # clearly outside the margin
    else:
        p, reverse = effect.p_greater(-d), effect.p_less(-d)
    return ClaimTest(claim, effect, p, reverse, d, _weak(data, ref, reference, rules), words=words)


def finish_claim(t: ClaimTest) -> None:
    """Compute what depends on the claim's Holm level: a ratio claim's Fieller interval."""
    if t.ratio_of is not None:
        data, num, den = t.ratio_of
        t.ratio = data.ratio(num, den, t.level)


def _words(claim: str, margin: str = "") -> dict[str, str]:
    """The claim-specific sentence of each outcome."""
    return {
        "a": {"holds": "Holds: censoring costs most of the mAP.",
              "does not hold": "Does not hold: the censored model keeps more than half of its mAP.",
              "not shown": "Not shown: the interval does not exclude keeping half of the mAP."},
        "b": {"holds": f"Holds: the censored mAP stays within {margin} points of the full-protocol mAP.",
              "does not hold": f"Does not hold: the censored mAP differs by more than {margin} points.",
              "not shown": f"Not shown: the interval is not within +-{margin} points."},
        "c": {"holds": f"Holds: dropout costs less than {margin} points on the full protocol.",
              "does not hold": f"Does not hold: dropout costs more than {margin} points on the full protocol.",
              "not shown": f"Not shown: a cost of {margin} points or more is not excluded."},
        "e": {"holds": "Holds: the no-dropout model fails (keeps less than half of the dropout model's mAP).",
              "does not hold": "Does not hold: the no-dropout model keeps more than half of the dropout model's mAP.",
              "not shown": "Not shown: the interval does not exclude the no-dropout model keeping half."},
    }[claim]


def _stats_name(policy: str | None, headline: str | None) -> str:
    if policy is None:
        return "own statistics"
    return policy.replace("_", "-") + " statistics" + (", configured" if policy == headline else "")


def claim_text(claim: str, what: str, t: ClaimTest, headline: str | None, agreement: str,
               others: dict[str | None, ClaimTest]) -> str:
    """One finding's text: what was compared, both intervals at the claim's level, the rule's
    p-value, the verdict, and the other policy's numbers."""
    def numbers(x: ClaimTest) -> str:
        e = x.effect
        if e is None:
            return ""
        lv = x.level
        n_seeds = "/".join(str(k) for k in e.n_seeds.values())
        out = (f"{points(e.estimate)} points; these trained networks ({n_seeds} seeds, {e.n_patients} patients): "
               f"{interval_text(e.networks_at(lv), lv)}; the training recipe: "
               + (interval_text(e.recipe_at(lv), lv) if e.recipe is not None else f"unavailable ({e.recipe_reason})"))
        if x.ratio is not None:
            r, ci = x.ratio
            rci = "unavailable" if ci is None else f"{100 * ci[0]:.0f} to {100 * ci[1]:.0f} %"
            out += f"; ratio {100 * r:.0f} % (recipe {rci})"
        if x.margin is not None and math.isfinite(x.margin):
            out += f"; margin d = {100 * x.margin:.1f} points"
        if math.isfinite(x.p_value):
            out += f"; p = {x.p_value:.3g} at Holm level {x.alpha:.3g}"
        return out

    text = f"({claim}) {what} [{_stats_name(headline, headline)}]: {numbers(t)}. {t.verdict}"
    for p, o in others.items():
        if p != headline and o.effect is not None:
            text += f" [{_stats_name(p, headline)}: {numbers(o)}; {o.outcome}]"
    if agreement:
        text += f" {agreement}"
    return text


def consistency_claim(ta: Any, tb: Any) -> ClaimTest | None:
    """(d) from two configurations' saliency traces (None unless both have >= 2 seeds)."""
    from seqablate.analysis.consistency import consistency_difference

    if ta is None or tb is None or ta.consistency is None or tb.consistency is None:
        return None
    c = consistency_difference(list(ta.sequence.values()), list(tb.sequence.values()))
    words = {
        "holds": "Holds: dropout training is more consistent across seeds.",
        "does not hold": "Does not hold: dropout training is less consistent across seeds.",
        "not shown": "Not shown: no significant gain in consistency.",
        "undecidable": (f"Cannot be decided with {c.n_a} and {c.n_b} seeds: the smallest one-sided p-value an exact "
                        f"permutation test of them can give is {c.min_p:.3g}, above its Holm level {{alpha}}; "
                        "{seeds}"),
    }
    return ClaimTest("d", None, c.p_value, c.p_reverse, None, "", extra=c, words=words)


def _seeds_sentence(alpha: float) -> str:
    from seqablate.analysis.consistency import seeds_needed

    k = seeds_needed(alpha)
    return f"{k} seeds per arm can reach it." if k else "more than 50 seeds per arm would be needed."


def _claims_of_pair(det: StudyDetections, pair: _Pair, policy: str | None, seqs: Sequence[str], cohorts: Sequence[str],
                    consistency: ClaimTest | None, rules: Rules, censored: str,
                    ) -> tuple[dict[tuple[str, str | None], tuple[ClaimTest, str]], int]:
    """One pair's claims under one policy: ``(claim, cohort) -> (test, what)`` (Holm applied)
    and the number of patients left out because a condition could not score them."""
    out: dict[tuple[str, str | None], tuple[ClaimTest, str]] = {}
    dropped = 0
    if censored in seqs and len(seqs) > 1:
        cond = mn.censor_condition(censored)
        prep = _prepare(det, [_Side(pair.base, "test", "full"), _Side(pair.base, "test", cond),
                              _Side(pair.drop, "test", "full"), _Side(pair.drop, "test", cond)], policy)
        if prep is not None:
            data, dropped = prep
            full_b, cens_b, full_d, cens_d = (float(data.mean(k).estimate) for k in range(4))
            out[("a", None)] = (claim_ratio("a", data, 1, 0, rules.most, "the no-dropout full-protocol", _words("a"), rules),
                                f"{pair.base.label}, censoring {censored}: mAP {100 * full_b:.1f} -> {100 * cens_b:.1f}, full minus censored")
            d_b = rules.margin(full_d)
            out[("b", None)] = (claim_margin("b", data, 2, 3, 2, "equivalence", "the dropout full-protocol",
                                             _words("b", f"{100 * d_b:.1f}"), rules),
                                f"{pair.label}, censoring {censored}: mAP {100 * full_d:.1f} -> {100 * cens_d:.1f}, full minus censored")
            d_c = rules.margin(full_b)
            out[("c", None)] = (claim_margin("c", data, 2, 0, 0, "noninferiority", "the no-dropout full-protocol",
                                             _words("c", f"{100 * d_c:.1f}"), rules),
                                f"{pair.label}, full protocol: mAP {100 * full_d:.1f} with vs {100 * full_b:.1f} without dropout, with minus without")
    if ("c", None) not in out:
        prep = _prepare(det, [_Side(pair.base, "test", "full"), _Side(pair.drop, "test", "full")], policy)
        if prep is not None:
            data, dropped = prep
            full_b, full_d = (float(data.mean(k).estimate) for k in range(2))
            d_c = rules.margin(full_b)
            out[("c", None)] = (claim_margin("c", data, 1, 0, 0, "noninferiority", "the no-dropout full-protocol",
                                             _words("c", f"{100 * d_c:.1f}"), rules),
                                f"{pair.label}, full protocol: mAP {100 * full_d:.1f} with vs {100 * full_b:.1f} without dropout, with minus without")
    if consistency is not None:
        c = ClaimTest("d", None, consistency.p_value, consistency.reverse_p, None, "", extra=consistency.extra,
                      words=dict(consistency.words))
        out[("d", None)] = (c, f"{pair.label}, saliency spread across seeds (with minus without dropout): "
                               f"{consistency.extra.difference:+.4f}")
    for cohort in cohorts:
        prep = _prepare(det, [_Side(pair.base, "external", "full", cohort), _Side(pair.drop, "external", "full", cohort)], policy)
        if prep is None:
            continue
        data, _ = prep
        without, with_d = (float(data.mean(k).estimate) for k in range(2))
        out[("e", cohort)] = (claim_ratio("e", data, 0, 1, rules.fails, f"the dropout model's '{cohort}'", _words("e"), rules),
                              f"{pair.label}, external cohort '{cohort}': mAP {100 * with_d:.1f} with vs {100 * without:.1f} without dropout, with minus without")
    holm([t for t, _ in out.values()], rules.alpha)
    for t, _ in out.values():
        finish_claim(t)
        if t.claim == "d" and t.outcome == "undecidable":
            t.verdict = t.verdict.replace("{seeds}", _seeds_sentence(t.alpha))
    return out, dropped


def baseline_findings(det: StudyDetections, pair: _Pair, baselines: Sequence[Run], headline: str | None) -> list[Finding]:
    """Each arm of the pair against each outside baseline on the full protocol (descriptive:
    no claim of the paper, no verdict). The baseline is one given network, so its side has no
    seed variance; the recipe interval is then that of the arm's recipe against it."""
    from seqablate.analysis.tables import baseline_group

    out = []
    for b in baselines:
        bg = baseline_group(b)
        for arm in (pair.base, pair.drop):
            prep = _prepare(det, [_Side(arm, "test", "full"), _Side(bg, "test", "full", fixed=True)], headline)
            if prep is None:
                continue
            data, dropped = prep
            e = data.contrast([1.0, -1.0])
            own, other = (data.mean(k).estimate for k in range(2))
            t = ClaimTest("vs", e, math.nan, blocked="", words={})
            t.outcome, t.alpha = "comparison", 0.025
            label = bg.integration_label.removeprefix("Outside: ")
            rec = interval_text(e.recipe, 0.95) if e.recipe is not None else f"unavailable ({e.recipe_reason})"
            text = (f"(vs) {arm.label} against the outside baseline '{label}', full protocol "
                    f"[{_stats_name(headline, headline)} for seqablate's model]: mAP {100 * own:.1f} vs {100 * other:.1f}, "
                    f"{points(e.estimate)} points; these trained networks ({e.n_patients} common patients): "
                    f"{interval_text(e.networks, 0.95)}; the training recipe against this one baseline network: {rec}. "
                    "A comparison, not one of the paper's claims: no verdict.")
            if dropped:
                text += f" ({dropped} patient(s) scored by only one side left out.)"
            out.append(Finding("vs", pair.label, text, None, {}, {headline: t}, headline, None, dropped,
                               f"(vs) {arm.label} minus '{label}'"))
    return out


def _configured_policy(pair: _Pair) -> str:
    """The statistics policy the pair's runs were configured with (the first run's)."""
    return str(pair.base.first.params.get("eval.norm_stats", STORED))


def _finding(pair: _Pair, key: tuple[str, str | None],
             per_policy: dict[str | None, tuple[dict[tuple[str, str | None], tuple[ClaimTest, str]], int]],
             headline: str | None, rules: Rules) -> Finding:
    """One claim of one pair (``key`` = (claim, external cohort or None)) as a Finding: its
    test under the headline policy, the other policies' outcomes beside it, and its text ((d)
    with the permutation test's floor against the strictest Holm level of the family)."""
    claims, dropped = per_policy[headline]
    if key not in claims:
        return Finding(key[0], pair.label, f"({key[0]}) {pair.label}: not compared under "
                       f"{_stats_name(headline, headline)}: a run of the pair logged no per-lesion "
                       "table of it (eval/lesions.csv).", None, cohort=key[1])
    tests = {p: per_policy[p][0][key][0] for p in per_policy if key in per_policy[p][0]}
    t, what = claims[key]
    if key[0] == "d":
        c = t.extra
        strictest = rules.alpha / max(sum(1 for x, _ in claims.values() if x.testable), 1)
        text = (f"(d) {what} (exact one-sided permutation p = {c.p_value:.3g}, floor {c.min_p:.3g}, "
                f"Holm level {t.alpha:.3g}). {t.verdict}")
        if c.min_p > strictest:
            text += (f" With {c.n_a} and {c.n_b} seeds the floor is above the strictest Holm level of "
                     f"this family ({strictest:.3g}); {_seeds_sentence(strictest)}")
    else:
        text = claim_text(key[0], what, t, headline, policy_agreement(tests, headline), tests)
    if dropped and key[0] in "abc":
        text += f" ({dropped} patient(s) left out: a condition could not score them.)"
    short = f"({key[0]}) {pair.base.label}: {EFFECTS[key[0]]}" + (f" [{key[1]}]" if key[1] else "")
    return Finding(key[0], pair.label, text, t.holds, {"policies": {p: x.outcome for p, x in tests.items()}},
                   tests, headline, key[1], dropped, short)


def build_findings(data: StudyRuns, runs: Sequence[Run], traces: Sequence[Any] = (), *,
                   rules: Rules = RULES, detections: StudyDetections | None = None) -> list[Finding]:
    """The findings (a)-(e) for every no-dropout / dropout pair of the study.

    Each claim is computed under every statistics policy the pair logged (both for BatchNorm
    models, the model's own otherwise); the configured one is the headline and decides
    ``Finding.holds``; Holm runs over one pair's claims within each policy. ``detections``:
    a shared :class:`StudyDetections` (one is made and closed here otherwise).
    """
    from seqablate.analysis.runs import external_cohorts

    out: list[Finding] = []
    seqs = study_sequences(runs)
    censored = study_censored(runs)
    cohorts = external_cohorts(runs)
    det = detections if detections is not None else StudyDetections(data)
    try:
        by_key = {t.group.key: t for t in traces if getattr(t, "sequence", None)}
        for pair in _pairs(runs):
            bn = _has_batchnorm(pair.base)
            headline: str | None = _configured_policy(pair) if bn else None
            policies: list[str | None] = [headline, *[p for p in mn.POLICIES if p != headline]] if bn else [None]
            cons = consistency_claim(by_key.get(pair.drop.key), by_key.get(pair.base.key))
            per_policy = {p: _claims_of_pair(det, pair, p, seqs, cohorts, cons, rules, censored) for p in policies}
            for key in sorted({k for claims, _ in per_policy.values() for k in claims}, key=lambda k: (k[0], k[1] or "")):
                out.append(_finding(pair, key, per_policy, headline, rules))
            out += baseline_findings(det, pair, getattr(data, "baselines", []), headline)
        for line in det.unreadable:
            out.append(Finding("-", "", f"Not compared: {line}", None))
    finally:
        if detections is None:
            det.close()
    return sorted(out, key=lambda f: (f.configuration, f.claim, f.cohort or ""))
