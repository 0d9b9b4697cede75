"""3D prediction of one patient: every 2.5D stack batched, stitched, back on the original grid."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import torch


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA when asked; a no-op on CPU (bf16 CPU kernels are slower there)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_cached(
    model: torch.nn.Module,
    patient: object,
    *,
    slices: int,
    censor: Iterable[str] = (),
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> np.ndarray:
    """Probability volume float32[Z, H, W] of a cached patient on the *cache* grid.

    Every axial 2.5D stack (``patient_stacks``) goes through the model in batches of
    ``batch_size``. Sequences in ``censor`` and sequences the patient lacks are zeroed and the
    present ones rescaled by S_total / S_present (``apply_presence``, the same rule as in
    training). Raises ValueError when no sequence is left.
    """
    from seqablate.data.dataset import patient_stacks
    from seqablate.data.dropout import apply_presence

    device = torch.device(device)
    seqs = tuple(patient.sequences)
    censor = set(censor)
    unknown = censor - set(seqs)
    if unknown:
        raise ValueError(f"censor: {sorted(unknown)} not among the model's sequences {list(seqs)}")
    keep = torch.tensor([s not in censor for s in seqs])
    present = torch.as_tensor(np.asarray(patient.present, dtype=bool))
    if not bool((present & keep).any()):
        raise ValueError(
            f"patient {patient.patient_id}: no sequence left to predict from "
            f"(present: {[s for s, p in zip(seqs, present.tolist(), strict=True) if p]}, censored: {sorted(censor)})"
        )
    stacks = patient_stacks(patient, slices)  # float32[Z, S, K, H, W]
    z, h, w = stacks.shape[0], stacks.shape[-2], stacks.shape[-1]
    out = np.empty((z, h, w), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, z, batch_size):
            x = torch.as_tensor(np.ascontiguousarray(stacks[i : i + batch_size])).to(device)
            b = x.shape[0]
            x, p = apply_presence(x, present.expand(b, -1).to(device), keep.expand(b, -1).to(device))
            with _autocast(device, amp):
                logits = model(x, p)  # [b, 1, H, W]
            out[i : i + b] = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
    finally:
        model.train(was_training)
    return out


def predict_volume(
    model: torch.nn.Module,
    patient: object,
    *,
    slices: int,
    censor: Iterable[str] = (),
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> np.ndarray:
    """Probability volume float32[X, Y, Z] on the patient's original (RAS) grid.

    :func:`predict_cached` followed by the data layer's ``to_original_grid`` (linear
    resize of probabilities back to ``patient.orig_shape``).
    """
    from seqablate.data.cache import to_original_grid

    probs = predict_cached(
        model, patient, slices=slices, censor=censor, batch_size=batch_size, device=device, amp=amp
    )
    return to_original_grid(probs, patient)
