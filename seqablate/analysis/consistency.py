"""Multi-seed consistency of what a network learns from each sequence (paper Figs 7 and 8).

For runs that differ only by seed, each run's cumulative saliency aggregate per sequence over
training (:class:`SaliencyTrace`, ``cumulative: float[T, S]``) is turned into each sequence's
*share* of the total at every logged step (rows sum to 1). Two numbers then say how
consistently the seeds learn:

- ``spread``: the mean over training steps of the across-seed standard deviation of the
  shares, averaged over sequences. It is 0 exactly when every seed has the same shares at
  every step, and grows as seeds rely on different sequences (at most 0.5 for shares in
  [0, 1]).
- ``kendall_w``: Kendall's coefficient of concordance of the per-seed sequence rankings by
  final cumulative saliency: 1 when every seed ranks the sequences identically, 0 when the
  rankings cancel out. Ties use average ranks and the tie-corrected denominator.

So "dropout makes training more consistent" becomes: lower ``spread`` / higher ``kendall_w``
for the dropout configuration than for its no-dropout twin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from seqablate.metric_names import SALIENCY_KINDS, saliency_prefix

#: Metric-name prefixes of the saliency traces a trial logs (:mod:`seqablate.metric_names`).
CUMULATIVE_PREFIX = {k: saliency_prefix(k, cumulative=True) for k in SALIENCY_KINDS}
STEP_PREFIX = {k: saliency_prefix(k) for k in SALIENCY_KINDS}


@dataclass(frozen=True)
class SaliencyTrace:
    """Cumulative saliency of one run: ``cumulative[t, s]`` at ``steps[t]`` for ``names[s]``.

    Shapes: ``steps`` int64[T] (increasing), ``cumulative`` float64[T, S].
    """

    names: tuple[str, ...]
    steps: np.ndarray
    cumulative: np.ndarray

    def __post_init__(self) -> None:
        if self.cumulative.shape != (len(self.steps), len(self.names)):
            raise ValueError(
                f"saliency trace: cumulative has shape {self.cumulative.shape}, expected "
                f"({len(self.steps)}, {len(self.names)}) for steps x names {list(self.names)}"
            )

    @property
    def shares(self) -> np.ndarray:
        """float64[T, S]: each name's share of the total; NaN rows where the total is 0."""
        total = self.cumulative.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.cumulative / np.where(total > 0, total, 1.0), np.nan)


def trace_from_history(
    history: Mapping[str, Sequence[tuple[int, float]]],
    kind: str = "sequence",
    order: Sequence[str] | None = None,
) -> SaliencyTrace | None:
    """Build a trace from metric histories ``{key: [(step, value), ...]}`` of one run.

    Uses the logged cumulative traces (``saliency.cumulative.<kind>.<name>``) when present,
    else sums the per-step aggregates (``saliency.<kind>.<name>``) cumulatively. Steps logged
    for only some names are dropped (a crash mid-logging). Returns None when the run logged
    no saliency of this ``kind``. ``kind`` is 'sequence' or 'slice'. ``order`` (e.g. the
    study's sequence order) orders the names it contains; others follow.
    """
    if kind not in CUMULATIVE_PREFIX:
        raise ValueError(f"saliency kind must be 'sequence' or 'slice', got {kind!r}")
    def pick(prefix: str) -> dict[str, Sequence[tuple[int, float]]]:
        return {k[len(prefix):]: v for k, v in history.items() if k.startswith(prefix) and v}

    series = pick(CUMULATIVE_PREFIX[kind])
    cumulate = not series  # only per-step aggregates logged: sum them here
    if cumulate:
        series = pick(STEP_PREFIX[kind])
    if not series:
        return None
    names = tuple(_sort_names(series, kind))
    if order is not None:
        names = tuple([n for n in order if n in series] + [n for n in names if n not in order])
    per_name = [dict((int(s), float(v)) for s, v in series[n]) for n in names]
    steps = sorted(set.intersection(*(set(d) for d in per_name)))
    if not steps:
        return None
    values = np.array([[d[s] for d in per_name] for s in steps], dtype=np.float64)
    if cumulate:
        values = np.cumsum(values, axis=0)
    return SaliencyTrace(names, np.asarray(steps, dtype=np.int64), values)


def _sort_names(series: Mapping[str, object], kind: str) -> list[str]:
    """Slice offsets numerically (-2..2); sequences in logged order."""
    if kind == "slice":
        try:
            return sorted(series, key=lambda n: float(n))
        except ValueError:
            pass
    return list(series)


def kendall_w(scores: np.ndarray) -> float:
    """Kendall's W of ``scores`` float[m raters, n objects] (higher score = higher rank).

    Each rater's scores are ranked (ties get average ranks); with rank sums R_j,
    S = sum_j (R_j - mean R)^2 and W = 12 S / (m^2 (n^3 - n) - m T), where
    T = sum over raters and tie groups of (t^3 - t). Returns NaN when it is undefined:
    fewer than 2 raters or objects, or every rater tying every object.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"kendall_w: expected a 2-D array [raters, objects], got shape {x.shape}")
    m, n = x.shape
    if m < 2 or n < 2:
        return float("nan")
    ranks = np.vstack([rankdata(row) for row in x])
    r = ranks.sum(axis=0)
    s = float(((r - r.mean()) ** 2).sum())
    ties = 0.0
    for row in x:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts**3 - counts).sum())
    denom = m**2 * (n**3 - n) - m * ties
    return float(12.0 * s / denom) if denom > 0 else float("nan")


def _aligned(traces: Sequence[SaliencyTrace]) -> tuple[np.ndarray, np.ndarray]:
    """Shares of every trace on common steps: (steps int[T], shares float[seeds, T, S]).

    Uses the steps all traces logged; when they share none (different logging intervals),
    shares are interpolated onto the steps of the trace with the shortest training.
    """
    names = traces[0].names
    for t in traces[1:]:
        if set(t.names) != set(names):
            raise ValueError(f"saliency traces name different sequences: {list(names)} vs {list(t.names)}")
    reordered = [t.shares[:, [t.names.index(n) for n in names]] for t in traces]
    common = sorted(set.intersection(*(set(t.steps.tolist()) for t in traces)))
    if common:
        idx = [np.searchsorted(t.steps, common) for t in traces]
        out = np.stack([sh[i] for sh, i in zip(reordered, idx, strict=True)])
        return np.asarray(common), out
    ref = min(traces, key=lambda t: t.steps[-1]).steps
    out = np.stack(
        [
            np.column_stack([np.interp(ref, t.steps, sh[:, j]) for j in range(len(names))])
            for t, sh in zip(traces, reordered, strict=True)
        ]
    )
    return ref, out


@dataclass(frozen=True)
class Consistency:
    """Consistency of one configuration's seeds (see the module docstring)."""

    names: tuple[str, ...]
    n_seeds: int
    spread: float  # mean over steps and names of the across-seed std of shares; 0 = identical
    kendall_w: float  # concordance of the per-seed rankings by final cumulative saliency
    final_shares: np.ndarray  # float[seeds, S]: each seed's shares at its last common step
    steps: np.ndarray  # int[T] the steps compared

    @property
    def mean_final_shares(self) -> dict[str, float]:
        return dict(zip(self.names, np.nanmean(self.final_shares, axis=0).tolist(), strict=True))


def consistency(traces: Sequence[SaliencyTrace]) -> Consistency:
    """Spread of saliency shares and Kendall's W across the seeds of one configuration.

    Needs two traces or more (ValueError otherwise). Steps where any seed's total is still
    zero are skipped. The spread uses the population std (ddof=0), so identical traces give
    exactly 0.
    """
    if len(traces) < 2:
        raise ValueError(f"consistency needs the traces of at least 2 seeds, got {len(traces)}")
    steps, shares = _aligned(traces)
    ok = ~np.isnan(shares).any(axis=(0, 2))
    if not ok.any():
        raise ValueError("saliency traces: every compared step has a zero total saliency")
    shares, steps = shares[:, ok], steps[ok]
    spread = float(shares.std(axis=0, ddof=0).mean())
    final = shares[:, -1, :]
    # Ranks come from each seed's own final cumulative saliency (its last logged step).
    raw_final = np.stack(
        [t.cumulative[-1, [t.names.index(n) for n in traces[0].names]] for t in traces]
    )
    return Consistency(traces[0].names, len(traces), spread, kendall_w(raw_final), final, steps)


@dataclass(frozen=True)
class ConsistencyDifference:
    """Spread of configuration A minus spread of B, with an exact permutation test over seeds.

    ``difference``: observed ``spread_A - spread_B`` (negative: A more consistent);
    ``p_value``: one-sided permutation p-value of H1 "A is more consistent than B" (the share
    of seed relabellings, the observed one included, whose difference is <= the observed
    one); ``min_p``: the smallest p-value the test can give with these seed counts
    (1 / C(n_A + n_B, n_A) when exact), so "cannot decide" is a statement about the design,
    not about the data. No interval is given: a bootstrap over 3-5 seeds resamples a seed
    with itself, whose spread is 0, and so is biased towards "more consistent".
    """

    difference: float
    p_value: float
    min_p: float
    n_a: int
    n_b: int
    exact: bool
    p_reverse: float = float("nan")  # one-sided p of the opposite: B more consistent than A


def permutation_floor(n_a: int, n_b: int) -> float:
    """The smallest one-sided exact permutation p-value of ``n_a`` against ``n_b`` seeds."""
    return 1.0 / math.comb(n_a + n_b, n_a)


def seeds_needed(level: float, *, most: int = 50) -> int | None:
    """Fewest seeds per arm (equal arms) for which the exact one-sided permutation test can
    reach ``p <= level``; None beyond ``most``."""
    for n in range(2, most + 1):
        if permutation_floor(n, n) <= level:
            return n
    return None


def consistency_difference(
    a: Sequence[SaliencyTrace], b: Sequence[SaliencyTrace], *, seed: int = 0, max_permutations: int = 20000,
) -> ConsistencyDifference:
    """Is configuration A's training more consistent across seeds than B's? (paper Figs 7-8)

    Both need two seeds or more (ValueError otherwise). Every split of the pooled seeds into
    groups of A's and B's sizes is enumerated when there are at most ``max_permutations``;
    otherwise that many random splits are drawn (``seed``) and the observed one counts once
    more, so p is never 0.
    """
    import itertools

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"consistency_difference needs >= 2 seeds per configuration, got {len(a)} and {len(b)}")
    traces = [*a, *b]
    n_a, n = len(a), len(a) + len(b)

    def spread(idx: Sequence[int]) -> float:
        return consistency([traces[i] for i in idx]).spread

    observed = spread(range(n_a)) - spread(range(n_a, n))
    splits = list(itertools.combinations(range(n), n_a))
    exact = len(splits) <= max_permutations
    if not exact:
        rng = np.random.default_rng(seed)
        splits = [tuple(sorted(rng.choice(n, n_a, replace=False))) for _ in range(max_permutations)]
    diffs = np.array([spread(s) - spread([i for i in range(n) if i not in s]) for s in splits])
    hits = int(np.sum(diffs <= observed + 1e-12))
    above = int(np.sum(diffs >= observed - 1e-12))
    if exact:  # the observed split is among them
        p, rev, min_p = hits / len(splits), above / len(splits), 1.0 / len(splits)
    else:
        p, rev, min_p = (1 + hits) / (1 + len(splits)), (1 + above) / (1 + len(splits)), 1.0 / (1 + len(splits))
    return ConsistencyDifference(float(observed), float(p), float(min_p), n_a, n - n_a, exact, float(rev))
