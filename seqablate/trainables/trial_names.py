"""What a Tune trial's config says about its configuration: its overrides and its name.

A grid's Tune config holds the point as ``{"overrides": {...}}``; a search's holds what Optuna
sampled and the define-by-run function returned (``{"train.lr": 0.003, ...}``), helper
parameters included (``dropout_p_flair``, folded by the function into ``train.dropout_p``).
"""

from __future__ import annotations

from typing import Any

from seqablate.naming import run_name
from seqablate.search_spaces.registry import BUILTIN_HELPERS, search_overrides


def trial_overrides(config: dict[str, Any], helpers: frozenset[str] = BUILTIN_HELPERS) -> dict[str, Any]:
    """The override dict of a trial's Tune config (``{}`` for a config without any).

    A search's config loses only its ``helpers`` (the space's registered helper parameters,
    :func:`seqablate.search_spaces.helper_params`); any other key stays, so a misspelt
    parameter (``lr``) is refused as an unknown field when the trial applies its overrides.
    """
    if "overrides" in config:
        return dict(config["overrides"])
    return search_overrides(config, helpers)


def config_name(config: dict[str, Any], fallback: str) -> str:
    """The run name of a trial's config (``mid@layer4-l2_tied-p0.25-seed1``), or ``fallback``
    when it has no overrides yet (a search's trial before sampling)."""
    try:
        return run_name(trial_overrides(config))
    except Exception:  # noqa: BLE001 - an unsampled or foreign config names nothing
        return fallback
