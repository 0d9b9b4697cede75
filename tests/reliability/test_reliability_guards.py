"""Run names that are folder names, one writer per output folder, Ctrl-C on a study, Ray that
starts slowly.

Each test failed on the code before the fix (the reliability work's closing note says how).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from seqablate import folders
from seqablate.cli import main

from .conftest import trial_yaml


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------ run names


@pytest.mark.parametrize("name", ["", "../../x", ".."])
def test_train_name_must_be_a_folder_name(cohort: Path, tmp_path: Path, name: str,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`name: ""` made ./seqablate-runs itself the run folder (a later --overwrite deleted every
    run in it) and `name: ../../x` wrote outside it."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    cfg = yaml.safe_load(trial_yaml(tmp_path / "t.yaml", cohort).read_text())
    cfg["name"] = name
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = _run(["train", str(tmp_path / "t.yaml"), "--cpu"], capsys)
    assert code == 2 and "name: " in err and "without slashes" in err and "Traceback" not in err
    assert list(work.iterdir()) == [] and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------ one writer per folder


def _hold_lock(folder: Path) -> subprocess.Popen[str]:
    """Another process holding ``folder``'s lock (as a running `train` or `study run` does)."""
    code = ("import sys, time\nfrom seqablate import folders\n"
            "with folders.locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_train_into_a_busy_out_is_refused(cohort: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    folders.mark(out, "train")
    holder = _hold_lock(out)
    try:
        code, _, err = _run(["train", str(trial_yaml(tmp_path / "a.yaml", cohort)), "--out", str(out), "--cpu"], capsys)
        assert code == 2
        assert f"process {holder.pid} on host {socket.gethostname()}" in err and "--out" in err
        assert sorted(p.name for p in out.iterdir()) == [".seqablate", folders.LOCK]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the folder is free again.
    with folders.locked(out):
        with folders.locked(out):  # re-entrant in one process
            pass


def test_a_second_study_into_a_busy_storage_is_refused(cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.trainables import driver

    storage = tmp_path / "s"
    storage.mkdir()
    folders.mark(storage, "study")
    monkeypatch.setattr(driver, "prepare", lambda cfg: (_ for _ in ()).throw(AssertionError("got past the lock")))
    holder = _hold_lock(storage)
    try:
        for argv in (["study", "run", "paper-table1", "--cohort", str(cohort), "--smoke", "--storage", str(storage)],
                     ["study", "resume", str(storage)]):
            if argv[1] == "resume":
                (storage / "study.yaml").write_text(yaml.safe_dump({"name": "s", "cohort": str(cohort)}))
            code, _, err = _run(argv, capsys)
            assert code == 2 and f"process {holder.pid}" in err and "--storage" in err, err
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------ Ctrl-C on a study


def test_interrupted_study_lists_every_trial_and_how_to_resume(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.cli.train import _report_study
    from seqablate.trainables.driver import StudyResult

    rows = [{"name": "input-seed0", "status": "TERMINATED", "error": "", "test.full.mAP": 0.5},
            {"name": "input-p0.25-seed0", "status": "INTERRUPTED", "error": ""},
            {"name": "mid@layer4-shared-seed0", "status": "NOT STARTED", "error": ""}]
    result = StudyResult(str(tmp_path / "s"), "sqlite:///x.db", "0" * 32, rows, "", interrupted=True)
    assert _report_study(result) == 130
    out = capsys.readouterr()
    for row in rows:
        assert any(row["name"] in line and row["status"] in line for line in out.out.splitlines()), row
    assert "interrupted: 1 of 3 trial(s) finished" in out.err
    assert f"seqablate study resume {tmp_path / 's'}" in out.err


class _Result(SimpleNamespace):
    metrics: dict[str, Any]
    config: dict[str, Any]
    error: Exception | None
    path: str


def test_rows_of_an_interrupted_grid_name_each_trials_state() -> None:
    from seqablate.trainables.driver import DONE, _rows

    def result(p: float, metrics: dict[str, Any]) -> _Result:
        return _Result(metrics=metrics, config={"overrides": {"train.dropout_p": p, "train.seed": 0}}, error=None,
                       path=f"/s/{p}")

    results = [result(0.0, {DONE: 1.0, "test.full.mAP": 0.4}), result(0.25, {"val.mAP": 0.1}), result(0.5, {})]

    class Grid(list):  # what Tune's ResultGrid offers: its results in order, and Tune's trials
        _experiment_analysis = SimpleNamespace(
            trials=[SimpleNamespace(status=s) for s in ("TERMINATED", "TERMINATED", "PENDING")])

    names = ["p0.25-seed0", "seed0", "p0.5-seed0", "p0.75-seed0"]  # the grid, one point never created
    rows = _rows(Grid(results), expected=names, interrupted=True)
    assert {r["name"]: r["status"] for r in rows} == {
        "seed0": "TERMINATED", "p0.25-seed0": "INTERRUPTED", "p0.5-seed0": "NOT STARTED",
        "p0.75-seed0": "NOT STARTED"}
    # Without an interrupt nothing changes: a trial ASHA stopped early is TERMINATED as before.
    assert [r["status"] for r in _rows(Grid(results[:2]))] == ["TERMINATED", "TERMINATED"]


class _FakeTuner:
    """Does to SIGINT handlers what Tune's fit does: installs its own for the fit and, only when
    a SIGINT stopped the experiment, puts back the one it found."""

    def __init__(self, interrupted: bool) -> None:
        self.interrupted = interrupted

    def fit(self) -> str:
        found = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, lambda s, f: None)
        if self.interrupted:
            signal.signal(signal.SIGINT, found)
        return "grid"


def test_an_interrupt_is_told_from_a_finished_fit() -> None:
    from seqablate.trainables.driver import _fit_noting_interrupt

    before = signal.getsignal(signal.SIGINT)
    assert _fit_noting_interrupt(_FakeTuner(interrupted=True)) == ("grid", True)
    assert _fit_noting_interrupt(_FakeTuner(interrupted=False)) == ("grid", False)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_ctrl_c_on_a_real_study(cohort: Path, tmp_path: Path) -> None:
    """Ctrl-C while the first of two trials trains: exit 130, 'interrupted', both trials listed
    (one INTERRUPTED, one NOT STARTED) and the resume command."""
    space = tmp_path / "two.py"
    space.write_text('SPACE = [{"train.dropout_p": 0.0}, {"train.dropout_p": 0.25}]\n')
    storage = tmp_path / "s"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    base = tmp_path / "base.yaml"
    cfg = yaml.safe_load(trial_yaml(tmp_path / "t.yaml", cohort, steps=400, val_every=200).read_text())
    cfg.pop("name")
    base.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "seqablate", "study", "run", str(space), "--cohort", str(cohort),
                             "--base", str(base), "--storage", str(storage), "--max-concurrent", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    from seqablate import tracking

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(2)
        if (storage / "mlflow.db").is_file():
            df = tracking.list_trials(str(storage))
            if len(df) and "metrics.train.loss" in df and df["metrics.train.loss"].notna().any():
                break
        assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "INTERRUPTED" in out and "NOT STARTED" in out and "interrupted:" in err
    assert f"seqablate study resume {storage}" in err


# ------------------------------------------------------------------------ Ray that starts slowly


def test_ray_init_timeout_is_retried_once_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from seqablate.config import StudyConfig
    from seqablate.trainables import driver

    calls: list[dict[str, Any]] = []
    outcomes: list[BaseException | None] = []

    def init(**kwargs: Any) -> None:
        calls.append(kwargs)
        err = outcomes.pop(0)
        if err is not None:
            raise err

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    timeout = Exception("The current node timed out during startup. This could happen because some of the "
                        "raylet failed to startup or the GCS has become overloaded.")
    outcomes[:] = [timeout, None]
    driver._init_ray(StudyConfig())
    assert len(calls) == 2  # retried once, then started
    calls.clear()
    outcomes[:] = [timeout, TimeoutError("Timed out after 30 seconds while waiting for node to startup.")]
    with pytest.raises(driver.StudySetupError, match=r"local Ray on this machine did not start in time, twice"):
        driver._init_ray(StudyConfig())
    assert len(calls) == 2
    calls.clear()
    outcomes[:] = [ValueError("bad argument")]  # not a timeout: Ray's own error, at once
    with pytest.raises(ValueError, match="bad argument"):
        driver._init_ray(StudyConfig())
    assert len(calls) == 1
