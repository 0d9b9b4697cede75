"""Which model combinations are valid, encoded as data so spaces, validation and models agree.

A search space must only ever produce configs the model builder accepts. Rather than let a
bad combination fail minutes into a trial (or, worse, silently train something else), every
rule lives here as a ``(description, predicate)`` row and :func:`model_problems` checks a
resolved :class:`~seqablate.config.TrialConfig` against all of them. The grids are built to
satisfy them, the ``hpo`` define-by-run function only branches into valid combinations, and
:func:`seqablate.search_spaces.validate_space` runs every point through this check.

The rules follow the paper (arXiv 1912.08775):

- ``input`` integration has one network: weight sharing, fusion and the integration point do
  not apply (they keep their defaults, as ``seqablate.models.build`` requires).
- ``end`` integration averages the branches' probabilities: fusion does not apply.
- ``subtract`` fusion is a mid-level scheme that subtracts pre- from post-contrast features,
  which "makes sense only if the weights in the pre- and post-contrast branches are fully
  shared", and needs a (post, pre) contrast pair among the study's sequences.
- The L2 tie strength only acts with ``l2_tied`` sharing (elsewhere it would be silently
  ignored, and two trials differing only by it would be duplicates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from seqablate.config import TrialConfig
from seqablate.sequences import contrast_pair


@dataclass(frozen=True)
class Rule:
    """One validity rule: ``ok(cfg)`` is True when ``cfg`` satisfies it."""

    name: str  # short identifier, e.g. 'subtract-needs-shared'
    message: str  # what a violating config gets told (why, and what to change)
    ok: Callable[[TrialConfig], bool]


#: The rules every trial config must satisfy, in the order they are reported.
RULES: tuple[Rule, ...] = (
    Rule(
        "input-no-sharing",
        "model.sharing applies to parallel branches (mid/end); input integration has one "
        "network, leave sharing 'independent'",
        lambda c: c.model.integration != "input" or c.model.sharing == "independent",
    ),
    Rule(
        "point-mid-only",
        "model.integration_point applies to mid integration only; leave it 'layer4' "
        "(its default) for input and end",
        lambda c: c.model.integration == "mid" or c.model.integration_point == "layer4",
    ),
    Rule(
        "fusion-mid-only",
        "model.fusion other than 'concat' applies to mid integration only (input "
        "concatenates channels, end averages probabilities)",
        lambda c: c.model.fusion == "concat" or c.model.integration == "mid",
    ),
    Rule(
        "subtract-needs-shared",
        "model.fusion 'subtract' needs model.sharing 'shared' (pre/post features are only "
        "comparable from identical branches)",
        lambda c: c.model.fusion != "subtract" or c.model.sharing == "shared",
    ),
    Rule(
        "subtract-needs-pair",
        "model.fusion 'subtract' needs a post/pre contrast pair in data.sequences "
        "(t1_fse_post + t1_fse_pre, or t1_post + t1_pre)",
        lambda c: c.model.fusion != "subtract" or contrast_pair(c.data.sequences) is not None,
    ),
    Rule(
        "tie-lambda-needs-l2-tied",
        "train.tie_lambda > 0 only acts with model.sharing 'l2_tied'; set it to 0 otherwise",
        lambda c: c.train.tie_lambda == 0 or c.model.sharing == "l2_tied",
    ),
    Rule(
        "l2-tied-needs-lambda",
        "model.sharing 'l2_tied' needs train.tie_lambda > 0 (with 0 the branches are "
        "merely initialised identically)",
        lambda c: c.model.sharing != "l2_tied" or c.train.tie_lambda > 0,
    ),
)


def model_problems(cfg: TrialConfig, *, check_builder: bool = True) -> list[str]:
    """Messages of every rule ``cfg`` breaks (empty list = valid), each prefixed by its name.

    When the rules pass and ``check_builder`` is set, the model builder's own validation
    (:func:`seqablate.models.build.resolve_spec`, which imports torch) is asked too, so a rule
    added there and missing here still stops a bad point before anything runs; it reports as
    ``model-builder: <its message>``.
    """
    problems = [f"{r.name}: {r.message}" for r in RULES if not r.ok(cfg)]
    if problems or not check_builder:
        return problems
    try:
        from seqablate.models.build import resolve_spec
    except ImportError:  # a build without the models package: the rules above are all we have
        return problems
    try:
        resolve_spec(cfg.model)
    except ValueError as err:
        problems.append(f"model-builder: {err}")
    return problems
