"""Re-runs never mix configurations; every input is checked before compute, with a clear message.

Each case was reproduced on the code before the fix (closing note of the reliability work).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from seqablate.cli import main

from .conftest import snapshot, trial_yaml


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------ configuration mixing


def test_train_rerun_with_another_config_refuses_naming_the_keys(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seqablate import tracking

    out = tmp_path / "run"
    a = trial_yaml(tmp_path / "a.yaml", cohort)
    assert main(["train", str(a), "--out", str(out), "--cpu"]) == 0
    capsys.readouterr()
    before = snapshot(out / "checkpoints")
    b = trial_yaml(tmp_path / "b.yaml", cohort, lr=3e-3, dropout_p=0.25)
    code, _, err = _run(["train", str(b), "--out", str(out), "--cpu"], capsys)
    assert code == 2
    assert "train.lr: 0.001 -> 0.003" in err and "train.dropout_p: 0.0 -> 0.25" in err and "--overwrite" in err
    assert snapshot(out / "checkpoints") == before
    # A changed architecture is the same clean refusal (not a load_state_dict traceback).
    c = yaml.safe_load(a.read_text())
    c["model"]["integration"] = "end"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(c))
    code, _, err = _run(["train", str(tmp_path / "c.yaml"), "--out", str(out), "--cpu"], capsys)
    assert code == 2 and "model.integration: 'input' -> 'end'" in err and "Traceback" not in err
    # The same config again: finished, nothing retrained, no second run in MLflow.
    code, printed, _ = _run(["train", str(a), "--out", str(out), "--cpu"], capsys)
    assert code == 0 and "finished already" in printed
    runs = tracking.list_trials(str(out))
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    # --overwrite starts afresh with b: one run, b's params.
    assert main(["train", str(b), "--out", str(out), "--cpu", "--overwrite"]) == 0
    runs = tracking.list_trials(str(out))
    assert len(runs) == 1 and runs.iloc[0]["params.train.lr"] == "0.003"


def test_train_resume_continues_the_same_mlflow_run(cohort: Path, tmp_path: Path) -> None:
    """A killed `seqablate train`, rerun with the same config, finishes its own run."""
    from seqablate import tracking

    out = tmp_path / "run"
    cfg = trial_yaml(tmp_path / "a.yaml", cohort, steps=6)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "seqablate", "train", str(cfg), "--out", str(out), "--cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "checkpoints").glob("checkpoint_*")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["train", str(cfg), "--out", str(out), "--cpu"]) == 0
    runs = tracking.list_trials(str(out))
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    # one parent and one trial run in the whole store: the rerun continued the killed ones
    c = tracking.client(f"sqlite:///{out / 'mlflow.db'}")
    every = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]
    assert len(every) == 2 and {r.info.status for r in every} == {"FINISHED"}
    assert not list(out.glob(".tmp-*")) and not list((out / "checkpoints").glob(".tmp-*"))


def test_train_out_of_another_kind_is_refused(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2")
    code, _, err = _run(["train", str(trial_yaml(tmp_path / "a.yaml", cohort)), "--out", str(mine), "--overwrite"], capsys)
    assert code == 2 and "--overwrite deletes only train folders that seqablate created" in err
    assert (mine / "data.csv").read_text() == "1,2"


def test_study_rerun_into_a_storage_of_another_study_is_refused(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before Ray starts: the same study resumes, another one is refused."""
    from seqablate.config import StudyConfig, parse
    from seqablate.search_spaces import get_space
    from seqablate.trainables.driver import StudySetupError, claim_study

    folder = tmp_path / "s"
    space = get_space("paper-table1")
    a = parse(StudyConfig, {"name": "a", "space": "paper-table1", "cohort": str(cohort), "seeds": 1})
    assert claim_study(folder, a, space, resume=False, overwrite=False) is False
    (folder / "study.yaml").write_text(yaml.safe_dump(a.model_dump(mode="json")))
    (folder / "space.json").write_text(json.dumps(space.describe()))
    assert claim_study(folder, a.model_copy(update={"max_concurrent": 3}), space, resume=False, overwrite=False) is True
    b = a.model_copy(update={"seeds": 3})
    with pytest.raises(StudySetupError, match=r"(?s)different configuration.*seeds: 1 -> 3.*--overwrite"):
        claim_study(folder, b, space, resume=False, overwrite=False)
    assert claim_study(folder, b, space, resume=False, overwrite=True) is False
    assert not (folder / "study.yaml").exists()
    (tmp_path / "f.txt").write_text("x")
    code, _, err = _run(["study", "run", "paper-table1", "--cohort", str(cohort), "--smoke", "--storage",
                         str(tmp_path / "f.txt")], capsys)
    assert code == 2 and "--storage" in err and "a file is already there" in err


# ------------------------------------------------------------------------ checks before compute


def test_missing_external_cohort_is_found_before_training(cohort: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = yaml.safe_load(trial_yaml(tmp_path / "a.yaml", cohort).read_text())
    cfg["eval"]["external"] = {"oslo": str(tmp_path / "no-such-oslo")}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = _run(["train", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "eval.external.oslo" in err and "no such folder" in err
    assert not (tmp_path / "run").exists()


def test_infinite_learning_rate_is_a_config_error(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "a.yaml"
    cfg.write_text(trial_yaml(tmp_path / "x.yaml", cohort).read_text().replace("lr: 0.001", "lr: .inf"))
    code, _, err = _run(["train", str(cfg), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "train.lr: Input should be a finite number" in err


def test_diverging_loss_names_the_step_and_lr(cohort: Path, tmp_path: Path) -> None:
    from seqablate.config import TrialConfig, load_yaml
    from seqablate.trainables.loop import TrainingDiverged, fit_trial

    cfg = load_yaml(trial_yaml(tmp_path / "a.yaml", cohort, lr=1e30), TrialConfig)
    with pytest.raises(TrainingDiverged, match=r"at step \d+ \(train.lr=1e\+30"):
        fit_trial(cfg, storage=tmp_path / "ck", cpus=1, use_gpu=False, evaluate=False)


def test_broken_symlink_is_a_problem_not_a_missing_sequence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.data import make_phantom_cohort

    root = make_phantom_cohort(tmp_path / "c", patients=1, shape=(16, 16, 8))
    flair = root / "stanford_000" / "flair.nii.gz"
    flair.unlink()
    flair.symlink_to(tmp_path / "gone.nii.gz")
    code, printed, _ = _run(["cohort", "inspect", str(root)], capsys)
    assert code == 2 and "broken symbolic link" in printed and "all patients usable" not in printed


def test_singular_affine_is_one_patients_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.data import make_phantom_cohort

    root = make_phantom_cohort(tmp_path / "c", patients=2, shape=(16, 16, 8))
    path = root / "stanford_000" / "flair.nii.gz"
    img = nib.load(str(path))
    hdr = img.header.copy()
    for row in ("srow_x", "srow_y", "srow_z"):
        hdr[row] = [0, 0, 0, 0]
    hdr["qform_code"], hdr["sform_code"] = 0, 1
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, header=hdr), str(path))
    code, printed, _ = _run(["cohort", "inspect", str(root)], capsys)
    assert code == 2
    assert "flair.nii.gz: its voxel-to-world affine is singular" in printed
    row = next(line for line in printed.splitlines() if line.startswith("stanford_001"))
    assert row.split()[1] == "yes"  # inspect went on to the next patient


def test_shape_mismatch_blames_the_odd_file(tmp_path: Path) -> None:
    from seqablate.data import make_phantom_cohort
    from seqablate.data.errors import DataError
    from seqablate.data.layouts import discover
    from seqablate.data.volumes import load_patient

    root = make_phantom_cohort(tmp_path / "c", patients=1, shape=(16, 16, 8))
    odd = root / "stanford_000" / "flair.nii.gz"  # the first file of the patient, as listed
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 9), np.float32), np.eye(4)), str(odd))
    with pytest.raises(DataError) as err:
        load_patient(discover(root).patients[0])
    problems = err.value.problems
    assert len(problems) == 1 and problems[0].startswith(str(odd))


def test_outputs_that_are_files_get_messages_not_tracebacks(cohort: Path, trained: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    code, _, err = _run(["phantom", str(f), "--patients", "1", "--shape", "16", "16", "8"], capsys)
    assert code == 2 and "a file is already there" in err
    code, _, err = _run(["predict", "--model", str(trained / "checkpoints" / sorted(
        p.name for p in (trained / "checkpoints").iterdir())[-1]), "--input", str(cohort / "stanford_000"),
        "--out", str(f)], capsys)
    assert code == 2 and "--out" in err and "a file is already there" in err
    assert f.read_text() == "x"


def test_truncated_cache_entry_is_rebuilt(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.config import DataConfig
    from seqablate.data.cache import preprocess_cohort

    cfg = DataConfig(image_size=16, intensity="minmax")
    cdir = tmp_path / "cache"
    first = preprocess_cohort(cohort, cfg, cache_dir=cdir, progress=False, workers=1)
    image = first[0].entry / "image.npy"
    want = np.array(first[0].image)
    del first
    image.write_bytes(image.read_bytes()[:200])
    again = preprocess_cohort(cohort, cfg, cache_dir=cdir, progress=False, workers=1)
    assert "damaged preprocessing cache entry" in capsys.readouterr().err
    np.testing.assert_array_equal(np.array(again[0].image), want)


def test_killed_phantom_leaves_no_temp_folder_behind(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    code = ("from seqablate.data import make_phantom_cohort; "
            f"make_phantom_cohort({str(out)!r}, patients=50, shape=(24, 24, 12))")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".tmp-*")):
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert list(tmp_path.glob(".tmp-*")), "the writer was killed before it made its temp folder"
    from seqablate.data import make_phantom_cohort

    make_phantom_cohort(out, patients=1, shape=(16, 16, 8))
    assert not list(tmp_path.glob(".tmp-*")) and (out / "phantom.json").is_file()


def test_read_only_lookups_create_nothing(cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = _run(["predict", "--model", "0" * 32, "--input", str(cohort / "stanford_000"),
                         "--out", str(tmp_path / "p")], capsys)
    assert code == 2 and "no MLflow database" in err
    code, _, err = _run(["report", "nosuchstudy", "--quiet"], capsys)
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unreachable_tracking_server_is_named(tmp_path: Path, trained: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["report", str(trained), "--tracking-uri", "http://127.0.0.1:9", "--quiet"], capsys)
    assert code == 2 and "cannot reach the MLflow tracking server at http://127.0.0.1:9" in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    code, _, err = _run(["predict", "--model", "0" * 32, "--input", str(trained), "--out", str(tmp_path / "p")], capsys)
    assert code == 2 and "http://127.0.0.1:9" in err and "UnboundLocalError" not in err


def test_hints_name_flags_the_command_has(tmp_path: Path) -> None:
    from seqablate.config import TrialConfig
    from seqablate.evaluation.cohort import load_cached

    with pytest.raises(ValueError) as err:
        load_cached(TrialConfig().data)
    assert "--cohort" not in str(err.value) and "data.cohort" in str(err.value)


def test_checkpoints_keep_one_copy_of_each_state(trained: Path) -> None:
    ckpts = sorted((trained / "checkpoints").glob("checkpoint_*"))
    assert len(ckpts) == 1
    names = {p.name for p in ckpts[0].iterdir()}
    state = json.loads((ckpts[0] / "state.json").read_text())
    assert ("best_model.pt" in names) == (state["best_step"] != state["step"])

