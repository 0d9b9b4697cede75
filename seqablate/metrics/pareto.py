"""The Pareto front of points scored on several objectives.

A point *dominates* another when it is at least as good on every objective and strictly
better on at least one ("good" per objective: larger for ``max``, smaller for ``min``). The
front is the set of points no other point dominates. Consequences, all intended:

- two points equal on every objective do not dominate each other: duplicates are on the front
  together, or off it together;
- a point that ties another on one objective and is worse on the rest is dominated;
- with one objective the front is every point holding the best value (ties included).

Pure numpy; ``O(n^2 k)`` for ``n`` points and ``k`` objectives, which is nothing for the
hundreds of trials a study has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MODES = ("max", "min")


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """Whether point ``a`` dominates point ``b`` under ``modes`` (one ``max``/``min`` each)."""
    return bool(dominance_matrix(np.asarray([a, b], dtype=float), modes)[0, 1])


def dominance_matrix(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """``bool[n, n]``: ``[i, j]`` is True when point i dominates point j (``points``: float[n, k])."""
    signed = _oriented(points, modes)
    ge = np.all(signed[:, None, :] >= signed[None, :, :], axis=2)
    gt = np.any(signed[:, None, :] > signed[None, :, :], axis=2)
    return ge & gt


def pareto_front(points: Sequence[Sequence[float]] | np.ndarray, modes: Sequence[str]) -> list[bool]:
    """Which of ``points`` (``n`` points x ``k`` objectives) are on the Pareto front.

    Args:
        points: one row per point, one finite value per objective; ``n`` may be 0.
        modes: one of ``max`` / ``min`` per objective.

    Returns:
        ``n`` booleans, True for the points no other point dominates (module docstring:
        duplicates of a front point are on the front too).

    Raises ValueError naming the problem: rows of different lengths or of another length
    than ``modes``, a mode other than ``max``/``min``, a value that is not finite (a point
    with an undefined objective cannot be placed: leave it out and say so).
    """
    modes = list(modes)
    if not modes:
        raise ValueError("pareto_front: no objectives (modes is empty)")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"pareto_front: modes must be 'max' or 'min', got {bad}")
    rows = [list(p) for p in points]
    if not rows:
        return []
    wrong = [i for i, r in enumerate(rows) if len(r) != len(modes)]
    if wrong:
        raise ValueError(f"pareto_front: points {wrong} do not have {len(modes)} values (one per mode)")
    arr = np.asarray(rows, dtype=float)
    if not np.all(np.isfinite(arr)):
        where = sorted({int(i) for i in np.argwhere(~np.isfinite(arr))[:, 0]})
        raise ValueError(f"pareto_front: points {where} have values that are not finite")
    dominated = dominance_matrix(arr, modes).any(axis=0)
    return [not bool(d) for d in dominated]


def _oriented(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """The points with every ``min`` objective negated, so larger is better everywhere."""
    sign = np.array([1.0 if m == "max" else -1.0 for m in modes])
    return np.asarray(points, dtype=float) * sign
