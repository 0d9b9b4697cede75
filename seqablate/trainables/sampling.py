"""A distributed-aware weighted sampler (lesion oversampling) for step-based training."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class DistributedWeightedSampler(Sampler[int]):
    """Endless weighted sampling with replacement; each rank draws its own stream.

    ``weights``: float64[N] slice weights (e.g. x10 for slices containing lesion). Rank ``r``
    of a run with seed ``s`` draws from a generator seeded by ``(s, r, start)``, so workers
    never draw identical batches, a run is reproducible, and a resumed run (``start`` = the
    step it resumes at) draws a fresh, deterministic stream instead of replaying step 0's.
    Sampling is with replacement, so "shards" are statistical, not disjoint index ranges:
    oversampling already makes every epoch-based partition meaningless.
    """

    def __init__(
        self, weights: np.ndarray, *, rank: int = 0, seed: int = 0, start: int = 0, chunk: int = 4096
    ) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
            raise ValueError(f"sampler weights must be a non-empty, non-negative 1-D array, got shape {w.shape}")
        self.weights = torch.as_tensor(w)
        self.chunk = chunk
        self.generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, rank, start]).generate_state(1)[0])
        )

    def __iter__(self) -> Iterator[int]:
        while True:  # the loop stops after cfg.steps batches
            yield from torch.multinomial(
                self.weights, self.chunk, replacement=True, generator=self.generator
            ).tolist()

    def __len__(self) -> int:  # DataLoader only needs a length for progress; the stream is endless
        return 2**31 - 1
