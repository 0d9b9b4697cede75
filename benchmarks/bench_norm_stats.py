"""What per-subset BatchNorm statistics cost: one draw per subset against one draw shared.

A trial ends by re-estimating its selected weights' BatchNorm statistics for every subset of
its sequences (15 for 4 sequences; ``eval.norm_batches`` x ``eval.norm_batch_size`` training
slices each, no gradients). Measured in one run, interleaved (baseline, platform, baseline, ...)
so other load falls on both alike, on a mixed-scanner phantom cohort in the demo's geometry
(``spacing``, ``--size`` patches) with the demo's ``tiny`` input-level network:

* baseline: each subset draws its own batches from the cache and runs the whole network on
  them (the path before the draws were shared);
* platform: :func:`seqablate.evaluation.norm.estimate_norm_stats` (subsets that the same
  patients provide share one draw, the stem is convolved once per batch and combined per
  subset).

Also prints how far the two estimates lie apart, against how far two baseline draws with
different seeds lie apart (the sampling noise of the statistics themselves), as the largest
relative difference of a BatchNorm's running variance, the median over buffers. ::

    .venv/bin/python benchmarks/bench_norm_stats.py [--patients 12] [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _draw(ds: Any, weights: torch.Tensor, gen: torch.Generator, keep: torch.Tensor, cfg: Any) -> Any:
    """One subset's batches through the presence rule (the per-subset draw)."""
    from seqablate.data.dropout import apply_presence

    for _ in range(cfg.eval.norm_batches):
        idx = torch.multinomial(weights, cfg.eval.norm_batch_size, replacement=True, generator=gen).tolist()
        items = [ds[i] for i in idx]
        image = torch.stack([it["image"] for it in items])
        present = torch.stack([it["present"] for it in items])
        yield apply_presence(image, present, keep.expand_as(present))


def baseline(model: torch.nn.Module, patients: list[Any], cfg: Any, keys: list[str], seed: int) -> dict[str, Any]:
    """The per-subset path: per key, its own seeded draw, the presence rule, whole forwards."""
    from seqablate.data.dataset import SliceDataset, slice_weights
    from seqablate.models.norm_stats import estimate_bn_stats, subset_flags

    seqs = tuple(cfg.data.sequences)
    out = {}
    for key in keys:
        flags = np.asarray(subset_flags(key, seqs), dtype=bool)
        eligible = [p for p in patients if bool(np.all(np.asarray(p.present, dtype=bool)[flags]))]
        state = np.random.SeedSequence([seed, *flags.astype(int)]).generate_state(2)
        ds = SliceDataset(eligible, slices=cfg.data.slices, patch=cfg.data.image_size, seed=int(state[1]))
        weights = torch.as_tensor(slice_weights(ds, oversample=cfg.data.oversample))
        gen = torch.Generator().manual_seed(int(state[0]))
        keep = torch.as_tensor(flags)

        out[key] = estimate_bn_stats(model, _draw(ds, weights, gen, keep, cfg))
    return out


def spread(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Median over keys and variance buffers of max |a - b| / max |b|."""
    vals = []
    for key in a:
        for buf, x in a[key].items():
            if buf.endswith("running_var"):
                y = b[key][buf]
                vals.append(float((x - y).abs().max() / y.abs().max().clamp(min=1e-12)))
    return statistics.median(vals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from seqablate.config import TrialConfig, parse
    from seqablate.data.cache import preprocess_cohort
    from seqablate.data.phantom import SCANNERS, make_phantom_cohort
    from seqablate.evaluation.cohort import plan_geometry
    from seqablate.evaluation.norm import estimate_norm_stats, norm_subsets
    from seqablate.models import build_model

    work = Path(tempfile.mkdtemp(prefix="seqablate-normstats-"))
    cohort = make_phantom_cohort(work / "stanford", site="stanford", patients=args.patients, seed=5,
                                 scanners=SCANNERS["stanford"], workers=2, progress=True)
    cfg = plan_geometry(parse(TrialConfig, {
        "data": {"cohort": str(cohort), "geometry": "spacing", "image_size": args.size, "slices": 5},
        "model": {"backbone": "tiny", "integration": "input", "norm": "batch"}}))
    patients = preprocess_cohort(cohort, cfg.data, cache_dir=work / "cache", workers=1, progress=False)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    keys = norm_subsets(cfg)

    times: dict[str, list[float]] = {"baseline": [], "platform": []}
    results: dict[str, Any] = {}
    for _ in range(args.repeats):
        for name in times:
            t0 = time.perf_counter()
            if name == "baseline":
                results[name] = baseline(model, patients, cfg, keys, seed=0)
            else:
                results[name] = estimate_norm_stats(model, patients, cfg, keys, seed=0)[0]
            times[name].append(time.perf_counter() - t0)
    other_seed = baseline(model, patients, cfg, keys, seed=1)

    base, plat = statistics.median(times["baseline"]), statistics.median(times["platform"])
    print(f"{len(patients)} patients, {len(keys)} subsets x {cfg.eval.norm_batches} batches of "
          f"{cfg.eval.norm_batch_size} {args.size}x{args.size} patches, tiny input-level, 1 thread, "
          f"medians of {args.repeats}")
    print("| path | seconds |\n|---|---|")
    print(f"| baseline (a draw per subset, whole forwards) | {base:.2f} |")
    print(f"| platform (one draw, shared stem) | {plat:.2f} |")
    print(f"ratio: {base / plat:.2f}x")
    print(f"statistics, platform vs baseline: {spread(results['platform'], results['baseline']):.4f}; "
          f"baseline seed 1 vs seed 0 (sampling noise): {spread(other_seed, results['baseline']):.4f}")


if __name__ == "__main__":
    main()
