"""DeepLabv3 (torchvision) with every pulse-sequence integration point, fusion and sharing mode.

Public API::

    model = build_model(cfg.model)                 # ModelConfig or plain mapping
    logits = model(image[B, S, K, H, W], present[B, S])   # -> [B, 1, H, W]
    loss = bce(logits, mask) + tie_lambda * model.tie_penalty()
    fast = inference_model(model)                  # eval copy, BatchNorm folded, fast layout
    logits = predict_logits(fast, image, present, batch_size=32)

See ``build.py`` for the valid combinations of integration / fusion / sharing.
"""

from __future__ import annotations

from seqablate.models.backbones import BACKBONES, STAGES
from seqablate.models.build import build_model, resolve_spec
from seqablate.models.fusion import FUSIONS
from seqablate.models.inference import inference_model, native_bf16, predict_logits
from seqablate.models.integration import (
    INTEGRATIONS,
    EndIntegration,
    InputIntegration,
    MidIntegration,
    ModelSpec,
    SeqSegModel,
    mean_probability_logits,
)
from seqablate.models.sharing import SHARING_MODES, Branches

__all__ = [
    "BACKBONES",
    "FUSIONS",
    "INTEGRATIONS",
    "SHARING_MODES",
    "STAGES",
    "Branches",
    "EndIntegration",
    "InputIntegration",
    "MidIntegration",
    "ModelSpec",
    "SeqSegModel",
    "build_model",
    "inference_model",
    "mean_probability_logits",
    "native_bf16",
    "predict_logits",
    "resolve_spec",
]
