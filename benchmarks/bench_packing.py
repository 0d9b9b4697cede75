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


#: Ray's switch for a loopback-only cluster: with it off, ``get_node_ip_address()`` is
#: 127.0.0.1. Otherwise Ray rewrites 127.0.0.1 to the machine's "remotely reachable" address
#: (``ray.init`` resolves localhost), and in sandboxes where that address cannot be
#: connected to from the machine itself the driver never reaches the GCS.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def local_cluster(workers: int, *, cpus_per_node: float = 1) -> Iterator[Any]:
    """Head (0 CPUs) + ``workers`` nodes of ``cpus_per_node`` CPUs, all on 127.0.0.1.

    Sets ``LOOPBACK_ENV=0`` in ``os.environ`` (subprocess drivers inherit it) and Ray's
    in-process copy of it while the cluster lives; always shuts the cluster down and
    restores both.
    """
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    saved = os.environ.get(LOOPBACK_ENV)
    saved_const = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"  # for subprocesses (drivers, raylets, workers)
    # ...and for this process, where Ray read the variable when it was first imported.
    ray_constants.ENABLE_RAY_CLUSTER = False
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"},
        )
        for _ in range(workers):
            cluster.add_node(num_cpus=cpus_per_node, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if cluster is not None:
            cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved_const
        if saved is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved


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


def train_worker_nodes(address: str) -> dict[str, str]:
    """Actor id -> node id of every Ray Train worker actor the cluster has run (alive or dead)."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("class_name", "=", "RayTrainWorker")],
                         limit=10_000, raise_on_missing_output=False)
    return {a.actor_id: a.node_id for a in actors}


def _synthetic_trial(config: dict[str, Any]) -> None:
    """A stand-in trial: fixed CPU work (a small conv net, 1 thread) with periodic checkpoints.

    Reports per-step compute and checkpoint seconds so the driver can split wall time into
    compute, checkpointing and everything else (scheduling, process start-up).
    """
    import tempfile

    import ray.tune
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(20, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 1, 3, padding=1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(4, 20, 64, 64)
    compute = ckpt = 0.0
    for step in range(1, config["steps"] + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        compute += time.perf_counter() - t0
        checkpoint = None
        t0 = time.perf_counter()
        if step % config["ckpt_every"] == 0 or step == config["steps"]:
            d = tempfile.mkdtemp()
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step}, f"{d}/ckpt.pt")
            checkpoint = ray.tune.Checkpoint.from_directory(d)
        ray.tune.report({"step": step, "compute_s": compute, "ckpt_s": ckpt,
                         "node": ray.get_runtime_context().get_node_id()}, checkpoint=checkpoint)
        ckpt += time.perf_counter() - t0


def run_synthetic(address: str, trials: int, storage: Path, *, steps: int, ckpt_every: int
                  ) -> tuple[float, list[dict[str, Any]]]:
    """Tune ``trials`` synthetic trials (1 CPU each) on the cluster; (wall s, last results)."""
    import ray
    from ray import tune

    ray.init(address=address, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(_synthetic_trial, {"cpu": 1}),
            param_space={"steps": steps, "ckpt_every": ckpt_every, "i": tune.grid_search(list(range(trials)))},
            run_config=tune.RunConfig(storage_path=str(storage), name=f"synthetic{trials}", verbose=0),
        )
        results = tuner.fit()
        wall = time.perf_counter() - t0
        return wall, [r.metrics for r in results]
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import platform
    import tempfile

    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=6, help="phantom cohort size")
    parser.add_argument("--node-cpus", type=float, default=1, help="CPUs per worker node (= one trial)")
    parser.add_argument("--out", type=Path, default=None, help="keep logs/studies here")
    parser.add_argument("--synthetic", action="store_true",
                        help="Tune trials of a fixed CPU workload instead of `seqablate study run`")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per trial (default: --smoke's; --synthetic: 60)")
    parser.add_argument("--ckpt-every", type=int, default=10, help="--synthetic: steps per checkpoint")
    args = parser.parse_args(argv)
    if args.synthetic:
        args.steps = args.steps or 60
        return _main_synthetic(args)

    work = args.out or Path(tempfile.mkdtemp(prefix="bench-packing-"))
    work.mkdir(parents=True, exist_ok=True)
    cohort = make_cohort(work / "cohort", args.patients)
    point: dict[str, Any] = {"model.integration": "input"}
    if args.steps:
        point["train.steps"] = args.steps
    space = write_space(work / "space.py", [point])
    runs = [("warm-up (untimed)", 1), ("1 trial", 1), ("2 trials", 2)]
    walls: dict[str, float] = {}
    nodes: dict[str, set[str]] = {}
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with local_cluster(2, cpus_per_node=args.node_cpus) as cluster:
        for i, (label, seeds) in enumerate(tqdm(runs, desc="studies", unit="study")):
            before = train_worker_nodes(cluster.address)
            cmd = study_cmd(space, cohort, work / f"study{i}", seeds=seeds, name=f"pack{i}")
            wall, proc = run_study(cmd, cluster.address, log=work / f"study{i}.log")
            if proc.returncode != 0:
                print(f"{label}: study failed (exit {proc.returncode}); see {work}/study{i}.log\n"
                      f"{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            walls[label] = wall
            nodes[label] = {n for a, n in train_worker_nodes(cluster.address).items() if a not in before}
    ratio = walls["2 trials"] / walls["1 trial"]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    print(f"\nmachine: {os.cpu_count()} CPUs ({cpu}); cluster: head (0 CPUs) + 2 nodes x "
          f"{args.node_cpus:g} CPU; {time.strftime('%Y-%m-%d %H:%M')}; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (before: {load0})")
    print(f"trial: `seqablate study run --smoke`, {args.steps or 'smoke default'} steps, "
          "1 worker x 1 CPU (1 torch thread)")
    print(f"{'study':<20}{'wall s':>10}{'train-worker nodes':>22}")
    for label in ("1 trial", "2 trials"):
        print(f"{label:<20}{walls[label]:>10.1f}{len(nodes[label]):>22}")
    print(f"ratio T(2 trials on 2 nodes) / T(1 trial) = {ratio:.2f}  (1.0 = perfect packing, 2.0 = serial)")
    if len(nodes["2 trials"]) < 2:
        print("warning: both trials' workers ran on one node", file=sys.stderr)
    return 0


def _main_synthetic(args: Any) -> int:
    import tempfile

    from tqdm import tqdm

    work = args.out or Path(tempfile.mkdtemp(prefix="bench-packing-"))
    runs = [("warm-up (untimed)", 1), ("1 trial", 1), ("2 trials", 2)]
    rows: dict[str, tuple[float, list[dict[str, Any]]]] = {}
    with local_cluster(2, cpus_per_node=args.node_cpus) as cluster:
        for label, n in tqdm(runs, desc="tune runs", unit="run"):
            rows[label] = run_synthetic(cluster.address, n, work / label.split()[0],
                                        steps=args.steps, ckpt_every=args.ckpt_every)
    print(f"\n{_machine()}; cluster: head (0 CPUs) + 2 nodes x {args.node_cpus:g} CPU; "
          f"synthetic trial = {args.steps} steps, checkpoint every {args.ckpt_every}")
    print(f"{'run':<10}{'wall s':>9}{'compute s':>11}{'ckpt s':>9}{'other s':>9}{'nodes':>7}")
    for label in ("1 trial", "2 trials"):
        wall, res = rows[label]
        comp = max(r["compute_s"] for r in res)
        ck = max(r["ckpt_s"] for r in res)
        nodes = len({r["node"] for r in res})
        print(f"{label:<10}{wall:>9.1f}{comp:>11.1f}{ck:>9.2f}{wall - comp - ck:>9.1f}{nodes:>7}")
    ratio = rows["2 trials"][0] / rows["1 trial"][0]
    print(f"ratio T(2 trials on 2 nodes) / T(1 trial) = {ratio:.2f}  (1.0 = perfect packing, 2.0 = serial)")
    print("(compute/ckpt: slowest trial's seconds in its steps / in checkpoint+report; "
          "other = wall - both: Tune start-up, scheduling, trial process start)")
    return 0


def _machine() -> str:
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return f"machine: {os.cpu_count()} CPUs ({cpu}), {time.strftime('%Y-%m-%d')}"


if __name__ == "__main__":
    sys.exit(main())
