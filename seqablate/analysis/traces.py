"""Saliency traces of a study's runs, grouped by configuration, and their seed consistency.

Reads each finished run's cumulative saliency history (``saliency.cumulative.<kind>.*``,
:mod:`seqablate.metric_names`) and measures, per configuration with two or more seeds, how
alike the seeds' sequence shares are (:mod:`seqablate.analysis.consistency`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from seqablate.analysis.consistency import (
    Consistency,
    SaliencyTrace,
    consistency,
    trace_from_history,
)
from seqablate.analysis.runs import ConfigGroup, Run, twin_key
from seqablate.analysis.study import StudyRuns
from seqablate.metric_names import SALIENCY, saliency_prefix


def run_traces(data: StudyRuns, run: Run, kind: str) -> SaliencyTrace | None:
    """A run's cumulative saliency trace of ``kind`` ('sequence' | 'slice'), or None."""
    prefixes = (saliency_prefix(kind, cumulative=True), saliency_prefix(kind))
    keys = [k for k in run.metrics if k.startswith(prefixes)]
    if not keys:
        return None
    cumulative = [k for k in keys if k.startswith(prefixes[0])]
    history = {k: data.history(run.run_id, k) for k in (cumulative or keys)}
    return trace_from_history(history, kind, order=run.sequences if kind == "sequence" else None)


@dataclass
class SeedTraces:
    """Saliency traces of one configuration, by seed."""

    group: ConfigGroup
    sequence: dict[str, SaliencyTrace] = field(default_factory=dict)
    slice: dict[str, SaliencyTrace] = field(default_factory=dict)
    consistency: Consistency | None = None


def collect_traces(data: StudyRuns, groups: Sequence[ConfigGroup], *, progress: bool = True) -> list[SeedTraces]:
    """Saliency traces (sequence and slice) of every finished run, grouped by configuration."""
    from tqdm.auto import tqdm

    out = []
    todo = [(g, r) for g in groups for r in g.usable if any(k.startswith(SALIENCY + ".") for k in r.metrics)]
    bar = tqdm(total=len(todo), desc="saliency traces", disable=not progress or not todo, leave=False)
    by_group: dict[int, SeedTraces] = {}
    for g, r in todo:
        st = by_group.setdefault(id(g), SeedTraces(g))
        for kind in ("sequence", "slice"):
            tr = run_traces(data, r, kind)
            if tr is not None:
                getattr(st, kind)[r.seed] = tr
        bar.update(1)
    bar.close()
    for g in groups:
        st = by_group.get(id(g))
        if st is None:
            continue
        if len(st.sequence) >= 2:
            with contextlib.suppress(ValueError):
                st.consistency = consistency(list(st.sequence.values()))
        out.append(st)
    return out


def consistency_frame(traces: Sequence[SeedTraces]) -> pd.DataFrame:
    """One row per configuration with >= 2 seeds: spread, Kendall's W, mean final shares."""
    rows = []
    for st in traces:
        c = st.consistency
        if c is None:
            continue
        row: dict[str, Any] = {
            "configuration": st.group.label,
            "seeds": c.n_seeds,
            "spread (std of shares)": c.spread,
            "Kendall's W": c.kendall_w,
        }
        for name, share in c.mean_final_shares.items():
            row[f"share {name}"] = share
        rows.append(row)
    return pd.DataFrame(rows)


def consistency_comparisons(traces: Sequence[SeedTraces]) -> list[str]:
    """Sentences comparing each dropout configuration with its no-dropout twin."""
    by_twin: dict[tuple, list[SeedTraces]] = {}
    for st in traces:
        if st.consistency is not None:
            by_twin.setdefault(twin_key(st.group), []).append(st)
    lines = []
    for same in by_twin.values():
        base = [s for s in same if not s.group.has_dropout]
        if not base:
            continue
        b = base[0].consistency
        for s in same:
            if not s.group.has_dropout:
                continue
            d = s.consistency
            verdict = "more" if d.spread < b.spread else "less" if d.spread > b.spread else "equally"
            lines.append(
                f"{s.group.label}: spread {d.spread:.4f} vs {b.spread:.4f} without dropout, "
                f"Kendall's W {d.kendall_w:.3f} vs {b.kendall_w:.3f}: dropout training is {verdict} "
                "consistent across seeds (lower spread = more consistent; point estimates: Findings (d) "
                "says whether the difference is significant)."
            )
    return lines
