"""Segmentation losses: BCE with logits plus an optional soft Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch.

    ``logits``: float[B, 1, H, W]; ``target``: {0, 1} float[B, 1, H, W]. Computed over the batch
    as one volume (not per image) so slices without lesion do not each contribute a Dice of 0
    or 1; ``eps`` smooths the empty case (no lesion, no prediction -> loss ~0).
    """
    probs = torch.sigmoid(logits.float())
    inter = (probs * target).sum()
    return 1.0 - (2.0 * inter + eps) / (probs.sum() + target.sum() + eps)


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 0.0
) -> torch.Tensor:
    """BCE with logits (+ ``dice_weight`` * soft Dice). Shapes as in :func:`soft_dice_loss`."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target)
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice_loss(logits, target)
    return loss
