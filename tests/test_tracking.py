"""Tests of seqablate.tracking against real SQLite MLflow stores (and one real `mlflow server`).

Creating a fresh MLflow database runs 10-30 s of schema migrations; tracking keeps one migrated
empty database per MLflow version in its cache and copies it into each new study folder.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import OperationalError

from seqablate import tracking as T
from seqablate.config import TrialConfig, parse, with_overrides
from seqablate.search_spaces import get_space, run_name, trial_key
from seqablate.tracking import store as TS
from tests._servers import mlflow_server

# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _warm_template() -> None:
    """Builds tracking's cached empty database once (later study folders copy it, ~0.5 s)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        T.client(T.default_tracking_uri(tmp))


@pytest.fixture
def storage(tmp_path: Path, _warm_template: None) -> Path:
    """A fresh study folder (its database is created on first use)."""
    return tmp_path / "study"


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _cfg(**overrides: Any) -> TrialConfig:
    return with_overrides(TrialConfig(), overrides)


POINT = {
    "model.integration": "mid",
    "model.integration_point": "layer4",
    "model.sharing": "l2_tied",
    "train.tie_lambda": 1e-3,
    "train.dropout_p": 0.25,
    "train.seed": 1,
}

# ------------------------------------------------------------------------------------------
# where runs go
# ------------------------------------------------------------------------------------------


def test_default_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cwd_default = f"sqlite:///{tmp_path.resolve()}/seqablate-runs/mlflow.db"
    assert T.default_tracking_uri() == cwd_default
    assert T.default_tracking_uri("s3://bucket/study") == cwd_default  # not local
    assert T.default_tracking_uri("studies/a") == f"sqlite:///{tmp_path.resolve()}/studies/a/mlflow.db"
    assert T.default_tracking_uri((tmp_path / "b").as_uri()) == f"sqlite:///{tmp_path.resolve()}/b/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert T.default_tracking_uri("studies/a") == "http://mlflow.example:5000"
    assert T.default_tracking_uri("studies/a", "sqlite:////x/y.db") == "sqlite:////x/y.db"
    # MLflow 3 has no file store: bare paths become SQLite databases.
    assert T.default_tracking_uri(explicit="runs") == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert T.default_tracking_uri(explicit="x/my.db") == f"sqlite:///{tmp_path.resolve()}/x/my.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///srv/mlruns")
    assert T.default_tracking_uri() == "sqlite:////srv/mlruns/mlflow.db"


def test_artifact_location_sits_in_study_folder() -> None:
    uri = "sqlite:////data/studies/s1/mlflow.db"
    assert T.sqlite_db_path(uri) == Path("/data/studies/s1/mlflow.db")
    assert T.default_artifact_location(uri, "my study") == "file:///data/studies/s1/mlartifacts/my_study"
    assert T.default_artifact_location("http://host:5000", "s") is None


# ------------------------------------------------------------------------------------------
# retries
# ------------------------------------------------------------------------------------------


def _locked() -> MlflowException:
    """What MLflow raises for a locked SQLite database: an MlflowException from SQLAlchemy's."""
    try:
        try:
            raise OperationalError("INSERT INTO metrics ...", {}, Exception("database is locked"))
        except OperationalError as inner:
            raise MlflowException(f"(sqlite3.OperationalError) {inner}") from inner
    except MlflowException as outer:
        return outer


def test_is_locked_error_walks_the_chain() -> None:
    assert T.is_locked_error(_locked())
    chained = RuntimeError("wrapper")
    chained.__cause__ = _locked()
    assert T.is_locked_error(chained)
    assert not T.is_locked_error(MlflowException("RESOURCE_DOES_NOT_EXIST: run abc"))
    assert not T.is_locked_error(ValueError("locked out"))  # only SQLite's messages count


def test_retry_backoff_then_success() -> None:
    sleeps: list[float] = []
    policy = T.RetryPolicy(attempts=6, base_s=0.1, cap_s=0.3, sleep=sleeps.append)
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] <= 4:
            raise _locked()
        return "ok"

    assert TS.retry(flaky, policy=policy) == "ok"
    assert calls["n"] == 5 and len(sleeps) == 4
    # Full jitter under ceilings 0.1, 0.2, 0.3 (capped), 0.3.
    for s, ceiling in zip(sleeps, [0.1, 0.2, 0.3, 0.3], strict=True):
        assert 0 <= s <= ceiling


def test_retry_gives_up_and_ignores_other_errors() -> None:
    sleeps: list[float] = []
    policy = T.RetryPolicy(attempts=3, sleep=sleeps.append)

    def always_locked() -> None:
        raise _locked()

    with pytest.raises(MlflowException, match="database is locked"):
        TS.retry(always_locked, policy=policy)
    assert len(sleeps) == 2  # 3 attempts, 2 waits

    def other() -> None:
        raise KeyError("x")

    sleeps.clear()
    with pytest.raises(KeyError):
        TS.retry(other, policy=policy)
    assert sleeps == []


# ------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------


def test_study_and_trial_round_trip(storage: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    import torch

    from seqablate.models import build_model
    from seqablate.models.deployed import DeployedModel

    cfg = _cfg(**POINT)
    small = {"integration": "input", "backbone": "tiny", "sequences": list(cfg.data.sequences), "slices": 3}
    deployed = DeployedModel(build_model(small, seed=0), config=cfg.model_dump(mode="json"))
    with T.study_run("s1", storage=str(storage), space=get_space("paper-table2")) as study:
        assert study.ref.tracking_uri == f"sqlite:///{storage.resolve()}/mlflow.db"
        with T.trial_run(study.ref, cfg, overrides=POINT, flush_every=7) as log:
            for step in range(20):
                log.log_metrics({"train.loss": 1.0 / (step + 1), "lr": 0.5 * step}, step=step)
            log.log_metrics({"test.full.mAP": 0.41, "test.full.mAP_lo": 0.38}, step=20)
            log.log_model(deployed)
            log.log_pr_curve("test.full", [1.0, 0.5, 0.25], [0.0, 0.5, 1.0], [0.9, 0.5])
            log.log_table(pd.DataFrame({"lesion": [1, 2], "volume_mm3": [3.5, 10.0]}), "lesions/test_full.csv")
        study.log_summary({"trials": 1, "best": "x"})

    df = T.list_trials(str(storage))
    assert len(df) == 1
    row = df.iloc[0]
    assert row["run_name"] == "mid@layer4-l2_tied-p0.25-seed1" == run_name(POINT)
    assert row["status"] == "FINISHED"
    # params = every leaf of the resolved config, as MLflow's strings: the point's own values
    # by hand, and one param per leaf of the config's JSON (counted here, not by flatten).
    by_hand = {"model.integration": "mid", "model.integration_point": "layer4", "model.sharing": "l2_tied",
               "train.tie_lambda": "0.001", "train.dropout_p": "0.25", "train.seed": "1",
               "model.fusion": "concat", "data.slices": str(cfg.data.slices)}
    for key, value in by_hand.items():
        assert row[f"params.{key}"] == value, key

    def leaves(node: Any) -> int:
        return sum(leaves(v) for v in node.values()) if isinstance(node, dict) else 1

    assert sum(c.startswith("params.") for c in df.columns) == leaves(json.loads(cfg.model_dump_json()))
    expected_tags = {
        "integration": "mid",
        "integration_point": "layer4",
        "fusion": "concat",
        "sharing": "l2_tied",
        "dropout": "0.25",
        "dropout_mode": "bernoulli",
        "seed": "1",
        "seqablate.study": "s1",
        "seqablate.kind": "trial",
        "seqablate.trial_key": trial_key(POINT),
        "mlflow.parentRunId": study.ref.parent_run_id,
    }
    for key, value in expected_tags.items():
        assert row[f"tags.{key}"] == value, key
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(T.__file__).parent, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the tag is HEAD's commit (+dirty when edited)
        assert row["tags.git_commit"].split("+")[0] == head.stdout.strip()
    else:
        assert row["tags.git_commit"] == "unknown"
    assert row["metrics.train.loss"] == pytest.approx(1.0 / 20)  # latest value
    assert row["metrics.test.full.mAP"] == pytest.approx(0.41)
    uri = study.ref.tracking_uri
    hist = T.metric_history(row["run_id"], "train.loss", tracking_uri=uri)
    assert hist == [(s, pytest.approx(1.0 / (s + 1))) for s in range(20)]
    assert T.metric_history(row["run_id"], "nope", tracking_uri=uri) == []

    # artifacts: config round-trips to the same TrialConfig; the model folder is loadable
    got = T.download_artifact(row["run_id"], "config.yaml", tmp_path / "dl", tracking_uri=uri)
    assert parse(TrialConfig, yaml.safe_load(got.read_text())) == cfg
    model_dir = T.download_model(row["run_id"], tmp_path / "m", tracking_uri=uri)
    assert (model_dir / "MLmodel").is_file()
    assert parse(TrialConfig, yaml.safe_load((model_dir / "config.yaml").read_text())) == cfg
    x, present = torch.rand(2, 4, 3, 32, 32), torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(T.load_deployed(model_dir)(x, present), deployed(x, present))
    assert T.download_model(f"runs:/{row['run_id']}/model", tmp_path / "m2", tracking_uri=uri).is_dir()
    assert T.download_model(model_dir) == model_dir  # a local path passes through
    pr = pd.read_csv(T.download_artifact(row["run_id"], "pr_curves/test.full.csv", tmp_path / "pr", tracking_uri=uri))
    assert list(pr.columns) == ["precision", "recall", "threshold"]
    assert pr["threshold"].isna().tolist() == [False, False, True]
    assert "lesions/" in T.list_artifacts(row["run_id"], tracking_uri=uri)
    # everything lives inside the study folder, the Default experiment's artifacts too
    con = sqlite3.connect(storage / "mlflow.db")
    assert con.execute("SELECT artifact_location FROM experiments WHERE experiment_id = 0").fetchone()[0] == (storage.resolve() / "mlartifacts" / "0").as_uri()
    con.close()
    assert (storage / "mlartifacts" / "s1").is_dir()
    parent_files = T.list_artifacts(study.ref.parent_run_id, tracking_uri=uri)
    assert {"space.json", "summary.json"} <= set(parent_files)
    space = json.loads(T.download_artifact(study.ref.parent_run_id, "space.json", tmp_path / "sp", tracking_uri=uri).read_text())
    assert space["name"] == "paper-table2" and len(space["points"]) == 7


def test_failed_trial_is_marked_and_study_carries_on(storage: Path, tmp_path: Path) -> None:
    with T.study_run("s2", storage=str(storage)) as study:
        with pytest.raises(RuntimeError, match="boom"):
            with T.trial_run(study.ref, _cfg(), overrides={"train.seed": 0}) as log:
                log.log_metrics({"train.loss": 0.5}, step=3)  # buffered, flushed on failure
                raise RuntimeError("boom")
        with pytest.raises(KeyboardInterrupt):
            with T.trial_run(study.ref, _cfg(), overrides={"train.seed": 1}):
                raise KeyboardInterrupt
        with T.trial_run(study.ref, _cfg(), overrides={"train.seed": 2}) as log:
            log.log_metric("train.loss", 0.1, step=0)
    df = T.list_trials(study.ref).set_index("run_name")
    assert df.loc["seed0", "status"] == "FAILED"
    assert df.loc["seed0", "tags.error"] == "RuntimeError: boom"
    assert df.loc["seed0", "metrics.train.loss"] == 0.5  # nothing lost
    assert df.loc["seed1", "status"] == "FAILED"
    assert df.loc["seed1", "tags.error"] == "KeyboardInterrupt:"
    assert df.loc["seed2", "status"] == "FINISHED"
    err = T.download_artifact(df.loc["seed0", "run_id"], "error.txt", tmp_path / "e", tracking_uri=study.ref.tracking_uri)
    text = err.read_text()
    assert "Traceback" in text and 'raise RuntimeError("boom")' in text
    # the study's parent run finished normally
    parent = T.client(study.ref.tracking_uri).get_run(study.ref.parent_run_id)
    assert parent.info.status == "FINISHED"


def test_failed_study_marks_parent(storage: Path) -> None:
    with pytest.raises(ValueError, match="bad cohort"):
        with T.study_run("s3", storage=str(storage)) as study:
            raise ValueError("bad cohort")
    parent = T.client(study.ref.tracking_uri).get_run(study.ref.parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error"] == "ValueError: bad cohort"


def test_resume_creates_no_duplicates(storage: Path) -> None:
    points = get_space("paper-table1").grid(seeds=1)[:3]
    with T.study_run("s4", storage=str(storage)) as study:
        ref = study.ref
        with T.trial_run(ref, _cfg(**points[0]), overrides=points[0]):
            pass
        with pytest.raises(RuntimeError):
            with T.trial_run(ref, _cfg(**points[1]), overrides=points[1]):
                raise RuntimeError("killed")
    # "Resume": the same parent run is reopened; finished trials are found, not re-run.
    with T.study_run("s4", storage=str(storage), resume=True) as study2:
        assert study2.ref == ref and study2.resumed
        for point in points:
            found = T.find_trial_run(ref, trial_key(point))
            if found is not None and found.info.status == "FINISHED":
                with pytest.raises(T.TrialAlreadyFinished):
                    with T.trial_run(ref, _cfg(**point), overrides=point):
                        pass
                continue
            with T.trial_run(ref, _cfg(**point), overrides=point) as log:
                assert log.resumed == (found is not None)
                log.log_metric("m", 1.0)
    df = T.list_trials(ref)
    assert sorted(df["run_name"]) == sorted(run_name(p) for p in points)  # 3 runs, no duplicates
    assert set(df["status"]) == {"FINISHED"}
    assert "tags.error" not in df or df["tags.error"].isna().all()  # reopened run's error cleared
    run_id, previous = T.get_or_create_trial_run(ref, trial_key(points[0]), run_name="x")
    assert previous == "FINISHED" and run_id == df.set_index("run_name").loc[run_name(points[0]), "run_id"]
    runs = T.client(ref.tracking_uri).search_runs([ref.experiment_id])
    assert len(runs) == 1 + 3  # parent + trials


def test_resolve_study_forms(storage: Path, tmp_path: Path) -> None:
    with T.study_run("s5", storage=str(storage)) as study:
        with T.trial_run(study.ref, _cfg(), overrides={"train.seed": 0}) as log:
            trial_id = log.run_id
    ref = study.ref
    assert T.resolve_study(str(storage)) == ref
    assert T.resolve_study(str(storage / "mlflow.db")) == ref
    assert T.resolve_study(storage.as_uri()) == ref
    assert T.resolve_study("s5", tracking_uri=ref.tracking_uri) == ref
    assert T.resolve_study(ref.parent_run_id, tracking_uri=ref.tracking_uri) == ref
    assert T.resolve_study(trial_id, tracking_uri=ref.tracking_uri) == ref
    with pytest.raises(ValueError, match="no study folder, parent run id or MLflow experiment"):
        T.resolve_study("nope", tracking_uri=ref.tracking_uri)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no MLflow database"):
        T.resolve_study(str(empty))
    with pytest.raises(ValueError, match="not an existing path, an MLflow run id, runs:/<run id>/model or models:/<name>/<version>"):
        T.download_model("not-a-run", tracking_uri=ref.tracking_uri)
    with pytest.raises(ValueError, match="no such run"):
        T.download_model("0" * 32, tracking_uri=ref.tracking_uri)


def test_metric_buffer_and_bad_input(storage: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with T.study_run("s6", storage=str(storage)) as study:
        with T.trial_run(study.ref, _cfg(), overrides={"train.seed": 0}, flush_every=5, flush_seconds=1e9) as log:
            uri = study.ref.tracking_uri
            log.log_metrics({"a": 1.0, "b": 2.0}, step=0)
            assert T.metric_history(log.run_id, "a", tracking_uri=uri) == []  # still buffered
            log.log_metrics({"a": 3.0, "b": 4.0, "c": 5.0}, step=1)  # 5 pending -> flushed
            assert T.metric_history(log.run_id, "a", tracking_uri=uri) == [(0, 1.0), (1, 3.0)]
            with pytest.raises(ValueError, match="metric name 'val@x' is not valid"):
                log.log_metrics({"val@x": 1.0})
            with pytest.raises(ValueError, match="not a number"):
                log.log_metrics({"ok": "high"})
            # A failing write keeps the buffer: the next flush writes everything.
            log.log_metrics({"d": 1.0}, step=0)
            real = log.client.log_batch
            monkeypatch.setattr(log.client, "log_batch", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
            with pytest.raises(OSError):
                log.flush()
            monkeypatch.setattr(log.client, "log_batch", real)
            log.flush()
            assert T.metric_history(log.run_id, "d", tracking_uri=uri) == [(0, 1.0)]


def test_log_report_on_parent(storage: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<html>ok</html>")
    with T.study_run("s7", storage=str(storage)) as study:
        pass
    T.log_report(study.ref.parent_run_id, report, tracking_uri=study.ref.tracking_uri)
    got = T.download_artifact(study.ref.parent_run_id, "report/index.html", tmp_path / "r", tracking_uri=study.ref.tracking_uri)
    assert got.read_text() == "<html>ok</html>"


# ------------------------------------------------------------------------------------------
# concurrency: several trial processes write one SQLite database
# ------------------------------------------------------------------------------------------

N_PROCS, N_STEPS, KEYS = 4, 150, ("train.loss", "val.mAP", "saliency.sequence.flair")


def _trial_process(ref: tuple[str, str, str], seed: int, start: Any, out: Any) -> None:
    """One trial in its own process: N_STEPS x len(KEYS) values, flushed every 15."""
    from seqablate import tracking as TT
    from seqablate.tracking import store

    study = TT.StudyRef(*ref)
    start.wait()  # all processes begin writing together
    with TT.trial_run(study, _cfg(**{"train.seed": seed}), overrides={"train.seed": seed}, flush_every=15) as log:
        for step in range(N_STEPS):
            log.log_metrics({k: seed * 1000 + step + i / 10 for i, k in enumerate(KEYS)}, step=step)
    out.put((seed, log.run_id, log.metrics_logged, store.retry_count))


def test_concurrent_trials_lose_nothing(storage: Path) -> None:
    # forkserver with tracking preloaded: children start fast and share no DB connection.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["seqablate.tracking", "mlflow.store.tracking.sqlalchemy_store"])
    with T.study_run("conc", storage=str(storage)) as study:
        start, out = ctx.Barrier(N_PROCS), ctx.Queue()
        procs = [ctx.Process(target=_trial_process, args=(tuple(study.ref), s, start, out)) for s in range(N_PROCS)]
        for p in procs:
            p.start()
        try:
            results = [out.get(timeout=120) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    df = T.list_trials(study.ref)
    assert len(df) == N_PROCS and set(df["status"]) == {"FINISHED"}
    uri = study.ref.tracking_uri
    for seed, run_id, logged, _retries in results:
        assert logged == N_STEPS * len(KEYS)
        for i, key in enumerate(KEYS):
            hist = T.metric_history(run_id, key, tracking_uri=uri)
            assert hist == [(s, pytest.approx(seed * 1000 + s + i / 10)) for s in range(N_STEPS)]
    # Count rows directly in the database too (a second method).
    con = sqlite3.connect(storage / "mlflow.db")
    ids = [r[1] for r in results]
    n = con.execute(
        f"SELECT COUNT(*) FROM metrics WHERE run_uuid IN ({','.join('?' * len(ids))})", ids
    ).fetchone()[0]
    con.close()
    assert n == N_PROCS * N_STEPS * len(KEYS)


def _open_client(uri: str, template: str) -> None:
    os.environ["SEQABLATE_MLFLOW_TEMPLATE"] = template  # forkserver children keep its env
    from seqablate import tracking as TT

    TT.client(uri)


@pytest.mark.parametrize(
    "template", ["1", pytest.param("0", marks=pytest.mark.slow, id="no-template")]
)
def test_concurrent_first_use_of_a_fresh_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str, _warm_template: None
) -> None:
    """Processes opening a brand-new database at once: one builds it, none sees it half-made."""
    monkeypatch.setenv("SEQABLATE_MLFLOW_TEMPLATE", template)  # "0": MLflow migrates itself
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["seqablate.tracking", "mlflow.store.tracking.sqlalchemy_store"])
    uri = T.default_tracking_uri(str(tmp_path / "fresh"))
    procs = [ctx.Process(target=_open_client, args=(uri, template)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(x.name for x in (tmp_path / "fresh").iterdir() if not x.name.startswith("mlflow.db")) == []
    with T.study_run("fresh", tracking_uri=uri) as study:
        pass
    assert T.resolve_study(str(tmp_path / "fresh")) == study.ref


# ------------------------------------------------------------------------------------------
# what the MLflow UI shows: a real `mlflow server` over the study's database
# ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.slow  # `mlflow server` alone needs ~15 s of CPU to start (60-90 s on a loaded 2-core box)
def test_mlflow_server_shows_trials(storage: Path, tmp_path: Path) -> None:
    points = get_space("paper-table1").grid(seeds=1)[:2]
    with T.study_run("ui", storage=str(storage)) as study:
        for k, point in enumerate(points):
            with T.trial_run(study.ref, _cfg(**point), overrides=point) as log:
                log.log_metrics({"val.mAP": 0.1 * (k + 1)}, step=5)
    with mlflow_server(tmp_path / "server", backend_uri=study.ref.tracking_uri) as base:
        found = _post(
            f"{base}/api/2.0/mlflow/runs/search",
            {
                "experiment_ids": [study.ref.experiment_id],
                "filter": f"tags.`mlflow.parentRunId` = '{study.ref.parent_run_id}'",
                "max_results": 100,
            },
        )
        runs = {r["info"]["run_name"]: r for r in found["runs"]}
        assert set(runs) == {run_name(p) for p in points} == {"input-seed0", "mid@layer4-independent-seed0"}
        mid = runs["mid@layer4-independent-seed0"]
        params = {p["key"]: p["value"] for p in mid["data"]["params"]}
        assert params["model.integration"] == "mid" and params["model.sharing"] == "independent"
        metrics = {m["key"]: m["value"] for m in mid["data"]["metrics"]}
        assert metrics == {"val.mAP": pytest.approx(0.2)}
        tags = {t["key"]: t["value"] for t in mid["data"]["tags"]}
        assert tags["integration"] == "mid" and tags["seqablate.kind"] == "trial"


def test_study_exit_closes_trials_left_running(storage: Path) -> None:
    # A trial whose process died without cleanup leaves a RUNNING run behind.
    with T.study_run("s8", storage=str(storage)) as study:
        run_id, _ = T.get_or_create_trial_run(study.ref, "k1", run_name="orphan")
        with T.trial_run(study.ref, _cfg(), overrides={"train.seed": 0}):
            pass
    df = T.list_trials(study.ref).set_index("run_name")
    assert df.loc["orphan", "status"] == "KILLED"
    assert "without closing its run" in df.loc["orphan", "tags.error"]
    assert df.loc["seed0", "status"] == "FINISHED"
    assert T.close_dangling_trials(study.ref) == []


def test_study_folder_recording_a_tracking_uri(storage: Path, tmp_path: Path) -> None:
    # Runs went to another store (a server in real life); the study folder only records it.
    with T.study_run("s9", storage=str(storage)) as study:
        pass
    folder = tmp_path / "study-elsewhere"
    folder.mkdir()
    (folder / "study.yaml").write_text(f"name: s9\ntracking_uri: {study.ref.tracking_uri}\n")
    assert T.resolve_study(str(folder)) == study.ref
    (folder / "study.yaml").write_text("name: s9\ntracking_uri: null\n")
    with pytest.raises(ValueError, match=r"study-elsewhere: no MLflow database \(mlflow.db\) in this study folder"):
        T.resolve_study(str(folder))
