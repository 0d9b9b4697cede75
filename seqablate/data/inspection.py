"""Inspect a cohort: layout, per-patient sequences, grid, lesions, and every problem at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from seqablate.data.errors import DataError
from seqablate.data.layouts import discover
from seqablate.data.volumes import load_patient

#: 26-connectivity in 3D: lesions touching at a corner are one lesion.
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def count_lesions(mask: np.ndarray) -> int:
    """Number of 3D 26-connected components of a binary mask [X, Y, Z] (0 for empty)."""
    return int(ndimage.label(np.asarray(mask) > 0, structure=STRUCTURE_26)[1])


@dataclass
class PatientReport:
    """What ``cohort inspect`` says about one patient (``usable`` = loads without error)."""

    patient_id: str
    sequences: list[str]
    labelled: bool
    usable: bool
    shape: list[int] | None = None
    spacing: list[float] | None = None
    lesions: int | None = None
    lesion_voxels: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class CohortReport:
    root: str
    layout: str
    patients: list[PatientReport]
    notes: list[str] = field(default_factory=list)  # e.g. wrapper folders descended into

    @property
    def usable(self) -> bool:
        return all(p.usable for p in self.patients)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "notes": list(self.notes),
            "n_patients": len(self.patients),
            "n_usable": sum(p.usable for p in self.patients),
            "n_labelled": sum(p.labelled and p.usable for p in self.patients),
            "usable": self.usable,
            "patients": [asdict(p) for p in self.patients],
        }


def inspect_cohort(
    root: str | Path,
    layout: str = "auto",
    *,
    lesion_labels: Sequence[int] = (1, 3),
    default_spacing: Sequence[float] = (0.94, 0.94, 1.0),
    aliases: Mapping[str, str] | None = None,
    progress: bool = False,
) -> CohortReport:
    """Load and validate every patient, collecting all problems instead of stopping.

    ``aliases``: channel name -> canonical sequence for nnU-Net channel names (``--alias``).
    Cohort-level problems (missing folder, unknown layout, empty cohort) still raise
    :class:`DataError`: there is nothing to report per patient then.
    """
    from tqdm.auto import tqdm

    cohort = discover(root, layout, lesion_labels=lesion_labels, default_spacing=default_spacing, aliases=aliases)
    reports = []
    for pf in tqdm(cohort.patients, desc="inspect", unit="patient", disable=not progress):
        rep = PatientReport(
            patient_id=pf.patient_id,
            sequences=sorted(pf.files),
            labelled=pf.mask is not None,
            usable=False,
            notes=list(pf.notes),
        )
        try:
            vol = load_patient(pf)
        except DataError as err:
            rep.problems = list(err.problems)
        else:
            rep.usable = True
            rep.shape = list(vol.shape)
            rep.spacing = [round(s, 4) for s in vol.spacing]
            if vol.mask is not None:
                rep.lesions = count_lesions(vol.mask)
                rep.lesion_voxels = int(vol.mask.sum())
        reports.append(rep)
    return CohortReport(root=str(cohort.root), layout=cohort.layout, patients=reports, notes=list(cohort.notes))


def format_report(report: CohortReport) -> str:
    """Human-readable table plus every problem and note."""
    lines = [*report.notes, f"cohort {report.root}", f"layout {report.layout}, {len(report.patients)} patient(s)", ""]
    header = f"{'patient':<20} {'ok':<3} {'sequences':<48} {'shape':<16} {'spacing (mm)':<20} lesions"
    lines.append(header)
    for p in report.patients:
        shape = "x".join(map(str, p.shape)) if p.shape else "-"
        spacing = "x".join(f"{s:g}" for s in p.spacing) if p.spacing else "-"
        lesions = "unlabelled" if not p.labelled else ("-" if p.lesions is None else str(p.lesions))
        lines.append(f"{p.patient_id:<20} {'yes' if p.usable else 'NO':<3} {','.join(p.sequences) or '-':<48} {shape:<16} {spacing:<20} {lesions}")
    problems = [(p.patient_id, m) for p in report.patients for m in p.problems]
    notes = [(p.patient_id, m) for p in report.patients for m in p.notes]
    if problems:
        lines += ["", f"{len(problems)} problem(s):"] + [f"  [{pid}] {m}" for pid, m in problems]
    if notes:
        lines += ["", f"{len(notes)} note(s):"] + [f"  [{pid}] {m}" for pid, m in notes]
    n_bad = sum(not p.usable for p in report.patients)
    lines += ["", f"{n_bad} unusable patient(s)" if n_bad else "all patients usable"]
    return "\n".join(lines)
