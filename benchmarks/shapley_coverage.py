"""Coverage of the Shapley values' two intervals against a known truth (simulator).

Two sequences a, b scored under {a, b}, {a} and {b} by each seed's network on the same test
patients (:func:`seqablate.metrics.simulate.simulate_condition_study`). A Shapley value is a
linear contrast of the three condition scores (:func:`seqablate.metrics.shapley.shapley_weights`),
so its intervals are :meth:`seqablate.metrics.recipe.RecipeData.contrast`'s: "these networks"
must cover the study's own networks' population value, "the training recipe" the expectation
over training seeds. Prints one row per setting (``benchmarks/RESULTS.md``, "New questions").

    python benchmarks/shapley_coverage.py [--studies 1000] [--seeds 3 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from seqablate.metrics.recipe import Arm, RecipeData, resample_counts
from seqablate.metrics.shapley import shapley_weights
from seqablate.metrics.simulate import (
    Conditions,
    SimulationModel,
    network_population_maps,
    simulate_condition_study,
)

#: (label, logit effects of {a,b}, {a}, {b}, seed-by-condition interaction SD)
SETTINGS = [
    ("b matters more than a", (0.0, -0.4, -1.2), 0.4),
    ("interchangeable a, b", (0.0, -0.6, -0.6), 0.4),
    ("no seed-by-condition interaction", (0.0, -0.4, -1.2), 0.0),
]


def coverage(effects: tuple[float, ...], sd_gc: float, seeds: int, studies: int, patients: int = 40,
             quality: float = 0.5, seed: int = 1) -> dict[str, float]:
    """Share of intervals (both sequences' values, ``studies`` studies) covering their truth."""
    seqs = ["a", "b"]
    conds = [frozenset("ab"), frozenset("a"), frozenset("b")]
    w = shapley_weights(seqs)
    weights = np.array([[w[s][t] for t in conds] for s in seqs])  # [sequence, condition]
    model = SimulationModel(sd_seed=0.4, extra_lesions=2.0)
    conditions = Conditions(effects, sd_seed_condition=sd_gc)
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, model.sd_seed, 4000)
    g = rng.normal(0.0, conditions.sd_seed_condition, (4000, 3))
    truth = weights @ network_population_maps(quality, conditions, u, g, model).mean(axis=0)
    hits: dict[str, list[bool]] = {"recipe": [], "networks": [], "networks read as recipe": []}
    for i in range(studies):
        study = simulate_condition_study(quality, conditions, seeds, patients, rng, model)
        own = weights @ network_population_maps(quality, conditions, study.seed_effects, study.interactions,
                                                model).mean(axis=0)
        data = RecipeData([Arm(r, "cfg") for r in study.runs], "mAP", counts=resample_counts(patients, 250, i))
        for k in range(2):
            e = data.contrast(list(weights[k]))
            hits["recipe"].append(e.recipe[0] <= truth[k] <= e.recipe[1])
            hits["networks"].append(e.networks[0] <= own[k] <= e.networks[1])
            hits["networks read as recipe"].append(e.networks[0] <= truth[k] <= e.networks[1])
    return {k: float(np.mean(v)) for k, v in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    args = ap.parse_args()
    print("| setting | seeds | studies | recipe | networks | networks read as recipe |")
    print("|---|---|---|---|---|---|")
    for label, effects, sd_gc in SETTINGS:
        for n in args.seeds:
            t0 = time.perf_counter()
            c = coverage(effects, sd_gc, n, args.studies)
            print(f"| {label} | {n} | {args.studies} | {100 * c['recipe']:.1f} % | {100 * c['networks']:.1f} % | "
                  f"{100 * c['networks read as recipe']:.1f} % |  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
