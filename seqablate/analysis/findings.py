"""The paper's finding, part by part, as paired differences with 95 % CIs (report "Findings").

For each configuration that was trained both without and with sequence dropout (a "twin"
pair, same everything else, on the study's full protocol), five claims of the paper are
tested on the study's own runs:

(a) without dropout, censoring ``t1_gre_post`` costs most of the mAP (paper: 46 -> 0);
(b) with dropout, the censored mAP stays close to the full-protocol one (paper: ~37-40);
(c) dropout costs little on the full protocol (paper: Table II vs Table I, a few points);
(d) dropout makes per-sequence saliency more consistent across seeds (paper Figs 7-8);
(e) on an external cohort without ``t1_gre_post``, the no-dropout model fails and the
    dropout model works (paper Table VI).

(a)-(c) and (e) are :func:`seqablate.metrics.paired_bootstrap` differences over the test
patients (every seed's pooled mAP recomputed on each resample, seeds averaged per
configuration), rebuilt from each run's logged per-patient and per-lesion tables. BatchNorm
models are judged with per-subset statistics, the stored statistics' figures beside them. (d)
is :func:`seqablate.analysis.consistency.consistency_difference`: a permutation test over
seeds. The words come from the numbers, by fixed rules (:data:`RULES`), never from the paper.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seqablate import metric_names as mn
from seqablate.analysis.runs import ConfigGroup, Run, group_by_config, study_sequences, twin_key
from seqablate.analysis.study import StudyRuns

CENSORED = "t1_gre_post"
#: The rules that turn numbers into words (differences are in mAP, a fraction).
RULES = {
    "close": 0.10,  # (b), (c): "close" / "costs little" = the 95 % CI lies within +-0.10 (above -0.10)
    "most": 0.5,  # (a): "most of the mAP" = the lower CI bound exceeds half the full-protocol mAP
    "alpha": 0.05,  # (d): permutation p-value needed to call one configuration more consistent
}


@dataclass
class Finding:
    """One claim's outcome for one configuration pair."""

    claim: str  # 'a' .. 'e'
    configuration: str  # e.g. 'Input / -'
    text: str  # one line: what was compared, the difference and its CI, the verdict
    holds: bool | None  # None: cannot be decided
    numbers: dict[str, Any] = field(default_factory=dict)


def describe(diff: float, lo: float, hi: float) -> str:
    """Words for a difference A - B with its CI: 'no detectable difference (...)', 'lower by
    X (...)' or 'higher by X (...)' (mAP points, i.e. x 100)."""
    ci = f"95 % CI {100 * lo:+.1f} to {100 * hi:+.1f}"
    if math.isnan(diff) or math.isnan(lo):
        return "undefined (no truth lesion in the resamples)"
    if lo <= 0.0 <= hi:
        return f"no detectable difference ({100 * diff:+.1f} points, {ci})"
    word = "higher" if diff > 0 else "lower"
    return f"{word} by {100 * abs(diff):.1f} points ({ci})"


def _load_detections(data: StudyRuns, run: Run, tmp: Path) -> dict[str, list[Any]]:
    """condition prefix (e.g. ``test.full``, ``test_stored.full``, ``external.oslo``) -> the
    run's per-patient detections, from its ``eval/patients.csv`` and ``eval/lesions.csv``."""
    from seqablate import tracking
    from seqablate.metrics import detections_from_tables

    folder = tmp / run.run_id
    frames = {}
    for name in (mn.PATIENTS_CSV, mn.LESIONS_CSV):
        path = tracking.download_artifact(run.run_id, f"{mn.EVAL_DIR}/{name}", folder, tracking_uri=data.tracking_uri)
        frames[name] = pd.read_csv(path)
    patients, lesions = frames[mn.PATIENTS_CSV], frames[mn.LESIONS_CSV]
    out = {}
    for cond, p in patients.groupby("condition", sort=False):
        les = lesions[lesions["condition"] == cond] if len(lesions) else lesions
        out[str(cond)] = detections_from_tables(p, les)
    return out


@dataclass
class _Pair:
    label: str
    base: ConfigGroup  # no dropout
    drop: ConfigGroup  # with dropout


def _pairs(runs: Sequence[Run]) -> list[_Pair]:
    seqs = study_sequences(runs)
    groups = [g for g in group_by_config(runs) if g.sequences == seqs and g.usable]
    base = {twin_key(g): g for g in groups if g.dropout_p == 0}
    out = []
    for g in groups:
        if g.dropout_p > 0 and twin_key(g) in base:
            label = " / ".join(x for x in (g.integration_label, g.sharing_label) if x and x != "-")
            out.append(_Pair(f"{label}, dropout p={g.dropout_p:g}", base[twin_key(g)], g))
    return out


def _policy_prefix(run: Run, split: str, condition: str, policy: str | None, cohort: str | None = None) -> str:
    """The logged prefix of ``policy``'s metrics for this run: ``policy`` None or the run's own
    policy has none (a model without BatchNorm logs only that one)."""
    own = run.params.get("eval.norm_stats", "stored")
    return mn.prefix(split, condition, cohort=cohort, policy=None if policy in (None, own) else policy)


def _has_batchnorm(group: ConfigGroup) -> bool:
    return group.first.params.get("model.norm", "batch") == "batch"


class _Detections:
    """Per-run detections, downloaded once per run."""

    def __init__(self, data: StudyRuns, tmp: Path) -> None:
        self.data, self.tmp, self.cache = data, tmp, {}
        self.unreadable: list[str] = []  # runs whose evaluation tables could not be read

    def get(self, run: Run) -> dict[str, list[Any]]:
        if run.run_id not in self.cache:
            try:
                self.cache[run.run_id] = _load_detections(self.data, run, self.tmp)
            except (ValueError, OSError, KeyError) as err:
                self.cache[run.run_id] = {}
                self.unreadable.append(f"{run.name} ({run.run_id[:8]}): {err}")
        return self.cache[run.run_id]

    def sets(self, group: ConfigGroup, split: str, condition: str, policy: str | None,
             cohort: str | None = None) -> list[list[Any]] | None:
        out = []
        for r in group.usable:
            key = _policy_prefix(r, split, condition, policy, cohort)
            d = self.get(r).get(key)
            if d is None:
                return None
            out.append(d)
        return out or None


def _compare(det: _Detections, a: tuple[ConfigGroup, str, str, str | None], b: tuple[ConfigGroup, str, str, str | None],
             policies: Sequence[str | None]) -> dict[str | None, Any]:
    """Paired differences A - B under each policy: policy -> PairedDifference (or missing)."""
    from seqablate.metrics import paired_bootstrap

    out = {}
    for policy in policies:
        sa = det.sets(a[0], a[1], a[2], policy, a[3])
        sb = det.sets(b[0], b[1], b[2], policy, b[3])
        if sa is None or sb is None:
            continue
        out[policy] = paired_bootstrap(sa, sb, "mAP", n=2000, seed=0)
    return out


def _mean_map(det: _Detections, group: ConfigGroup, split: str, condition: str, policy: str | None,
              cohort: str | None = None) -> float:
    from seqablate.metrics import DetectionResult

    sets = det.sets(group, split, condition, policy, cohort)
    if not sets:
        return float("nan")
    return float(sum(DetectionResult.from_patients(s).mAP for s in sets) / len(sets))


def _not_compared(claim: str, label: str, condition: str, policy: str | None) -> Finding:
    stats = f" under {policy.replace('_', '-')} statistics" if policy else ""
    return Finding(claim, label, f"({claim}) {label}: not compared: a run of the pair logged no per-lesion "
                   f"table of {condition}{stats} (eval/lesions.csv).", None)


def _line(claim: str, what: str, diffs: dict[str, Any], primary: str, verdict: str) -> str:
    main = diffs[primary]
    text = f"({claim}) {what}: {describe(main.difference, main.lo, main.hi)}"
    others = [f"{p.replace('_', '-')} statistics: {describe(d.difference, d.lo, d.hi)}"
              for p, d in diffs.items() if p != primary and p is not None]
    if others:
        text += " [" + "; ".join(others) + "]"
    return f"{text}. {verdict}"


def build_findings(data: StudyRuns, runs: Sequence[Run], traces: Sequence[Any] = (), *, progress: bool = False) -> list[Finding]:
    """The findings (a)-(e) for every no-dropout / dropout pair of the study."""
    from seqablate.analysis.consistency import consistency_difference
    from seqablate.analysis.runs import external_cohorts

    out: list[Finding] = []
    seqs = study_sequences(runs)
    pairs = _pairs(runs)
    tmp = Path(tempfile.mkdtemp(prefix="seqablate-findings-"))
    try:
        det = _Detections(data, tmp)
        for pair in pairs:
            bn = _has_batchnorm(pair.base)
            # Without BatchNorm there are no statistics to choose: each run's own metrics.
            policies: list[str | None] = ["per_subset", "stored"] if bn else [None]
            primary = policies[0]
            stats_note = " (per-subset BatchNorm statistics)" if bn else ""
            if CENSORED in seqs and len(seqs) > 1:
                cond = f"censor_{CENSORED}"
                for claim, group, name in (("a", pair.base, "without dropout"), ("b", pair.drop, "with dropout")):
                    diffs = _compare(det, (group, "test", "full", None), (group, "test", cond, None), policies)
                    if primary not in diffs:
                        out.append(_not_compared(claim, pair.label, f"test.{cond}", primary))
                        continue
                    d = diffs[primary]
                    full = _mean_map(det, group, "test", "full", primary)
                    cens = _mean_map(det, group, "test", cond, primary)
                    if claim == "a":
                        holds = d.lo > RULES["most"] * full
                        verdict = ("Holds: censoring costs most of the mAP." if holds else
                                   "Does not hold at this scale: censoring does not cost most of the mAP.")
                    else:
                        holds = -RULES["close"] <= d.lo and d.hi <= RULES["close"]
                        verdict = (f"Holds: the censored mAP stays within {100 * RULES['close']:.0f} points."
                                   if holds else f"Does not hold at this scale: not within {100 * RULES['close']:.0f} points.")
                    what = (f"{pair.label.split(',')[0]}, {name}, censoring {CENSORED}{stats_note}: mAP "
                            f"{100 * full:.1f} -> {100 * cens:.1f}, full minus censored")
                    out.append(Finding(claim, pair.label, _line(claim, what, diffs, primary, verdict), holds,
                                       {"full": full, "censored": cens, **{p: v for p, v in diffs.items()}}))
            diffs = _compare(det, (pair.drop, "test", "full", None), (pair.base, "test", "full", None), policies)
            if primary not in diffs:
                out.append(_not_compared("c", pair.label, "test.full", primary))
            else:
                d = diffs[primary]
                holds = d.lo >= -RULES["close"]
                verdict = (f"Holds: dropout costs less than {100 * RULES['close']:.0f} points." if holds else
                           f"Does not hold at this scale: dropout may cost more than {100 * RULES['close']:.0f} points.")
                what = (f"{pair.label}, full protocol{stats_note}: mAP "
                        f"{100 * _mean_map(det, pair.drop, 'test', 'full', primary):.1f} with vs "
                        f"{100 * _mean_map(det, pair.base, 'test', 'full', primary):.1f} without dropout, with minus without")
                out.append(Finding("c", pair.label, _line("c", what, diffs, primary, verdict), holds, dict(diffs)))
            by_key = {t.group.key: t for t in traces if getattr(t, "sequence", None)}
            ta, tb = by_key.get(pair.drop.key), by_key.get(pair.base.key)
            if ta is not None and tb is not None and len(ta.sequence) >= 2 and len(tb.sequence) >= 2:
                c = consistency_difference(list(ta.sequence.values()), list(tb.sequence.values()))
                if c.min_p > RULES["alpha"]:
                    holds, verdict = None, (f"Cannot be decided with {c.n_a} and {c.n_b} seeds: the smallest p-value "
                                            f"a permutation test of them can give is {c.min_p:.2f}.")
                elif c.p_value < RULES["alpha"] and c.difference < 0:
                    holds, verdict = True, "Holds: dropout training is more consistent across seeds."
                else:
                    holds, verdict = False, "Does not hold at this scale: no significant gain in consistency."
                text = (f"(d) {pair.label}, saliency spread across seeds (with minus without dropout): "
                        f"{c.difference:+.4f} (bootstrap 95 % CI {c.lo:+.4f} to {c.hi:+.4f}; permutation p = "
                        f"{c.p_value:.2f}). {verdict}")
                out.append(Finding("d", pair.label, text, holds, {"consistency": c}))
            for cohort in external_cohorts(runs):
                diffs = _compare(det, (pair.drop, "external", "full", cohort), (pair.base, "external", "full", cohort), policies)
                if primary not in diffs:
                    out.append(_not_compared("e", pair.label, f"external.{cohort}", primary))
                    continue
                d = diffs[primary]
                with_d = _mean_map(det, pair.drop, "external", "full", primary, cohort)
                without = _mean_map(det, pair.base, "external", "full", primary, cohort)
                holds = d.lo > 0 and without < 0.5 * with_d
                if holds:
                    verdict = "Holds: the no-dropout model fails where the dropout model works."
                elif d.lo > 0:
                    verdict = (f"Does not hold at this scale: dropout is better here, but the no-dropout model keeps "
                               f"{without / with_d:.0%} of the dropout model's mAP, not a failure.")
                else:
                    verdict = "Does not hold at this scale: the no-dropout model does not fail by comparison."
                what = (f"{pair.label}, external cohort '{cohort}'{stats_note}: mAP {100 * with_d:.1f} with vs "
                        f"{100 * without:.1f} without dropout, with minus without")
                out.append(Finding("e", pair.label, _line("e", what, diffs, primary, verdict), holds, dict(diffs)))
        for line in det.unreadable:
            out.append(Finding("-", "", f"Not compared: {line}", None))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out, key=lambda f: (f.configuration, f.claim))
