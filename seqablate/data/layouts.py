"""Cohort layouts: find the patients and their sequence files on disk (no voxel is read here).

Supported layouts (auto-detected, or forced with ``layout=``):

``nifti``
    ``<root>/<patient>/<sequence>.nii[.gz]`` named by a canonical name or an alias of
    ``LAYOUT_ALIASES['nifti']``, plus ``seg.nii[.gz]`` (binary 0/1 or 0/255). A folder that
    contains ``bravo`` or ``t1_gd`` is the public NIfTI copy of the Stanford data
    (``bravo, t1_pre, t1_gd, flair, seg``) and is read with ``LAYOUT_ALIASES['nifti-stanford']``
    (there ``t1_pre`` is the CUBE pre-contrast scan, ``t1_fse_pre``).
``brainmetshare``
    ``<root>/[<split>/]Mets_XXX/{0,1,2,3,seg}/<n>.png``, one PNG per axial slice, file names
    sorted numerically; seg stored as 0/255. PNGs carry no spacing (``default_spacing``).
``brats-mets``
    ``<root>/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``; labels 1 necrotic core, 2 edema,
    3 enhancing; ``lesion_labels`` (default {1, 3}) become the binary lesion mask.
``ucsf-bmsr``
    ``<root>/<study>/<study>_{T1pre,T1post,FLAIR,subtraction,seg}.nii.gz``; labels 0-3 read
    with the same ``lesion_labels`` rule (edema, label 2, is not lesion).

A patient without a mask is *unlabelled*: usable for prediction, not for training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seqablate.data.errors import DataError
from seqablate.sequences import CANONICAL, LAYOUT_ALIASES, MASK_NAME, suggest

#: Layouts this module can read (``auto`` detects one of them).
LAYOUTS: tuple[str, ...] = ("nifti", "brainmetshare", "brats-mets", "ucsf-bmsr")

#: Label values a mask of each layout may contain (anything else is an error).
MASK_LABELS: dict[str, tuple[int, ...]] = {
    "nifti": (0, 1, 255),
    "brainmetshare": (0, 1, 255),
    "brats-mets": (0, 1, 2, 3),
    "ucsf-bmsr": (0, 1, 2, 3),
}

_NII = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)
_BRATS = re.compile(r"^(?P<case>.+)-(?P<seq>t1n|t1c|t2w|t2f|seg)$", re.IGNORECASE)
_UCSF = re.compile(r"^(?P<case>.+)_(?P<seq>t1pre|t1post|flair|subtraction|seg)$", re.IGNORECASE)
_SERIES = ("0", "1", "2", "3", MASK_NAME)


@dataclass(frozen=True)
class PatientFiles:
    """One patient's files. ``files``: canonical sequence name -> file (or PNG folder).

    ``problems`` are fatal discovery problems (the patient cannot be loaded); ``notes`` are
    harmless (e.g. an unrecognised file that is ignored). ``mask_labels`` are the label
    values allowed in the mask, ``lesion_labels`` those that count as lesion; ``spacing`` is
    the voxel size (mm) for layouts whose files carry none (PNG), else None.
    """

    patient_id: str
    files: dict[str, Path]
    mask: Path | None
    layout: str
    folder: Path | None = None
    mask_labels: tuple[int, ...] = (0, 1, 255)
    lesion_labels: tuple[int, ...] = (1,)
    spacing: tuple[float, float, float] | None = None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def labelled(self) -> bool:
        return self.mask is not None


@dataclass
class Cohort:
    """A discovered cohort: the root, its layout and its patients (sorted by id).

    ``root`` is where the patients are, which may lie below the folder given when that folder
    only wraps the cohort (a release's download folder); ``notes`` then say so.
    """

    root: Path
    layout: str
    patients: list[PatientFiles] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.patients)

    def ids(self) -> list[str]:
        return [p.patient_id for p in self.patients]


def _nii_stem(path: Path) -> str | None:
    m = _NII.match(path.name)
    return m.group("stem") if m and path.is_file() else None


def _subdirs(folder: Path) -> list[Path]:
    """Non-hidden sub-folders, sorted by name (hidden ones hold caches and temp files)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _nifti_table(stems: Sequence[str]) -> str:
    low = {s.lower() for s in stems}
    return "nifti-stanford" if {"bravo", "t1_gd"} & low else "nifti"


def _is_nifti_name(stem: str) -> bool:
    key = stem.lower()
    return key == MASK_NAME or key in CANONICAL or key in LAYOUT_ALIASES["nifti"] or key in LAYOUT_ALIASES["nifti-stanford"]


def _looks_like(folder: Path) -> str | None:
    """Which layout a single patient folder looks like, or None."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    names = {e.name for e in entries if e.is_dir()}
    if names & set(_SERIES) and any(
        any(f.suffix.lower() == ".png" for f in (folder / n).iterdir()) for n in names & set(_SERIES)
    ):
        return "brainmetshare"
    stems = [s for e in entries if (s := _nii_stem(e))]
    if any(_BRATS.match(s) for s in stems):
        return "brats-mets"
    if any(_UCSF.match(s) for s in stems):
        return "ucsf-bmsr"
    if any(_is_nifti_name(s) for s in stems):
        return "nifti"
    return None


def _brainmetshare_patients(root: Path) -> list[tuple[str, Path]]:
    """(id, folder) of BrainMetShare patients, at depth 1 or under split folders (depth 2)."""
    found: list[tuple[str, Path]] = []
    for d in _subdirs(root):
        if _looks_like(d) == "brainmetshare":
            found.append((d.name, d))
        else:
            found.extend((sub.name, sub) for sub in _subdirs(d) if _looks_like(sub) == "brainmetshare")
    # A patient name that occurs in two split folders keeps the split as a prefix.
    names = [n for n, _ in found]
    return [(f"{p.parent.name}/{n}" if names.count(n) > 1 else n, p) for n, p in found]


def _is_cohort(folder: Path) -> bool:
    """Whether ``folder`` holds patient folders of some layout (directly, or BrainMetShare's
    split folders)."""
    try:
        return bool(_brainmetshare_patients(folder)) or any(_looks_like(d) for d in _subdirs(folder))
    except OSError:
        return False


def cohort_root(root: str | Path) -> tuple[Path, list[str]]:
    """The folder that holds the patients: ``root``, or the folder inside it when ``root``
    only wraps one (a release's wrapper such as ``UCSF_BrainMetastases_TRAIN/``, or a single
    ``train/`` split), through as many such levels as there are.

    Returns ``(folder, notes)``, a note per level descended; ``(root, [])`` when the chain of
    single folders ends without a cohort. Files beside the single folder (a README, a
    metadata table) do not stop the descent; hidden entries are ignored.
    """
    root = Path(root)
    notes: list[str] = []
    cur = root
    while cur.is_dir() and not _is_cohort(cur):
        subs = _subdirs(cur)
        if len(subs) != 1:
            break
        notes.append(f"{cur}: holds no patient folder but one folder, {subs[0].name}/: reading the cohort in it")
        cur = subs[0]
    if cur != root and not _is_cohort(cur):
        return root, []  # no cohort at the end of the chain: report on the folder given
    return cur, notes


def cohort_candidates(root: Path, *, depth: int = 3, limit: int = 10) -> list[str]:
    """Folders below ``root`` (to ``depth`` levels) that look like cohorts, as
    ``'<path> (<layout>, <n> patient folders)'`` lines, at most ``limit``."""
    found: list[str] = []

    def walk(folder: Path, d: int) -> None:
        if len(found) >= limit or d < 0:
            return
        for sub in _subdirs(folder):
            if _is_cohort(sub):
                kinds = [k for k in (_looks_like(x) for x in _subdirs(sub)) if k]
                kind = "brainmetshare" if _brainmetshare_patients(sub) else max(set(kinds), key=kinds.count)
                found.append(f"{sub} ({kind}, {len(kinds) or len(_brainmetshare_patients(sub))} patient folders)")
            else:
                walk(sub, d - 1)

    try:
        walk(root, depth - 1)
    except OSError:
        pass
    return found[:limit]


def detect_layout(root: str | Path) -> str:
    """The layout of the cohort at ``root`` (the one most patient folders look like).

    Raises :class:`DataError` if ``root`` is missing, has no patient folder, or matches no
    known layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: cohort folder does not exist")
    subdirs = _subdirs(root)
    if not subdirs:
        raise DataError(f"{root}: empty cohort (no patient folders)")
    if _brainmetshare_patients(root):
        return "brainmetshare"
    votes: dict[str, int] = {}
    for d in subdirs:
        kind = _looks_like(d)
        if kind:
            votes[kind] = votes.get(kind, 0) + 1
    if not votes:
        below = cohort_candidates(root)
        hint = ("; folders below it that look like cohorts:\n  " + "\n  ".join(below)) if below else ""
        raise DataError(
            f"{root}: cannot detect the cohort layout: no folder looks like a patient of any "
            f"known layout {list(LAYOUTS)} (e.g. nifti: <patient>/t1_gre_post.nii.gz; "
            "brainmetshare: Mets_001/0/1.png; brats-mets: <case>/<case>-t1c.nii.gz; "
            f"ucsf-bmsr: <study>/<study>_T1post.nii.gz); force one with --layout{hint}"
        )
    # Most votes wins; ties go to the most specific layout (LAYOUTS order is by specificity).
    return max(votes, key=lambda k: (votes[k], -LAYOUTS.index(k)))


def _nifti_patient(pid: str, folder: Path, layout: str, lesion_labels: tuple[int, ...]) -> PatientFiles:
    files: dict[str, Path] = {}
    mask: Path | None = None
    problems: list[str] = []
    notes: list[str] = []
    stems = {e: s for e in sorted(folder.iterdir()) if (s := _nii_stem(e))}
    for e in sorted(folder.iterdir()):
        if e.is_symlink() and not e.exists() and _NII.match(e.name):
            # A dangling link named like a sequence would otherwise just vanish from the
            # patient (and the sequence be treated as never acquired).
            problems.append(f"{e}: broken symbolic link (points to {os.readlink(e)}, which does not exist)")
    table = _nifti_table(list(stems.values())) if layout == "nifti" else layout
    for path, stem in stems.items():
        seq: str | None
        if layout == "nifti":
            key = stem.lower()
            if key == MASK_NAME:
                seq = MASK_NAME
            elif key in LAYOUT_ALIASES[table]:
                seq = LAYOUT_ALIASES[table][key]
            elif key in CANONICAL:
                seq = key
            else:
                seq = None
        else:
            m = (_BRATS if layout == "brats-mets" else _UCSF).match(stem)
            seq = None
            if m:
                key = m.group("seq").lower()
                seq = MASK_NAME if key == MASK_NAME else LAYOUT_ALIASES[layout][key]
                if m.group("case") != folder.name:
                    notes.append(f"{path}: case prefix {m.group('case')!r} differs from folder name {folder.name!r}")
        if seq is None:
            valid = [MASK_NAME, *CANONICAL, *LAYOUT_ALIASES["nifti"]]
            notes.append(f"{path}: ignored, not a known pulse-sequence name{suggest(stem.lower(), valid)}")
            continue
        if seq == MASK_NAME:
            if mask is not None:
                problems.append(f"{path}: a second mask file (already have {mask.name})")
            mask = path
        elif seq in files:
            problems.append(f"{path}: a second file for sequence '{seq}' (already have {files[seq].name})")
        else:
            files[seq] = path
    if not files:
        problems.append(f"{folder}: patient folder has no usable sequence (no recognised NIfTI file)")
    return PatientFiles(
        patient_id=pid,
        files=files,
        mask=mask,
        layout=layout,
        folder=folder,
        mask_labels=MASK_LABELS[layout],
        lesion_labels=(1, 255) if layout == "nifti" else tuple(lesion_labels),
        problems=tuple(problems),
        notes=tuple(notes),
    )


def _brainmetshare_patient(
    pid: str, folder: Path, spacing: tuple[float, float, float]
) -> PatientFiles:
    files: dict[str, Path] = {}
    mask: Path | None = None
    problems: list[str] = []
    notes: list[str] = []
    for sub in _subdirs(folder):
        if sub.name not in _SERIES:
            notes.append(f"{sub}: ignored, not a BrainMetShare series folder {list(_SERIES)}")
            continue
        if not any(f.suffix.lower() == ".png" for f in sub.iterdir()):
            problems.append(f"{sub}: series folder contains no PNG slice")
            continue
        if sub.name == MASK_NAME:
            mask = sub
        else:
            files[LAYOUT_ALIASES["brainmetshare"][sub.name]] = sub
    if not files:
        problems.append(f"{folder}: patient folder has no usable sequence (no series 0-3 with PNG slices)")
    return PatientFiles(
        patient_id=pid,
        files=files,
        mask=mask,
        layout="brainmetshare",
        folder=folder,
        mask_labels=MASK_LABELS["brainmetshare"],
        lesion_labels=(1, 255),
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        problems=tuple(problems),
        notes=tuple(notes),
    )


def discover(
    root: str | Path,
    layout: str = "auto",
    *,
    lesion_labels: Sequence[int] = (1, 3),
    default_spacing: Sequence[float] = (0.94, 0.94, 1.0),
) -> Cohort:
    """Find every patient of the cohort at ``root``.

    ``layout``: ``"auto"`` or one of :data:`LAYOUTS`. ``lesion_labels``: label values that
    are lesion in multi-label masks (brats-mets, ucsf-bmsr). ``default_spacing``: voxel size
    (mm) of layouts without one in the files (brainmetshare).

    ``root`` may be a folder that only wraps the cohort (:func:`cohort_root`: a downloaded
    release's folder); the cohort's ``notes`` say where the patients were found.

    Patients with discovery problems are still listed (with ``problems``), so callers can
    report every problem at once; loading them raises. Raises :class:`DataError` for a
    missing root, an unknown layout, or an empty cohort.
    """
    root = Path(root)
    if layout != "auto" and layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}{suggest(layout, LAYOUTS)}; known: {['auto', *LAYOUTS]}")
    if not root.is_dir():
        raise DataError(f"{root}: cohort folder does not exist")
    labels = tuple(int(v) for v in lesion_labels)
    if not labels:
        raise DataError("lesion_labels is empty: at least one label value must be lesion")
    spacing = tuple(float(s) for s in default_spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise DataError(f"default_spacing must be three positive numbers (mm), got {list(default_spacing)}")
    root, notes = cohort_root(root)
    chosen = detect_layout(root) if layout == "auto" else layout
    patients: list[PatientFiles] = []
    if chosen == "brainmetshare":
        for pid, folder in _brainmetshare_patients(root):
            patients.append(_brainmetshare_patient(pid, folder, spacing))  # type: ignore[arg-type]
    else:
        for folder in _subdirs(root):
            patients.append(_nifti_patient(folder.name, folder, chosen, labels))
    if not patients:
        raise DataError(f"{root}: empty cohort (no patient folder of layout '{chosen}')")
    patients.sort(key=lambda p: p.patient_id)
    return Cohort(root=root, layout=chosen, patients=patients, notes=notes)
