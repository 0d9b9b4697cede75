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

Prints seconds for each and the spacing/resize ratio. ::

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
    rows: dict[str, dict[str, float]] = {}
    for geometry in ("resize", "spacing"):
        cfg = parse(TrialConfig, {"data": {"cohort": str(cohort), "geometry": geometry, "image_size": args.size,
                                           "slices": 5},
                                  "model": {"backbone": "tiny"}, "train": {"lr": 3e-3}})
        t0 = time.perf_counter()
        patients = preprocess_cohort(cohort, cfg.data, cache_dir=work / f"cache-{geometry}", workers=1, progress=False)
        prep = (time.perf_counter() - t0) / len(patients)
        ds = SliceDataset(patients, slices=5, patch=args.size if geometry == "spacing" else None, seed=0)
        w = torch.as_tensor(slice_weights(ds))
        gen = torch.Generator().manual_seed(0)

        def batch() -> dict[str, torch.Tensor]:
            idx = torch.multinomial(w, args.batch, replacement=True, generator=gen).tolist()  # noqa: B023
            items = [ds[i] for i in idx]  # noqa: B023
            return {k: torch.stack([it[k] for it in items]) for k in ("image", "present", "mask")}

        torch.manual_seed(0)
        model = build_model(cfg.model)
        opt, _ = build_optimizer(list(model.parameters()), cfg.train)

        def step() -> None:
            b = batch()
            loss = segmentation_loss(model(b["image"], b["present"]), b["mask"].float().unsqueeze(1), dice_weight=1.0)  # noqa: B023
            opt.zero_grad(set_to_none=True)  # noqa: B023
            loss.backward()
            opt.step()  # noqa: B023

        step()  # warm-up
        t_batch = _median_time(batch, args.steps)
        t_step = _median_time(step, args.steps)
        predictor = Predictor(model.eval(), batch_size=32)
        t_pred = _median_time(lambda: [predictor.predict_volume(p) for p in patients[:4]], 2) / 4  # noqa: B023
        pixels = float(np.mean([np.prod(p.image.shape[1:]) for p in patients]))
        rows[geometry] = {"preprocess s/patient": prep, "batch s": t_batch, "step s (incl. batch)": t_step,
                          "inference s/patient": t_pred, "cached voxels/patient": pixels}
    print(f"\n{args.patients} mixed-scanner patients (in-plane 1.2-2.0 mm, slices 1.5-3.0 mm, FOV 90-140 mm), "
          f"size {args.size}, batch {args.batch}, 1 torch thread")
    print(f"{'':<26}{'resize':>12}{'spacing':>12}{'ratio':>8}")
    for key in rows["resize"]:
        a, b = rows["resize"][key], rows["spacing"][key]
        print(f"{key:<26}{a:>12.4g}{b:>12.4g}{b / a:>8.2f}")


if __name__ == "__main__":
    main()
