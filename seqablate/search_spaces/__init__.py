"""Named search spaces: the paper's ablation grids and the Optuna search, by name.

>>> from seqablate.search_spaces import get_space, list_spaces, run_name
>>> space = get_space("paper-table1")
>>> [run_name(p) for p in space.grid(seeds=1)][:2]
['input-seed0', 'mid@layer4-independent-seed0']

Grids yield override dicts (dotted keys for :func:`seqablate.config.with_overrides`);
searches give an Optuna define-by-run function. ``get_space`` also accepts the path of a
user Python file that defines ``SPACE``.
"""

from __future__ import annotations

from seqablate.naming import (
    DEFAULT_TIE_LAMBDA,
    expand_seeds,
    run_name,
    trial_key,
)
from seqablate.search_spaces.hpo import (
    hpo_for,
    hpo_per_sequence_for,
    make_hpo,
    make_hpo_per_sequence,
)
from seqablate.search_spaces.paper import dropout_sweep_points, table1_points, table2_points
from seqablate.search_spaces.registry import (
    BUILTIN_HELPERS,
    Space,
    SpaceError,
    get_space,
    helper_params,
    list_spaces,
    register_space,
    search_overrides,
    validate_space,
)
from seqablate.search_spaces.rules import RULES, model_problems
from seqablate.search_spaces.scaling import data_scaling_points

__all__ = [
    "BUILTIN_HELPERS",
    "DEFAULT_TIE_LAMBDA",
    "RULES",
    "Space",
    "SpaceError",
    "expand_seeds",
    "get_space",
    "helper_params",
    "list_spaces",
    "model_problems",
    "register_space",
    "run_name",
    "search_overrides",
    "trial_key",
    "validate_space",
]

register_space(
    Space(
        "paper-table1",
        "Table I: integration level x weight sharing, plus mid-level pre/post subtraction (8 configs)",
        points=tuple(table1_points()),
    )
)
register_space(
    Space(
        "paper-table2",
        "Table II: Table I's configs with sequence dropout p=0.25, subtraction excluded as in the paper (7)",
        points=tuple(table2_points(0.25)),
    )
)
register_space(
    Space(
        "dropout-sweep",
        "input-level network, sequence dropout p in 0..0.5 x {bernoulli, uniform} (9 configs)",
        points=tuple(dropout_sweep_points()),
    )
)
register_space(
    Space(
        "hpo",
        "Optuna define-by-run: integration, point, fusion, sharing, tie lambda (l2_tied), dropout p/mode, lr",
        search=make_hpo(),
        search_factory=hpo_for,
    )
)
register_space(
    Space(
        "hpo-per-sequence",
        "hpo with one dropout p per sequence (0-0.6 each, bernoulli); pair with --objective worst or a profile",
        search=make_hpo_per_sequence(),
        search_factory=hpo_per_sequence_for,
    )
)
register_space(
    Space(
        "data-scaling",
        "input-level network, 25 / 50 / 100 % of the training split x sequence dropout off / p=0.25 (6 configs)",
        points=tuple(data_scaling_points()),
    )
)
