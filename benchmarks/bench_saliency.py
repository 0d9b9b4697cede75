"""Overhead of the saliency aggregates relative to one training step.

Model: ``build_model`` with the ``compact`` backbone (input integration, 4 sequences x 5
slices) at 64x64, batch 8, on CPU (or the first GPU if present). A training step is
forward + BCE + backward + AdamW step. Measured in the same run:

* ``train``: the training step alone (the baseline);
* ``saliency_aggregates``: the stand-alone call (its own forward + input-only backward +
  buffer restore), as run every ``saliency_every`` steps;
* ``train + reduce_saliency``: the training step with ``image.requires_grad_()`` and the input
  gradient reduced from the step's own backward (no extra forward).

    .venv/bin/python benchmarks/bench_saliency.py [--steps 10] [--every 50]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from seqablate.models import build_model
from seqablate.saliency import reduce_saliency, saliency_aggregates

SEQUENCES = ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"]


def timed(fn, steps: int, device: torch.device) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--every", type=int, default=50, help="saliency_every for the amortised figure")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(
        {"backbone": "compact", "integration": "input", "sequences": SEQUENCES, "slices": 5}, seed=0
    ).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, s = args.batch, len(SEQUENCES)
    image = torch.randn(b, s, 5, args.size, args.size, device=device)
    present = torch.ones(b, s, dtype=torch.bool, device=device)
    present[0, 1] = False
    image[0, 1] = 0
    mask = (torch.rand(b, args.size, args.size, device=device) < 0.05).float()

    def loss_fn(logits, target):
        return F.binary_cross_entropy_with_logits(logits, target)

    def train_step(with_input_grad: bool = False):
        x = image.clone().requires_grad_(with_input_grad)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x, present), mask[:, None])
        loss.backward()
        opt.step()
        if with_input_grad:
            reduce_saliency(x.grad, present)

    t_train = timed(train_step, args.steps, device)
    t_sal = timed(lambda: saliency_aggregates(model, image, present, mask, loss_fn), args.steps, device)
    t_both = timed(lambda: train_step(True), args.steps, device)
    print(f"device {device}, compact/input, batch {b}, {s}x5x{args.size}x{args.size}")
    print(f"train step               : {t_train * 1e3:8.1f} ms (baseline)")
    print(f"saliency_aggregates      : {t_sal * 1e3:8.1f} ms = {t_sal / t_train:.2f}x a step; "
          f"every {args.every} steps: +{100 * t_sal / t_train / args.every:.2f}% training time")
    print(f"train + reduce_saliency  : {t_both * 1e3:8.1f} ms = {t_both / t_train:.2f}x a step "
          f"(+{100 * (t_both / t_train - 1):.1f}% on the steps where it runs)")


if __name__ == "__main__":
    main()
