"""What the physical-space geometry costs: preprocessing, a training step's batch, inference.

On one mixed-scanner phantom cohort (the demo's stanford scanner range), measured in one run,
``resize`` (every slice resized to ``--size`` pixels: the baseline) against ``spacing`` (3D
resampling to the cohort's median voxel size, ``--size`` patches for training):

* preprocessing per patient (cold cache, one process);
* one training batch: ``--batch`` 2.5D samples drawn with lesion oversampling, through the
  dataset (memmap reads, patch crop), and one optimiser step of the demo's ``tiny`` network on
  it (the step is the same network at the same pixel count, so any difference is the batch);
* inference per patient: every slice of the patient through the network (``Predictor``), and
  the probabilities mapped back to the patient's grid.

Batches, steps and inference are timed interleaved (resize, spacing, resize, ...), so other
load on the machine falls on both alike. Prints seconds (medians) and the spacing/resize ratio. ::

    .venv/bin/python benchmarks/bench_geometry.py [--patients 12] [--size 64] [--batch 8] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Median wall time (s) of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from seqablate.config import TrialConfig, parse
    from seqablate.data.cache import preprocess_cohort
    from seqablate.data.dataset import SliceDataset, slice_weights
    from seqablate.data.phantom import SCANNERS, make_phantom_cohort
    from seqablate.models import build_model
    from seqablate.models.inference import Predictor
    from seqablate.trainables.losses import segmentation_loss
    from seqablate.trainables.schedule import build_optimizer

    work = Path(tempfile.mkdtemp(prefix="seqablate-geometry-"))
    cohort = make_phantom_cohort(work / "stanford", site="stanford", patients=args.patients, seed=5,
                                 scanners=SCANNERS["stanford"], workers=2, progress=True)
    setups: dict[str, dict[str, object]] = {}
    prep: dict[str, float] = {}
    for geometry in ("resize", "spacing"):
        cfg = parse(TrialConfig, {"data": {"cohort": str(cohort), "geometry": geometry, "image_size": args.size,
                                           "slices": 5},
                                  "model": {"backbone": "tiny"}, "train": {"lr": 3e-3}})
        if geometry == "spacing":
            from seqablate.evaluation.cohort import plan_geometry

            cfg = plan_geometry(cfg)
        t0 = time.perf_counter()
        patients = preprocess_cohort(cohort, cfg.data, cache_dir=work / f"cache-{geometry}", workers=1, progress=False)
        prep[geometry] = (time.perf_counter() - t0) / len(patients)
        ds = SliceDataset(patients, slices=5, patch=args.size if geometry == "spacing" else None, seed=0)
        torch.manual_seed(0)
        model = build_model(cfg.model)
        opt, _ = build_optimizer(list(model.parameters()), cfg.train)
        setups[geometry] = {"patients": patients, "ds": ds, "w": torch.as_tensor(slice_weights(ds)),
                            "gen": torch.Generator().manual_seed(0), "model": model, "opt": opt}

    def batch(g: str) -> dict[str, torch.Tensor]:
        st = setups[g]
        idx = torch.multinomial(st["w"], args.batch, replacement=True, generator=st["gen"]).tolist()  # type: ignore[arg-type]
        items = [st["ds"][i] for i in idx]  # type: ignore[index]
        return {k: torch.stack([it[k] for it in items]) for k in ("image", "present", "mask")}

    def step(g: str) -> None:
        st = setups[g]
        b = batch(g)
        model, opt = st["model"], st["opt"]
        loss = segmentation_loss(model(b["image"], b["present"]), b["mask"].float().unsqueeze(1), dice_weight=1.0)  # type: ignore[operator]
        opt.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        loss.backward()
        opt.step()  # type: ignore[attr-defined]

    times: dict[str, dict[str, list[float]]] = {g: {"batch": [], "step": [], "inference": []} for g in setups}
    for g in setups:
        step(g)  # warm-up
    # Interleaved (resize, spacing, resize, ...): a machine shared with other jobs loads both alike.
    for _ in range(args.steps):
        for g in setups:
            times[g]["batch"].append(_median_time(lambda g=g: batch(g), 1))
            times[g]["step"].append(_median_time(lambda g=g: step(g), 1))
    for st in setups.values():
        st["predictor"] = Predictor(st["model"].eval(), batch_size=32)  # type: ignore[union-attr]
    for _ in range(2):
        for g, st in setups.items():
            pats = st["patients"][:4]  # type: ignore[index]
            times[g]["inference"].append(_median_time(lambda st=st, pats=pats: [st["predictor"].predict_volume(p) for p in pats], 1) / 4)  # type: ignore[union-attr]
    rows = {g: {"preprocess s/patient": prep[g], "batch s": statistics.median(times[g]["batch"]),
                "step s (incl. batch)": statistics.median(times[g]["step"]),
                "inference s/patient": statistics.median(times[g]["inference"]),
                "cached voxels/patient": float(np.mean([np.prod(p.image.shape[1:]) for p in setups[g]["patients"]]))}  # type: ignore[union-attr]
            for g in setups}
    print(f"\n{args.patients} mixed-scanner patients ({SCANNERS['stanford']}), size {args.size}, "
          f"batch {args.batch}, 1 torch thread, {args.steps} interleaved rounds")
    print(f"{'':<26}{'resize':>12}{'spacing':>12}{'ratio':>8}")
    for key in rows["resize"]:
        a, b = rows["resize"][key], rows["spacing"][key]
        print(f"{key:<26}{a:>12.4g}{b:>12.4g}{b / a:>8.2f}")


if __name__ == "__main__":
    main()
