"""``seqablate predict``: segment one patient folder with a trained model.

Writes, on the input's own voxel grid and with its own affine (whatever its orientation):
``probability.nii.gz`` (float32), ``mask.nii.gz`` (uint8, probability > eval.threshold) and
``lesions.csv`` (one row per 26-connected predicted lesion: centre in mm (scanner RAS), volume
in mm^3, voxel count, score = mean probability, as in the paper's lesion detection).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqablate.config import TrialConfig
from seqablate.folders import temp_name
from seqablate.vocabulary import STORED

if TYPE_CHECKING:
    from seqablate.data.cache import CachedPatient
    from seqablate.data.layouts import PatientFiles


class PredictRefused(ValueError):
    """Missing sequences the model never saw missing in training: trained without sequence
    dropout, or with per-sequence probabilities that are 0 for them (use --force)."""


@dataclass
class PredictOutput:
    folder: Path
    files: list[Path] = field(default_factory=list)
    used: tuple[str, ...] = ()  # sequences the prediction used
    missing: tuple[str, ...] = ()  # sequences the model knows that were missing
    norm_stats: str = STORED  # the BatchNorm statistics used: "stored" or a subset key


def never_absent(cfg: TrialConfig, missing: tuple[str, ...]) -> tuple[str, ...]:
    """The ``missing`` sequences a model of ``cfg`` never saw absent in training by its
    sequence dropout: all of them without dropout; with per-sequence probabilities those whose
    p is 0; none with ``uniform`` dropout (every subset is drawn). Missing several sequences
    that each had p > 0 is not counted as unseen: they were dropped together with the product
    of their probabilities (rarely, but seen). Sequences missing on disk for some training
    patients are not known here: the check is by the config."""
    from seqablate.config import dropout_active, dropout_probabilities

    t = cfg.train
    if not dropout_active(t.dropout_p):
        return missing
    if t.dropout_mode == "uniform":
        return ()
    p = dict(zip(cfg.data.sequences, dropout_probabilities(t.dropout_p, cfg.data.sequences), strict=True))
    return tuple(s for s in missing if p.get(s, 0.0) <= 0)


def _refuse_unseen(cfg: TrialConfig, known: tuple[str, ...], missing: tuple[str, ...], input_dir: str | Path) -> None:
    """Raise :class:`PredictRefused` when a missing sequence was never absent in training."""
    from seqablate.config import dropout_active, dropout_text

    unseen = never_absent(cfg, missing)
    if not unseen:
        return
    verb = "is" if len(missing) == 1 else "are"
    if not dropout_active(cfg.train.dropout_p):
        raise PredictRefused(
            f"the model was trained without sequence dropout (train.dropout_p = 0) on {list(known)}, "
            f"but {list(missing)} {verb} missing for {input_dir}; "
            "its predictions without them are unreliable (the paper's Table III: mAP 0). "
            "Use a model trained with sequence dropout, or pass --force to predict anyway"
        )
    raise PredictRefused(
        f"the model was trained with sequence dropout only for some sequences (train.dropout_p = "
        f"{dropout_text(cfg.train.dropout_p)}): it never saw an input without {list(unseen)} (p = 0), "
        f"and {list(missing)} {verb} missing for {input_dir}; its predictions without "
        f"{'it' if len(unseen) == 1 else 'them'} are unreliable (the paper's Table III: mAP 0). Use a model trained "
        f"with dropout on {list(unseen)}, or pass --force to predict anyway"
    )


def _patient_files(folder: Path, cfg: TrialConfig) -> object:
    from seqablate.data.layouts import nifti_patient  # one patient folder in the nifti layout

    if not folder.is_dir():
        raise ValueError(f"--input {folder}: not a folder (expected one NIfTI file per sequence)")
    return nifti_patient(folder.name, folder, "nifti", tuple(cfg.data.lesion_labels))


def _to_input_grid(ras: np.ndarray, orig_affine: np.ndarray) -> np.ndarray:
    """Array on the RAS-reoriented grid -> the same voxels in the file's own axis order."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(orig_affine)
    ras_ornt = nib.orientations.axcodes2ornt(("R", "A", "S"))
    return nib.orientations.apply_orientation(ras, nib.orientations.ornt_transform(ras_ornt, ornt))


def lesion_table(probs: np.ndarray, affine: np.ndarray, threshold: float) -> object:
    """Per-lesion DataFrame of a probability volume float32[X, Y, Z] with its voxel->mm affine."""
    import pandas as pd

    from seqablate.metrics.lesions import components

    comp = components(probs > threshold)
    if comp.n == 0:
        return pd.DataFrame(columns=["lesion", "x_mm", "y_mm", "z_mm", "volume_mm3", "voxels", "score"])
    cen = comp.centroids()  # voxel units
    mm = (affine[:3, :3] @ cen.T).T + affine[:3, 3]
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    sizes = comp.sizes
    return pd.DataFrame({
        "lesion": np.arange(1, comp.n + 1), "x_mm": mm[:, 0], "y_mm": mm[:, 1], "z_mm": mm[:, 2],
        "volume_mm3": sizes * voxel_mm3, "voxels": sizes, "score": comp.sums(probs) / np.maximum(sizes, 1),
    })


#: The files ``predict`` writes into its output folder.
OUTPUT_FILES = ("probability.nii.gz", "mask.nii.gz", "lesions.csv")


def check_out(out: Path, patient: Path) -> None:
    """Refuse (:class:`~seqablate.folders.OutputRefused`) an ``--out`` that is not a new or
    empty folder or an earlier prediction's (a folder of the user's files is refused, as for
    every seqablate output: nothing is mixed into it), that cannot be written, or that is the
    patient's folder ``patient`` or inside it (the prediction's ``mask.nii.gz`` would be
    read as one of the patient's files the next time)."""
    from seqablate.folders import OutputRefused, check_replaceable

    o, p = out.resolve(), patient.resolve()
    if o == p or p in o.parents:
        raise OutputRefused(
            f"--out {out}: inside the patient folder --input {patient}; predictions written there would "
            "be mixed with the patient's scans. Choose another --out"
        )
    check_replaceable(out, "predict", flag="--out")


def _claim_out(out: Path, *, create: bool, patient: Path | None = None) -> Path:
    """The output folder, checked (:func:`check_out`; ``patient`` the input folder): new or
    empty (then marked), or seqablate's own predict folder (its files are replaced). With
    ``create`` False only checks (nothing is made). Raises
    :class:`~seqablate.folders.OutputRefused`."""
    from seqablate.folders import check_replaceable, claim

    if patient is not None:
        check_out(out, patient)
    if create:
        claim(out, "predict", flag="--out")
    else:
        check_replaceable(out, "predict", flag="--out")
    return out


def predict_patient(
    model_ref: str | Path,
    input_dir: str | Path,
    out_dir: str | Path,
    *,
    sequences: list[str] | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
    device: str | None = None,
) -> PredictOutput:
    """Predict one patient; see the module docstring. Raises :class:`PredictRefused` when a
    sequence the model knows is missing and the model never saw it absent in training
    (:func:`never_absent`: no sequence dropout, or a per-sequence p of 0), unless ``force``;
    ValueError for bad inputs."""
    import torch

    from seqablate.evaluation.model_ref import load_model
    from seqablate.models.inference import Predictor

    _claim_out(Path(out_dir), create=False, patient=Path(input_dir))  # refuse a bad --out before any work
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    deployed, cfg = load_model(model_ref, tracking_uri=tracking_uri, device=dev)
    pf, available, missing = _inputs(Path(input_dir), cfg, sequences)
    if missing and not force:
        _refuse_unseen(cfg, tuple(cfg.data.sequences), missing, input_dir)
    patient, orig_affine = _preprocess(pf, available, cfg)
    predictor = Predictor(deployed, device=dev, batch_size=cfg.eval.batch_size, amp=cfg.train.amp)
    probs = _to_input_grid(predictor.predict_volume(patient), orig_affine).astype(np.float32)
    written = _write_outputs(_claim_out(Path(out_dir), create=True), probs, orig_affine, cfg.eval.threshold)
    return PredictOutput(Path(out_dir), written, available, missing, predictor.used[-1][1])


def _inputs(input_dir: Path, cfg: TrialConfig, sequences: list[str] | None,
            ) -> tuple[PatientFiles, tuple[str, ...], tuple[str, ...]]:
    """The patient's files (restricted to ``sequences`` when given), and the model's sequences
    it has and lacks, in the model's order. ValueError for a sequence the model does not know,
    or a patient with none of the model's sequences."""
    from seqablate.sequences import canonical

    known = tuple(cfg.data.sequences)
    pf = _patient_files(input_dir, cfg)
    if sequences:
        wanted = [canonical(s) for s in sequences]
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise ValueError(f"--sequences {unknown}: the model knows only {list(known)}")
        pf = dataclasses.replace(pf, files={k: v for k, v in pf.files.items() if k in wanted})
    available = tuple(s for s in known if s in pf.files)
    missing = tuple(s for s in known if s not in pf.files)
    if not available:
        raise ValueError(f"--input {input_dir}: none of the model's sequences {list(known)} found "
                         f"(has {sorted(pf.files)})")
    return pf, available, missing


def _preprocess(pf: PatientFiles, available: tuple[str, ...], cfg: TrialConfig) -> tuple[CachedPatient, np.ndarray]:
    """``(cached patient, the input's own affine)``: the patient's volumes preprocessed as the
    model's training cohort was, in memory."""
    from seqablate.data.cache import CachedPatient
    from seqablate.data.preprocess import PreprocessParams, preprocess_volume
    from seqablate.data.volumes import load_patient

    known = tuple(cfg.data.sequences)
    vol = load_patient(pf, list(available))
    pre = preprocess_volume(vol, known, PreprocessParams.from_data(cfg.data))
    # The model was trained and is evaluated on the float16 preprocessing cache: the same
    # rounding here makes predict's probabilities evaluate's, voxel for voxel.
    patient = CachedPatient(patient_id=pf.patient_id, image=pre.image.astype(np.float16), present=pre.present,
                            mask=None, spacing=tuple(vol.spacing), orig_shape=tuple(vol.shape), affine=vol.affine,
                            sequences=known, grid=pre.grid, head_box=pre.head_box)
    return patient, vol.orig_affine


def _write_outputs(out: Path, probs: np.ndarray, affine: np.ndarray, threshold: float) -> list[Path]:
    """Write :data:`OUTPUT_FILES` into ``out``: the probability map, the mask above
    ``threshold`` and the lesion table, each built in a temp folder and moved into place file
    by file (never half a file). Returns the paths written."""
    import nibabel as nib

    tmp = out / temp_name("predict")
    tmp.mkdir()
    try:
        files = {
            "probability.nii.gz": nib.Nifti1Image(probs, affine),
            "mask.nii.gz": nib.Nifti1Image((probs > threshold).astype(np.uint8), affine),
        }
        for name, img in files.items():
            nib.save(img, tmp / name)
        lesion_table(probs, affine, threshold).to_csv(tmp / "lesions.csv", index=False)
        written = []
        for name in [*files, "lesions.csv"]:
            os.replace(tmp / name, out / name)
            written.append(out / name)
    finally:
        for leftover in tmp.glob("*"):
            leftover.unlink()
        tmp.rmdir()
    return written
