"""Every advertised study path end to end through Ray Tune + Ray Train (slow tier).

The README's study commands as written (``--smoke`` sizes, a few trials per space where the
point is the path): each named space, one study with two DDP workers per trial, the Optuna
search with ASHA killed and resumed, a killed worker's metric history, and a study against a
real ``mlflow server``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests._servers import mlflow_server

pytestmark = pytest.mark.slow

SEQ = [sys.executable, "-m", "seqablate"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEQ, *args], env=_env(), capture_output=True, text=True, timeout=timeout)


def _trials(storage: Path, tracking_uri: str | None = None) -> pd.DataFrame:
    from seqablate import tracking

    return tracking.list_trials(str(storage), tracking_uri=tracking_uri)


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("space", "extra", "names"),
    [
        ("paper-table1", ["--trials", "mid@layer4-shared-subtract", "--trials", "input"],
         {"input-seed0", "mid@layer4-shared-subtract-seed0"}),
        ("paper-table2", ["--trials", "end-l2_tied-p0.25", "--workers-per-trial", "2"],
         {"end-l2_tied-p0.25-seed0"}),
        ("dropout-sweep", ["--trials", "input-p0.5-uniform"], {"input-p0.5-uniform-seed0"}),
    ],
)
def test_named_grid_space_runs_through_tune(cohort: Path, tmp_path: Path, space: str, extra: list[str],
                                            names: set[str]) -> None:
    storage = tmp_path / "study"
    _ok(_cli("study", "run", space, "--cohort", str(cohort), "--smoke", "--storage", str(storage),
             "--max-concurrent", "2", *extra))
    df = _trials(storage)
    assert set(df["run_name"]) == names and (df["status"] == "FINISHED").all()
    assert df["metrics.test.full.mAP"].notna().all()
    if "--workers-per-trial" in extra:
        assert (df["metrics.train.loss"].notna()).all()


def test_hpo_with_asha_killed_and_resumed(cohort: Path, tmp_path: Path) -> None:
    """The Optuna search checkpoints its searcher (it used to crash on pickling), is killed
    after its first trial, and `study resume` finishes it: Optuna's state is restored (the
    finished trial is not sampled or run again) and no MLflow run is duplicated."""
    storage = tmp_path / "hpo"
    argv = [*SEQ, "study", "run", "hpo", "--cohort", str(cohort), "--smoke", "--storage", str(storage),
            "--num-samples", "3", "--scheduler", "asha", "--max-concurrent", "1"]
    first = _kill_after_first_finished(argv, storage, tmp_path)
    _ok(_cli("study", "resume", str(storage)))
    df = _trials(storage)
    assert len(df) == 3, df[["run_name", "status"]]
    assert df["tags.seqablate.trial_key"].is_unique and (df["status"] == "FINISHED").all()
    again = df.set_index("run_id").loc[first["run_id"]]
    assert (again["end_time"].to_numpy() == first["end_time"].to_numpy()).all()  # not re-run
    # The restored searcher holds every trial (pickled define-by-run function included).
    import pickle

    states = sorted(storage.glob("searcher-state-*.pkl"))
    assert states, "Tune wrote no searcher state"
    with open(states[-1], "rb") as fh:
        saved = pickle.load(fh)
    assert len(saved["_ot_study"].trials) == 3


def test_multi_objective_search_killed_and_resumed(cohort: Path, tmp_path: Path) -> None:
    """A two-objective Optuna search (``--objectives full worst``) is killed after its first
    trial and `study resume` finishes it: the restored searcher holds both objectives'
    directions and every trial's two values (the finished one not sampled or run again), no
    MLflow run is duplicated, and the resumed study tags the front on all of its runs."""
    storage = tmp_path / "mo"
    argv = [*SEQ, "study", "run", "hpo-per-sequence", "--cohort", str(cohort), "--smoke", "--storage", str(storage),
            "--num-samples", "3", "--objectives", "full", "worst", "--max-concurrent", "1"]
    first = _kill_after_first_finished(argv, storage, tmp_path)
    assert "tags.pareto" not in first.columns or first["tags.pareto"].isna().all()  # killed before tagging
    resumed = _cli("study", "resume", str(storage))
    _ok(resumed)
    assert "Pareto front on the validation objectives (1: full; 2: worst" in resumed.stdout
    df = _trials(storage)
    assert len(df) == 3, df[["run_name", "status"]]
    assert df["tags.seqablate.trial_key"].is_unique and (df["status"] == "FINISHED").all()
    again = df.set_index("run_id").loc[first["run_id"]]
    assert (again["end_time"].to_numpy() == first["end_time"].to_numpy()).all()  # not re-run
    assert set(df["tags.pareto"]) <= {"true", "false"} and (df["tags.pareto"] == "true").any()
    import pickle

    import optuna

    states = sorted(storage.glob("searcher-state-*.pkl"))
    assert states, "Tune wrote no searcher state"
    with open(states[-1], "rb") as fh:
        saved = pickle.load(fh)
    study = saved["_ot_study"]
    assert saved["_metric"] == ["val.selected_objective.1", "val.selected_objective.2"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 3 and len(done) == 3
    # Each Optuna trial's two values are its run's objectives at the selected checkpoint.
    logged = sorted(zip(df["metrics.val.selected_objective.1"], df["metrics.val.selected_objective.2"], strict=True))
    told = sorted(tuple(t.values) for t in done)
    assert np.allclose(np.array(told, dtype=float), np.array(logged, dtype=float))


def test_killed_worker_leaves_no_hole_in_the_metric_history(cohort: Path, tmp_path: Path) -> None:
    """A worker SIGKILLed after its metrics were flushed and before its checkpoint was reported
    resumes from the previous checkpoint; every step's training loss is in MLflow."""
    from seqablate import tracking
    from seqablate.config import StudyConfig, parse
    from seqablate.trainables.driver import run_study

    space = tmp_path / "one.py"
    space.write_text('SPACE = [{"model.integration": "input", "train.dropout_p": 0.0}]\n')
    from seqablate.trainables.driver import SMOKE

    base = {k: v for k, v in SMOKE.items() if not k.startswith("train.")}
    cfg = parse(StudyConfig, {
        "name": "kill", "space": str(space), "cohort": str(cohort), "storage": str(tmp_path / "s"),
        "base": {"data": {k[5:]: v for k, v in base.items() if k.startswith("data.")},
                 "model": {"backbone": "tiny"},
                 "train": {"steps": 6, "batch_size": 2, "val_every": 2, "checkpoint_every": 2, "saliency_every": 0},
                 "eval": {k[5:]: v for k, v in base.items() if k.startswith("eval.")}},
    })
    once = tmp_path / "killed.txt"
    try:
        result = run_study(cfg, faults={"input-seed0": {"kill_at_step": 4, "once_file": str(once), "settle_s": 5.0}}, verbose=0)
    finally:
        import ray

        ray.shutdown()
    assert once.is_file(), "the fault did not fire"
    assert [r["status"] for r in result.trials] == ["TERMINATED"]
    run_id = _trials(tmp_path / "s").iloc[0]["run_id"]
    uri = result.tracking_uri
    assert [s for s, _ in tracking.metric_history(run_id, "train.loss", tracking_uri=uri)] == [1, 2, 3, 4, 5, 6]
    assert tracking.metric_history(run_id, "train.resumed_from_step", tracking_uri=uri) == [(2, 2.0)]


def test_study_and_report_against_a_real_mlflow_server(cohort: Path, tmp_path: Path) -> None:
    from seqablate import tracking

    space = tmp_path / "two.py"
    space.write_text('SPACE = [{"model.integration": "input", "train.dropout_p": 0.0},\n'
                     '         {"model.integration": "input", "train.dropout_p": 0.25}]\n')
    with mlflow_server(tmp_path / "server") as url:
        storage = tmp_path / "study"
        _ok(_cli("study", "run", str(space), "--cohort", str(cohort), "--smoke", "--storage", str(storage),
                 "--tracking-uri", url, "--name", "served", "--max-concurrent", "2"))
        assert not (storage / "mlflow.db").exists()  # the runs went to the server
        df = _trials(storage, tracking_uri=url)
        assert set(df["run_name"]) == {"input-seed0", "input-p0.25-seed0"} and (df["status"] == "FINISHED").all()
        run_id = df[df["run_name"] == "input-p0.25-seed0"].iloc[0]["run_id"]
        for key in ("test.full.mAP", "test.censor_t1_gre_post.mAP", "val.mAP", "val.best_step"):
            assert df[f"metrics.{key}"].notna().all(), key
        steps = [s for s, _ in tracking.metric_history(run_id, "saliency.cumulative.sequence.t1_gre_post",
                                                        tracking_uri=url)]
        assert steps == [1, 2, 4]  # saliency_every 2 (smoke), and step 1
        deployed = tracking.load_deployed(tracking.download_model(run_id, tmp_path / "m", tracking_uri=url))
        assert deployed.sequences == ("t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair")
        rep = _cli("report", "served", "--tracking-uri", url, "--out", str(tmp_path / "rep"), "--no-overlays")
        _ok(rep)
        html = (tmp_path / "rep" / "report.html").read_text()
        assert "input-p0.25-seed0" in html or "dropout p=0.25" in html
        ref = tracking.resolve_study("served", url)
        assert "report/report.html" in tracking.list_artifacts(ref.parent_run_id, "report", tracking_uri=url)


def _kill_after_first_finished(argv: list[str], storage: Path, tmp_path: Path) -> pd.DataFrame:
    """Run ``argv`` (a study) in its own process group, SIGKILL it once a trial has finished
    (and Tune has had a moment to checkpoint); returns the finished trials seen then."""
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    first: pd.DataFrame | None = None
    while time.monotonic() < deadline:
        time.sleep(2)
        if (storage / "mlflow.db").is_file():
            df = _trials(storage)
            if len(df) and (df["status"] == "FINISHED").sum() >= 1:
                first = df[df["status"] == "FINISHED"]
                break
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
    assert first is not None, "no trial finished in time"
    time.sleep(3)  # let Tune write its experiment checkpoint after the finished trial
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    return first
