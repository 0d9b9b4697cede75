"""A smoke study through Ray Tune + Ray Train: MLflow runs, a failing trial, resume, ray job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqablate.config import StudyConfig, parse

SPACE = '''DESCRIPTION = "input level with and without sequence dropout"
SPACE = [{"model.integration": "input", "train.dropout_p": 0.0},
         {"model.integration": "input", "train.dropout_p": 0.25}]
'''


@pytest.fixture()
def space_file(tmp_path: Path) -> Path:
    f = tmp_path / "two.py"
    f.write_text(SPACE)
    return f


@pytest.fixture()
def ray_local():  # noqa: ANN201
    yield
    import ray

    ray.shutdown()


def _trials(storage: Path):  # noqa: ANN202
    from seqablate import tracking

    return tracking.list_trials(str(storage))


def _study(cohorts: dict[str, Path], space_file: Path, storage: Path) -> StudyConfig:
    return parse(StudyConfig, {
        "name": "smoke", "space": str(space_file), "cohort": str(cohorts["stanford"]),
        "external": {"oslo": str(cohorts["oslo"])}, "smoke": True, "max_concurrent": 2,
        "storage": str(storage),
    })


@pytest.mark.slow
def test_study_logs_one_run_per_trial_and_survives_a_failure(
    cohorts: dict[str, Path], space_file: Path, tmp_path: Path, ray_local: None
) -> None:
    from seqablate import tracking
    from seqablate.trainables.driver import run_study

    storage = tmp_path / "study"
    # The dropout trial's workers raise at step 3 every time (the Train run is retried once
    # from its step-2 checkpoint, fails again, and the trial fails).
    result = run_study(_study(cohorts, space_file, storage), fail_at={"input-p0.25-seed0": 3}, verbose=0)
    status = {r["name"]: r["status"] for r in result.trials}
    assert status == {"input-seed0": "TERMINATED", "input-p0.25-seed0": "ERROR"}
    df = _trials(storage)
    assert sorted(df["run_name"]) == ["input-p0.25-seed0", "input-seed0"]  # exactly one run each
    ok = df[df["run_name"] == "input-seed0"].iloc[0]
    bad = df[df["run_name"] == "input-p0.25-seed0"].iloc[0]
    assert ok["status"] == "FINISHED" and bad["status"] == "FAILED"
    for key in ("test.full.mAP", "test.full.mAP_lo", "test.full.mAP_hi", "test.censor_t1_gre_post.mAP",
                "external.oslo.mAP"):
        assert 0.0 <= float(ok[f"metrics.{key}"]) <= 1.0, key
    c = tracking.client(result.tracking_uri)
    assert "injected failure at step 3" in c.get_run(bad["run_id"]).data.tags["error"]
    arts = {a.path for a in c.list_artifacts(ok["run_id"], "model")}
    assert arts == {"model/best_model.pt", "model/config.yaml"}
    assert len(c.get_metric_history(ok["run_id"], "train.loss")) == 4  # one per step (smoke: 4 steps)


@pytest.mark.slow
def test_resume_does_not_rerun_or_duplicate(
    cohorts: dict[str, Path], space_file: Path, tmp_path: Path, ray_local: None
) -> None:
    from seqablate.cli import main

    storage = tmp_path / "study"
    argv = ["study", "run", str(space_file), "--cohort", str(cohorts["stanford"]), "--smoke",
            "--storage", str(storage), "--max-concurrent", "2", "--name", "smoke"]
    assert main(argv) == 0
    first = _trials(storage).set_index("run_name")
    assert main(["study", "resume", str(storage)]) == 0
    again = _trials(storage).set_index("run_name")
    assert sorted(again.index) == sorted(first.index)  # no duplicates
    assert (again["status"] == "FINISHED").all()
    # Finished trials were not re-run: their runs ended when they first ended.
    assert (again.loc[first.index, "end_time"] == first["end_time"]).all()


@pytest.mark.slow
def test_ray_job_submit(cohorts: dict[str, Path], space_file: Path, tmp_path: Path) -> None:
    """Local head on 127.0.0.1, `ray job submit --working-dir .`, SUCCEEDED, runs in MLflow."""
    repo = Path(__file__).resolve().parents[2]
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TRAIN_V2_ENABLED": "1"}
    env.pop("RAY_ADDRESS")
    storage = tmp_path / "study"
    port = "8266"
    # --block: the head lives as long as this process; terminating it stops exactly this
    # cluster (never `ray stop`, which would stop every Ray instance on a shared machine).
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", "6390",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", port, "--num-cpus", "3",
         "--include-dashboard", "true", "--temp-dir", str(tmp_path / "ray")],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # wait for the job server
            if subprocess.run([ray, "job", "list", "--address", address], env=env,
                              capture_output=True).returncode == 0:
                break
            time.sleep(1)
        proc = subprocess.run(
            [ray, "job", "submit", "--address", address, "--working-dir", str(repo),
             # as the README shows: .git does not travel with --working-dir, the commit does
             "--runtime-env-json", json.dumps({"env_vars": {"SEQABLATE_GIT_COMMIT": "c0ffee-test"}}),
             "--", "python", "-m", "seqablate", "study", "run", str(space_file), "--cohort",
             str(cohorts["stanford"]), "--smoke", "--storage", str(storage), "--name", "job"],
            env=env, cwd=repo, capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "SUCCEEDED" in proc.stdout + proc.stderr
        assert "Trial status" in proc.stdout  # Tune's progress streamed back
        df = _trials(storage)
        assert sorted(df["run_name"]) == ["input-p0.25-seed0", "input-seed0"]
        assert (df["status"] == "FINISHED").all()
        assert (df["tags.git_commit"] == "c0ffee-test").all()
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
