"""Pilot runs that fix the demo's learning rate and steps on VALIDATION data only.

Trains the demo's network (its cohort, backbone, batch, loss) without Ray, without and with
sequence dropout, for each learning rate asked, and prints the validation mAP at every
validation (full protocol, the demo's statistics policy) and nothing else: no test patient
is predicted (``evaluate=False``). Two runs at a time, one thread each (as the demo). ::

    .venv/bin/python benchmarks/demo_pilot.py --out /tmp/pilot --lr 1e-3 2e-3 4e-3 --steps 3000
    .venv/bin/python benchmarks/demo_pilot.py --out /tmp/pilot --step-counts 600 1500 --seeds 0 1 \
        --spacing 0 2.0 --val-every 150

Each (steps, spacing, lr, seed, p) is one run; several ``--step-counts`` train each schedule
in full (a 600-step cosine schedule decays sooner than the first 600 steps of a 1500-step one).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def _one(args: tuple[str, float, float, int, int, int, float | None]) -> dict[str, Any]:
    out, p, lr, steps, val_every, seed, spacing = args
    import torch

    from seqablate.config import TrialConfig, parse
    from seqablate.demo import BASE, make_cohorts
    from seqablate.trainables.loop import fit_trial

    torch.set_num_threads(1)
    cohorts = make_cohorts(Path(out), progress=False, workers=1)
    # spacing None: the target spacing planned from the training patients (the demo's default)
    geo = {} if spacing is None else {"spacing_mm": spacing, "slice_mm": 1.5 * spacing}
    raw = {**BASE, "name": f"pilot-p{p}-lr{lr}",
           "data": {**BASE["data"], **geo, "cohort": str(cohorts["stanford"])},
           "train": {**BASE["train"], "steps": steps, "lr": lr, "val_every": val_every, "dropout_p": p,
                     "seed": seed, "saliency_every": 0}}
    cfg = parse(TrialConfig, raw)
    t = time.perf_counter()
    tag = f"p{p}-lr{lr}-n{steps}-s{seed}" + ("" if spacing is None else f"-mm{spacing}")
    res = fit_trial(cfg, storage=Path(out) / "runs" / tag, cpus=1, use_gpu=False, evaluate=False)
    val = [(h["step"], round(h.get("val.mAP", float("nan")), 3)) for h in res.history if "val.mAP" in h]
    return {"p": p, "lr": lr, "steps": steps, "seed": seed, "spacing_mm": spacing, "seconds": round(time.perf_counter() - t), "val_mAP": val,
            "train_loss": [(h["step"], round(h["train.loss"], 3)) for h in res.history if "train.loss" in h]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--lr", type=float, nargs="+", default=None, help="default: the demo's learning rate")
    ap.add_argument("--p", type=float, nargs="+", default=[0.0, 0.25])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--step-counts", type=int, nargs="+", default=None,
                    help="several schedules (each its own cosine decay); default: --steps")
    ap.add_argument("--spacing", type=float, nargs="+", default=[0.0],
                    help="in-plane target spacing(s) in mm, slices at 1.5x; 0 = planned from the training patients")
    args = ap.parse_args()
    from seqablate.demo import LR, make_cohorts

    lrs = args.lr or [LR]
    make_cohorts(Path(args.out), workers=2)  # once, before the workers share them
    jobs = [(args.out, p, lr, n, args.val_every, seed, mm or None) for n in (args.step_counts or [args.steps])
            for mm in args.spacing for lr in lrs for seed in args.seeds for p in args.p]
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for r in pool.map(_one, jobs):
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
