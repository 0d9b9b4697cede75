"""Per-sequence dropout probabilities against one shared p, on the worst case's test numbers.

Reads the two studies of ``benchmarks/RESULTS.md`` ("Search for robustness": the
multi-objective search ``per_sequence.py`` and the shared-p grid ``shared_p.py``) and prints,
per configuration, its validation worst case at the selected checkpoint, and its test full-protocol
mAP and worst case (each network's weakest of the full protocol and each sequence censored,
bias-corrected, seeds averaged: :meth:`seqablate.metrics.recipe.RecipeData.minimum`) with the
training recipe's 95 % interval (>= 3 seeds) or else that of these networks. Each study's
configuration chosen on validation (highest validation worst case) is then set side by side, and
the difference of each choice's test worst case from the last study's choice is printed with its
interval (:meth:`seqablate.metrics.recipe.RecipeData.minimum_difference`; the recipe interval
when both have >= 3 seeds).

    python benchmarks/robust_search/compare.py STUDY_PER_SEQUENCE STUDY_SHARED_P
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from seqablate import metric_names as mn
from seqablate.analysis.detections import StudyDetections
from seqablate.analysis.runs import ConfigGroup, group_by_config
from seqablate.analysis.study import load_study
from seqablate.metrics.recipe import Arm, RecipeData


def _val_worst(group: ConfigGroup) -> float:
    """Seed mean of the validation worst case at the selected checkpoint."""
    keys = ("val.selected_objective.1", mn.VAL_BEST_OBJECTIVE)
    vals = [next((r.metrics[k] for k in keys if k in r.metrics), math.nan) for r in group.usable]
    return float(np.mean(vals))


def _detections(group: ConfigGroup, det: StudyDetections) -> list[list[Any]] | None:
    """Per condition (the full protocol, then each sequence censored), per seed, the test
    patients' detections; None when a run lacks one."""
    conds = [mn.FULL] + [mn.censor_condition(s) for s in group.sequences]
    sets = []
    for c in conds:
        per = [det.get(r).get(mn.prefix("test", c)) for r in group.usable]
        if any(d is None for d in per):
            return None
        sets.append(per)
    return sets


def _arms(sets: list[list[Any]], common: set[str], group: str) -> list[Arm]:
    return [Arm([[p for p in d if p.patient_id in common] for d in per], group) for per in sets]


def _patients(sets: list[list[Any]]) -> set[str]:
    return set.intersection(*({p.patient_id for p in d} for per in sets for d in per))


def _test(sets: list[list[Any]]) -> tuple[Any, Any]:
    """(full-protocol mean, worst-case minimum) RecipeEstimates on the common test patients."""
    data = RecipeData(_arms(sets, _patients(sets), "cfg"), "mAP", n=2000, seed=0)
    return data.mean(0), data.minimum(list(range(len(sets))))


def _difference(a: list[list[Any]], b: list[list[Any]]) -> Any:
    """Worst case of a minus worst case of b (RecipeEstimate) on their common test patients."""
    common = _patients(a) & _patients(b)
    data = RecipeData(_arms(a, common, "a") + _arms(b, common, "b"), "mAP", n=2000, seed=0)
    return data.minimum_difference(list(range(len(a))), list(range(len(a), len(a) + len(b))))


def _fmt(e: Any) -> str:
    iv, mark = (e.recipe, "") if e.recipe is not None else (e.networks, " †")
    return f"{100 * e.estimate:.1f} ({100 * iv[0]:.1f}, {100 * iv[1]:.1f}){mark}"


def rows(study: str) -> list[dict[str, Any]]:
    data = load_study(study)
    out = []
    with StudyDetections(data) as det:
        for g in group_by_config([r for r in data.runs if r.usable]):
            sets = _detections(g, det)
            if sets is None:
                continue
            full, worst = _test(sets)
            out.append({"study": data.name, "configuration": g.dropout_label or "p=0 (no dropout)", "seeds": len(g.usable),
                        "val_worst": _val_worst(g), "full": full, "worst": worst, "detections": sets})
    return sorted(out, key=lambda r: -r["val_worst"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="+", help="study folders (or names)")
    args = ap.parse_args()
    chosen = []
    for study in args.studies:
        rs = rows(study)
        print(f"\n### {rs[0]['study'] if rs else study}\n")
        print("| dropout p | seeds | val worst | test full (95 % CI) | test worst (95 % CI) |")
        print("|---|---|---|---|---|")
        for r in rs:
            print(f"| {r['configuration']} | {r['seeds']} | {100 * r['val_worst']:.1f} | {_fmt(r['full'])} | "
                  f"{_fmt(r['worst'])} |")
        if rs:
            chosen.append(rs[0])
    print("\n† these networks' interval (patients resampled, seeds fixed): fewer than 3 seeds.")
    print("\nChosen on validation (highest validation worst case):\n")
    for r in chosen:
        print(f"- {r['study']}: {r['configuration']} ({r['seeds']} seed(s)): val worst {100 * r['val_worst']:.1f}, "
              f"test worst {_fmt(r['worst'])}, test full {_fmt(r['full'])}")
    if len(chosen) > 1:
        base = chosen[-1]
        print(f"\nTest worst case minus that of {base['study']}'s choice ({base['configuration']}), "
              "on their common test patients:\n")
        for r in chosen[:-1]:
            print(f"- {r['study']}: {_fmt(_difference(r['detections'], base['detections']))}")


if __name__ == "__main__":
    main()
