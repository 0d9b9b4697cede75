"""The ``data-scaling`` grid: how results scale with training data, with and without dropout.

Training-set size is a share of the training split (``data.train_fraction``; nested subsets of
one seeded ordering, validation and test fixed), crossed with sequence dropout off and on. The
report draws learning curves (mAP against training patients, per arm and condition).
"""

from __future__ import annotations

from typing import Any

from seqablate.search_spaces.paper import model_point

#: Shares of the training split (1.0 = all of it).
TRAIN_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 1.0)
#: Dropout arms: off, and the paper's p.
SCALING_DROPOUT: tuple[float, ...] = (0.0, 0.25)


def data_scaling_points() -> list[dict[str, Any]]:
    """Input-level network, :data:`TRAIN_FRACTIONS` x :data:`SCALING_DROPOUT` (6 points),
    smallest training set first."""
    base = model_point("input")
    return [{**base, "data.train_fraction": f, "train.dropout_p": p, "train.dropout_mode": "bernoulli"}
            for f in TRAIN_FRACTIONS for p in SCALING_DROPOUT]
