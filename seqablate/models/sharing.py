"""Parallel per-sequence branches and their weight-sharing modes (paper IV-B).

``Branches`` runs one sub-network per pulse sequence over ``x[B, S, C, H, W]`` and returns
``y[B, S, C', h, w]``. Three sharing modes:

- ``shared``: one module for every sequence (siamese). All present (sample, sequence) pairs are
  folded into the batch axis and run through it in ONE call.
- ``independent``: one module per sequence, separately initialised.
- ``l2_tied``: one module per sequence, initialised identically (deep copies); the training
  loss adds ``lambda * tie_penalty()`` with ``tie_penalty() = sum_i ||theta_i - mean(theta)||^2``.

Absent inputs (``present[b, s]`` False) are not computed: their outputs are zeros and they
contribute no gradient. A branch whose sequence is absent from the whole batch is not run at
all, so its parameters receive no gradient (``.grad`` stays ``None``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from seqablate import vocabulary as V

#: Sharing modes, in the order the paper lists them (the vocabulary's).
SHARING_MODES: tuple[str, ...] = V.SHARING_MODES

#: ModuleDict key of the single module in ``shared`` mode.
SHARED_KEY = "shared"


def run_present(net: nn.Module, x: Tensor, keep: Tensor) -> Tensor | None:
    """``net`` applied to the rows of ``x[N, ...]`` where ``keep[N]`` is True; zeros elsewhere.

    Returns ``y[N, ...]`` (rows not kept are zeros and carry no gradient), or ``None`` when no
    row is kept (``net`` is not called at all).

    Edge case: in training mode a single kept row out of N > 1 is NOT run alone, because
    torchvision's ASPP pooling branch applies BatchNorm to a 1x1 map, which needs more than one
    value per channel. Then the whole batch is run with the other rows' inputs zeroed and their
    outputs masked to zero (they still add no direct gradient; they only enter BatchNorm's batch
    statistics, as zero-filled missing sequences do in input-level integration).
    """
    n_keep = int(keep.sum())
    n = x.shape[0]
    if n_keep == 0:
        return None
    if n_keep == n:
        return net(x)
    if n_keep == 1 and net.training:
        shape = (n,) + (1,) * (x.dim() - 1)
        y = net(x * keep.view(shape).to(x.dtype))
        return y * keep.view((n,) + (1,) * (y.dim() - 1)).to(y.dtype)
    idx = keep.nonzero().squeeze(1)
    y_kept = net(x.index_select(0, idx))
    return y_kept.new_zeros((n, *y_kept.shape[1:])).index_copy(0, idx, y_kept)


class Branches(nn.Module):
    """One sub-network per sequence with a weight-sharing mode.

    Args:
        sequences: the S sequence names, in the study's order (keys of ``nets`` unless shared).
        make: builds one randomly initialised branch (called once for ``shared``/``l2_tied``,
            S times for ``independent``).
        sharing: one of :data:`SHARING_MODES`.
    """

    def __init__(self, sequences: Sequence[str], make: Callable[[], nn.Module], sharing: str) -> None:
        super().__init__()
        if sharing not in SHARING_MODES:
            raise ValueError(f"model.sharing: unknown value {sharing!r}; valid choices: {list(SHARING_MODES)}")
        self.sequences = tuple(sequences)
        self.sharing = sharing
        if sharing == "shared":
            nets = {SHARED_KEY: make()}
        elif sharing == "independent":
            nets = {s: make() for s in self.sequences}
        else:  # l2_tied: identical initialisation (parameters AND BatchNorm buffers)
            first = make()
            nets = {s: (first if i == 0 else copy.deepcopy(first)) for i, s in enumerate(self.sequences)}
        self.nets = nn.ModuleDict(nets)

    def branch(self, sequence: str) -> nn.Module:
        """The module that processes ``sequence`` (the same object for every sequence if shared)."""
        return self.nets[SHARED_KEY if self.sharing == "shared" else sequence]

    def forward(self, x: Tensor, present: Tensor) -> Tensor:
        """``x[B, S, C, H, W]``, ``present: bool[B, S]`` -> ``y[B, S, C', h, w]``.

        ``y[b, s]`` is zeros where ``present[b, s]`` is False. Needs at least one present entry.
        """
        b, s = present.shape
        if self.sharing == "shared":
            # Fold S into the batch: one call for every present (sample, sequence) pair.
            y = run_present(self.nets[SHARED_KEY], x.flatten(0, 1), present.flatten())
            if y is None:
                raise ValueError("no sequence is present in the batch")
            return y.unflatten(0, (b, s))
        outs: list[Tensor | None] = [
            run_present(self.nets[name], x[:, i], present[:, i]) for i, name in enumerate(self.sequences)
        ]
        ref = next((o for o in outs if o is not None), None)
        if ref is None:
            raise ValueError("no sequence is present in the batch")
        # A branch absent from the whole batch was not run: zeros without a graph.
        return torch.stack([o if o is not None else torch.zeros_like(ref) for o in outs], dim=1)

    def tie_penalty(self) -> Tensor:
        """``sum_i ||theta_i - mean(theta)||^2`` over branches (scalar); 0 unless ``l2_tied``.

        Sums over every parameter tensor (not BatchNorm running statistics, which are buffers).
        """
        ref = next(self.parameters())
        if self.sharing != "l2_tied" or len(self.nets) < 2:
            return ref.new_zeros(())
        total = ref.new_zeros(())
        per_branch = [list(net.parameters()) for net in self.nets.values()]
        for group in zip(*per_branch, strict=True):
            # Deviations from branch 0 first: exactly 0 for identical branches (no rounding of
            # the mean) and better conditioned when the branches are close.
            d = torch.stack(group) - group[0]  # [S, *param_shape]
            total = total + (d - d.mean(0)).pow(2).sum()
        return total
