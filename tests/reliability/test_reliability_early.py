"""Inputs checked before the work they would spoil, inputs that used to be silently accepted,
and a space file's bad value named by file, point and field.

Each test failed on the code before the fix (the reliability work's closing note says how).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import yaml

from seqablate.cli import main

from .conftest import trial_yaml


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _copy(cohort: Path, root: Path, patients: int = 2) -> Path:
    for d in sorted(p for p in cohort.iterdir() if p.is_dir() and not p.name.startswith("."))[:patients]:
        shutil.copytree(d, root / d.name)
    return root


@pytest.fixture
def no_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Preprocessing fails the test: the refusal must come before it."""
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("preprocessed before the input was checked")

    monkeypatch.setattr("seqablate.data.cache.preprocess_cohort", boom)


# ------------------------------------------------------------------------ checked before the work


def test_evaluate_refuses_a_cohort_without_masks_before_preprocessing(
    trained: Path, cohort: Path, tmp_path: Path, no_preprocessing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from seqablate.evaluation.score import evaluate_cohort

    unlabelled = _copy(cohort, tmp_path / "c")
    for seg in unlabelled.glob("*/seg.nii.gz"):
        seg.unlink()
    ckpt = sorted((trained / "checkpoints").glob("checkpoint_*"))[-1]
    code, _, err = _run(["evaluate", "--model", str(ckpt), "--cohort", str(unlabelled), "--out",
                         str(tmp_path / "ev"), "--no-log"], capsys)
    assert code == 2 and "no labelled patient (no lesion masks) among its 2 patients" in err
    with pytest.raises(ValueError, match="no labelled patient"):  # the API checks it as early
        evaluate_cohort(str(ckpt), unlabelled, out=tmp_path / "ev", log=False)


def test_evaluate_refuses_an_out_under_a_file_before_evaluating(
    trained: Path, cohort: Path, tmp_path: Path, no_preprocessing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    ckpt = sorted((trained / "checkpoints").glob("checkpoint_*"))[-1]
    code, _, err = _run(["evaluate", "--model", str(ckpt), "--cohort", str(cohort), "--out", str(notes / "ev"),
                         "--no-log"], capsys)
    assert code == 2 and f"--out {notes / 'ev'}: a parent of this path is a file, not a folder ({notes})" in err
    assert notes.read_text() == "mine"


def test_a_training_step_that_cannot_fit_is_refused_before_preprocessing(
    cohort: Path, tmp_path: Path, no_preprocessing: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    from seqablate.trainables import memory

    monkeypatch.setattr(memory, "available_bytes", lambda gpu: (8 * memory.GIB, "of RAM available (test)"))
    cfg = trial_yaml(tmp_path / "big.yaml", cohort, batch_size=64)
    cfg.write_text(cfg.read_text().replace("image_size: 32", "image_size: 1024"))
    code, _, err = _run(["train", str(cfg), "--out", str(tmp_path / "run"), "--cpu"], capsys)
    assert code == 2 and "train.batch_size 64 x data.image_size 1024 x 1024" in err
    assert "GiB for one training step" in err and "8.0 GiB of RAM available (test)" in err
    assert not (tmp_path / "run").exists()


def test_the_memory_estimate_is_a_lower_bound() -> None:
    """Checked against a second method: the bytes autograd actually keeps for a step of the
    tiny network (saved-tensor hooks), which the estimate must not exceed."""
    import torch

    from seqablate.config import TrialConfig
    from seqablate.models import build_model
    from seqablate.trainables.memory import training_step_bytes

    cfg = TrialConfig.model_validate({"data": {"image_size": 64}, "model": {"backbone": "tiny"},
                                      "train": {"batch_size": 2}})
    model = build_model(cfg.model, seed=0).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = t.untyped_storage().nbytes()
        return t

    x = torch.zeros(2, 4, cfg.data.slices, 64, 64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, torch.ones(2, 4, dtype=torch.bool))
    est = training_step_bytes(cfg, gpu=False)
    assert 0.5 * sum(kept.values()) < est["activations"] <= sum(kept.values())


def test_gpu_memory_is_read_without_a_cuda_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study's driver asks nvidia-smi (a CUDA context would hold GPU memory for the whole
    study); the emptiest GPU counts. No GPU here: a stand-in nvidia-smi answers."""
    from seqablate.trainables import memory

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '1200, NVIDIA H200'\necho '143000, NVIDIA H200'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert memory.available_bytes(gpu=True) == (143000 * 1024**2, "free on the emptiest GPU (NVIDIA H200)")


def test_argument_errors_of_evaluate_and_predict_come_before_heavy_imports(cohort: Path, tmp_path: Path) -> None:
    """Each mistake is answered with exit 2 before torch or MLflow is imported (seconds to tens
    of seconds on a loaded machine)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    patient = cohort / "stanford_000"
    cases = [
        (["evaluate", "--model", "x", "--cohort", str(cohort)], "--model 'x': not an existing path"),
        (["evaluate", "--model", "0" * 32, "--cohort", str(tmp_path / "nope")], "no such folder"),
        (["evaluate", "--model", "0" * 32, "--cohort", str(cohort), "--sequences", "t1_postt"], "--sequences"),
        (["evaluate", "--model", "0" * 32, "--cohort", str(cohort), "--out", str(notes / "o")], "is a file"),
        (["evaluate", "--model", "0" * 32, "--cohort", str(cohort), "--bootstrap", "-1"], "--bootstrap -1"),
        (["predict", "--model", "0" * 32, "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "p")],
         "--input"),
        (["predict", "--model", "0" * 32, "--input", str(patient), "--out", str(patient / "pred")],
         "inside the patient folder"),
    ]
    code = (
        "import json, sys\nfrom seqablate.cli import main\nrc = main(json.loads(sys.argv[1]))\n"
        "print(rc, sorted(m for m in ('torch', 'mlflow', 'ray') if m in sys.modules))\n"
    )
    import json

    for argv, needle in cases:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)
        assert proc.stdout.strip() == "2 []", (argv, proc.stdout, proc.stderr[-2000:])
        assert needle in proc.stderr, (argv, proc.stderr)
    assert not (patient / "pred").exists() and notes.read_text() == "x"


# ------------------------------------------------------------------------ silently accepted


def test_predict_never_writes_into_a_users_folder_or_the_patients(
    trained: Path, cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    patient = _copy(cohort, tmp_path / "c", 1) / "stanford_000"
    before = sorted(p.name for p in patient.iterdir())
    ckpt = str(sorted((trained / "checkpoints").glob("checkpoint_*"))[-1])
    for out, needle in [(mine, "already there"), (patient, "inside the patient folder"),
                        (patient / "pred", "inside the patient folder")]:
        code, _, err = _run(["predict", "--model", ckpt, "--input", str(patient), "--out", str(out)], capsys)
        assert code == 2 and needle in err, err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in patient.iterdir()) == before


def test_report_of_a_study_still_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate import tracking
    from seqablate.config import TrialConfig

    storage = tmp_path / "s"
    with tracking.study_run("busy", storage=str(storage)) as study:
        with tracking.trial_run(study.ref, TrialConfig(), overrides={"train.seed": 0}, run_name="input-seed0"):
            code, _, err = _run(["report", str(storage), "--no-overlays", "--no-log", "--quiet"], capsys)
    assert code == 2 and "all 1 trial(s) are still running (input-seed0)" in err
    assert not (storage / "report").exists()


def test_relative_paths_are_stored_absolute(cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from seqablate.cli.train import study_config_from_args
    from seqablate.trainables import loop

    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    _copy(cohort, a / "cohort", 3)
    cfg = yaml.safe_load(trial_yaml(tmp_path / "t.yaml", a / "cohort").read_text())
    cfg["data"]["cohort"] = "cohort"  # relative to the directory the command runs in
    (a / "t.yaml").write_text(yaml.safe_dump(cfg))
    # What is stored is the point, not the training: a stand-in that trains nothing.
    state = SimpleNamespace(step=0, best_metric=0.0, best_step=0)
    monkeypatch.setattr(loop, "fit_trial", lambda *a, **k: SimpleNamespace(state=state, metrics={}))
    monkeypatch.chdir(a)
    assert main(["train", "t.yaml", "--out", str(tmp_path / "run"), "--cpu"]) == 0
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert stored["data"]["cohort"] == str(a / "cohort")
    monkeypatch.chdir(b)  # the run's own config, from elsewhere: the same run, finished
    capsys.readouterr()
    code, printed, _ = _run(["train", str(tmp_path / "run" / "config.yaml"), "--out", str(tmp_path / "run"),
                             "--cpu"], capsys)
    assert code == 0 and "finished already" in printed
    args = argparse.Namespace(space="paper-table1", cohort=str(a / "cohort"), external=None, base=None, name="s",
                              smoke=True, trials=None, num_samples=None, seeds=None, scheduler=None,
                              max_concurrent=None, workers_per_trial=None, gpus_per_worker=None,
                              cpus_per_worker=None, storage="runs/s", tracking_uri="runs/x.db")
    study = study_config_from_args(args)
    assert study.storage == str(b / "runs" / "s") and study.tracking_uri == str(b / "runs" / "x.db")


def test_demo_steps_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.config import ConfigError
    from seqablate.demo import study_config

    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--steps", "0", "--out", str(tmp_path / "d")])
    assert exit_.value.code == 2 and "--steps: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.steps"):
        study_config(tmp_path / "d", {"stanford": tmp_path / "s", "oslo": tmp_path / "o"}, steps=0)
    assert not (tmp_path / "d").exists()


@pytest.mark.timeout(120)
def test_fifos_and_dangling_links_are_named_not_skipped_or_read(tmp_path: Path) -> None:
    from PIL import Image

    from seqablate.data import DataError, discover, load_patient

    root = tmp_path / "nifti"
    p = root / "p1"
    p.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), str(p / "t1_gre_post.nii.gz"))
    os.mkfifo(p / "flair.nii.gz")  # a read would block forever
    with pytest.raises(DataError, match=r"flair.nii.gz: a FIFO \(named pipe\), not a regular file"):
        load_patient(discover(root).patients[0])
    bms = tmp_path / "bms" / "Mets_001"
    for series in ("0", "seg"):
        (bms / series).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 6), 9 if series == "0" else 0, np.uint8)).save(bms / series / f"{i}.png")
    os.mkfifo(bms / "0" / "3.png")
    (bms / "3").symlink_to(tmp_path / "gone")  # series 3 (flair) points nowhere
    with pytest.raises(DataError) as err:
        load_patient(discover(tmp_path / "bms").patients[0])
    assert "3.png: a FIFO" in str(err.value) and "Mets_001/3: broken symbolic link" in str(err.value)


def test_all_zero_sequences_and_colour_slices_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    from seqablate.data import DataError, discover, load_patient

    root = tmp_path / "nifti"
    p = root / "p1"
    p.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), str(p / "t1_gre_post.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), str(p / "flair.nii.gz"))
    with pytest.raises(DataError, match=r"flair.nii.gz: every voxel is 0"):
        load_patient(discover(root).patients[0])
    bms = tmp_path / "bms" / "Mets_001" / "0"
    bms.mkdir(parents=True)
    grey = np.arange(36, dtype=np.uint8).reshape(6, 6) + 1
    for i in range(3):  # grey saved as RGB loses nothing: read as grey
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(bms / f"{i}.png")
    vol = load_patient(discover(tmp_path / "bms").patients[0])
    assert vol.images["t1_gre_post"].max() == 36
    colour = np.stack([grey, grey, np.zeros_like(grey)], axis=-1)  # an overlay: channels differ
    Image.fromarray(colour).save(bms / "1.png")
    with pytest.raises(DataError, match=r"1.png: a colour image \(PNG mode RGB"):
        load_patient(discover(tmp_path / "bms").patients[0])


@pytest.mark.parametrize("field, text", [("train.steps", "steps: true"), ("train.lr", "lr: yes"),
                                         ("eval.bootstrap", "bootstrap: false")])
def test_a_boolean_is_not_a_number(cohort: Path, tmp_path: Path, field: str, text: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = trial_yaml(tmp_path / "a.yaml", cohort)
    key = text.split(":")[0]
    lines = [f"  {text}" if line.strip().startswith(f"{key}:") else line for line in cfg.read_text().splitlines()]
    cfg.write_text("\n".join(lines) + "\n")
    code, _, err = _run(["train", str(cfg), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and f"{field}: Value error, expected a number, not a boolean" in err, err


def test_the_cache_sees_a_rewrite_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    from seqablate.data.cache import preprocess_cohort

    p = tmp_path / "c" / "p1"
    p.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("t1_gre_post", "flair"):
        nib.save(nib.Nifti1Image(rng.uniform(1, 9, (8, 8, 4)).astype(np.float32), np.eye(4)), str(p / f"{name}.nii"))
    cfg = {"image_size": 16, "intensity": "minmax", "sequences": ["t1_gre_post", "flair"]}
    first = np.array(preprocess_cohort(tmp_path / "c", cfg, cache_dir=tmp_path / "cache", progress=False,
                                       workers=1)[0].image)
    f = p / "flair.nii"
    st = f.stat()
    img = nib.load(str(f))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine, img.header), str(f))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the bytes differ
    assert f.stat().st_size == st.st_size
    again = np.array(preprocess_cohort(tmp_path / "c", cfg, cache_dir=tmp_path / "cache", progress=False,
                                       workers=1)[0].image)
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1][..., ::-1, :])  # x flipped: resized [Z, H=x, W=y]


def test_a_cache_entry_without_meta_json_is_rebuilt(cohort: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from seqablate.data.cache import preprocess_cohort

    root = _copy(cohort, tmp_path / "c")
    cfg = {"image_size": 16, "intensity": "minmax"}
    first = preprocess_cohort(root, cfg, cache_dir=tmp_path / "cache", progress=False, workers=1)
    want = np.array(first[0].image)
    (first[0].entry / "meta.json").unlink()  # a clean-up or a copy cut short
    again = preprocess_cohort(root, cfg, cache_dir=tmp_path / "cache", progress=False, workers=1)
    assert "incomplete preprocessing cache entry (no meta.json); rebuilding it" in capsys.readouterr().err
    np.testing.assert_array_equal(np.array(again[0].image), want)
    assert (again[0].entry / "meta.json").is_file()


# ------------------------------------------------------------------------ a space file's bad value


def test_a_bad_value_in_a_space_file_names_file_point_and_field(cohort: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "mine.py"
    space.write_text('SPACE = [{"train.lr": 1e-3}, {"train.lr": "fast"}]\n')
    code, _, err = _run(["study", "run", str(space), "--cohort", str(cohort), "--smoke", "--storage",
                         str(tmp_path / "s")], capsys)
    assert code == 2 and str(space) in err and "point 1" in err and "train.lr" in err and "'fast'" in err
    assert "could not convert" not in err
