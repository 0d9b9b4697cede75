"""BatchNorm statistics per sequence subset: estimation, storage, selection.

A BatchNorm network normalises with running statistics collected during training. Under
sequence dropout those statistics pool a mixture of input conditions (zeroed sequences and
the S / S_present rescaling shift the first layers' activation means per sample), and a
model trained on the full protocol has never seen a censored input at all: at inference on a
patient who lacks a sequence, the stored statistics describe other inputs. This module
re-estimates the statistics for each sequence subset a model may meet and selects them by the
subset a patient actually has (``eval.norm_stats: per_subset``); ``stored`` keeps the
training statistics (the paper's).

Estimation (:func:`estimate_bn_stats`): a copy of the model, its running statistics reset,
every BatchNorm in train mode with cumulative averaging (``momentum=None``) and everything
else in eval mode (so dropout does not distort the statistics), run without gradients over
batches of one condition. The result is the buffers ``<bn>.running_mean`` /
``<bn>.running_var`` of every BatchNorm: ~2 x channels floats per layer.

A subset is identified by its *key*: the present sequences joined with ``+`` in study order
(:func:`subset_key`), e.g. ``t1_fse_pre+t1_fse_post+flair``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

#: Per-subset statistics: subset key -> {buffer name: tensor}.
NormStats = dict[str, dict[str, Tensor]]


def batchnorms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """``(name, module)`` of every BatchNorm with running statistics, in module order."""
    return [
        (n, m) for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` normalises with running statistics (the only case with a choice)."""
    return bool(batchnorms(model))


def subset_key(present: Sequence[bool] | Tensor, sequences: Sequence[str]) -> str:
    """The key of a subset: present sequence names joined by ``+`` in study order.

    ``present``: bool[S] (list, numpy or tensor). Raises ValueError for a length mismatch or
    an empty subset (no model input is ever empty).
    """
    flags = [bool(x) for x in (present.tolist() if isinstance(present, Tensor) else list(present))]
    if len(flags) != len(sequences):
        raise ValueError(f"present has {len(flags)} entries for {len(sequences)} sequences {list(sequences)}")
    if not any(flags):
        raise ValueError("an empty sequence subset has no statistics (no model input is empty)")
    return "+".join(s for s, f in zip(sequences, flags, strict=True) if f)


def subset_flags(key: str, sequences: Sequence[str]) -> list[bool]:
    """Inverse of :func:`subset_key`: bool[S]. Raises ValueError naming an unknown sequence."""
    names = key.split("+")
    unknown = [n for n in names if n not in sequences]
    if unknown:
        raise ValueError(f"norm statistics key {key!r} names {unknown}, not among {list(sequences)}")
    return [s in names for s in sequences]


def stats_of(model: nn.Module) -> dict[str, Tensor]:
    """The running mean/variance buffers of every BatchNorm of ``model`` (CPU copies)."""
    out: dict[str, Tensor] = {}
    for name, bn in batchnorms(model):
        out[f"{name}.running_mean"] = bn.running_mean.detach().cpu().clone()  # type: ignore[union-attr]
        out[f"{name}.running_var"] = bn.running_var.detach().cpu().clone()  # type: ignore[union-attr]
    return out


def apply_stats(model: nn.Module, stats: Mapping[str, Tensor]) -> nn.Module:
    """Copy ``stats`` (from :func:`stats_of` / :func:`estimate_bn_stats`) into ``model``'s
    BatchNorm buffers, in place; returns ``model``. Raises KeyError naming a buffer that the
    statistics lack (they belong to another architecture)."""
    with torch.no_grad():
        for name, bn in batchnorms(model):
            for attr in ("running_mean", "running_var"):
                key = f"{name}.{attr}"
                if key not in stats:
                    raise KeyError(f"norm statistics have no {key!r}: they belong to another model")
                getattr(bn, attr).copy_(stats[key].to(getattr(bn, attr).device))
    return model


@torch.no_grad()
def estimate_bn_stats(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, device: torch.device | str | None = None
) -> dict[str, Tensor]:
    """BatchNorm statistics of ``model`` re-estimated on ``batches``; ``model`` is untouched.

    ``batches``: ``(image[B, S, K, H, W], present[B, S])`` pairs, already through the
    presence rule (zeros and S / S_present scaling), all of the condition whose statistics are
    wanted. Works on a deep copy: statistics reset, BatchNorms in train mode with cumulative
    averaging (every batch weighs the same), the rest in eval mode (no dropout), no gradients.
    Raises ValueError when ``batches`` is empty.
    """
    work = _estimation_copy(model, device)
    dev = next(work.parameters()).device
    n = 0
    for image, present in batches:
        work(image.to(dev), present.to(dev))
        n += 1
    if n == 0:
        raise ValueError("no batch to estimate BatchNorm statistics from")
    return stats_of(work)


def _estimation_copy(model: nn.Module, device: torch.device | str | None) -> nn.Module:
    """A deep copy for :func:`estimate_bn_stats`-style estimation: statistics reset, BatchNorms
    in train mode with cumulative averaging, everything else in eval mode."""
    work = copy.deepcopy(model)
    if device is not None:
        work = work.to(device)
    work.eval()
    for _, bn in batchnorms(work):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
        bn.train()
    return work


@torch.no_grad()
def estimate_bn_stats_many(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    conditions: Mapping[str, Sequence[bool]],
    *,
    device: torch.device | str | None = None,
) -> dict[str, dict[str, Tensor]]:
    """BatchNorm statistics of several presence conditions from the same slices; ``model``
    is untouched.

    ``batches``: ``(image[B, S, K, H, W], present[B, S])`` as stored (not yet through the
    presence rule); ``conditions``: name -> bool[S], the sequences kept. Each condition's
    statistics are those :func:`estimate_bn_stats` gives on the batches put through the
    presence rule with that condition kept (per batch and condition, one forward pass of that
    condition's own copy of the model). A model whose first layer is one convolution of every
    sequence (``model.stem()``) convolves each batch's sequences once and combines them per
    condition (:class:`seqablate.models.stem.SharedStem`; the same statistics up to float
    summation order); this needs every sample of a batch to hold every kept sequence, and a
    batch where one does not goes through the plain path. Raises ValueError when
    ``batches`` is empty, and for an empty condition.
    """
    from seqablate.data.dropout import apply_presence, presence_weights
    from seqablate.models.stem import SharedStem

    flags = {name: torch.as_tensor([bool(x) for x in keep]) for name, keep in conditions.items()}
    for name, keep in flags.items():
        if not bool(keep.any()):
            raise ValueError(f"condition {name!r} keeps no sequence")
    works = {name: _estimation_copy(model, device) for name in flags}
    if not works:
        return {}
    dev = next(next(iter(works.values())).parameters()).device
    stem_of = getattr(model, "stem", None)
    stem = None
    if callable(stem_of) and stem_of() is not None:
        conv, _ = stem_of()
        s, k = len(model.sequences), model.slices  # type: ignore[arg-type]
        try:
            stem = SharedStem(conv, s, k, channels_last=dev.type == "cpu").to(dev)
        except ValueError:
            stem = None  # not one convolution of all S*K channels: plain passes
    n = 0
    for image, present in batches:
        image, present = image.to(dev), present.to(dev, torch.bool)
        size = (image.shape[-2], image.shape[-1])
        parts = stem.partials(image) if stem is not None else None
        for name, keep in flags.items():
            keep_d = keep.to(dev)
            work = works[name]
            if parts is not None and bool((present | ~keep_d).all()):
                # Every sample holds every kept sequence: one presence weight per sequence.
                y = stem.combine(parts, presence_weights(keep_d), work.stem()[1])  # type: ignore[union-attr, operator]
                work.forward_from_stem(y, size)  # type: ignore[operator]
            else:
                work(*apply_presence(image, present, keep_d.expand_as(present)))
        n += 1
    if n == 0:
        raise ValueError("no batch to estimate BatchNorm statistics from")
    return {name: stats_of(work) for name, work in works.items()}
