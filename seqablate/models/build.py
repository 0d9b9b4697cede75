"""``build_model``: a validated config (or plain mapping) in, a ready ``SeqSegModel`` out.

Valid combinations (:data:`seqablate.vocabulary.MODEL_RULES`; everything else fails HERE, at
build time, with a :class:`ConfigError` naming the offending key and its valid choices):

==============  =====================  ===========================  ===========================
integration     integration_point      fusion                       sharing
==============  =====================  ===========================  ===========================
input           (default 'layer4')     (default 'concat')           (default 'independent')
mid             stem..layer4           concat | mean | subtract*    independent | shared | l2_tied
end             (default 'layer4')     (default 'concat')           independent | shared | l2_tied
==============  =====================  ===========================  ===========================

*``subtract`` needs ``sharing='shared'`` and a post/pre-contrast pair in ``sequences``
(``t1_fse_post`` + ``t1_fse_pre``, or ``t1_post`` + ``t1_pre``).

A key that does not apply to the chosen integration must keep its default: there is no
"input-level with shared weights" network, and accepting one would log differently-labelled
runs that train the same network. Search spaces should therefore set ``sharing`` / ``fusion``
/ ``integration_point`` only for the integrations that use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from seqablate import vocabulary as V
from seqablate.config import ConfigError, ModelConfig, parse
from seqablate.models.backbones import BACKBONES
from seqablate.models.integration import INTEGRATIONS, ModelSpec, SeqSegModel


def resolve_spec(config: ModelConfig | Mapping[str, Any]) -> ModelSpec:
    """Validate ``config`` and the cross-key rules; return the resolved :class:`ModelSpec`.

    Raises :class:`ConfigError` (a ``ValueError``) naming the key, the value and the valid
    choices for: unknown keys/values, unset ``sequences``/``slices``, and a break of one of
    :data:`seqablate.vocabulary.MODEL_RULES` (a key that does not apply to the integration,
    ``subtract`` without shared weights or without a contrast pair).
    """
    cfg = parse(ModelConfig, config, source="model")
    if cfg.sequences is None:
        raise ConfigError(
            "model.sequences: not set; build_model needs the study's ordered sequence list "
            "(a TrialConfig fills it from data.sequences)"
        )
    if cfg.slices is None:
        raise ConfigError(
            "model.slices: not set; build_model needs K, the 2.5D depth "
            "(a TrialConfig fills it from data.slices)"
        )
    INTEGRATIONS.get(cfg.integration)  # an integration without an implementation -> the choices
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown value {cfg.backbone!r}; valid choices: {list(BACKBONES)}")
    broken = [r for r in V.MODEL_RULES if not r.ok(cfg, None)]
    if broken:
        raise ConfigError(broken[0].message(cfg))
    return ModelSpec(
        integration=cfg.integration,
        integration_point=cfg.integration_point,
        fusion=cfg.fusion,
        sharing=cfg.sharing,
        backbone=cfg.backbone,
        sequences=tuple(cfg.sequences),
        slices=int(cfg.slices),
        norm=cfg.norm,
    )


def build_model(config: ModelConfig | Mapping[str, Any], *, seed: int | None = None) -> SeqSegModel:
    """Build the network described by ``config`` (randomly initialised, nothing downloaded).

    ``config``: a :class:`~seqablate.config.ModelConfig` or a plain mapping with the keys
    ``integration``, ``integration_point``, ``fusion``, ``sharing``, ``backbone``,
    ``sequences`` (list of names) and ``slices`` (K); omitted keys take ModelConfig defaults.
    ``seed``: if given, initialisation uses a private generator state seeded with it (the
    global RNG is restored afterwards), so equal seeds give equal weights.

    Returns a :class:`SeqSegModel`: ``forward(image[B, S, K, H, W], present[B, S]) ->
    logits[B, 1, H, W]``, ``tie_penalty()``, ``.sequences``.
    """
    spec = resolve_spec(config)
    builder = INTEGRATIONS.get(spec.integration)
    if seed is None:
        return builder(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(spec)
