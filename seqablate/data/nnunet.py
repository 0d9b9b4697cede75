"""Write a cohort as an nnU-Net v2 raw dataset, with a study's split as nnU-Net's own split file.

So an outside baseline (nnU-Net) trains on exactly the patients a seqablate study trained on
and is tested on exactly its test patients. Written under ``out``::

    nnUNet_raw/Dataset<ID>_<Name>/
        dataset.json              channel_names (the canonical sequences), labels
                                  {background: 0, lesion: 1}, numTraining, file_ending
        imagesTr/<case>_<XXXX>.nii.gz   train + validation patients, channel XXXX
        labelsTr/<case>.nii.gz          their binary lesion masks (0/1)
        imagesTs/<case>_<XXXX>.nii.gz   test patients (and unlabelled ones)
        labelsTs/<case>.nii.gz          the test patients' masks (nnU-Net ignores this folder;
                                        seqablate reads it back, so nothing is lost)
        seqablate.json            case id -> patient id, the split in patient ids, the source
    nnUNet_preprocessed/Dataset<ID>_<Name>/splits_final.json
                                  [{"train": [...], "val": [...]}]: one fold, nnU-Net's fold 0

so ``nnUNet_raw`` / ``nnUNet_preprocessed`` can point at those two folders as they are (nnU-Net
reads an existing ``splits_final.json`` instead of drawing its own 5 folds). Volumes are
written on their RAS grid (``data.volumes``: the grid seqablate trains and scores on), every
channel and the mask on one grid with one affine (qform = sform), integer-valued images as
int16, others float32; masks binary (the layout's lesion labels -> 1). The ``nnunet`` layout
(:mod:`seqablate.data.layouts`) reads the folder back with equal voxels and affines.

No voxel is read by layouts; this module reads and writes them, so it sits beside
``volumes``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from seqablate.data.errors import DataError, combine
from seqablate.data.layouts import NNUNET_JSON, NNUNET_SIDECAR, Cohort
from seqablate.data.volumes import load_patient
from seqablate.sequences import CANONICAL

#: Labels of the exported masks (nnU-Net's ``labels``): every lesion label becomes 1.
LABELS: dict[str, int] = {"background": 0, "lesion": 1}
FILE_ENDING = ".nii.gz"
SPLITS_FILE = "splits_final.json"
RAW, PREPROCESSED = "nnUNet_raw", "nnUNet_preprocessed"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def case_id(patient_id: str) -> str:
    """The nnU-Net case identifier of a patient: its id with every run of characters other
    than letters, digits, ``_``, ``-`` and ``.`` replaced by ``_`` (a BrainMetShare id such as
    ``train/Mets_001`` holds a ``/``). Unchanged for ordinary ids."""
    return _UNSAFE.sub("_", patient_id).strip("_") or "case"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<ID>_<Name>`` (ID zero-padded to three digits, as nnU-Net v2 names them).

    Raises ValueError for an id outside 1..999 or a name without letters or digits.
    """
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"--dataset-id {dataset_id}: nnU-Net dataset ids are 1..999 (three digits)")
    clean = re.sub(r"[^A-Za-z0-9_-]+", "", name.replace(" ", "_"))
    if not re.search(r"[A-Za-z0-9]", clean):
        raise ValueError(f"--dataset-name {name!r}: needs letters or digits")
    return f"Dataset{int(dataset_id):03d}_{clean}"


@dataclass
class NnunetExport:
    """What :func:`export_nnunet` wrote (paths inside the final folder)."""

    dataset: Path  # <out>/nnUNet_raw/Dataset<ID>_<Name>
    splits: Path | None  # <out>/nnUNet_preprocessed/Dataset<ID>_<Name>/splits_final.json
    cases: dict[str, str]  # patient id -> case id
    train: list[str] = field(default_factory=list)  # case ids in imagesTr used for training
    val: list[str] = field(default_factory=list)  # case ids in imagesTr used for validation
    test: list[str] = field(default_factory=list)  # case ids in imagesTs (labelled)
    unlabelled: list[str] = field(default_factory=list)  # case ids in imagesTs without a mask
    notes: list[str] = field(default_factory=list)


def _image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A NIfTI image whose qform and sform both hold ``affine`` (SimpleITK, which nnU-Net
    reads with, prefers the qform; nibabel the sform)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _compact(volume: np.ndarray) -> np.ndarray:
    """int16 when every voxel is an integer in int16's range (the usual MR image), else
    float32: either way the exact values come back."""
    v = np.asarray(volume, dtype=np.float32)
    if v.size and np.all(np.rint(v) == v) and v.min() >= -32768 and v.max() <= 32767:
        return v.astype(np.int16)
    return v


def export_nnunet(
    cohort: Cohort,
    out: Path,
    *,
    dataset_id: int,
    name: str,
    sequences: Sequence[str] | None = None,
    split: Mapping[str, Sequence[str]] | None = None,
    source: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> NnunetExport:
    """Write ``cohort`` into the new folder ``out`` (see the module docstring).

    ``sequences``: the channels, in order (default: the sequences every patient has, in
    canonical order). ``split``: ``{"train": [...], "val": [...], "test": [...]}`` patient
    ids; train + val go to ``imagesTr`` and ``splits_final.json``, test to ``imagesTs`` with
    ``labelsTs``; a labelled patient outside the split goes to ``imagesTs`` too (a note says
    so). Without a split every labelled patient is a training case and no split file is
    written (nnU-Net then draws its own folds). Unlabelled patients go to ``imagesTs``.
    ``source`` (where the split came from) is recorded in ``seqablate.json``; ``progress`` is
    called with each patient id.

    Raises :class:`DataError` listing every problem at once (patients that do not load, a
    patient lacking one of ``sequences``, split ids that are not in the cohort, two patient
    ids with one case id); ``out`` is then left as it was (the caller writes into a
    temporary folder and moves it into place).
    """
    pts = {p.patient_id: p for p in cohort.patients}
    if sequences is None:
        have = [set(p.files) for p in cohort.patients]
        common = set.intersection(*have) if have else set()
        sequences = [s for s in CANONICAL if s in common]
        if not sequences:
            raise DataError(f"{cohort.root}: no sequence is present for every patient; choose the channels with --sequences")
    seqs = list(sequences)
    problems: list[str] = []
    cases = {pid: case_id(pid) for pid in pts}
    clash: dict[str, list[str]] = {}
    for pid, case in cases.items():
        clash.setdefault(case, []).append(pid)
    problems += [f"patients {ids} all become nnU-Net case id {case!r}" for case, ids in clash.items() if len(ids) > 1]
    notes: list[str] = []
    labelled = [pid for pid, p in pts.items() if p.mask is not None]
    if split is not None:
        train, val, test = (list(split.get(k, ())) for k in ("train", "val", "test"))
        unknown = [pid for pid in [*train, *val, *test] if pid not in pts]
        if unknown:
            problems.append(f"the split names {len(unknown)} patient(s) that are not in {cohort.root}: "
                            f"{unknown[:10]}; export the cohort the study was trained on")
        unlab = [pid for pid in [*train, *val, *test] if pid in pts and pts[pid].mask is None]
        if unlab:
            problems.append(f"the split names patients without a lesion mask in {cohort.root}: {unlab[:10]}")
        outside = [pid for pid in labelled if pid not in {*train, *val, *test}]
        if outside:
            notes.append(f"{len(outside)} labelled patient(s) are not in the split (added to the cohort after "
                         f"the study?): written to imagesTs/labelsTs: {outside[:10]}")
            test = [*test, *outside]
    else:
        train, val, test = list(labelled), [], []
    missing = {pid: [s for s in seqs if s not in p.files] for pid, p in pts.items()}
    missing = {pid: m for pid, m in missing.items() if m}
    if missing:
        listed = "; ".join(f"{pid} lacks {m}" for pid, m in list(missing.items())[:10])
        problems.append(f"nnU-Net needs every channel for every case, but {len(missing)} patient(s) lack one "
                        f"({listed}); export fewer channels with --sequences")
    if problems:
        raise combine(f"{cohort.root}: cannot export as nnU-Net dataset", problems)

    folder = dataset_folder_name(dataset_id, name)
    raw = out / RAW / folder
    dirs = {d: raw / d for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    training = set(train) | set(val)
    failures: list[str] = []
    unlabelled = [pid for pid in pts if pts[pid].mask is None]
    for pid in [*train, *val, *test, *unlabelled]:
        if progress is not None:
            progress(pid)
        try:
            vol = load_patient(pts[pid], seqs)
        except DataError as err:
            failures.append(str(err))
            continue
        case = cases[pid]
        images, labels = (dirs["imagesTr"], dirs["labelsTr"]) if pid in training else (dirs["imagesTs"], dirs["labelsTs"])
        for i, s in enumerate(seqs):
            nib.save(_image(_compact(vol.images[s]), vol.affine), images / f"{case}_{i:04d}{FILE_ENDING}")
        if vol.mask is not None:
            nib.save(_image(vol.mask.astype(np.uint8), vol.affine), labels / f"{case}{FILE_ENDING}")
    if failures:
        raise combine(f"{cohort.root}: {len(failures)} patient(s) could not be read", failures)
    for d in ("labelsTs", "imagesTs"):  # an empty test folder would only puzzle
        if not any(dirs[d].iterdir()):
            dirs[d].rmdir()
    meta = {
        "channel_names": {str(i): s for i, s in enumerate(seqs)},
        "labels": dict(LABELS),
        "numTraining": len(training),
        "file_ending": FILE_ENDING,
        "name": folder.split("_", 1)[1],
        "description": f"{cohort.root} exported by seqablate" + (f"; split of {source}" if source else ""),
    }
    (raw / NNUNET_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    side = {"cohort": str(cohort.root), "layout": cohort.layout, "source": source,
            "patients": {cases[pid]: pid for pid in pts},
            "split": {"train": train, "val": val, "test": test} if split is not None else None}
    (raw / NNUNET_SIDECAR).write_text(json.dumps(side, indent=1) + "\n")
    splits = None
    if split is not None:
        splits = out / PREPROCESSED / folder / SPLITS_FILE
        splits.parent.mkdir(parents=True)
        splits.write_text(json.dumps([{"train": [cases[p] for p in train], "val": [cases[p] for p in val]}],
                                     indent=1) + "\n")
    return NnunetExport(raw, splits, {pid: cases[pid] for pid in pts}, [cases[p] for p in train],
                        [cases[p] for p in val], [cases[p] for p in test], [cases[p] for p in unlabelled], notes)
