"""One sequence-dropout probability per sequence, nothing else searched: the multi-objective
search the shared-p grid is compared with (``benchmarks/RESULTS.md``, "Search for robustness").

The architecture, learning rate and schedule are the base config's (the demo's), so the
comparison is about the dropout recipe alone (the ``hpo-per-sequence`` space also searches the
architecture and learning rate).
"""

from __future__ import annotations

from typing import Any

from seqablate.search_spaces.hpo import PER_SEQUENCE_P_RANGE
from seqablate.sequences import PAPER_SEQUENCES

DESCRIPTION = "input-level network, one bernoulli dropout p per sequence (Optuna)"


def SPACE(trial: Any) -> dict[str, Any]:  # noqa: N802 (the name a space file defines)
    """Optuna define-by-run: ``dropout_p_<sequence>`` per sequence, folded into the mapping."""
    p = {s: round(trial.suggest_float(f"dropout_p_{s}", *PER_SEQUENCE_P_RANGE, step=0.05), 2)
         for s in PAPER_SEQUENCES}
    return {"train.dropout_p": p, "train.dropout_mode": "bernoulli"}


SPACE.helper_params = tuple(f"dropout_p_{s}" for s in PAPER_SEQUENCES)  # type: ignore[attr-defined]
