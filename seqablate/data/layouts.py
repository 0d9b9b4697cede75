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
``nnunet``
    an nnU-Net v2 raw dataset: ``<root>/dataset.json`` and ``imagesTr/<case>_<XXXX>.nii.gz``
    (channel XXXX named by ``channel_names``, mapped to canonical sequences through
    ``LAYOUT_ALIASES['nnunet']`` and the user's ``aliases``), ``labelsTr/<case>.nii.gz``;
    ``imagesTs`` cases are read too, labelled when ``labelsTs/<case>.nii.gz`` exists (nnU-Net
    itself ignores ``labelsTs``; ``cohort export-nnunet`` writes the test patients' masks
    there). With one non-background label in ``labels`` that label is the lesion, else
    ``lesion_labels`` decide. A ``seqablate.json`` beside ``dataset.json`` (written by the
    export) maps case ids back to the original patient ids.

A patient without a mask is *unlabelled*: usable for prediction, not for training.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seqablate.data.errors import DataError, not_a_regular_file
from seqablate.sequences import (
    CANONICAL,
    LAYOUT_ALIASES,
    MASK_NAME,
    UnknownSequenceError,
    canonical,
    suggest,
)
from seqablate.vocabulary import LAYOUTS as V_LAYOUTS

#: Layouts this module can read (``auto`` detects one of them): the vocabulary's, in its order.
LAYOUTS: tuple[str, ...] = V_LAYOUTS

#: Label values a mask of each layout may contain (anything else is an error).
MASK_LABELS: dict[str, tuple[int, ...]] = {
    "nifti": (0, 1, 255),
    "brainmetshare": (0, 1, 255),
    "brats-mets": (0, 1, 2, 3),
    "ucsf-bmsr": (0, 1, 2, 3),
    "nnunet": (0, 1),  # a dataset's own labels (dataset.json) replace this default
}

#: The nnU-Net v2 raw dataset's description file, its image/label folders (train, test), and
#: the file ``cohort export-nnunet`` adds beside it (case id -> patient id).
NNUNET_JSON = "dataset.json"
NNUNET_FOLDERS: tuple[tuple[str, str], ...] = (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"))
NNUNET_SIDECAR = "seqablate.json"

_NII = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)
_BRATS = re.compile(r"^(?P<case>.+)-(?P<seq>t1n|t1c|t2w|t2f|seg)$", re.IGNORECASE)
_UCSF = re.compile(r"^(?P<case>.+)_(?P<seq>t1pre|t1post|flair|subtraction|seg)$", re.IGNORECASE)
_SERIES = ("0", "1", "2", "3", MASK_NAME)
_NNUNET_IMAGE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


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


def is_nnunet_dataset(folder: Path) -> bool:
    """Whether ``folder`` is an nnU-Net raw dataset (``dataset.json`` and ``imagesTr/`` or
    ``imagesTs/``)."""
    return (folder / NNUNET_JSON).is_file() and any((folder / images).is_dir() for images, _ in NNUNET_FOLDERS)


def _is_cohort(folder: Path) -> bool:
    """Whether ``folder`` holds patient folders of some layout (directly, or BrainMetShare's
    split folders), or is an nnU-Net raw dataset."""
    try:
        return (is_nnunet_dataset(folder) or bool(_brainmetshare_patients(folder))
                or any(_looks_like(d) for d in _subdirs(folder)))
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
            if is_nnunet_dataset(sub):
                n = len({c for images, _ in NNUNET_FOLDERS for c, _ in _nnunet_images(sub / images, ".nii.gz")})
                found.append(f"{sub} (nnunet, {n} cases)")
            elif _is_cohort(sub):
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
    if is_nnunet_dataset(root):
        return "nnunet"
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
            f"ucsf-bmsr: <study>/<study>_T1post.nii.gz; nnunet: dataset.json + imagesTr/<case>_0000.nii.gz); "
            f"force one with --layout{hint}"
        )
    # Most votes wins; ties go to the most specific layout (LAYOUTS order is by specificity).
    return max(votes, key=lambda k: (votes[k], -LAYOUTS.index(k)))


def nifti_patient(pid: str, folder: Path, layout: str, lesion_labels: tuple[int, ...]) -> PatientFiles:
    files: dict[str, Path] = {}
    mask: Path | None = None
    problems: list[str] = []
    notes: list[str] = []
    stems = {e: s for e in sorted(folder.iterdir()) if (s := _nii_stem(e))}
    for e in sorted(folder.iterdir()):
        if _NII.match(e.name) and (why := not_a_regular_file(e)) is not None:
            # A dangling link or a FIFO named like a sequence would otherwise just vanish from
            # the patient (and the sequence be treated as never acquired).
            problems.append(why)
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
    for e in sorted(folder.iterdir()):
        if e.name in _SERIES and not e.is_dir():  # a series that would vanish from the patient
            problems.append(not_a_regular_file(e) or f"{e}: a file where a folder of PNG slices is expected")
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


def channel_sequence(name: str, aliases: Mapping[str, str] | None = None, *, where: str = "channel") -> str:
    """The canonical sequence of an nnU-Net channel name: the user's ``aliases`` first
    (case-insensitive; values canonical or aliases), then :func:`~seqablate.sequences.canonical`
    with ``LAYOUT_ALIASES['nnunet']``.

    Raises :class:`DataError` naming ``where``, the name, the canonical names and the option
    that maps a name (``--alias NAME=SEQUENCE`` / ``data.aliases``).
    """
    key = str(name).strip().lower()
    user = {str(k).strip().lower(): v for k, v in (aliases or {}).items()}
    try:
        return canonical(user[key]) if key in user else canonical(key, "nnunet")
    except UnknownSequenceError:
        known = [*CANONICAL, *LAYOUT_ALIASES["nnunet"]]
        raise DataError(
            f"{where}: {name!r} is not a pulse sequence seqablate knows{suggest(key, known)}; canonical "
            f"names: {list(CANONICAL)}; nnU-Net names read as aliases: {sorted(LAYOUT_ALIASES['nnunet'])}. "
            f"Map it with --alias '{name}=<canonical name>' (data.aliases in a config)"
        ) from None


def _nnunet_images(folder: Path, ending: str) -> list[tuple[str, Path]]:
    """``(case, file)`` of the ``<case>_<XXXX><ending>`` files in ``folder`` (none if missing)."""
    if not folder.is_dir():
        return []
    out = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.name.endswith(ending):
            continue
        m = _NNUNET_IMAGE.match(f.name[: -len(ending)])
        if m:
            out.append((m.group("case"), f))
    return out


def _nnunet_meta(root: Path, lesion_labels: tuple[int, ...], aliases: Mapping[str, str] | None
                 ) -> tuple[dict[int, str], str, tuple[int, ...], tuple[int, ...]]:
    """``(channel index -> canonical sequence, file ending, mask labels, lesion labels)`` of
    ``root/dataset.json``; :class:`DataError` naming the file and the key when it is unusable."""
    path = root / NNUNET_JSON
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable nnU-Net dataset description ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object (channel_names, labels, file_ending, ...)")
    channels = meta.get("channel_names", meta.get("modality"))  # 'modality' is nnU-Net v1's name
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"{path}: no 'channel_names' (channel index -> name, e.g. {{\"0\": \"flair\"}})")
    ending = str(meta.get("file_ending", ".nii.gz"))
    if ending.lower() not in (".nii.gz", ".nii"):
        raise DataError(f"{path}: file_ending {ending!r}: seqablate reads nnU-Net datasets of NIfTI files "
                        "(.nii.gz, .nii) only")
    seq_of: dict[int, str] = {}
    for key, name in channels.items():
        if not str(key).isdigit():
            raise DataError(f"{path}: channel_names key {key!r} is not a channel index (0, 1, ...)")
        seq = channel_sequence(str(name), aliases, where=f"{path}: channel {key}")
        if seq in seq_of.values():
            other = next(k for k, v in seq_of.items() if v == seq)
            raise DataError(f"{path}: channels {other} and {key} are both '{seq}'; each sequence once")
        seq_of[int(key)] = seq
    labels = meta.get("labels", {"background": 0, "lesion": 1})
    if not isinstance(labels, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        raise DataError(f"{path}: 'labels' must map names to integer label values (region-based "
                        f"labels are not supported), got {labels!r}")
    values = tuple(sorted(set(labels.values()) | {0}))
    nonzero = tuple(v for v in values if v != 0)
    lesion = nonzero if len(nonzero) == 1 else tuple(v for v in lesion_labels if v in nonzero)
    if not lesion:
        raise DataError(f"{path}: none of its labels {labels} is a lesion label {list(lesion_labels)} "
                        "(--lesion-labels / data.lesion_labels)")
    return seq_of, ending, values, lesion


def _nnunet_patients(root: Path, lesion_labels: tuple[int, ...], aliases: Mapping[str, str] | None
                     ) -> tuple[list[PatientFiles], list[str]]:
    """Every case of the nnU-Net raw dataset at ``root`` (train and test), and cohort notes."""
    seq_of, ending, mask_labels, lesion = _nnunet_meta(root, lesion_labels, aliases)
    ids: dict[str, str] = {}
    sidecar = root / NNUNET_SIDECAR
    if sidecar.is_file():
        try:
            ids = {str(k): str(v) for k, v in json.loads(sidecar.read_text()).get("patients", {}).items()}
        except (OSError, ValueError, AttributeError) as err:
            raise DataError(f"{sidecar}: unreadable ({type(err).__name__}: {err})") from None
    notes: list[str] = []
    found: dict[str, PatientFiles] = {}
    for images, labels in NNUNET_FOLDERS:
        cases: dict[str, dict[str, Path]] = {}
        problems: dict[str, list[str]] = {}
        for case, f in _nnunet_images(root / images, ending):
            channel = int(f.name[: -len(ending)][-4:])
            if (why := not_a_regular_file(f)) is not None:  # else the channel would just vanish
                problems.setdefault(case, []).append(why)
                continue
            if channel not in seq_of:
                problems.setdefault(case, []).append(
                    f"{f}: channel {channel} is not in {NNUNET_JSON}'s channel_names {sorted(seq_of)}")
                continue
            cases.setdefault(case, {})[seq_of[channel]] = f
        for case in sorted(set(cases) | set(problems)):
            pid = ids.get(case, case)
            if pid in found:
                notes.append(f"{root / images}: case {case} is also in {found[pid].folder.name}/: ignored here")  # type: ignore[union-attr]
                continue
            mask = root / labels / f"{case}{ending}"
            files = cases.get(case, {})
            probs = problems.get(case, [])
            if (mask.exists() or mask.is_symlink()) and (why := not_a_regular_file(mask)) is not None:
                probs.append(why)  # a label that cannot be read is not "unlabelled"
            if not files and not probs:
                probs.append(f"{root / images}: case {case} has no usable channel file")
            found[pid] = PatientFiles(
                patient_id=pid, files=files, mask=mask if mask.is_file() else None, layout="nnunet",
                folder=root / images, mask_labels=mask_labels, lesion_labels=lesion, problems=tuple(probs),
            )
        if (root / labels).is_dir():
            stray = [f.name for f in sorted((root / labels).iterdir())
                     if f.name.endswith(ending) and f.name[: -len(ending)] not in cases]
            if stray:
                notes.append(f"{root / labels}: label file(s) without images, ignored: {stray[:5]}")
    return sorted(found.values(), key=lambda p: p.patient_id), notes


def discover(
    root: str | Path,
    layout: str = "auto",
    *,
    lesion_labels: Sequence[int] = (1, 3),
    default_spacing: Sequence[float] = (0.94, 0.94, 1.0),
    aliases: Mapping[str, str] | None = None,
) -> Cohort:
    """Find every patient of the cohort at ``root``.

    ``layout``: ``"auto"`` or one of :data:`LAYOUTS`. ``lesion_labels``: label values that
    are lesion in multi-label masks (brats-mets, ucsf-bmsr, nnunet with several labels).
    ``default_spacing``: voxel size (mm) of layouts without one in the files (brainmetshare).
    ``aliases``: channel name -> canonical sequence for nnU-Net channel names seqablate does
    not know (:func:`channel_sequence`).

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
    if chosen == "nnunet":
        if not is_nnunet_dataset(root):
            raise DataError(f"{root}: not an nnU-Net raw dataset (no {NNUNET_JSON} with imagesTr/ or imagesTs/)")
        patients, more = _nnunet_patients(root, labels, aliases)
        notes = [*notes, *more]
    elif chosen == "brainmetshare":
        for pid, folder in _brainmetshare_patients(root):
            patients.append(_brainmetshare_patient(pid, folder, spacing))  # type: ignore[arg-type]
    else:
        for folder in _subdirs(root):
            patients.append(nifti_patient(folder.name, folder, chosen, labels))
    if not patients:
        raise DataError(f"{root}: empty cohort (no patient folder of layout '{chosen}')")
    patients.sort(key=lambda p: p.patient_id)
    return Cohort(root=root, layout=chosen, patients=patients, notes=notes)
