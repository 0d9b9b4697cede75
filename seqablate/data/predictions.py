"""Another tool's predictions of a cohort: find them, read them on their grid, check the grid.

A predictions folder holds one NIfTI per patient, as other tools write them:

- ``<case>.nii[.gz]``: nnU-Net's naming (``case`` the patient id, or the case id
  ``cohort export-nnunet`` gave it: :func:`seqablate.data.nnunet.case_id`);
- ``<patient>/probability.nii[.gz]`` (or ``mask.nii[.gz]``): what ``seqablate predict`` writes.

Each is a probability map (float values in [0, 1]) or a binary mask (values 0 and 1 only).
Other files (nnU-Net's ``plans.json``, ``.npz`` probabilities, the ``.seqablate`` marker) are
ignored. A prediction is read on its own grid and reoriented to RAS like every volume
(:mod:`seqablate.data.volumes`); its grid must be the patient's (shape, and affine within
:data:`~seqablate.data.volumes.AFFINE_TOL` mm): there is no silent resampling.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from seqablate.data.errors import DataError, combine, not_a_regular_file
from seqablate.data.nnunet import case_id
from seqablate.data.volumes import AFFINE_TOL

#: File names inside a ``<patient>/`` folder, in order of preference.
PATIENT_FILES: tuple[str, ...] = ("probability.nii.gz", "probability.nii", "mask.nii.gz", "mask.nii")

_NII = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)

#: What a prediction file holds.
PROBABILITY, BINARY = "probability", "binary"


def find_predictions(folder: str | Path, patient_ids: Sequence[str]) -> dict[str, Path]:
    """patient id -> its prediction file in ``folder``, for the patients that have one.

    A file or folder is matched to a patient by the patient id or its nnU-Net case id.
    Raises :class:`DataError` naming the file for a NIfTI file that matches no patient of
    the cohort, two predictions of one patient, or a folder with no prediction at all.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--predictions {folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    by_name: dict[str, str] = {}
    for pid in patient_ids:
        by_name.setdefault(pid, pid)
        by_name.setdefault(case_id(pid), pid)
    found: dict[str, Path] = {}
    problems: list[str] = []

    def add(name: str, path: Path) -> None:
        pid = by_name.get(name)
        if pid is None:
            problems.append(f"{path}: matches no patient of the cohort (expected <case>.nii.gz or "
                            f"<patient>/probability.nii.gz with a patient id such as {list(patient_ids)[:3]})")
        elif pid in found:
            problems.append(f"{path}: a second prediction for patient {pid} (already {found[pid]})")
        else:
            found[pid] = path

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        m = _NII.match(entry.name)
        if m and (why := not_a_regular_file(entry)) is not None:
            problems.append(why)  # a broken link would otherwise read as a patient left unpredicted
        elif entry.is_file() and m:
            add(m.group("stem"), entry)
        elif entry.is_dir():
            inner = next((entry / n for n in PATIENT_FILES if (entry / n).is_file()), None)
            if inner is not None:
                add(entry.name, inner)
    if problems:
        raise combine(f"--predictions {folder}", problems)
    if not found:
        raise DataError(f"--predictions {folder}: no prediction found (expected one NIfTI per patient: "
                        "<case>.nii.gz as nnU-Net writes them, or <patient>/probability.nii.gz)")
    return found


def load_prediction(path: Path, shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``(float32[X, Y, Z] on the RAS grid, kind)`` of one prediction file.

    ``shape``/``affine``: the patient's RAS grid (:class:`~seqablate.data.volumes.Volume`).
    ``kind`` is :data:`BINARY` (values 0 and 1 only, at least one 1), :data:`PROBABILITY`
    (values in [0, 1], some strictly between), or None for an all-zero map (either).
    Raises :class:`DataError` naming the file: unreadable, not 3D, NaN/Inf, values outside
    [0, 1] (a label map with other labels, logits), or a grid other than the patient's.
    """
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many kinds for a bad file; the message says which
        raise DataError(f"{path}: unreadable prediction ({type(err).__name__}: {err})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D probability map or mask, got shape {data.shape}")
    ras = nib.as_closest_canonical(nib.Nifti1Image(data, img.affine, img.header))
    data = np.asarray(ras.dataobj, dtype=np.float32)
    if tuple(data.shape) != tuple(int(s) for s in shape):
        raise DataError(f"{path}: prediction grid {tuple(data.shape)} differs from the patient's {tuple(shape)} "
                        "(reoriented to RAS); predict on the cohort's own grid (no resampling is done)")
    diff = float(np.abs(np.asarray(ras.affine) - np.asarray(affine)).max())
    if diff > AFFINE_TOL:
        raise DataError(f"{path}: prediction affine differs from the patient's by up to {diff:.4g} mm "
                        f"(tolerance {AFFINE_TOL:g}); predict on the cohort's own grid (no resampling is done)")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: {int((~np.isfinite(data)).sum())} NaN/Inf voxel(s)")
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 1:
        raise DataError(f"{path}: values {lo:g}..{hi:g}; expected a probability map (0..1) or a binary mask (0/1)")
    if hi == 0:
        return data, None
    binary = bool(np.all((data == 0) | (data == 1)))
    return data, BINARY if binary else PROBABILITY
