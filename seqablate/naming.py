"""Readable run names, stable trial keys and seed expansion for override dicts.

An *override dict* maps dotted config keys to values (``{'model.integration': 'mid',
'train.seed': 1}``) and is applied to a study's base config by
:func:`seqablate.config.with_overrides`. These helpers only look at the overrides, so names
and keys say what differs *between the trials of one study*, which is what people compare in
the MLflow UI.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: The L2 tie strength the paper grids use for 'l2_tied' (the paper does not report its
#: lambda); run names omit lambda when it equals this, so grid names stay short.
DEFAULT_TIE_LAMBDA = 1e-3

#: Keys rendered by dedicated rules in :func:`run_name` (everything else gets a generic part).
_NAMED = {
    "model.integration",
    "model.integration_point",
    "model.fusion",
    "model.sharing",
    "train.tie_lambda",
    "train.dropout_p",
    "train.dropout_mode",
    "train.lr",
    "train.seed",
}


def _float(x: Any) -> float | None:
    """``x`` as a float, or None when it is not a number (a bad space point is named by the
    space's validation, which needs its run name first)."""
    if isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _num(x: Any) -> str:
    """Compact number: 0.25 -> '0.25', 0.00031 -> '3.1e-4', 1.0 -> '1'; a value that is not a
    number is shown as it is ('fast')."""
    if (f := _float(x)) is None:
        return str(x)
    x = f
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) < 1e6:
        return str(int(x))
    if 1e-2 <= abs(x) < 1e4:
        return f"{x:.4g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return _num(v)
    if isinstance(v, list | tuple):
        return "+".join(_value(x) for x in v)
    return str(v)


def run_name(overrides: Mapping[str, Any]) -> str:
    """A readable run name from an override dict, naming only what the overrides set.

    Examples: ``input-seed0``, ``input-p0.25-seed1``, ``mid@layer4-l2_tied-p0.25-seed1``,
    ``mid@layer4-shared-subtract-seed0``, ``end-independent-p0.4-uniform-seed2``.
    Integration and its point come first, then sharing (mid/end), fusion (when not concat),
    lambda (when not the paper-grid default), dropout p (when > 0) and its mode (when not
    bernoulli), learning rate, then any other overridden key as ``<leaf><value>``, then seed.
    An empty override dict gives ``'base'``.
    """
    o = dict(overrides)
    parts: list[str] = []
    integration = o.get("model.integration")
    if integration == "mid":
        parts.append(f"mid@{o.get('model.integration_point', 'layer4')}")
    elif integration is not None:
        parts.append(str(integration))
    sharing = o.get("model.sharing")
    if sharing is not None and integration != "input":
        parts.append(str(sharing))
    fusion = o.get("model.fusion")
    if fusion is not None and fusion != "concat" and integration != "input":
        parts.append(str(fusion))
    lam = o.get("train.tie_lambda")
    if lam is not None and sharing == "l2_tied" and not math.isclose(_float(lam) or math.nan, DEFAULT_TIE_LAMBDA):
        parts.append(f"lam{_num(lam)}")
    p = o.get("train.dropout_p")
    if p is not None and (_float(p) is None or _float(p) > 0):  # type: ignore[operator]
        parts.append(f"p{_num(p)}")
        mode = o.get("train.dropout_mode")
        if mode is not None and mode != "bernoulli":
            parts.append(str(mode))
    if "train.lr" in o:
        parts.append(f"lr{_num(o['train.lr'])}")
    for key in sorted(k for k in o if k not in _NAMED):
        parts.append(f"{key.rsplit('.', 1)[-1]}{_value(o[key])}")
    if "train.seed" in o:
        parts.append(f"seed{o['train.seed']}")
    # The name becomes a folder name (Tune's trial folder) and the run's config name, which
    # must be path-safe: a path-valued override ('data.cache_dir') keeps no slash.
    return re.sub(r"[/\\]", "_", "-".join(parts)).strip() or "base"


def _canonical(v: Any) -> Any:
    """JSON-stable form: floats rounded to 12 significant digits so 0.1+0.2 == 0.3 keys agree."""
    if isinstance(v, bool) or v is None or isinstance(v, str | int):
        return v
    if isinstance(v, float):
        return float(f"{v:.12g}")
    if isinstance(v, Mapping):
        return {str(k): _canonical(x) for k, x in sorted(v.items())}
    if isinstance(v, list | tuple):
        return [_canonical(x) for x in v]
    return str(v)


def trial_key(overrides: Mapping[str, Any]) -> str:
    """A stable 16-hex-digit key of an override dict (order of keys does not matter).

    Used as the ``seqablate.trial_key`` tag so ``study resume`` finds a trial's existing MLflow
    run instead of creating a duplicate. Equal overrides give equal keys across processes and
    Python versions (sha256 of canonical JSON, not ``hash()``).
    """
    payload = json.dumps(_canonical(dict(overrides)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def expand_seeds(configs: Iterable[Mapping[str, Any]], seeds: int) -> list[dict[str, Any]]:
    """Every override dict repeated with ``train.seed`` = 0 .. seeds-1 (config-major order).

    ``seeds`` must be >= 1. A config that already sets ``train.seed`` gets it replaced; the
    result contains no duplicates when the inputs contain none.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    return [{**dict(c), "train.seed": s} for c in configs for s in range(seeds)]
