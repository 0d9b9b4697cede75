"""Tracking throughput and study-creation time (not a test; prints ratios against baselines).

1. New study database: copied from the cached migrated template vs built by MLflow's own
   migrations (the baseline).
2. Concurrent trials on one SQLite database: W processes each log N metric values; buffered
   ``log_batch`` (seqablate's default, flush every 500) vs one write per value (the baseline,
   what ``mlflow.log_metric`` in a loop does). Reports values/s, lock retries, lost values.

Usage: .venv/bin/python benchmarks/tracking_bench.py [--writers 4] [--values 600]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import tempfile
import time
from pathlib import Path


def _writer(ref: tuple[str, str, str], seed: int, n: int, flush_every: int, start, out) -> None:
    from seqablate import tracking as T
    from seqablate.config import TrialConfig
    from seqablate.tracking import store

    with T.trial_run(T.StudyRef(*ref), TrialConfig(), overrides={"train.seed": seed, "b": flush_every},
                     flush_every=flush_every) as log:
        start.wait()
        t0 = time.perf_counter()
        for step in range(n // 2):
            log.log_metrics({"train.loss": 1.0 / (step + 1), "lr": step * 1e-4}, step=step)
        log.flush()
        out.put((time.perf_counter() - t0, store.retry_count))


def _concurrent(ctx, storage: Path, writers: int, n: int, flush_every: int) -> tuple[float, int, int]:
    from seqablate import tracking as T

    with T.study_run(f"bench-{flush_every}", storage=str(storage)) as study:
        start, out = ctx.Barrier(writers), ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(tuple(study.ref), s, n, flush_every, start, out))
                 for s in range(writers)]
        for p in procs:
            p.start()
        res = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join()
    con = sqlite3.connect(storage / "mlflow.db")
    runs = list(T.list_trials(study.ref)["run_id"])
    stored = con.execute(f"SELECT COUNT(*) FROM metrics WHERE run_uuid IN ({','.join('?' * len(runs))})", runs).fetchone()[0]
    con.close()
    wall = max(r[0] for r in res)
    return writers * (n // 2) * 2 / wall, sum(r[1] for r in res), writers * (n // 2) * 2 - stored


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--values", type=int, default=600, help="metric values per writer")
    args = ap.parse_args()
    from seqablate import tracking as T

    tmp = Path(tempfile.mkdtemp(prefix="seqablate-bench-"))
    T.client(T.default_tracking_uri(str(tmp / "warm")))  # make sure the template exists
    t0 = time.perf_counter()
    T.client(T.default_tracking_uri(str(tmp / "copied")))
    copied = time.perf_counter() - t0
    os.environ["SEQABLATE_MLFLOW_TEMPLATE"] = "0"
    t0 = time.perf_counter()
    T.client(T.default_tracking_uri(str(tmp / "built")))
    built = time.perf_counter() - t0
    del os.environ["SEQABLATE_MLFLOW_TEMPLATE"]
    print(f"new study database: template copy {copied:.2f} s, MLflow migrations {built:.2f} s "
          f"(baseline) -> {built / copied:.0f}x faster")

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["seqablate.tracking", "mlflow.store.tracking.sqlalchemy_store"])
    rows = []
    for label, flush in (("one write per value (baseline)", 1), ("buffered log_batch, 500", 500)):
        rate, retries, lost = _concurrent(ctx, tmp / f"c{flush}", args.writers, args.values, flush)
        rows.append((label, rate, retries, lost))
    print(f"\n{args.writers} concurrent trial processes x {args.values} metric values, one SQLite db (WAL)")
    print(f"{'mode':34} {'values/s':>10} {'retries':>8} {'lost':>5}")
    for label, rate, retries, lost in rows:
        print(f"{label:34} {rate:10.0f} {retries:8d} {lost:5d}")
    print(f"speed-up of batching: {rows[1][1] / rows[0][1]:.1f}x")


if __name__ == "__main__":
    main()
