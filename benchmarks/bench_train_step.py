"""CPU training step of the demo's network: seqablate's vs torchvision's defaults.

One optimiser step (forward, BCE + soft Dice, backward, AdamW) of the input-level DeepLabv3
``compact`` network on a 4 x 4-sequence x 5-slice batch, 1 torch thread, measured
interleaved (A, B, A, B, ...) in one run:

* baseline: torchvision's ``DeepLabHead`` as built (3x3 atrous convolutions computing every
  tap) and ``torch.optim.AdamW`` with its default per-tensor implementation;
* seqablate: the same network with :mod:`seqablate.models.atrous` (taps that can only read
  padding skipped: the same function) and the fused AdamW of ``build_optimizer``.

* tiny: the same seqablate path on ``backbone: tiny`` (DeepLabv3's structure at reduced
  width: the demo's network), against seqablate's ``compact`` step in the same run.

Prints seconds per step for each, the speed-up ratios, parameter counts, and checks that the
baseline and seqablate's ``compact`` compute the same forward pass. ::

    .venv/bin/python benchmarks/bench_train_step.py [--size 64] [--rounds 5] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from seqablate.config import TrainConfig
from seqablate.models import build_model
from seqablate.models.atrous import AtrousConv2d
from seqablate.trainables.losses import segmentation_loss
from seqablate.trainables.schedule import build_optimizer

SEQS = ["t1_fse_pre", "t1_fse_post", "t1_gre_post", "flair"]


def _plain(model: nn.Module) -> nn.Module:
    """Turn every AtrousConv2d back into torchvision's nn.Conv2d (same parameters)."""
    for m in model.modules():
        if isinstance(m, AtrousConv2d):
            m.__class__ = nn.Conv2d
    return model


def _step_fn(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, p: torch.Tensor, y: torch.Tensor):  # noqa: ANN202
    def step() -> None:
        loss = segmentation_loss(model(x, p), y, dice_weight=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = {"integration": "input", "backbone": "compact", "sequences": SEQS, "slices": 5}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, 5, args.size, args.size, generator=gen)
    p = torch.ones(args.batch, 4, dtype=torch.bool)
    y = (torch.rand(args.batch, 1, args.size, args.size, generator=gen) > 0.97).float()

    ours = build_model(cfg, seed=0)
    base = _plain(build_model(cfg, seed=0))
    ours.eval(), base.eval()
    with torch.no_grad():
        same = torch.allclose(ours(x, p), base(x, p), rtol=1e-4, atol=1e-4)
    ours.train(), base.train()
    opt_ours, _ = build_optimizer(list(ours.parameters()), TrainConfig(lr=1e-3))
    opt_base = torch.optim.AdamW(base.parameters(), lr=1e-3, weight_decay=1e-4, foreach=False)
    tiny = build_model({**cfg, "backbone": "tiny"}, seed=0).train()
    opt_tiny, _ = build_optimizer(list(tiny.parameters()), TrainConfig(lr=1e-3))
    runs = {"baseline (torchvision head, per-tensor AdamW)": _step_fn(base, opt_base, x, p, y),
            "seqablate (atrous taps skipped, fused AdamW)": _step_fn(ours, opt_ours, x, p, y),
            "seqablate, backbone tiny": _step_fn(tiny, opt_tiny, x, p, y)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - t) / args.steps)
    print(f"input-level DeepLabv3 'compact', {args.size}x{args.size}, batch {args.batch}, 1 thread, "
          f"{args.rounds} rounds x {args.steps} steps (median s/step); same forward: {same}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"  {k:<48} {v:.3f} s/step")
    b, o, t = med.values()
    print(f"  speed-up of seqablate's compact step over the baseline: {b / o:.2f}x")
    n_c, n_t = (sum(q.numel() for q in m.parameters()) for m in (ours, tiny))
    print(f"  tiny vs compact: {o / t:.1f}x cheaper per step; parameters {n_t / 1e6:.2f} M vs {n_c / 1e6:.1f} M")


if __name__ == "__main__":
    main()
