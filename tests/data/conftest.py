"""Fixtures for the data tests: tiny cohorts written on the fly, small phantom cohorts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data_helpers import lesion_mask, volume, write_nii  # noqa: E402


@pytest.fixture
def make_nifti_cohort(tmp_path: Path) -> Callable[..., Path]:
    """Write ``<root>/<pid>/<name>.nii.gz`` for each patient: {pid: [names]} (+ seg)."""

    def make(patients: dict[str, Sequence[str]], *, root: str = "cohort", seg: bool = True, ext: str = ".nii.gz") -> Path:
        base = tmp_path / root
        for i, (pid, names) in enumerate(patients.items()):
            for j, name in enumerate(names):
                write_nii(base / pid / f"{name}{ext}", volume(10 * i + j))
            if seg:
                write_nii(base / pid / f"seg{ext}", lesion_mask())
        return base

    return make


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stanford (2 patients) and Oslo (3 patients) phantoms at 40x40x20, made once."""
    from seqablate.data.phantom import make_phantom_cohort

    base = tmp_path_factory.mktemp("phantoms")
    make_phantom_cohort(base / "stanford", site="stanford", patients=2, seed=3, shape=(40, 40, 20))
    make_phantom_cohort(base / "oslo", site="oslo", patients=3, seed=4, shape=(40, 40, 20))
    return base
