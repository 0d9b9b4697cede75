"""The model and study vocabulary, declared once: names, defaults, labels and validity rules.

Everything that lists integrations, integration points, fusions, sharing modes, dropout modes,
normalisations, backbones or statistics policies derives it from here: the config's
``Literal`` types (:mod:`seqablate.config`), the search spaces' choices
(:mod:`seqablate.search_spaces`), the model builder's checks (:mod:`seqablate.models.build`)
and the report's row labels (:mod:`seqablate.analysis`). Adding a fusion mode is one entry in
:data:`FUSIONS` plus its implementation (``seqablate.models.fusion``, registered under the
same name; a test checks the two agree).

The validity rules of a model configuration are data too (:data:`MODEL_RULES`): the search
spaces check every point against them and the builder refuses a model that breaks one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from seqablate.sequences import CONTRAST_PAIRS, contrast_pair

#: Where pulse sequences meet (paper IV-A).
INTEGRATIONS: tuple[str, ...] = ("input", "mid", "end")
#: Backbone stages in execution order; a mid-level integration point names the last one run
#: per sequence (the paper's is layer4).
INTEGRATION_POINTS: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
#: How mid-level branch features are combined (paper IV-A, IV-C).
FUSIONS: tuple[str, ...] = ("concat", "mean", "subtract")
#: Weight sharing of parallel branches (paper IV-B; the report orders rows as the paper's
#: Table I does, shared first: ``analysis.tables``).
SHARING_MODES: tuple[str, ...] = ("independent", "shared", "l2_tied")
#: Sequence dropout modes (``train.dropout_mode``).
DROPOUT_MODES: tuple[str, ...] = ("bernoulli", "uniform")
#: Cohort folder layouts the data layer reads (``data.layout``; ``auto`` detects one of them),
#: most specific first (detection breaks ties in this order).
LAYOUTS: tuple[str, ...] = ("nifti", "brainmetshare", "brats-mets", "ucsf-bmsr", "nnunet")
#: Normalisation layers (``model.norm``).
NORMS: tuple[str, ...] = ("batch", "group", "instance")
#: Backbones (``model.backbone``); their widths live in ``seqablate.models.backbones``.
BACKBONES: tuple[str, ...] = ("resnet50", "resnet101", "compact", "tiny")
#: BatchNorm statistics at inference (``eval.norm_stats``): the running statistics of training
#: (the paper's), or statistics re-estimated per sequence subset. ``STORED`` is also the
#: statistics key of a sample that gets the training statistics.
STORED = "stored"
PER_SUBSET = "per_subset"
NORM_STATS: tuple[str, ...] = (STORED, PER_SUBSET)
#: Intensity normalisations (``data.intensity``).
INTENSITIES: tuple[str, ...] = ("minmax_clahe", "minmax", "zscore")
#: Preprocessing geometries (``data.geometry``).
GEOMETRIES: tuple[str, ...] = ("spacing", "resize")
#: What a stored config without ``data.geometry`` (saved before the geometry existed) means.
LEGACY_GEOMETRY = "resize"

#: Defaults of the model keys that only some integrations use.
MODEL_DEFAULTS: dict[str, str] = {"integration_point": "layer4", "fusion": "concat", "sharing": "independent"}
#: Which of those keys each integration uses (the others must keep their defaults, so no two
#: differently-named runs train the same network).
USES: dict[str, frozenset[str]] = {
    "input": frozenset(),
    "mid": frozenset({"integration_point", "fusion", "sharing"}),
    "end": frozenset({"sharing"}),
}

#: Row labels of the paper's tables.
INTEGRATION_LABELS: dict[str, str] = {"input": "Input", "mid": "Mid", "end": "End"}
SHARING_LABELS: dict[str, str] = {"shared": "Fully Shared", "independent": "Fully Ind.", "l2_tied": "L2 Tied"}


@dataclass(frozen=True)
class Rule:
    """One validity rule of a model configuration: ``ok(model, tie_lambda)`` is True when the
    configuration satisfies it; ``message(model)`` says what is wrong and what to change.
    ``tie_lambda`` None means "not known here" (the builder does not see the training
    config): rules about it then pass."""

    name: str  # short identifier, e.g. 'subtract-needs-shared'
    ok: Callable[[Any, float | None], bool]
    message: Callable[[Any], str]


def _get(model: Any, key: str) -> Any:
    return model[key] if isinstance(model, Mapping) else getattr(model, key)


def _keep_default(name: str, key: str) -> Rule:
    users = [i for i, keys in USES.items() if key in keys]

    def ok(m: Any, _t: float | None) -> bool:
        return _get(m, "integration") in users or _get(m, key) == MODEL_DEFAULTS[key]

    def message(m: Any) -> str:
        return (f"model.{key}={_get(m, key)!r} does not apply to integration={_get(m, 'integration')!r}; "
                f"leave it at its default {MODEL_DEFAULTS[key]!r} (model.{key} is used by integration in {users})")

    return Rule(name, ok, message)


#: The rules every model configuration must satisfy (paper, arXiv 1912.08775), in report order.
MODEL_RULES: tuple[Rule, ...] = (
    _keep_default("input-no-sharing", "sharing"),
    _keep_default("point-mid-only", "integration_point"),
    _keep_default("fusion-mid-only", "fusion"),
    Rule("subtract-needs-shared",
         lambda m, _t: _get(m, "fusion") != "subtract" or _get(m, "sharing") == "shared",
         lambda m: (f"model.sharing={_get(m, 'sharing')!r} cannot be used with fusion='subtract': subtracting "
                    "features is meaningful only if both branches compute the same features; valid "
                    "choices: ['shared']")),
    Rule("subtract-needs-pair",
         lambda m, _t: _get(m, "fusion") != "subtract" or contrast_pair(_get(m, "sequences") or ()) is not None,
         lambda m: (f"model.fusion='subtract' needs a post/pre-contrast pair in model.sequences "
                    f"{list(_get(m, 'sequences') or [])}; valid pairs (post, pre): {list(CONTRAST_PAIRS)}")),
    Rule("tie-lambda-needs-l2-tied",
         lambda m, t: t is None or t == 0 or _get(m, "sharing") == "l2_tied",
         lambda m: "train.tie_lambda > 0 only acts with model.sharing 'l2_tied'; set it to 0 otherwise"),
    Rule("l2-tied-needs-lambda",
         lambda m, t: t is None or _get(m, "sharing") != "l2_tied" or t > 0,
         lambda m: ("model.sharing 'l2_tied' needs train.tie_lambda > 0 (with 0 the branches are "
                    "merely initialised identically)")),
)


def model_problems(model: Any, *, tie_lambda: float | None = None) -> list[str]:
    """``'<rule>: <message>'`` for every rule ``model`` breaks (empty list = valid).

    ``model``: a ModelConfig or a mapping with its keys (``sequences`` resolved);
    ``tie_lambda``: ``train.tie_lambda``, or None when unknown.
    """
    return [f"{r.name}: {r.message(model)}" for r in MODEL_RULES if not r.ok(model, tie_lambda)]
