"""Normalisation under sequence dropout, re-run through the platform: what the demo's numbers
owe to BatchNorm statistics, and what per-subset statistics cost.

Takes a finished demo (BatchNorm models of both arms, 3 seeds; every evaluation logged under
both statistics policies) and runs the same study with ``model.norm: group`` through
``seqablate study run`` (same cohorts, split, steps, learning rate and seeds; GroupNorm has no
running statistics, so it is the statistics-free control). Prints, per normalisation and arm,
test mAP on the full protocol, with ``t1_gre_post`` censored and on ``oslo`` (mean over seeds,
and the seed range), for BatchNorm under the stored and the per-subset statistics.

Then times the per-subset re-estimation for one demo model (all 15 subsets of 4 sequences,
``eval.norm_batches`` x ``eval.norm_batch_size`` training slices each, no gradients) against
that trial's wall time from MLflow.

    python benchmarks/bench_norm.py --demo demo-out --out /tmp/bench-norm
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import yaml

ARMS = {"no dropout": 0.0, "dropout p=0.25": 0.25}
CONDITIONS = {"full": "test{p}.full.mAP", "censored": "test{p}.censor_t1_gre_post.mAP", "oslo": "external{p}.oslo.mAP"}


def summarise(trials, policy: str | None) -> dict[str, dict[str, tuple[float, float, float]]]:
    """arm -> condition -> (mean, min, max) over seeds under BatchNorm statistics ``policy``
    ('stored' | 'per_subset'; None = each run's own). A run logs its own policy under
    ``test.`` / ``external.`` and the other one under ``test_<policy>.`` / ``external_<policy>.``."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for arm, p in ARMS.items():
        rows = trials[trials["params.train.dropout_p"].astype(float) == p]
        out[arm] = {}
        for cond, key in CONDITIONS.items():
            vals = []
            for _, r in rows.iterrows():
                own = policy is None or r.get("params.eval.norm_stats") == policy
                col = f"metrics.{key.format(p='' if own else '_' + policy)}"
                if col in r and r[col] == r[col]:
                    vals.append(float(r[col]))
            if vals:
                out[arm][cond] = (statistics.mean(vals), min(vals), max(vals))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", required=True, help="a finished demo's --out folder (BatchNorm arms)")
    ap.add_argument("--out", required=True, help="folder for the GroupNorm study")
    args = ap.parse_args()

    from seqablate import tracking
    from seqablate.cli import main as cli
    from seqablate.demo import BASE, SEEDS, SPACE

    demo = Path(args.demo).resolve()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = {**BASE, "model": {**BASE["model"], "norm": "group"}}
    (out / "base.yaml").write_text(yaml.safe_dump(base))
    t0 = time.perf_counter()
    code = cli(["study", "run", str(SPACE), "--name", "demo-groupnorm", "--cohort", str(demo / "cohorts/stanford"),
                "--external", f"oslo={demo / 'cohorts/oslo'}", "--base", str(out / "base.yaml"),
                "--seeds", str(SEEDS), "--max-concurrent", "2", "--cpus-per-worker", "1",
                "--storage", str(out / "group")])
    group_s = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"the GroupNorm study failed (exit {code})")

    batch = tracking.list_trials(str(demo / "study"))
    group = tracking.list_trials(str(out / "group"))
    tables = {
        "batch, stored statistics": summarise(batch, "stored"),
        "batch, per-subset statistics": summarise(batch, "per_subset"),
        "group (no running statistics)": summarise(group, None),
    }
    print(f"\ntest mAP, mean over {SEEDS} seeds [min, max]; GroupNorm study {group_s:.0f} s")
    print(f"{'normalisation':<32}{'arm':<17}" + "".join(f"{c:>24}" for c in CONDITIONS))
    for name, table in tables.items():
        for arm, conds in table.items():
            cells = "".join(
                f"{conds[c][0]:>8.3f} [{conds[c][1]:.3f}, {conds[c][2]:.3f}]" if c in conds else f"{'-':>24}"
                for c in CONDITIONS)
            print(f"{name:<32}{arm:<17}{cells}")

    # What per-subset statistics cost: one demo model, all subsets, against its training time.
    import torch

    from seqablate.evaluation.cohort import load_cached, plan_split
    from seqablate.evaluation.model_ref import load_model
    from seqablate.evaluation.norm import estimate_norm_stats, norm_subsets

    torch.set_num_threads(1)  # a trial's worker has one core
    row = batch.iloc[0]
    deployed, cfg = load_model(row["run_id"], tracking_uri=tracking.default_tracking_uri(str(demo / "study")))
    model = deployed.net
    patients = load_cached(cfg.data)
    split = plan_split(cfg, [p for p in patients if p.mask is not None])
    train = [p for p in patients if p.patient_id in set(split.train)]
    keys = norm_subsets(cfg)
    t0 = time.perf_counter()
    stats, skipped = estimate_norm_stats(model, train, cfg, keys, seed=cfg.train.seed)
    est_s = time.perf_counter() - t0
    trial_s = (float(row["end_time"]) - float(row["start_time"])) / 1000
    print(f"\nper-subset statistics: {len(stats)} subsets ({len(skipped)} skipped), "
          f"{cfg.eval.norm_batches} x {cfg.eval.norm_batch_size} slices each: {est_s:.1f} s on one core; "
          f"the trial ({row['run_name']}) took {trial_s:.0f} s: {100 * est_s / trial_s:.1f} % of it")


if __name__ == "__main__":
    main()
