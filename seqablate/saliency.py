"""Saliency aggregates (paper section IV-E, eqs. 4-5).

The saliency image is dL/dx, the loss's gradient with respect to the input image
x[B, S, K, H, W]. Its *aggregate* (eq. 5a) is sum |dL/dx|, reported here per pulse sequence
(sum over batch, slices and pixels: float64[S]) and per 2.5D slice offset (sum over batch,
sequences and pixels: float64[K]). The *cumulative* aggregate (eq. 5b) sums the aggregate
over training iterations; :class:`SaliencyAccumulator` keeps it and the per-step values.

Sequences absent from a sample (``present`` False) contribute zero: they are not inputs of
that sample, whatever a model does with their zero-filled channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from seqablate.metric_names import saliency_key

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SaliencyStep:
    """Saliency aggregates of one batch.

    Attributes:
        per_sequence: float64[S], sum |dL/dx| over batch, slices, rows and columns.
        per_slice: float64[K], sum |dL/dx| over batch, sequences, rows and columns; index k
            is slice offset k - (K - 1) // 2 (-2..2 for K = 5).
        loss: the loss value of the batch.
    """

    per_sequence: np.ndarray
    per_slice: np.ndarray
    loss: float


def reduce_saliency(grad: torch.Tensor, present: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Reduce an input gradient [B, S, K, H, W] to (per_sequence float64[S], per_slice float64[K]).

    Absent sequences (``present[b, s]`` zero/False) are zeroed first. Use this directly when
    the training step already has the input gradient (``image.requires_grad_()`` before the
    forward, ``image.grad`` after ``backward``): no extra forward/backward.
    """
    if grad.ndim != 5:
        raise ValueError(f"input gradient must be [B, S, K, H, W], got shape {tuple(grad.shape)}")
    if tuple(present.shape) != tuple(grad.shape[:2]):
        raise ValueError(
            f"present must be [B, S] = {tuple(grad.shape[:2])}, got {tuple(present.shape)}"
        )
    keep = (present != 0).to(grad.dtype)[:, :, None, None, None]
    a = (grad.detach() * keep).abs().to(torch.float64)
    per_sequence = a.sum(dim=(0, 2, 3, 4)).cpu().numpy()
    per_slice = a.sum(dim=(0, 1, 3, 4)).cpu().numpy()
    return per_sequence, per_slice


def saliency_aggregates(
    model: nn.Module,
    image: torch.Tensor,
    present: torch.Tensor,
    mask: torch.Tensor,
    loss_fn: LossFn,
) -> SaliencyStep:
    """Saliency aggregates of one batch (eq. 5a) from a fresh forward and backward pass.

    Args:
        model: ``model(image[B, S, K, H, W], present[B, S]) -> logits[B, 1, H, W]``.
        image: float[B, S, K, H, W] model input (absent sequences zero-filled).
        present: bool (or 0/1 float)[B, S] which sequences each sample has.
        mask: target [B, H, W] or [B, 1, H, W]; passed to ``loss_fn`` as float [B, 1, H, W].
        loss_fn: ``loss_fn(logits, target) -> scalar tensor``.

    The gradient is taken with ``torch.autograd.grad`` with respect to the input only, so
    no ``.grad`` is left on the model's parameters; the model's train/eval mode is left as
    it is, and its buffers (e.g. BatchNorm running statistics, which a forward in train mode
    updates) are restored afterwards, so the call has no effect on training.
    """
    if image.ndim != 5:
        raise ValueError(f"image must be [B, S, K, H, W], got shape {tuple(image.shape)}")
    b, _, _, h, w = image.shape
    if mask.ndim == 3:
        mask = mask[:, None]
    if tuple(mask.shape) != (b, 1, h, w):
        raise ValueError(f"mask must be [B, H, W] or [B, 1, H, W] = {(b, 1, h, w)}, got {tuple(mask.shape)}")
    saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    x = image.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = model(x, present)
            loss = loss_fn(logits, mask.to(logits.dtype))
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            (grad,) = torch.autograd.grad(loss, x)
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])
    per_sequence, per_slice = reduce_saliency(grad, present)
    return SaliencyStep(per_sequence, per_slice, float(loss.detach()))


def slice_offsets(slices: int) -> list[int]:
    """Offsets of the K slices of a 2.5D stack relative to its centre: [-2, ..., 2] for 5."""
    return [k - (slices - 1) // 2 for k in range(slices)]


class SaliencyAccumulator:
    """Cumulative saliency aggregates over training iterations (eq. 5b) and their history.

    Args:
        sequences: the sequence names, in the model's S order.
        slices: K, the 2.5D depth.

    ``update(step_result, step)`` adds one batch's aggregates; ``cumulative_sequence`` /
    ``cumulative_slice`` are the running sums (float64[S] / [K]); ``history`` is a list of
    ``(step, per_sequence, per_slice)``. Sampling every N steps gives the cumulative sum over
    the sampled steps (multiply by N for an estimate of the every-step sum).
    """

    def __init__(self, sequences: Sequence[str], slices: int) -> None:
        self.sequences = tuple(str(s) for s in sequences)
        if not self.sequences:
            raise ValueError("SaliencyAccumulator needs at least one sequence")
        if len(set(self.sequences)) != len(self.sequences):
            raise ValueError(f"duplicate sequence names: {list(self.sequences)}")
        if int(slices) < 1:
            raise ValueError(f"slices must be >= 1, got {slices!r}")
        self.slices = int(slices)
        self.offsets = slice_offsets(self.slices)
        self.cumulative_sequence = np.zeros(len(self.sequences), dtype=np.float64)
        self.cumulative_slice = np.zeros(self.slices, dtype=np.float64)
        self.history: list[tuple[int, np.ndarray, np.ndarray]] = []

    def update(self, step_result: SaliencyStep, step: int) -> None:
        """Add one batch's aggregates, recorded at training iteration ``step``."""
        seq = np.asarray(step_result.per_sequence, dtype=np.float64)
        sl = np.asarray(step_result.per_slice, dtype=np.float64)
        if seq.shape != (len(self.sequences),) or sl.shape != (self.slices,):
            raise ValueError(
                f"saliency step has per_sequence {seq.shape} / per_slice {sl.shape}, expected "
                f"({len(self.sequences)},) for {list(self.sequences)} / ({self.slices},)"
            )
        if self.history and step <= self.history[-1][0]:
            raise ValueError(f"saliency step {step} is not after the last one ({self.history[-1][0]})")
        self.cumulative_sequence += seq
        self.cumulative_slice += sl
        self.history.append((int(step), seq.copy(), sl.copy()))

    def to_metrics(self) -> dict[str, float]:
        """Latest and cumulative aggregates as flat metric names (:mod:`seqablate.metric_names`).

        Keys: ``saliency.sequence.<name>``, ``saliency.slice.<offset>`` (latest step; absent
        before the first update), ``saliency.cumulative.sequence.<name>``,
        ``saliency.cumulative.slice.<offset>``. Offsets are written -2, -1, 0, 1, 2 (MLflow
        metric names do not allow '+').
        """
        out: dict[str, float] = {}
        if self.history:
            _, seq, sl = self.history[-1]
            out.update({saliency_key("sequence", n): float(v) for n, v in zip(self.sequences, seq, strict=True)})
            out.update({saliency_key("slice", o): float(v) for o, v in zip(self.offsets, sl, strict=True)})
        out.update({saliency_key("sequence", n, cumulative=True): float(v)
                    for n, v in zip(self.sequences, self.cumulative_sequence, strict=True)})
        out.update({saliency_key("slice", o, cumulative=True): float(v)
                    for o, v in zip(self.offsets, self.cumulative_slice, strict=True)})
        return out

    def state_dict(self) -> dict:
        """JSON-friendly state, for checkpoints (restore with :meth:`load_state_dict`)."""
        return {
            "sequences": list(self.sequences),
            "slices": self.slices,
            "history": [(s, a.tolist(), b.tolist()) for s, a, b in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (sequences and slices must match)."""
        if list(state.get("sequences", [])) != list(self.sequences) or state.get("slices") != self.slices:
            raise ValueError(
                f"saliency state is for sequences {state.get('sequences')} / slices "
                f"{state.get('slices')}, not {list(self.sequences)} / {self.slices}"
            )
        self.__init__(self.sequences, self.slices)  # reset, then replay the history
        for step, seq, sl in state["history"]:
            self.update(SaliencyStep(np.asarray(seq), np.asarray(sl), float("nan")), step)
