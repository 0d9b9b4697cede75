"""Per-subset BatchNorm statistics of a trained model, estimated from its training slices.

:mod:`seqablate.models.norm_stats` estimates statistics from batches; this module draws
those batches: training slices of the patients who have every sequence of the subset, drawn
with the training sampler's lesion oversampling (so the statistics describe the same slice
mix as the stored ones), put through the presence rule with only the subset kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from seqablate.config import TrialConfig
from seqablate.models.norm_stats import NormStats, estimate_bn_stats, subset_flags, subset_key
from seqablate.sequences import subsets

#: Studies with at most this many sequences get statistics for every subset (2^S - 1).
ALL_SUBSETS_MAX_S = 5


def norm_subsets(cfg: TrialConfig) -> list[str]:
    """Keys of the subsets a model of ``cfg`` may meet: all 2^S - 1 for S <= 5, else the full
    protocol and each sequence censored alone."""
    seqs = tuple(cfg.data.sequences)
    if len(seqs) <= ALL_SUBSETS_MAX_S:
        return [subset_key([s in sub for s in seqs], seqs) for sub in subsets(seqs)]
    keys = [subset_key([True] * len(seqs), seqs)]
    keys += [subset_key([t != s for t in seqs], seqs) for s in seqs]
    return keys


def subset_batches(
    patients: Sequence[Any], cfg: TrialConfig, key: str, *, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]] | None:
    """``eval.norm_batches`` batches of ``eval.norm_batch_size`` training slices of subset
    ``key``, or None when no training patient has all of its sequences.

    Yields ``(image[B, S, K, H, W], present[B, S])`` after the presence rule (only the subset
    kept, scaled by S / |subset|). Reproducible from ``seed`` and the key.
    """
    from seqablate.data.dataset import SliceDataset, slice_weights
    from seqablate.data.dropout import apply_presence

    seqs = tuple(cfg.data.sequences)
    flags = np.asarray(subset_flags(key, seqs), dtype=bool)
    eligible = [p for p in patients if bool(np.all(np.asarray(p.present, dtype=bool)[flags]))]
    if not eligible:
        return None
    state = np.random.SeedSequence([seed, *flags.astype(int)]).generate_state(2)
    patch = cfg.data.image_size if cfg.data.geometry == "spacing" else None  # the training patches
    ds = SliceDataset(eligible, slices=cfg.data.slices, patch=patch, seed=int(state[1]))
    weights = torch.as_tensor(slice_weights(ds, oversample=cfg.data.oversample))
    gen = torch.Generator().manual_seed(int(state[0]))
    keep = torch.as_tensor(flags)

    def draw() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(cfg.eval.norm_batches):
            idx = torch.multinomial(weights, cfg.eval.norm_batch_size, replacement=True, generator=gen).tolist()
            items = [ds[i] for i in idx]
            image = torch.stack([it["image"] for it in items])
            present = torch.stack([it["present"] for it in items])
            yield apply_presence(image, present, keep.expand_as(present))

    return draw()


def estimate_norm_stats(
    model: torch.nn.Module,
    patients: Sequence[Any],
    cfg: TrialConfig,
    keys: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[NormStats, list[str]]:
    """Statistics of every subset in ``keys`` from training ``patients``; ``model`` untouched.

    Returns ``(stats, skipped)``: ``skipped`` lists the keys no training patient could
    provide (their patients fall back to the stored statistics).
    """
    stats: NormStats = {}
    skipped: list[str] = []
    for key in dict.fromkeys(keys):
        batches = subset_batches(patients, cfg, key, seed=seed)
        if batches is None:
            skipped.append(key)
            continue
        stats[key] = estimate_bn_stats(model, batches, device=device)
    return stats, skipped


def patient_subsets(patients: Sequence[Any], sequences: Sequence[str], censor: Sequence[str] = ()) -> list[str]:
    """The distinct subset keys ``patients`` present under ``censor`` (patients left with no
    sequence are skipped: they cannot be predicted)."""
    keep = np.array([s not in set(censor) for s in sequences])
    keys = []
    for p in patients:
        actual = np.asarray(p.present, dtype=bool) & keep
        if actual.any():
            keys.append(subset_key(actual.tolist(), sequences))
    return list(dict.fromkeys(keys))
