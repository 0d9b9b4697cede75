"""A smoke study through Ray Tune + Ray Train: MLflow runs, a failing trial, resume, ray job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

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
    result = run_study(_study(cohorts, space_file, storage), faults={"input-p0.25-seed0": {"fail_at_step": 3}}, verbose=0)
    status = {r["name"]: r["status"] for r in result.trials}
    assert status == {"input-seed0": "TERMINATED", "input-p0.25-seed0": "ERROR"}
    df = _trials(storage)
    assert sorted(df["run_name"]) == ["input-p0.25-seed0", "input-seed0"]  # exactly one run each
    ok = df[df["run_name"] == "input-seed0"].iloc[0]
    bad = df[df["run_name"] == "input-p0.25-seed0"].iloc[0]
    assert ok["status"] == "FINISHED" and bad["status"] == "FAILED"
    c = tracking.client(result.tracking_uri)
    # Each condition's logged mAP, recomputed from the logged per-lesion table by a second
    # method: scikit-learn's AP over the predictions (recall over predicted TPs) scaled by
    # TP / truth lesions (the paper's recall is over all truth lesions).
    lesions = pd.read_csv(c.download_artifacts(ok["run_id"], "eval/lesions.csv", str(tmp_path / "dl")))
    for cond in ("test.full", "test.censor_t1_gre_post", "external.oslo"):
        rows = lesions[lesions["condition"] == cond]
        n_truth, logged = float(ok[f"metrics.{cond}.n_truth"]), float(ok[f"metrics.{cond}.mAP"])
        assert n_truth > 0 and len(rows) == int(ok[f"metrics.{cond}.n_pred"]), cond
        n_tp = int(rows["is_tp"].sum())
        expected = average_precision_score(rows["is_tp"], rows["score"]) * n_tp / n_truth if n_tp else 0.0
        assert logged == pytest.approx(expected, abs=1e-9), cond
    assert float(ok["metrics.test.full.mAP_lo"]) <= float(ok["metrics.test.full.mAP"]) <= float(ok["metrics.test.full.mAP_hi"])
    assert "injected failure at step 3" in c.get_run(bad["run_id"]).data.tags["error"]
    # The best model is an MLflow PyTorch model (with its config), not a raw checkpoint file.
    arts = {a.path for a in c.list_artifacts(ok["run_id"], "model")}
    assert {"model/MLmodel", "model/data", "model/config.yaml"} <= arts and "model/best_model.pt" not in arts
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


def _ray_dir_state() -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file in the real user's ~/.ray."""
    d = Path(os.path.expanduser("~")) / ".ray"
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()} if d.is_dir() else {}


@pytest.mark.slow
def test_ray_job_submit(cohorts: dict[str, Path], space_file: Path, tmp_path: Path) -> None:
    """Local head on 127.0.0.1 with token authentication on (Ray's default), `ray job submit
    --working-dir .`, SUCCEEDED, runs in MLflow. The token lives in a temporary folder
    (RAY_AUTH_TOKEN_PATH) and HOME is a temporary folder too: the user's ~/.ray is never read
    or written. A client without the token is refused."""
    import secrets

    repo = Path(__file__).resolve().parents[2]
    ray = str(Path(sys.executable).parent / "ray")
    before = _ray_dir_state()
    home = tmp_path / "home"
    home.mkdir()
    token = tmp_path / "cluster.token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # PATH: the job's `python` must be the one with the project installed (on a cluster every
    # node's; here this venv's), as the README's entrypoint says plain `python`.
    env = {**os.environ, "HOME": str(home), "RAY_TRAIN_V2_ENABLED": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    storage = tmp_path / "study"
    port = "8266"
    # A short --temp-dir: Ray's unix sockets live under it and a path over 107 bytes (pytest's
    # /tmp/pytest-of-root/pytest-NN/test_ray_job_submit0/ray/session_<date>_<pid>/sockets/...
    # is ~116) makes the head exit at once.
    ray_tmp = Path(tempfile.mkdtemp(prefix="sqa-ray-", dir="/tmp"))
    head_log = tmp_path / "head.log"
    # --block: the head lives as long as this process; terminating it stops exactly this
    # cluster (never `ray stop`, which would stop every Ray instance on a shared machine).
    with open(head_log, "wb") as log:
        head = subprocess.Popen(
            [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", "6390",
             "--dashboard-host", "127.0.0.1", "--dashboard-port", port, "--num-cpus", "3",
             "--include-dashboard", "true", "--temp-dir", str(ray_tmp)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
    address = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # wait for the job server
            assert head.poll() is None, f"ray head exited: {head_log.read_text()[-2000:]}"
            if subprocess.run([ray, "job", "list", "--address", address], env=env,
                              capture_output=True).returncode == 0:
                break
            time.sleep(1)
        # Without the token (another one in its place) the job server refuses the client.
        wrong = tmp_path / "wrong.token"
        wrong.write_text(secrets.token_hex(32))
        refused = subprocess.run([ray, "job", "list", "--address", address],
                                 env={**env, "RAY_AUTH_TOKEN_PATH": str(wrong)}, capture_output=True, text=True)
        assert refused.returncode != 0
        assert "authentication" in (refused.stdout + refused.stderr).lower()
        proc = subprocess.run(
            [ray, "job", "submit", "--address", address, "--working-dir", str(repo),
             # as the README shows: .git does not travel with --working-dir, the commit does
             "--runtime-env-json", json.dumps({"env_vars": {"SEQABLATE_GIT_COMMIT": "c0ffee-test"}}),
             "--", "python", "-m", "seqablate", "study", "run", str(space_file), "--cohort",
             str(cohorts["stanford"]), "--smoke", "--storage", str(storage), "--name", "job"],
            env=env, cwd=repo, capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # Ray 2.60's CLI ends with "Job '<id>' succeeded" (the status itself is SUCCEEDED)
        out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
        assert re.search(r"Job '\S+' succeeded", out)
        assert "finished  input-seed0" in out  # the study's own console, streamed back
        assert "TrainController" not in out  # and not Ray's internals
        df = _trials(storage)
        assert sorted(df["run_name"]) == ["input-p0.25-seed0", "input-seed0"]
        assert (df["status"] == "FINISHED").all()
        assert (df["tags.git_commit"] == "c0ffee-test").all()
        assert _ray_dir_state() == before  # the user's own ~/.ray untouched
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
