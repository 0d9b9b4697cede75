"""The Findings' forest plot and compact table: every claim's effect with both intervals.

One row per (configuration, claim, cohort) and statistics policy: the effect in mAP points,
the interval of "these trained networks" (thin line) and of "the training recipe" (thick
line), both at the claim's Holm-adjusted level; the configured policy's marker is filled,
the other policy's hollow; for (b) and (c) the margin +-d is drawn dotted, for (a) and (e)
dashed the effect above which the claim ("most of the mAP", "fails") holds. Claim (d)
has no mAP effect (its test is a permutation p-value) and is listed in the table only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from seqablate.analysis.findings import Finding, interval_text, points


def forest_rows(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """Plot rows: label, policy, headline flag, effect, networks/recipe intervals (points, x100),
    margin (points or None), outcome."""
    rows = []
    for f in findings:
        for policy, t in f.tests.items():
            if t.effect is None:
                continue
            e, lv = t.effect, t.level
            rec = e.recipe_at(lv)
            rows.append({
                "label": f.short or f"({f.claim}) {f.configuration}" + (f" [{f.cohort}]" if f.cohort else ""),
                "policy": (policy or "own").replace("_", "-"),
                "headline": policy == f.headline,
                "effect": 100 * e.estimate,
                "networks": tuple(100 * v for v in e.networks_at(lv)),
                "recipe": None if rec is None else tuple(100 * v for v in rec),
                "margin": None if t.margin is None or not math.isfinite(t.margin) else 100 * t.margin,
                "threshold": None if t.threshold is None or not math.isfinite(t.threshold) else 100 * t.threshold,
                "level": lv,
                "outcome": t.outcome,
            })
    return rows


def plot_forest(findings: Sequence[Finding], path: str | Path) -> Path | None:
    """Draw the forest plot into ``path`` (PNG); None when no claim has an mAP effect."""
    from seqablate.analysis.plots import headless_pyplot, save_figure

    rows = forest_rows(findings)
    if not rows:
        return None
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 0.55 * len(rows) + 1.4))
    colours = {"holds": "#1a7f37", "does not hold": "#cf222e", "not shown": "#9a6700", "no verdict": "#6e7781",
               "undecidable": "#6e7781", "comparison": "#0969da"}
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        c = colours.get(r["outcome"], "#333333")
        lo, hi = r["networks"]
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([lo, hi], [y + 0.12, y + 0.12], color=c, lw=1.2, alpha=0.8)
        if r["recipe"] is not None:
            ax.plot(list(r["recipe"]), [y - 0.12, y - 0.12], color=c, lw=4, alpha=0.6, solid_capstyle="butt")
        ax.plot([r["effect"]], [y], "o", color=c, markerfacecolor=c if r["headline"] else "white", ms=7)
        if r["margin"] is not None:
            for m in (-r["margin"], r["margin"]):
                ax.plot([m, m], [y - 0.3, y + 0.3], color="#555555", lw=1, ls=":")
        if r["threshold"] is not None:
            ax.plot([r["threshold"]] * 2, [y - 0.3, y + 0.3], color="#555555", lw=1.2, ls="--")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['label']} · {r['policy']}" for r in reversed(rows)], fontsize=8)
    ax.set_xlabel("paired difference, mAP points (thin: these trained networks; thick: the training recipe; "
                  "level: Holm-adjusted per claim)", fontsize=8)
    ax.set_title("Findings: effects with both intervals (filled: configured statistics policy; "
                 "colour: verdict;\ndotted: margin ±d; dashed: the effect above which a 'most of' / 'fails' claim holds)", fontsize=9)
    handles = [plt.Line2D([], [], color=v, marker="o", ls="", label=k) for k, v in colours.items()
               if k in {r["outcome"] for r in rows}]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def findings_table(findings: Sequence[Finding]) -> pd.DataFrame:
    """claim | comparison | effect | recipe CI | verdict, under the configured policy."""
    rows = []
    for f in findings:
        t = f.test
        if t is None:
            continue
        if t.effect is not None:
            effect = f"{points(t.effect.estimate)} points"
            recipe = interval_text(t.effect.recipe_at(t.level), t.level) if t.effect.recipe is not None else \
                "unavailable (< 3 seeds)"
        else:
            c = t.extra
            effect = f"spread {c.difference:+.4f}" if c is not None else ""
            recipe = f"permutation p = {c.p_value:.3g} (floor {c.min_p:.3g})" if c is not None else ""
        verdict = t.outcome + (" (depends on the statistics policy)" if len({x.outcome for x in f.tests.values()}) > 1 else "")
        what = f.short.split(") ", 1)[-1] if f.short else f.configuration
        rows.append({"claim": f.claim + (f" [{f.cohort}]" if f.cohort else ""), "comparison": what,
                     "effect": effect, "recipe CI": recipe, "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "comparison", "effect", "recipe CI", "verdict"])
