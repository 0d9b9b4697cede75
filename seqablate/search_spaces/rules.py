"""Which trial configurations are valid: the vocabulary's model rules, checked on a TrialConfig.

A search space must only ever produce configs the model builder accepts. Rather than let a
bad combination fail minutes into a trial (or, worse, silently train something else), every
rule is data in :data:`seqablate.vocabulary.MODEL_RULES` (the builder refuses the same
ones), and :func:`model_problems` checks a resolved
:class:`~seqablate.config.TrialConfig` against all of them, the rules about
``train.tie_lambda`` included. The grids are built to satisfy them, the ``hpo``
define-by-run function only branches into valid combinations, and
:func:`seqablate.search_spaces.validate_space` runs every point through this check.
"""

from __future__ import annotations

from seqablate import vocabulary as V
from seqablate.config import TrialConfig

#: The rules every trial config must satisfy, in the order they are reported.
RULES: tuple[V.Rule, ...] = V.MODEL_RULES


def model_problems(cfg: TrialConfig, *, check_builder: bool = True) -> list[str]:
    """Messages of every rule ``cfg`` breaks (empty list = valid), each prefixed by its name.

    When the rules pass and ``check_builder`` is set, the model builder's own validation
    (:func:`seqablate.models.build.resolve_spec`, which imports torch) is asked too, so a
    check that only the builder makes (an integration without an implementation) still stops
    a bad point before anything runs; it reports as ``model-builder: <its message>``.
    """
    problems = V.model_problems(cfg.model, tie_lambda=cfg.train.tie_lambda)
    if problems or not check_builder:
        return problems
    from seqablate.models.build import resolve_spec

    try:
        resolve_spec(cfg.model)
    except ValueError as err:
        problems.append(f"model-builder: {err}")
    return problems
