"""Every valid integration x fusion x sharing combination on the compact backbone (64 x 64).

One build and one forward/backward per combination, on a batch in which ``flair`` is absent
from every sample and ``t1_fse_post`` is present in one sample only, checking: output shape,
finite loss, gradients reach every parameter that present sequences use, absent branches and
absent input entries receive no gradient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqablate.models import build_model

SEQS = ["t1_fse_pre", "t1_fse_post", "flair"]  # includes the subtract pair
K = 3
PRESENT = torch.tensor([[True, True, False], [True, False, False]])  # flair absent everywhere

COMBOS = (
    [("input", "layer4", "concat", "independent")]
    + [("mid", "layer4", f, s) for f in ("concat", "mean") for s in ("independent", "shared", "l2_tied")]
    + [("mid", "layer4", "subtract", "shared")]
    + [("end", "layer4", "concat", s) for s in ("independent", "shared", "l2_tied")]
    # Earlier integration points (the platform's generalisation), one fusion/sharing each.
    + [("mid", p, "concat", "independent") for p in ("stem", "layer1", "layer2", "layer3")]
    + [("mid", "layer1", "subtract", "shared"), ("mid", "layer2", "mean", "l2_tied")]
)


def _cfg(integration: str, point: str, fusion: str, sharing: str) -> dict:
    return {
        "integration": integration,
        "integration_point": point,
        "fusion": fusion,
        "sharing": sharing,
        "backbone": "compact",
        "sequences": SEQS,
        "slices": K,
    }


# A few seconds each on a busy 2-core box: a representative subset runs by default (every
# integration, every fusion, every sharing mode, an early and a late integration point);
# the rest of the grid is marked slow (`pytest -m slow`).
FAST = {
    ("input", "layer4", "concat", "independent"),
    ("mid", "layer4", "mean", "shared"),
    ("mid", "layer4", "subtract", "shared"),
    ("mid", "layer2", "mean", "l2_tied"),
    ("end", "layer4", "concat", "l2_tied"),
}
PARAMS = [pytest.param(*c, marks=() if c in FAST else pytest.mark.slow, id="-".join(c)) for c in COMBOS]


@pytest.mark.parametrize(("integration", "point", "fusion", "sharing"), PARAMS)
def test_combination_trains_and_masks_absent(integration: str, point: str, fusion: str, sharing: str) -> None:
    model = build_model(_cfg(integration, point, fusion, sharing), seed=0).train()
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(2, len(SEQS), K, 64, 64, generator=gen).requires_grad_(True)
    mask = (torch.rand(2, 1, 64, 64, generator=gen) > 0.9).float()

    logits = model(image, PRESENT)
    assert logits.shape == (2, 1, 64, 64)
    loss = F.binary_cross_entropy_with_logits(logits, mask)
    assert torch.isfinite(loss)
    loss.backward()

    # Input gradient: exactly zero where a sequence is absent, non-zero where present.
    per_entry = image.grad.abs().sum(dim=(2, 3, 4))  # [B, S]
    assert torch.all(per_entry[~PRESENT] == 0)
    assert torch.all(per_entry[PRESENT] > 0)

    branches = getattr(model, "branches", None)
    absent_params: set[int] = set()
    if branches is not None and sharing != "shared":
        absent_params = {id(p) for p in branches.nets["flair"].parameters()}
        assert all(p.grad is None for p in branches.nets["flair"].parameters())
    for name, p in model.named_parameters():
        if id(p) in absent_params:
            continue
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    assert float(model.tie_penalty().detach()) == 0.0  # untrained: l2_tied branches are identical
    assert model.sequences == tuple(SEQS)
