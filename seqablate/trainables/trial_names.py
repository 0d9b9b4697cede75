"""What a Tune trial's config says about its configuration: its overrides and its name.

A grid's Tune config holds the point as ``{"overrides": {...}}``; a search's holds the dotted
keys Optuna sampled (``{"train.lr": 0.003, ...}``) beside Tune's own entries.
"""

from __future__ import annotations

from typing import Any

from seqablate.naming import run_name


def trial_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """The override dict of a trial's Tune config (``{}`` for a config without any)."""
    if "overrides" in config:
        return dict(config["overrides"])
    return {k: v for k, v in config.items() if "." in k}


def config_name(config: dict[str, Any], fallback: str) -> str:
    """The run name of a trial's config (``mid@layer4-l2_tied-p0.25-seed1``), or ``fallback``
    when it has no overrides yet (a search's trial before sampling)."""
    try:
        return run_name(trial_overrides(config))
    except Exception:  # noqa: BLE001 - an unsampled or foreign config names nothing
        return fallback
