"""Sequence ("integration-level") dropout and inference-time censoring: ONE presence rule.

The rule (paper IV-D): a sequence is either present (all its K slices) or zeros; present
sequences are scaled by S_total / S_present, where S_present counts what is left after
sequences missing on disk AND sequences dropped/censored are removed. It is applied

- in training by :class:`SequenceDropout` (per sample, or ``draw_batch`` + ``apply_presence``);
- at inference by :func:`censor` (per sample) or :func:`keep_vector` + :func:`apply_presence`
  (per batch), with the same :func:`apply_presence` / :func:`presence_weights` code,

so a 3-of-4-sequence patient is scaled 4/3 whether the fourth was dropped, censored or never
acquired. With p = 0.25 and S = 4 the number dropped is 0/1/2/3/4 with 32/42/21/4.7/0 %
(the 0.4 % "all four" case is moved to "none").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from seqablate import vocabulary as V
from seqablate.sequences import canonical

MODES = V.DROPOUT_MODES


def presence_weights(present: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Per-sequence multipliers float32[..., S]: S / S_present where present, else 0.

    A row with nothing present gets all zeros (there is nothing to scale).
    """
    if isinstance(present, torch.Tensor):
        p = present.to(torch.bool)
        n = p.sum(dim=-1, keepdim=True)
        scale = p.shape[-1] / n.clamp(min=1).to(torch.float32)
        return p.to(torch.float32) * scale
    p = np.asarray(present, dtype=bool)
    n = p.sum(axis=-1, keepdims=True)
    return (p * (p.shape[-1] / np.maximum(n, 1))).astype(np.float32)


def apply_presence(
    image: torch.Tensor, present: torch.Tensor, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the sequences not kept and scale the rest: the one presence rule, batched.

    ``image``: float[B, S, K, H, W]; ``present``: bool[B, S] (on disk); ``keep``: bool[B, S]
    or [S] (not dropped / not censored), None = keep all. Returns ``(image', present')``
    with ``present' = present & keep`` and ``image' = image * present' * S / sum(present')``.
    Works on any device; dtype of ``image`` is kept.
    """
    if image.dim() != 5 or present.dim() != 2 or present.shape != image.shape[:2]:
        raise ValueError(f"expected image [B, S, K, H, W] and present [B, S], got {tuple(image.shape)} and {tuple(present.shape)}")
    new_present = present.to(torch.bool)
    if keep is not None:
        new_present = new_present & keep.to(device=present.device, dtype=torch.bool)
    w = presence_weights(new_present).to(device=image.device, dtype=image.dtype)
    return image * w[:, :, None, None, None], new_present


def _apply_sample(sample: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """New sample dict with ``image`` [S, K, H, W] and ``present`` [S] after the rule."""
    image, present = sample["image"], sample["present"]
    out = dict(sample)
    if isinstance(image, torch.Tensor):
        new_present = torch.as_tensor(np.asarray(present, dtype=bool) & keep)
        w = presence_weights(new_present).to(image.dtype)
        out["image"] = image * w.to(image.device)[:, None, None, None]
        out["present"] = new_present
    else:
        new_present = np.asarray(present, dtype=bool) & keep
        w = presence_weights(new_present)
        out["image"] = np.asarray(image) * w[:, None, None, None].astype(np.asarray(image).dtype)
        out["present"] = new_present
    return out


class SequenceDropout:
    """Drop whole sequences of a sample at random (training augmentation).

    ``mode="bernoulli"``: each present sequence s is dropped with probability ``p`` (one
    number for every sequence) or ``p[s]`` (one per sequence: a float[S] vector in study
    order, or a mapping ``{sequence: p}`` with ``sequences`` given, unnamed sequences 0);
    if every present sequence would be dropped, none is. So a sequence's drop rate is its p
    times the chance that some other present sequence survives (exactly p when another
    present sequence has p = 0). ``mode="uniform"``: a non-empty subset of the present
    sequences is kept, every subset equally likely (RFNet / mmFormer protocol; ``p`` is unused
    and must be one number). Own ``numpy.random.Generator`` from ``seed`` (never the global
    RNG); all p = 0 draws nothing from it, so it is exactly no dropout. Sequences missing on
    disk are never "kept" and count in S_total for the scaling.
    """

    def __init__(self, p: float | Sequence[float] | Mapping[str, float] = 0.25, mode: str = "bernoulli",
                 seed: int | None = None, *, sequences: Sequence[str] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"dropout mode must be one of {list(MODES)}, got {mode!r}")
        if isinstance(p, Mapping):
            if sequences is None:
                raise ValueError("per-sequence dropout probabilities by name need the study's sequences (sequences=)")
            named = {canonical(k): float(v) for k, v in p.items()}
            unknown = [k for k in p if canonical(k) not in sequences]
            if unknown:
                raise ValueError(f"dropout p names {unknown}, not among the sequences {list(sequences)}")
            p = [named.get(s, 0.0) for s in sequences]
        per = np.atleast_1d(np.asarray(p, dtype=float))
        if per.ndim != 1 or not np.all((per >= 0.0) & (per <= 1.0)):
            raise ValueError(f"dropout p must be in [0, 1] (one number, or one per sequence), got {p}")
        if mode == "uniform" and np.ndim(p) != 0:
            raise ValueError("dropout mode 'uniform' ignores p: give one number, not one per sequence")
        self.p: float | tuple[float, ...] = float(per[0]) if np.ndim(p) == 0 else tuple(float(x) for x in per)
        self._per = per if np.ndim(p) != 0 else None  # float[S], or None for one shared p
        self.mode = mode
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"SequenceDropout(p={self.p}, mode={self.mode!r})"

    def _probabilities(self, idx: np.ndarray, s: int) -> np.ndarray | float:
        """The drop probabilities of the present sequences ``idx`` of an [S] sample."""
        if self._per is None:
            return float(self.p)  # type: ignore[arg-type]
        if len(self._per) != s:
            raise ValueError(f"{len(self._per)} per-sequence dropout probabilities for a sample of {s} sequences")
        return self._per[idx]

    def draw(self, present: np.ndarray | torch.Tensor) -> np.ndarray:
        """keep bool[S] for one sample whose on-disk presence is ``present`` bool[S]."""
        pres = np.asarray(present.cpu() if isinstance(present, torch.Tensor) else present, dtype=bool)
        idx = np.flatnonzero(pres)
        keep = pres.copy()
        if idx.size == 0:
            return keep
        if self.mode == "bernoulli":
            p = self._probabilities(idx, pres.size)
            if not np.any(p):  # nothing can drop: no draw, the stream of p = 0
                return keep
            dropped = self.rng.random(idx.size) < p
            if dropped.all():  # never drop everything: an all-zero input is not a sample
                return keep
            keep[idx[dropped]] = False
        else:
            code = int(self.rng.integers(1, 2**idx.size))  # non-empty subset as a bit mask
            bits = (code >> np.arange(idx.size)) & 1
            keep[idx[bits == 0]] = False
        return keep

    def draw_batch(self, present: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """keep bool[B, S] for a batch (same type and device as ``present``)."""
        pres = np.asarray(present.cpu() if isinstance(present, torch.Tensor) else present, dtype=bool)
        keep = np.stack([self.draw(row) for row in pres]) if len(pres) else pres.copy()
        if isinstance(present, torch.Tensor):
            return torch.from_numpy(keep).to(present.device)
        return keep

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """A new sample with dropped sequences zeroed, present ones scaled, ``present`` updated."""
        return _apply_sample(sample, self.draw(sample["present"]))


def keep_vector(names: Iterable[str], sequences: Sequence[str]) -> np.ndarray:
    """bool[S]: False for the censored ``names`` (canonical names or aliases), True otherwise.

    Raises ValueError for a name that is not one of ``sequences``.
    """
    seqs = tuple(sequences)
    drop = set()
    for n in names:
        c = canonical(n)
        if c not in seqs:
            raise ValueError(f"cannot censor {n!r}: not one of the study's sequences {list(seqs)}")
        drop.add(c)
    return np.array([s not in drop for s in seqs], dtype=bool)


def censor(sample: dict[str, Any], names: Iterable[str], sequences: Sequence[str]) -> dict[str, Any]:
    """Inference helper: censor ``names`` in ``sample`` and rescale with the training rule.

    ``censor(sample, [], sequences)`` only applies the S_total / S_present scaling of
    sequences missing on disk. Raises ValueError if nothing would remain present.
    """
    names = list(names)
    keep = keep_vector(names, sequences)
    present = np.asarray(
        sample["present"].cpu() if isinstance(sample["present"], torch.Tensor) else sample["present"], dtype=bool
    )
    if not (present & keep).any():
        raise ValueError(
            f"censoring {names} leaves patient {sample.get('patient', '?')} with no sequence "
            f"(present on disk: {[s for s, p in zip(sequences, present, strict=True) if p]})"
        )
    return _apply_sample(sample, keep)
