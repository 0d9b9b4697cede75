"""The paper's ablation grids (Tables I and II) and a sequence-dropout sweep.

Every point sets *all* the ablated model keys (integration, point, fusion, sharing, tie
strength) and the dropout keys, so the study's base config cannot leak a stray value into a
grid (a base with ``sharing: shared`` must not turn the input-level row into something else).
"""

from __future__ import annotations

from typing import Any

from seqablate import vocabulary as V
from seqablate.naming import DEFAULT_TIE_LAMBDA

#: The sharing modes of parallel branches, in the paper's table order.
SHARING_MODES: tuple[str, ...] = V.SHARING_MODES


def model_point(
    integration: str,
    *,
    point: str = "layer4",
    sharing: str = "independent",
    fusion: str = "concat",
    tie_lambda: float = DEFAULT_TIE_LAMBDA,
) -> dict[str, Any]:
    """Fully specified model overrides; keys that do not apply get their neutral value."""
    return {
        "model.integration": integration,
        "model.integration_point": point,  # ignored unless mid; fixed so it never leaks
        "model.fusion": fusion,
        "model.sharing": sharing if integration != "input" else "independent",
        "train.tie_lambda": tie_lambda if sharing == "l2_tied" else 0.0,
    }


def table1_points() -> list[dict[str, Any]]:
    """Table I: input; mid@layer4 and end x {independent, shared, l2_tied}; mid subtract shared.

    8 points, no sequence dropout.
    """
    rows = [model_point("input")]
    rows += [model_point("mid", sharing=s) for s in SHARING_MODES]
    rows += [model_point("end", sharing=s) for s in SHARING_MODES]
    rows.append(model_point("mid", sharing="shared", fusion="subtract"))
    return [{**r, "train.dropout_p": 0.0, "train.dropout_mode": "bernoulli"} for r in rows]


def table2_points(p: float = 0.25) -> list[dict[str, Any]]:
    """Table II: Table I's rows with sequence dropout ``p`` (bernoulli), 7 points.

    The subtraction network is left out, as in the paper: "dropping out either pre- or
    post-contrast images alone disrupted the core structure of the network".
    """
    return [
        {**r, "train.dropout_p": p, "train.dropout_mode": "bernoulli"}
        for r in table1_points()
        if r["model.fusion"] != "subtract"
    ]


#: Dropout probabilities of the sweep (0 = the no-dropout reference, listed once).
DROPOUT_GRID: tuple[float, ...] = (0.0, 0.1, 0.25, 0.4, 0.5)
#: Dropout modes of the sweep (see seqablate.data.dropout.SequenceDropout).
DROPOUT_MODES: tuple[str, ...] = V.DROPOUT_MODES


def dropout_sweep_points() -> list[dict[str, Any]]:
    """Input-level network, p over :data:`DROPOUT_GRID` x both modes; p = 0 once (9 points).

    With p = 0 no sequence is dropped whatever the mode, so a second p = 0 point would be a
    duplicate trial.
    """
    base = model_point("input")
    out = [{**base, "train.dropout_p": 0.0, "train.dropout_mode": "bernoulli"}]
    for mode in DROPOUT_MODES:
        for p in DROPOUT_GRID:
            if p > 0:
                out.append({**base, "train.dropout_p": p, "train.dropout_mode": mode})
    return out
