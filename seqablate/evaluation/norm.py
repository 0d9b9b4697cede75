"""Per-subset BatchNorm statistics of a trained model, estimated from its training slices.

:mod:`seqablate.models.norm_stats` estimates statistics from batches; this module draws
those batches: training slices of the patients who have every sequence of the subset, drawn
with the training sampler's lesion oversampling (so the statistics describe the same slice
mix as the stored ones), put through the presence rule with only the subset kept. Subsets that
the same patients can provide (on a complete cohort: all of them) are estimated from one draw.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from seqablate.config import TrialConfig
from seqablate.models.norm_stats import NormStats, estimate_bn_stats_many, subset_flags, subset_key
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


def eligible_groups(patients: Sequence[Any], sequences: Sequence[str], keys: Sequence[str]) -> tuple[dict[tuple[int, ...], list[str]], list[str]]:
    """Subset keys grouped by the training patients who have all of their sequences.

    Returns ``(groups, skipped)``: ``groups`` maps the indices into ``patients`` of a group's
    eligible patients to its keys (in ``keys`` order, duplicates dropped); ``skipped`` lists
    the keys no patient can provide. On a cohort where every patient has every sequence all
    keys form one group, so all subsets are estimated from the same slices.
    """
    groups: dict[tuple[int, ...], list[str]] = {}
    skipped: list[str] = []
    have = [np.asarray(p.present, dtype=bool) for p in patients]
    for key in dict.fromkeys(keys):
        flags = np.asarray(subset_flags(key, sequences), dtype=bool)
        idx = tuple(i for i, h in enumerate(have) if bool(np.all(h[flags])))
        if idx:
            groups.setdefault(idx, []).append(key)
        else:
            skipped.append(key)
    return groups, skipped


def shared_batches(
    patients: Sequence[Any], cfg: TrialConfig, *, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``eval.norm_batches`` batches of ``eval.norm_batch_size`` training slices of
    ``patients`` (non-empty), drawn with the training sampler's lesion oversampling.

    Yields ``(image[B, S, K, H, W], present[B, S])`` as stored (the presence rule is applied
    per condition by :func:`~seqablate.models.norm_stats.estimate_bn_stats_many`): the
    training patches under ``data.geometry: spacing``, whole slices under ``resize``.
    Reproducible from ``seed`` and the patients' ids.
    """
    from seqablate.data.dataset import SliceDataset, slice_weights

    ids = "\n".join(str(p.patient_id) for p in patients)
    state = np.random.SeedSequence([int(seed), zlib.crc32(ids.encode())]).generate_state(2)
    patch = cfg.data.image_size if cfg.data.geometry == "spacing" else None
    ds = SliceDataset(list(patients), slices=cfg.data.slices, patch=patch, seed=int(state[1]))
    weights = torch.as_tensor(slice_weights(ds, oversample=cfg.data.oversample))
    gen = torch.Generator().manual_seed(int(state[0]))
    for _ in range(cfg.eval.norm_batches):
        idx = torch.multinomial(weights, cfg.eval.norm_batch_size, replacement=True, generator=gen).tolist()
        items = [ds[i] for i in idx]
        yield torch.stack([it["image"] for it in items]), torch.stack([it["present"] for it in items])


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

    The subsets that the same patients can provide share one draw of training slices (one
    read of the cache, one stem convolution per batch: :func:`eligible_groups`,
    :func:`~seqablate.models.norm_stats.estimate_bn_stats_many`). Returns ``(stats,
    skipped)``: ``skipped`` lists the keys no training patient could provide (their patients
    fall back to the stored statistics).
    """
    seqs = tuple(cfg.data.sequences)
    groups, skipped = eligible_groups(patients, seqs, keys)
    stats: NormStats = {}
    for idx, group in groups.items():
        conditions = {key: subset_flags(key, seqs) for key in group}
        batches = shared_batches([patients[i] for i in idx], cfg, seed=seed)
        stats.update(estimate_bn_stats_many(model, batches, conditions, device=device))
    return {key: stats[key] for key in dict.fromkeys(keys) if key in stats}, skipped


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
