"""A real multi-node study on this machine: head + 2 worker nodes (separate raylets on
127.0.0.1), a --smoke study whose trials spread over the nodes, checkpoints in one shared
storage folder, and a worker node killed mid-study.

Checks: the study completes; the trial whose node was killed resumed from its checkpoint, not
from step 0 (its per-step loss history in MLflow repeats only steps after a checkpoint, never
step 1); MLflow holds exactly one FINISHED run per trial.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_packing import REPO, local_cluster, make_cohort, study_cmd, write_space  # noqa: E402

pytestmark = pytest.mark.slow

TRIALS = 2


def _alive_train_workers(address: str) -> list[str]:
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("class_name", "=", "RayTrainWorker"),
                                                   ("state", "=", "ALIVE")],
                         raise_on_missing_output=False)
    return [a.node_id for a in actors]


def test_study_survives_a_killed_worker_node(tmp_path):
    pytest.importorskip("seqablate.trainables.commands")
    cohort = make_cohort(tmp_path / "cohort", patients=6)
    space = write_space(tmp_path / "space.py")
    storage = tmp_path / "studies"
    cmd = study_cmd(space, cohort, storage, seeds=TRIALS, name="multinode")
    log = (tmp_path / "study.log").open("w")
    with local_cluster(2, cpus_per_node=1) as cluster:
        env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(REPO)}
        env.pop("MLFLOW_TRACKING_URI", None)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # Kill a node once every running trial has written a checkpoint and a training
            # worker is alive on some node: that trial must resume from its checkpoint.
            victim = None
            deadline = time.time() + 900
            while victim is None:
                assert proc.poll() is None, (tmp_path / "study.log").read_text()[-4000:]
                assert time.time() < deadline, "no checkpoint appeared"
                ckpts = [p for p in storage.rglob("checkpoint_*") if p.is_dir()]
                alive = _alive_train_workers(cluster.address)
                if len(ckpts) >= TRIALS and alive:
                    victim = alive[0]
                time.sleep(0.5)
            node = next(n for n in cluster.worker_nodes if n.node_id == victim)
            cluster.remove_node(node, allow_graceful=False)
            # The autoscaler would bring a replacement; do what it does.
            cluster.add_node(num_cpus=1)
            rc = proc.wait(timeout=1200)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log.close()
    output = (tmp_path / "study.log").read_text()
    assert rc == 0, output[-4000:]

    # --- MLflow: one finished run per trial; the killed trial resumed, nobody restarted ----
    from seqablate import tracking

    uri = f"sqlite:///{next(storage.rglob('mlflow.db'))}"
    trials = tracking.list_trials("multinode", tracking_uri=uri)
    assert len(trials) == TRIALS
    assert Counter(trials["status"]) == {"FINISHED": TRIALS}
    assert trials["run_name"].nunique() == TRIALS
    restarted = []
    for run_id in trials["run_id"]:
        # Raw history (every logged value): a resumed trial re-logs the steps after its
        # checkpoint; one restarted from scratch would re-log step 1.
        steps = [m.step for m in tracking.client(uri).get_metric_history(run_id, "train.loss")]
        repeated = sorted(s for s, c in Counter(steps).items() if c > 1)
        assert 1 not in repeated, f"run {run_id} restarted from step 0: steps {steps}"
        if repeated:
            restarted.append((run_id, repeated))
    assert restarted, "no trial shows a restart: the killed node ran no trial?"
