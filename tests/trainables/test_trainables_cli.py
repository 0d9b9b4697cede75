"""Bad input to `seqablate train|study|predict` exits 2 with a message naming the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from seqablate.cli import main

from .conftest import tiny_trial


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_unknown_space_lists_spaces(cohorts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["study", "run", "paper-tabel1", "--cohort", str(cohorts["stanford"])], capsys)
    assert code == 2
    assert "unknown search space 'paper-tabel1'" in err and "did you mean 'paper-table1'" in err
    for name in ("paper-table1", "paper-table2", "dropout-sweep", "hpo"):
        assert name in err


def test_cohort_without_labels(cohorts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unlabelled = tmp_path / "nolabels"
    shutil.copytree(cohorts["stanford"], unlabelled)
    for seg in unlabelled.glob("*/seg.nii.gz"):
        seg.unlink()
    code, err = _run(["study", "run", "paper-table1", "--cohort", str(unlabelled), "--smoke",
                      "--storage", str(tmp_path / "s")], capsys)
    assert code == 2 and "no labelled patients" in err and str(unlabelled) in err


def test_too_few_patients_for_the_split(cohorts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = tmp_path / "two"
    small.mkdir()
    for pid in ("stanford_000", "stanford_001"):
        shutil.copytree(cohorts["stanford"] / pid, small / pid)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"data": {"val_patients": 2, "image_size": 32}}))
    code, err = _run(["study", "run", "paper-table1", "--cohort", str(small), "--base", str(base),
                      "--storage", str(tmp_path / "s")], capsys)
    assert code == 2
    assert "2 labelled patient(s), but the split needs at least 4" in err and "val_patients=2" in err


def test_gpus_requested_without_gpus(cohorts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err = _run(["study", "run", "paper-table1", "--cohort", str(cohorts["stanford"]), "--smoke",
                      "--gpus-per-worker", "1", "--storage", str(tmp_path / "s")], capsys)
    assert code == 2 and "needs 1 GPU(s) per trial, but Ray sees 0 GPU(s)" in err


def test_unknown_config_key(cohorts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tiny_trial(cohorts["stanford"])
    raw["train"]["dropuot_p"] = 0.25
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    code, err = _run(["train", str(cfg), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "train.dropuot_p: unknown field" in err and "did you mean 'dropout_p'" in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_bad_external_flag(cohorts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["study", "run", "paper-table1", "--cohort", str(cohorts["stanford"]),
                      "--external", "oslo"], capsys)
    assert code == 2 and "expected NAME=PATH" in err


def test_spaces_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "spaces"]) == 0
    out = capsys.readouterr().out
    assert "paper-table1" in out and "hpo" in out and "search" in out


def test_invalid_point_in_a_user_space_is_refused_before_ray_starts(
    cohorts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    space = tmp_path / "myspace.py"
    space.write_text('SPACE = [{"train.dropout_p": 0.25}, {"train.dropout_p": 1.5}]\n')
    code, err = _run(["study", "run", str(space), "--cohort", str(cohorts["stanford"]), "--smoke",
                      "--storage", str(tmp_path / "s")], capsys)
    assert code == 2
    assert "point 1" in err and "dropout_p" in err and "1.5" in err
    assert not ray.is_initialized() and not (tmp_path / "s").exists()
