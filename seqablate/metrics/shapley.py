"""How much each sequence contributes: exact Shapley values of a score over sequence subsets.

A model scored on every non-empty subset ``T`` of its ``S`` sequences (``eval.all_subsets``)
defines a cooperative game ``v(T)`` (lesion mAP with only ``T`` given; the empty set scores
0: with no input there is no detection). Sequence ``i``'s Shapley value is its marginal
contribution averaged over every order in which the sequences could arrive::

    phi_i = sum over T not containing i of |T|! (S - |T| - 1)! / S! * (v(T + i) - v(T))

It is *linear in the subset scores*: ``phi_i = sum_T w_i(T) v(T)`` with the weights of
:func:`shapley_weights` (``+(|T|-1)! (S-|T|)! / S!`` where ``i`` is in ``T``, ``-|T|! (S-|T|-1)!
/ S!`` where it is not). So a multi-seed Shapley value with the training seed random is a
linear contrast of condition means of the same networks, and
:func:`seqablate.metrics.recipe.recipe_contrast` gives both of its intervals.

Properties (each tested): the values sum to ``v(all) - v(empty)`` (efficiency); two
interchangeable sequences get equal values (symmetry); a sequence that never changes the
score gets 0 (null player).

Exact computation needs all ``2^S - 1`` subset scores, which is what ``eval.all_subsets``
evaluates; it is meant for the few sequences of an MRI protocol (:data:`MAX_SEQUENCES`): the
evaluation cost, not this arithmetic, is what grows as ``2^S``.

What the value means depends on the model: for a model trained without sequence dropout,
the subset scores (and so the Shapley values) measure how *fragile* the network is to
losing an input (it never saw a subset in training), not what the input contains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

#: The most sequences an exact Shapley decomposition is computed for (2^S - 1 evaluations each).
MAX_SEQUENCES = 8


def all_subsets(sequences: Sequence[str]) -> list[frozenset[str]]:
    """Every non-empty subset of ``sequences``, smallest first (``2^S - 1`` of them)."""
    seqs = list(sequences)
    return [frozenset(c) for k in range(1, len(seqs) + 1) for c in combinations(seqs, k)]


def _check(sequences: Sequence[str]) -> tuple[str, ...]:
    seqs = tuple(sequences)
    if not seqs:
        raise ValueError("Shapley values need at least one sequence")
    if len(set(seqs)) != len(seqs):
        raise ValueError(f"duplicate sequence names in {list(seqs)}")
    if len(seqs) > MAX_SEQUENCES:
        raise ValueError(f"exact Shapley values are computed for at most {MAX_SEQUENCES} sequences "
                         f"(2^S - 1 subset evaluations); got {len(seqs)}")
    return seqs


def shapley_weights(sequences: Sequence[str]) -> dict[str, dict[frozenset[str], float]]:
    """``w[i][T]``: the weight of the score of non-empty subset ``T`` in sequence ``i``'s value.

    ``phi_i = sum_T w[i][T] * v(T)``; the empty set's term is dropped (``v(empty) = 0``). Each
    ``w[i]`` has all ``2^S - 1`` subsets as keys. Raises ValueError for no sequences, duplicate
    names or more than :data:`MAX_SEQUENCES`.
    """
    seqs = _check(sequences)
    n = len(seqs)
    fact = math.factorial
    out: dict[str, dict[frozenset[str], float]] = {}
    for i in seqs:
        w: dict[frozenset[str], float] = {}
        for t in all_subsets(seqs):
            k = len(t)
            if i in t:
                w[t] = fact(k - 1) * fact(n - k) / fact(n)  # T = (T - i) + i: the "with" side
            else:
                w[t] = -fact(k) * fact(n - k - 1) / fact(n)  # T without i: the "before" side
        out[i] = w
    return out


def shapley_values(scores: Mapping[frozenset[str] | tuple[str, ...], float],
                   sequences: Sequence[str]) -> dict[str, float]:
    """Each sequence's exact Shapley value of ``scores`` (subset -> score; the empty set is 0).

    ``scores`` must hold every non-empty subset of ``sequences`` (keys may be frozensets or
    tuples in any order); a missing subset is a ValueError that names it. A NaN score makes
    every value NaN (an undefined mAP stays undefined).
    """
    seqs = _check(sequences)
    table = {frozenset(k): float(v) for k, v in scores.items()}
    missing = [sorted(t) for t in all_subsets(seqs) if t not in table]
    if missing:
        raise ValueError(f"Shapley values need the score of every non-empty subset of {list(seqs)}; "
                         f"missing {len(missing)}: " + ", ".join("+".join(m) for m in missing[:5])
                         + (" ..." if len(missing) > 5 else ""))
    weights = shapley_weights(seqs)
    return {i: math.fsum(w * table[t] for t, w in weights[i].items()) for i in seqs}
