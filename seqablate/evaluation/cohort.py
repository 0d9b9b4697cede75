"""A trial's patients: the cached cohort, its labelled patients and their split.

Kept apart from the loop so the Tune driver, the loop and evaluation agree on one split, and
so the CLI can refuse bad cohorts before any trial starts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqablate.config import DataConfig, TrialConfig


@dataclass(frozen=True)
class TrialSplit:
    """Patient ids of one trial's split (labelled patients only)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialSplit:
        return cls(tuple(d["train"]), tuple(d["val"]), tuple(d.get("test", ())))


def split_record(cfg: TrialConfig, split: TrialSplit) -> dict[str, Any]:
    """What a run records as ``split.json``: the patient ids of train, val and test, the
    training cohort (an absolute path, so ``evaluate`` can tell it from another cohort) and
    the sequences, in study order."""
    cohort = str(Path(cfg.data.cohort).resolve()) if cfg.data.cohort else None
    return {"cohort": cohort, "sequences": list(cfg.data.sequences), **split.as_dict()}


def load_cached(data: DataConfig, *, cohort: str | None = None, progress: bool = False) -> list[Any]:
    """Preprocess (or read from cache) the cohort of ``data`` (or ``cohort`` if given).

    Returns ``CachedPatient`` objects in cohort order. Raises ValueError naming the path when
    it does not exist.
    """
    from seqablate.data.cache import preprocess_cohort

    root = cohort if cohort is not None else data.cohort
    if root is None:
        raise ValueError("data.cohort: no cohort given (set data.cohort to a cohort folder)")
    if not Path(root).is_dir():
        what = "not a folder" if Path(root).exists() else "no such folder"
        raise ValueError(f"cohort {root}: {what}")
    return list(preprocess_cohort(root, data, progress=progress))


def plan_geometry(cfg: TrialConfig) -> TrialConfig:
    """``cfg`` with the target spacing of the ``spacing`` geometry planned where unset.

    ``data.spacing_mm`` / ``data.slice_mm`` left unset become the median in-plane / slice
    spacing (:func:`~seqablate.data.geometry.plan_spacing`) of the training cohort's patients
    outside the test split (read from the headers: no voxel is loaded), as nnU-Net plans its
    target spacing from its training cases. A ``resize`` config, or one whose spacing is set,
    is returned unchanged. Raises ValueError naming ``data.cohort`` when it has no readable
    patient.
    """
    d = cfg.data
    if d.geometry != "spacing" or (d.spacing_mm is not None and d.slice_mm is not None):
        return cfg
    from seqablate.data.dataset import split_patients
    from seqablate.data.geometry import plan_spacing
    from seqablate.data.layouts import discover
    from seqablate.data.volumes import readable_spacings

    if d.cohort is None or not Path(d.cohort).is_dir():
        raise ValueError(f"data.cohort {d.cohort}: no cohort folder to plan data.spacing_mm / data.slice_mm from "
                         "(set both, or data.geometry: resize)")
    cohort = discover(d.cohort, d.layout, lesion_labels=d.lesion_labels, default_spacing=d.default_spacing,
                      aliases=d.aliases)
    lab = sorted(pf.patient_id for pf in cohort.patients if pf.mask is not None)
    try:
        test = set(split_patients(lab, val=0, test_fraction=d.test_fraction, seed=d.split_seed, folds=d.folds,
                                  fold=d.fold).test) if lab else set()
    except ValueError:
        test = set()  # a split that cannot be made is reported by plan_split, with its reason
    spacings = readable_spacings([pf for pf in cohort.patients if pf.patient_id not in test])
    if not spacings:
        raise ValueError(f"data.cohort {d.cohort}: no readable training patient to plan data.spacing_mm from")
    inplane, slice_mm = plan_spacing(spacings)
    data = d.model_copy(update={"spacing_mm": d.spacing_mm or inplane, "slice_mm": d.slice_mm or slice_mm})
    return cfg.model_copy(update={"data": data})


def labelled(patients: list[Any]) -> list[Any]:
    """Patients with a lesion mask (unlabelled ones cannot be trained or scored on)."""
    return [p for p in patients if p.mask is not None]


def plan_split(cfg: TrialConfig, patients: list[Any], *, warn: bool = False) -> TrialSplit:
    """The patient-level split of ``cfg.data`` over the labelled ``patients``.

    With ``data.val_patients`` unset, the validation set grows until it holds
    ``data.val_fraction`` of the patients and ``data.val_min_lesions`` lesions (model
    selection on a handful of lesions is a lottery), up to half of the non-test patients;
    ``warn`` prints when a small cohort cannot reach that. Raises ValueError when there are
    no labelled patients, or fewer than the split needs.
    """
    from seqablate.data.dataset import split_patients

    lab = labelled(patients)
    d = cfg.data
    where = d.cohort or "cohort"
    if not lab:
        raise ValueError(f"{where}: no labelled patients (no lesion masks found); cannot train")
    n_val = d.val_patients if d.val_patients is not None else (1 if d.val_fraction > 0 or d.val_min_lesions > 0 else 0)
    need = 1 + n_val + (1 if d.test_fraction > 0 else 0)
    if len(lab) < need:
        what = f"data.val_patients={d.val_patients}" if d.val_patients is not None else "at least 1"
        raise ValueError(
            f"{where}: {len(lab)} labelled patient(s), but the split needs at least {need} "
            f"(1 train + {what} validation"
            f"{' + 1 test (data.test_fraction > 0)' if d.test_fraction > 0 else ''})"
        )
    lesions = {p.patient_id: lesion_count(p) for p in lab}
    split = split_patients(
        [p.patient_id for p in lab],
        val=d.val_patients,
        test_fraction=d.test_fraction,
        seed=d.split_seed,
        folds=d.folds,
        fold=d.fold,
        lesions=lesions,
        val_fraction=d.val_fraction,
        val_min_lesions=d.val_min_lesions,
    )
    if not split.train:
        raise ValueError(f"{where}: the split leaves no training patients ({len(lab)} labelled)")
    if warn and d.val_patients is None:
        got = sum(lesions[i] for i in split.val)
        if got < d.val_min_lesions or len(split.val) < d.val_fraction * len(lab):
            print(f"{where}: validation holds {len(split.val)} patients / {got} lesions, short of "
                  f"data.val_fraction={d.val_fraction} / data.val_min_lesions={d.val_min_lesions} "
                  "(capped at half of the non-test patients); model selection will be noisy",
                  file=sys.stderr)
    train = training_subset(tuple(split.train), cfg)
    return TrialSplit(train, tuple(split.val), tuple(split.test))


def training_subset(train: tuple[str, ...], cfg: TrialConfig) -> tuple[str, ...]:
    """The first ``data.train_patients`` (or ``data.train_fraction * n`` rounded half up, at least 1) of
    one ordering of ``train`` seeded by ``data.split_seed``; all of ``train`` when neither is set.

    The ordering depends only on the training split and the split seed, never on the size asked
    for, so a smaller set is always a subset of a larger one. Returned in the split's order.
    Raises ValueError naming the field when more patients are asked for than the split has.
    """
    d = cfg.data
    if d.train_patients is None and d.train_fraction is None:
        return train
    n = d.train_patients if d.train_patients is not None else max(1, int(np.floor(d.train_fraction * len(train) + 0.5)))
    if n > len(train):
        raise ValueError(f"{d.cohort or 'cohort'}: data.train_patients={n} but the training split has "
                         f"{len(train)} patients")
    rng = np.random.default_rng([d.split_seed, 0x7A1E])  # its own stream: the split's draws are unchanged
    ids = sorted(train)
    order = [ids[i] for i in rng.permutation(len(ids))]
    keep = set(order[:n])
    return tuple(p for p in train if p in keep)


def lesion_count(patient: Any) -> int:
    """26-connected lesions of a labelled cached patient (recorded at preprocessing)."""
    if patient.lesions is not None:
        return int(patient.lesions)
    from seqablate.data.inspection import count_lesions

    return count_lesions(original_mask(patient))


def select(patients: list[Any], ids: tuple[str, ...] | list[str]) -> list[Any]:
    """The patients with the given ids, in ``ids`` order (ValueError naming a missing id)."""
    by_id = {p.patient_id: p for p in patients}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"patients {missing} are not in the cohort (has {sorted(by_id)[:10]}...)")
    return [by_id[i] for i in ids]


def original_mask(patient: Any) -> np.ndarray:
    """The binary lesion mask uint8[X, Y, Z] of a cached patient on its original grid."""
    from seqablate.data.cache import to_original_grid

    if patient.mask is None:
        raise ValueError(f"patient {patient.patient_id}: no lesion mask")
    if getattr(patient, "truth", None) is not None:  # spacing geometry: the mask as it was drawn
        return np.asarray(patient.truth, dtype=np.uint8)
    return (to_original_grid(np.asarray(patient.mask, dtype=np.float32), patient) >= 0.5).astype(np.uint8)


def check_cohorts(cfg: TrialConfig, *, progress: bool = False) -> tuple[list[Any], TrialSplit]:
    """Validate every cohort ``cfg`` names before any training: ``data.cohort`` and each
    ``eval.external`` cohort exist, load (and are cached), and can be used.

    Returns the training cohort's patients and its split. Raises ValueError naming the config
    field and the path: a missing folder, a cohort without labelled patients or with too few
    for the split, an external cohort without labels or without any of the model's sequences.
    """
    named = [("data.cohort", cfg.data.cohort)] + [(f"eval.external.{k}", v) for k, v in cfg.eval.external.items()]
    for field_name, path in named:
        if path is None:
            raise ValueError(f"{field_name}: no cohort set (a folder of patients)")
        if not Path(path).is_dir():
            what = "not a folder" if Path(path).exists() else "no such folder"
            raise ValueError(f"{field_name} {path}: {what}")
    patients = load_cached(cfg.data, progress=progress)
    split = plan_split(cfg, patients, warn=True)
    for name, path in cfg.eval.external.items():
        ext = load_cached(cfg.data, cohort=path, progress=progress)
        scored = [p for p in labelled(ext) if bool(np.asarray(p.present).any())]
        if not scored:
            raise ValueError(
                f"eval.external.{name} {path}: no patient can be scored (an external cohort needs "
                f"lesion masks and at least one of the sequences {list(cfg.data.sequences)})"
            )
    return patients, split
