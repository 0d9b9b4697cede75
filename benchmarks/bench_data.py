"""Data-layer throughput: cold preprocessing, warm 2.5D samples from the cache, and the
no-cache baseline (re-read + re-preprocess the NIfTI for every sample), in one run.

    .venv/bin/python benchmarks/bench_data.py [--patients 4] [--shape 128 128 64]
        [--image-size 256] [--samples 400] [--baseline-samples 12]

Prints one JSON object; ``warm_vs_baseline`` is the speed-up of the cache (target >= 20x).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 128, 64])
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=5)
    ap.add_argument("--samples", type=int, default=400, help="warm samples timed")
    ap.add_argument("--baseline-samples", type=int, default=12, help="no-cache samples timed")
    ap.add_argument("--workers", type=int, default=None, help="preprocessing processes (default min(cpus, 4))")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from seqablate.config import DataConfig
    from seqablate.data import (
        SequenceDropout,
        SliceDataset,
        discover,
        load_patient,
        make_phantom_cohort,
        preprocess_cohort,
    )
    from seqablate.data.dataset import stack_indices
    from seqablate.data.preprocess import PreprocessParams, preprocess_image

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        root = make_phantom_cohort(Path(tmp) / "cohort", site="stanford", patients=args.patients, seed=args.seed, shape=tuple(args.shape), progress=True)
        cfg = DataConfig(cohort=str(root), image_size=args.image_size, slices=args.slices)
        cache = Path(tmp) / "cache"

        t0 = time.perf_counter()
        pats = preprocess_cohort(root, cfg, cache_dir=cache, workers=args.workers)
        cold_s = time.perf_counter() - t0
        n_slices = sum(p.n_slices for p in pats)

        t0 = time.perf_counter()
        pats = preprocess_cohort(root, cfg, cache_dir=cache, progress=False)
        warm_open_s = time.perf_counter() - t0

        ds = SliceDataset(pats, slices=args.slices, transform=SequenceDropout(0.25, seed=0))
        rng = np.random.default_rng(args.seed)
        idx = rng.integers(0, len(ds), args.samples)
        ds[int(idx[0])]  # first touch
        t0 = time.perf_counter()
        for i in idx:
            s = ds[int(i)]
        warm_s = time.perf_counter() - t0
        warm_rate = args.samples / warm_s

        # Baseline: what a loader without the cache does per sample: read and validate the
        # NIfTI files, rescale each volume, resize + CLAHE only the K slices needed.
        cohort = discover(root)
        params = PreprocessParams(image_size=args.image_size, intensity="minmax_clahe")
        plain = SliceDataset(pats, slices=args.slices)
        bidx = rng.integers(0, len(ds), args.baseline_samples)
        t0 = time.perf_counter()
        for i in bidx:
            pi, z = plain.index(int(i))
            vol = load_patient(cohort.patients[pi], cfg.sequences)
            zs = stack_indices(z, vol.shape[2], args.slices)
            image = np.zeros((len(cfg.sequences), args.slices, args.image_size, args.image_size), np.float32)
            for si, name in enumerate(cfg.sequences):
                if name in vol.images:
                    image[si] = preprocess_image(vol.images[name], params, z=zs)
        base_s = time.perf_counter() - t0
        base_rate = args.baseline_samples / base_s
        # Same numbers both ways (the last baseline sample against the cache).
        same = bool(np.allclose(image, np.asarray(plain[int(bidx[-1])]["image"]), atol=1e-5))

    print(
        json.dumps(
            {
                "patients": args.patients,
                "shape": args.shape,
                "image_size": args.image_size,
                "K": args.slices,
                "slices_total": n_slices,
                "cold_preprocess_s": round(cold_s, 2),
                "cold_slices_per_s": round(n_slices / cold_s, 1),
                "warm_open_s": round(warm_open_s, 4),
                "warm_samples_per_s": round(warm_rate, 1),
                "baseline_samples_per_s": round(base_rate, 2),
                "warm_vs_baseline": round(warm_rate / base_rate, 1),
                "baseline_equals_cache": same,
                "sample_shape": list(s["image"].shape),
                "machine": platform.machine(),
                "date": time.strftime("%Y-%m-%d"),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
