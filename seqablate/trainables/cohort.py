"""A trial's patients: the cached cohort, its labelled patients and their split.

Kept apart from the loop so the Tune driver, the loop and evaluation agree on one split, and
so the CLI can refuse bad cohorts before any trial starts.
"""

from __future__ import annotations

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


def load_cached(data: DataConfig, *, cohort: str | None = None, progress: bool = False) -> list[Any]:
    """Preprocess (or read from cache) the cohort of ``data`` (or ``cohort`` if given).

    Returns ``CachedPatient`` objects in cohort order. Raises ValueError naming the path when
    it does not exist.
    """
    from seqablate.data.cache import preprocess_cohort

    root = cohort if cohort is not None else data.cohort
    if root is None:
        raise ValueError("data.cohort: no cohort given (pass --cohort PATH or set data.cohort)")
    if not Path(root).exists():
        raise ValueError(f"cohort {root}: no such file or directory")
    return list(preprocess_cohort(root, data, progress=progress))


def labelled(patients: list[Any]) -> list[Any]:
    """Patients with a lesion mask (unlabelled ones cannot be trained or scored on)."""
    return [p for p in patients if p.mask is not None]


def plan_split(cfg: TrialConfig, patients: list[Any]) -> TrialSplit:
    """The patient-level split of ``cfg.data`` over the labelled ``patients``.

    Raises ValueError when there are no labelled patients, or fewer than the split needs
    (>= 1 training patient, ``val_patients`` validation patients, >= 1 test patient when
    ``test_fraction`` > 0).
    """
    from seqablate.data.dataset import split_patients

    lab = labelled(patients)
    d = cfg.data
    where = d.cohort or "cohort"
    if not lab:
        raise ValueError(f"{where}: no labelled patients (no lesion masks found); cannot train")
    need = 1 + d.val_patients + (1 if d.test_fraction > 0 else 0)
    if len(lab) < need:
        raise ValueError(
            f"{where}: {len(lab)} labelled patient(s), but the split needs at least {need} "
            f"(1 train + data.val_patients={d.val_patients} validation"
            f"{' + 1 test (data.test_fraction > 0)' if d.test_fraction > 0 else ''})"
        )
    split = split_patients(
        [p.patient_id for p in lab],
        val=d.val_patients,
        test_fraction=d.test_fraction,
        seed=d.split_seed,
        folds=d.folds,
        fold=d.fold,
    )
    if not split.train:
        raise ValueError(f"{where}: the split leaves no training patients ({len(lab)} labelled)")
    return TrialSplit(tuple(split.train), tuple(split.val), tuple(split.test))


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
    return (to_original_grid(np.asarray(patient.mask, dtype=np.float32), patient) >= 0.5).astype(np.uint8)
