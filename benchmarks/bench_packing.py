"""Packing benchmark: 2 concurrent single-worker trials on 2 nodes vs 1 trial, same run.

    .venv/bin/python benchmarks/bench_packing.py            # prints a table and the ratio

Tune packs trials onto nodes by the resources each asks for (``--workers-per-trial 1``: one
training worker). On a cluster of two one-trial nodes, a study of two trials should take about
the wall time of a study of one; the ratio printed is T(2 trials) / T(1 trial), measured back to
back in this run (after an untimed warm-up that builds the preprocessing cache).

On one machine the "nodes" share its cores: with 2 cores and 1-CPU nodes the two trials still
get a core each, so the ratio shows what the cluster software adds (scheduling, placement,
checkpointing, tracking), not extra hardware. Other load on the machine inflates both runs.

The helpers below are also used by ``tests/infra/test_infra_multinode.py``: a head
that offers no CPUs (like the cluster configs in ``infra/``: trials never run on the head) and
worker nodes started with ``ray.cluster_utils.Cluster`` (separate raylets on 127.0.0.1, so a
node can be killed on its own). Studies run as a separate ``python -m seqablate study run``
process that joins the cluster through ``RAY_ADDRESS``, exactly as on a real cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def local_cluster(workers: int, *, cpus_per_node: float = 1) -> Iterator[Any]:
    """Head (0 CPUs) + ``workers`` nodes of ``cpus_per_node`` CPUs; always shut down."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0},
    )
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def make_cohort(out: Path, patients: int = 6) -> Path:
    """A small synthetic labelled cohort (the data engineer's phantom writer)."""
    if not out.exists():
        subprocess.run(
            [sys.executable, "-m", "seqablate", "phantom", str(out), "--site", "stanford",
             "--patients", str(patients), "--seed", "0", "--small"],
            check=True, cwd=REPO, capture_output=True, text=True,
        )
    return out


def write_space(path: Path, points: list[dict[str, Any]] | None = None) -> Path:
    """A user space file with ``points`` (default: one input-level point)."""
    points = points or [{"model.integration": "input"}]
    path.write_text(f"SPACE = {points!r}\n")
    return path


def study_cmd(space: Path, cohort: Path, storage: Path, *, seeds: int, name: str,
              extra: list[str] | None = None) -> list[str]:
    """The `seqablate study run` command line used on a cluster (smoke-sized, CPU)."""
    return [
        sys.executable, "-m", "seqablate", "study", "run", str(space),
        "--cohort", str(cohort), "--seeds", str(seeds), "--smoke",
        "--workers-per-trial", "1", "--gpus-per-worker", "0",
        "--storage", str(storage), "--name", name, *(extra or []),
    ]


def run_study(cmd: list[str], address: str, *, timeout: float = 1200,
              log: Path | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``cmd`` as a driver joined to the cluster at ``address``; (wall seconds, result)."""
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)  # the study folder's own SQLite database
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if log is not None:
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return wall, proc


def train_worker_nodes(address: str) -> list[str]:
    """Node ids of every Ray Train worker actor the cluster has run (alive or dead)."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("class_name", "=", "RayTrainWorker")],
                         limit=10_000, raise_on_missing_output=False)
    return [a.node_id for a in actors]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import platform
    import tempfile

    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=6, help="phantom cohort size")
    parser.add_argument("--node-cpus", type=float, default=1, help="CPUs per worker node (= one trial)")
    parser.add_argument("--out", type=Path, default=None, help="keep logs/studies here")
    args = parser.parse_args(argv)

    work = args.out or Path(tempfile.mkdtemp(prefix="bench-packing-"))
    work.mkdir(parents=True, exist_ok=True)
    cohort = make_cohort(work / "cohort", args.patients)
    space = write_space(work / "space.py")
    runs = [("warm-up (untimed)", 1), ("1 trial", 1), ("2 trials", 2)]
    walls: dict[str, float] = {}
    nodes: dict[str, set[str]] = {}
    with local_cluster(2, cpus_per_node=args.node_cpus) as cluster:
        for i, (label, seeds) in enumerate(tqdm(runs, desc="studies", unit="study")):
            before = set(train_worker_nodes(cluster.address))
            cmd = study_cmd(space, cohort, work / f"study{i}", seeds=seeds, name=f"pack{i}")
            wall, proc = run_study(cmd, cluster.address, log=work / f"study{i}.log")
            if proc.returncode != 0:
                print(f"{label}: study failed (exit {proc.returncode}); see {work}/study{i}.log\n"
                      f"{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            walls[label] = wall
            nodes[label] = set(train_worker_nodes(cluster.address)) - before
    ratio = walls["2 trials"] / walls["1 trial"]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    print(f"\nmachine: {os.cpu_count()} CPUs ({cpu}); cluster: head (0 CPUs) + 2 nodes x "
          f"{args.node_cpus:g} CPU; {time.strftime('%Y-%m-%d')}")
    print(f"{'study':<20}{'wall s':>10}{'train-worker nodes':>22}")
    for label in ("1 trial", "2 trials"):
        print(f"{label:<20}{walls[label]:>10.1f}{len(nodes[label]):>22}")
    print(f"ratio T(2 trials on 2 nodes) / T(1 trial) = {ratio:.2f}  (1.0 = perfect packing, 2.0 = serial)")
    if len(nodes["2 trials"]) < 2:
        print("warning: both trials' workers ran on one node", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
