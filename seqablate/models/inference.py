"""The platform's fast inference path: eval copy with BatchNorm folded, inference mode,
batched, bfloat16 autocast and channels_last where the hardware runs them natively.

bfloat16 and channels_last are chosen *per machine*, not blindly: on a CPU without native
bf16 arithmetic (no AVX-512 BF16 / AMX, e.g. an AVX2-only EPYC) oneDNN emulates bf16 and is
many times SLOWER than fp32, and channels_last did not help fp32 there either (see
``benchmarks/RESULTS.md``). :func:`native_bf16` makes that decision; both can be forced.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from tqdm.auto import tqdm


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (so autocast pays off).

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: oneDNN available and the CPU has
    AVX-512 BF16 or AMX tiles (checked through ``torch.cpu``'s capability probes).
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def _fold_pairs(module: nn.Module, pairs: Iterator[tuple[str, str]]) -> None:
    for conv_name, bn_name in pairs:
        conv, bn = module._modules.get(conv_name), module._modules.get(bn_name)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
            module._modules[bn_name] = nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d that feeds it, in place; returns ``model``.

    Only pairs whose execution order is known are folded: consecutive children of ordered
    containers (``nn.Sequential``, torchvision's ``IntermediateLayerGetter``) and the
    ``conv{i}``/``bn{i}`` pairs of torchvision ResNet blocks. ``model`` must be in eval mode.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (BatchNorm uses running stats)")
    for m in list(model.modules()):
        if isinstance(m, nn.Sequential | IntermediateLayerGetter):
            names = list(m._modules)
            _fold_pairs(m, zip(names, names[1:], strict=False))
        elif isinstance(m, Bottleneck | BasicBlock | ResNet):
            _fold_pairs(m, ((f"conv{i}", f"bn{i}") for i in (1, 2, 3)))
    return model


def inference_model(
    model: nn.Module,
    *,
    device: torch.device | str | None = None,
    channels_last: bool | None = None,
    fold_bn: bool = True,
) -> nn.Module:
    """An eval-mode COPY of ``model`` prepared for fast inference (the original is untouched).

    ``device``: where to put it (default: where ``model`` is). ``channels_last``: None = on
    CUDA, or on a CPU with native bf16 (oneDNN's bf16 kernels are NHWC). ``fold_bn``: fold
    BatchNorm into convolutions (same function, fewer memory passes). The copy keeps the
    ``forward(image, present)`` contract; do not train it.
    """
    fast = copy.deepcopy(model).eval()
    if device is not None:
        fast = fast.to(device)
    dev = next(fast.parameters()).device
    if fold_bn:
        fold_batchnorm(fast)
    if channels_last is None:
        channels_last = dev.type == "cuda" or native_bf16(dev)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


def predict_logits(
    model: nn.Module,
    image: Tensor | np.ndarray,
    present: Tensor | np.ndarray,
    *,
    batch_size: int = 32,
    amp: bool | None = None,
    progress: bool = False,
) -> Tensor:
    """Logits of ``model`` for ``image[N, S, K, H, W]`` / ``present[N, S]`` in batches.

    Runs under ``torch.inference_mode`` (and bfloat16 autocast when ``amp`` is True; None =
    :func:`native_bf16` of the model's device). Inputs may live anywhere (moved batch by
    batch). Returns float32 ``logits[N, 1, H, W]`` on the CPU. The model's train/eval mode is
    restored afterwards. For repeated calls, prepare the model once with
    :func:`inference_model`. ``N == 0`` gives an empty ``[0, 1, H, W]`` tensor.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image = torch.as_tensor(image)
    present = torch.as_tensor(present)
    dev = next(model.parameters()).device
    if amp is None:
        amp = native_bf16(dev)
    n = image.shape[0]
    if n == 0:
        return torch.zeros((0, 1, *image.shape[-2:]), dtype=torch.float32)
    was_training = model.training
    model.eval()
    outs: list[Tensor] = []
    try:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            for start in tqdm(range(0, n, batch_size), desc="predict", disable=not progress, leave=False):
                x = image[start : start + batch_size].to(dev, dtype=torch.float32, non_blocking=True)
                p = present[start : start + batch_size].to(dev, non_blocking=True)
                outs.append(model(x, p).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs)
