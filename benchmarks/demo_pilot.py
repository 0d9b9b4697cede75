"""Pilot runs that fix the demo's learning rate and steps on VALIDATION data only.

Trains the demo's network (its cohort, backbone, batch, loss) without Ray, without and with
sequence dropout, for each learning rate asked, and prints the validation mAP at every
validation (full protocol, the demo's statistics policy) and nothing else: no test patient
is predicted (``evaluate=False``). Two runs at a time, one thread each (as the demo). ::

    .venv/bin/python benchmarks/demo_pilot.py --out /tmp/pilot --lr 1e-3 2e-3 4e-3 --steps 3000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def _one(args: tuple[str, float, float, int, int, int]) -> dict[str, Any]:
    out, p, lr, steps, val_every, seed = args
    import torch

    from seqablate.config import TrialConfig, parse
    from seqablate.demo import BASE, make_cohorts
    from seqablate.trainables.loop import fit_trial

    torch.set_num_threads(1)
    cohorts = make_cohorts(Path(out), progress=False, workers=1)
    raw = {**BASE, "name": f"pilot-p{p}-lr{lr}",
           "data": {**BASE["data"], "cohort": str(cohorts["stanford"])},
           "train": {**BASE["train"], "steps": steps, "lr": lr, "val_every": val_every, "dropout_p": p,
                     "seed": seed, "saliency_every": 0}}
    cfg = parse(TrialConfig, raw)
    t = time.perf_counter()
    res = fit_trial(cfg, storage=Path(out) / "runs" / f"p{p}-lr{lr}-s{seed}", cpus=1, use_gpu=False, evaluate=False)
    val = [(h["step"], round(h.get("val.mAP", float("nan")), 3)) for h in res.history if "val.mAP" in h]
    return {"p": p, "lr": lr, "seed": seed, "seconds": round(time.perf_counter() - t), "val_mAP": val,
            "train_loss": [(h["step"], round(h["train.loss"], 3)) for h in res.history if "train.loss" in h]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--lr", type=float, nargs="+", default=[2e-3])
    ap.add_argument("--p", type=float, nargs="+", default=[0.0, 0.25])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from seqablate.demo import make_cohorts

    make_cohorts(Path(args.out), workers=2)  # once, before the workers share them
    jobs = [(args.out, p, lr, args.steps, args.val_every, args.seed) for lr in args.lr for p in args.p]
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for r in pool.map(_one, jobs):
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
