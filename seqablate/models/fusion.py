"""Feature fusion operators for mid-level integration (paper IV-A, IV-C).

A fusion maps per-sequence features ``f[B, S, C, h, w]`` (zeros where a sequence is absent, as
produced by :class:`~seqablate.models.sharing.Branches`) and ``present: bool[B, S]`` to one
feature map ``[B, C_out, h, w]``. Registered by name in :data:`FUSIONS` (duplicates refused).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from seqablate.config import ConfigError
from seqablate.models.registry import Registry
from seqablate.sequences import CONTRAST_PAIRS, contrast_pair

#: Fusion name -> ``nn.Module`` class constructed as ``cls(sequences)``.
FUSIONS: Registry[type[nn.Module]] = Registry("model.fusion")


class Fusion(nn.Module):
    """Base: ``out_channels(c)`` gives the fused width for per-branch width ``c``."""

    def __init__(self, sequences: Sequence[str]) -> None:
        super().__init__()
        self.sequences = tuple(sequences)

    def out_channels(self, c: int) -> int:
        raise NotImplementedError


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Channel concatenation, sequence-major (channel ``s*C + c``); absent branches are zeros."""

    def out_channels(self, c: int) -> int:
        return c * len(self.sequences)

    def forward(self, f: Tensor, present: Tensor) -> Tensor:
        return f.flatten(1, 2)  # absent entries are already zeros


@FUSIONS.register("mean")
class MeanFusion(Fusion):
    """Mean over the PRESENT branches only (HeMIS-style), so the scale does not depend on how
    many sequences a patient has. A sample with no present sequence gives zeros."""

    def out_channels(self, c: int) -> int:
        return c

    def forward(self, f: Tensor, present: Tensor) -> Tensor:
        n = present.sum(1).clamp(min=1).to(f.dtype).view(-1, 1, 1, 1)  # [B, 1, 1, 1]
        return f.sum(1) / n  # absent entries are zeros, so the sum runs over present ones


@FUSIONS.register("subtract")
class SubtractFusion(Fusion):
    """Post- minus pre-contrast features, then the other sequences' features (paper IV-C).

    Output channels: ``[f[post] - f[pre], f[others...]]`` with the others in study order, i.e.
    ``C * (S - 1)``. The pair is :func:`seqablate.sequences.contrast_pair` (``t1_fse_post`` /
    ``t1_fse_pre`` for the paper). An absent member of the pair contributes zeros (the same rule
    as ``concat``), so with the pre-contrast scan missing the first block carries the
    post-contrast features unchanged. Meaningful only with shared branch weights (checked by
    ``build_model``).
    """

    def __init__(self, sequences: Sequence[str]) -> None:
        super().__init__(sequences)
        pair = contrast_pair(self.sequences)
        if pair is None:
            raise ConfigError(
                f"model.fusion='subtract' needs a post/pre-contrast pair among model.sequences "
                f"{list(self.sequences)}; valid pairs (post, pre): {list(CONTRAST_PAIRS)}"
            )
        self.pair = pair
        post, pre = (self.sequences.index(p) for p in pair)
        others = [i for i in range(len(self.sequences)) if i not in (post, pre)]
        self.post, self.pre = post, pre
        self.register_buffer("others", torch.tensor(others, dtype=torch.long), persistent=False)

    def out_channels(self, c: int) -> int:
        return c * (len(self.sequences) - 1)

    def forward(self, f: Tensor, present: Tensor) -> Tensor:
        diff = f[:, self.post] - f[:, self.pre]  # [B, C, h, w]
        rest = f.index_select(1, self.others).flatten(1, 2)  # [B, C*(S-2), h, w]
        return torch.cat([diff, rest], dim=1)
