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
from pathlib import PurePath
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
    "data.cohort",
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


def mapping_text(values: Mapping[str, Any]) -> str:
    """``name=value`` pairs joined by ``,`` in the mapping's order, e.g. ``t1_gre_post=0.4,flair=0.1``.

    The one-string form of a mapping-valued setting (a per-sequence dropout probability, a
    deployment profile): one MLflow param, one table cell. Numbers are written with up to 12
    significant digits (``0.1 + 0.2`` -> ``0.3``), as :func:`trial_key` compares them; an empty
    mapping gives ``""``. Inverse: :func:`parse_mapping_text`.
    """
    parts = []
    for k, v in values.items():
        f = _float(v)
        parts.append(f"{k}={f:.12g}" if f is not None else f"{k}={v}")
    return ",".join(parts)


def parse_mapping_text(text: str) -> dict[str, float]:
    """The mapping of a :func:`mapping_text` string: ``"a=0.4, b=0.1"`` -> ``{"a": 0.4, "b": 0.1}``.

    Spaces around names and values are ignored. Raises ValueError, quoting the text, for a
    part that is not ``NAME=NUMBER``, an empty name, a value that is not a number, or a name
    given twice. Range checks belong to the caller (a probability, a share).
    """
    out: dict[str, float] = {}
    for part in str(text).split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        f = _float(value) if sep and value else None
        if not name or f is None:
            raise ValueError(f"expected NAME=NUMBER pairs separated by ',' (e.g. 't1_gre_post=0.4,flair=0.1'), "
                             f"got {text!r}")
        if name in out:
            raise ValueError(f"{name!r} is given twice in {text!r}")
        out[name] = f
    return out


def _dropout_part(p: Any) -> str | None:
    """The run-name part of a ``train.dropout_p`` override: ``p0.25`` for a number,
    ``p_t1_gre_post=0.4+flair=0.1`` for a per-sequence mapping (entries as given, zeros left
    out), None when dropout is off (0, or a mapping of zeros). A value that is neither (a bad
    space point, named before it is refused) is shown as it is."""
    if p is None:
        return None
    if isinstance(p, str) and "=" in p:
        try:
            p = parse_mapping_text(p)
        except ValueError:
            return f"p{p}"
    if isinstance(p, Mapping):
        on = [(str(k), v) for k, v in p.items() if _float(v) is None or _float(v) != 0]
        return "p_" + "+".join(f"{k}={_num(v)}" for k, v in on) if on else None
    f = _float(p)
    if f is not None and f <= 0:
        return None
    return f"p{_num(p)}"


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
    ``mid@layer4-shared-subtract-seed0``, ``end-independent-p0.4-uniform-seed2``,
    ``input-p_t1_gre_post=0.4+flair=0.1-seed0`` (per-sequence dropout probabilities).
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
    drop = _dropout_part(o.get("train.dropout_p"))
    if drop is not None:
        parts.append(drop)
        mode = o.get("train.dropout_mode")
        if mode is not None and mode != "bernoulli":
            parts.append(str(mode))
    if "train.lr" in o:
        parts.append(f"lr{_num(o['train.lr'])}")
    for key in sorted(k for k in o if k not in _NAMED):
        parts.append(f"{key.rsplit('.', 1)[-1]}{_value(o[key])}")
    if o.get("data.cohort"):  # a grid crossed with cohorts: the cohort's folder name
        parts.append(f"on_{PurePath(str(o['data.cohort'])).name}")
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

    ``seeds`` must be >= 1. A config that already sets ``train.seed`` (an integer) starts
    there: seeds ``s .. s+seeds-1``, so a grid can name fresh seeds (e.g. to retrain a search's
    choice with seeds the search never saw). Configs that differ only in ``train.seed`` can
    thus overlap when ``seeds`` > 1; the study's space validation refuses the duplicates.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    out = []
    for c in configs:
        first = c.get("train.seed", 0)
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ValueError(f"train.seed must be an integer >= 0, got {first!r} in {dict(c)}")
        out += [{**dict(c), "train.seed": first + s} for s in range(seeds)]
    return out
