"""Optimiser and learning-rate schedule built from :class:`~seqablate.config.TrainConfig`."""

from __future__ import annotations

import math

import torch

from seqablate.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based).

    Linear warmup over ``warmup_steps`` (from 1/warmup to 1), then 'cosine' (to 0 at
    ``steps``), 'poly' ((1 - t)^0.9, DeepLab's schedule) or 'constant'.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.schedule == "poly":
        return (1.0 - t) ** 0.9
    return 1.0


def build_optimizer(
    params: list[torch.nn.Parameter], cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW or SGD (Nesterov momentum) with the warmup + decay schedule of ``cfg``.

    AdamW uses PyTorch's fused kernel when every parameter is a float tensor on the CPU or a
    GPU (the same update rule): the per-tensor default spends ~30 % of a CPU training step of
    the 24 M-parameter ``compact`` model in the optimiser, the fused one a tenth of that
    (``benchmarks/bench_train_step.py``).
    """
    if cfg.optimizer == "adamw":
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None
        )
    else:
        opt = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
        )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    return opt, sched
