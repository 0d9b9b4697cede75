"""Load and validate one patient's volumes (NIfTI via nibabel, or a BrainMetShare PNG series).

Every volume is reoriented to RAS (``nibabel.as_closest_canonical``), so axial slices run
along the LAST axis. All sequences and the mask of a patient must share one grid (shape, and
affine within ``affine_tol`` mm); there is no silent resampling. Problems are collected for
the whole patient and raised together, each naming the file and the reason.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from seqablate.data.errors import combine, not_a_regular_file
from seqablate.data.layouts import PatientFiles

#: Affine tolerance (mm) between the sequences of one patient.
AFFINE_TOL = 1e-3


@dataclass
class Volume:
    """One patient's validated volumes on the RAS grid.

    ``images``: canonical name -> float32[X, Y, Z] (only sequences present on disk);
    ``mask``: uint8[X, Y, Z] binary lesion mask, or None if unlabelled; ``affine``: float64[4, 4]
    RAS voxel -> mm; ``spacing``: voxel size (mm) along X, Y, Z; ``orig_affine``: the affine as
    stored on disk (before reorientation); ``labels``: the raw mask label values found.
    """

    patient_id: str
    images: dict[str, np.ndarray]
    mask: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    orig_affine: np.ndarray
    labels: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(next(iter(self.images.values())).shape)  # type: ignore[return-value]


class _Bad(Exception):
    """Internal: one file's problem (message already names the file)."""


def _read_nifti(path: Path) -> nib.Nifti1Image:
    """Read the whole file (so truncation is detected now), reoriented to RAS."""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)  # forces the full read and decompression
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        reason = str(err).strip() or type(err).__name__
        raise _Bad(f"{path}: truncated or corrupt NIfTI file ({type(err).__name__}: {reason})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise _Bad(f"{path}: expected a 3D volume, got shape {data.shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise _Bad(
            f"{path}: its voxel-to-world affine is singular or not finite (qform/sform), so "
            f"voxels have no position in mm: {np.round(affine[:3], 4).tolist()}"
        )
    try:
        return nib.as_closest_canonical(nib.Nifti1Image(data, img.affine, img.header))
    except (ValueError, np.linalg.LinAlgError, nib.orientations.OrientationError) as err:
        raise _Bad(f"{path}: cannot reorient to RAS ({type(err).__name__}: {err})") from None


_INT = re.compile(r"^(\d+)\.png$", re.IGNORECASE)


def _read_png_series(folder: Path, spacing: Sequence[float]) -> nib.Nifti1Image:
    """Stack ``<n>.png`` slices (sorted numerically) into a RAS volume with ``spacing``.

    PNG rows run anterior -> posterior and columns right -> left (radiological display), so
    the stacked array ``[col, row, slice]`` is L-P-S; its affine says so and reorientation
    makes it RAS like every other layout.
    """
    from PIL import Image, UnidentifiedImageError

    pngs = [p for p in folder.iterdir() if p.suffix.lower() == ".png"]
    for p in pngs:
        if (why := not_a_regular_file(p)) is not None or p.is_dir():
            raise _Bad(why or f"{p}: a folder where a PNG slice is expected")
    bad = [p.name for p in pngs if not _INT.match(p.name)]
    if bad:
        raise _Bad(f"{folder}: slice file names must be integers, got {sorted(bad)[:3]}")
    numbered = sorted(((int(_INT.match(p.name).group(1)), p) for p in pngs), key=lambda t: t[0])  # type: ignore[union-attr]
    idx = [i for i, _ in numbered]
    missing = sorted(set(range(idx[0], idx[-1] + 1)) - set(idx))
    if missing:
        raise _Bad(
            f"{folder}: series has {len(missing)} slice(s) missing in the middle "
            f"(no {', '.join(f'{m}.png' for m in missing[:5])}; slices {idx[0]}..{idx[-1]})"
        )
    slices = []
    for _, p in numbered:
        try:
            with Image.open(p) as im:
                arr = _grey(p, im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise _Bad(f"{p}: truncated or corrupt PNG file ({type(err).__name__}: {err})") from None
        if slices and arr.shape != slices[0].shape:
            raise _Bad(f"{p}: slice shape {arr.shape} differs from {numbered[0][1].name} {slices[0].shape}")
        slices.append(arr)
    vol = np.stack(slices, axis=-1).transpose(1, 0, 2)  # [row, col, z] -> [col, row, z]
    sx, sy, sz = (float(s) for s in spacing)
    affine = np.diag([-sx, -sy, sz, 1.0])  # voxel axes point Left, Posterior, Superior
    return nib.as_closest_canonical(nib.Nifti1Image(vol.astype(np.float32), affine))


def _grey(path: Path, im: object) -> np.ndarray:
    """A PNG slice as a 2D greyscale array. A slice stored as colour (RGB, a palette) is read
    when its channels are equal (grey saved as colour loses nothing); one whose channels
    differ is not a scan (an overlay, a screenshot) and is refused: converting it to grey
    would silently mix the colours into intensities."""
    mode = im.mode  # type: ignore[attr-defined]
    if mode in ("L", "I", "I;16", "F"):
        return np.asarray(im)
    if mode in ("1", "LA"):
        return np.asarray(im.convert("L"))  # type: ignore[attr-defined]
    rgb = np.asarray(im.convert("RGB"))  # type: ignore[attr-defined]
    if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
        raise _Bad(f"{path}: a colour image (PNG mode {mode} with differing channels); a slice must be "
                   "greyscale (a coloured overlay or a screenshot is not a scan)")
    return rgb[..., 0]


def _read(path: Path, pf: PatientFiles) -> nib.Nifti1Image:
    if (why := not_a_regular_file(path)) is not None:
        raise _Bad(why)  # a FIFO would block the read forever
    if path.is_dir():
        if pf.spacing is None:
            raise _Bad(f"{path}: a folder where a NIfTI file is expected")
        return _read_png_series(path, pf.spacing)
    return _read_nifti(path)


def _check_finite(path: Path, data: np.ndarray) -> None:
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - finite.sum() - n_nan)
        raise _Bad(f"{path}: {n_nan} NaN and {n_inf} Inf voxel(s)")


def _mask(path: Path, data: np.ndarray, pf: PatientFiles) -> tuple[np.ndarray, tuple[int, ...]]:
    """Binary uint8 lesion mask from a label image; unexpected labels are an error."""
    _check_finite(path, data)
    rounded = np.rint(data)
    if not np.allclose(rounded, data, atol=1e-3):
        raise _Bad(f"{path}: mask has non-integer values (e.g. {data[rounded != data].flat[0]:g}); expected labels {list(pf.mask_labels)}")
    values = tuple(int(v) for v in np.unique(rounded))
    unexpected = sorted(set(values) - set(pf.mask_labels))
    if unexpected:
        raise _Bad(
            f"{path}: unexpected mask label(s) {unexpected} (allowed for layout "
            f"'{pf.layout}': {list(pf.mask_labels)})"
        )
    return np.isin(rounded, pf.lesion_labels).astype(np.uint8), values


def _grid_problems(grids: dict[str, tuple[Path, nib.Nifti1Image]], affine_tol: float) -> list[str]:
    """One grid per patient: a problem for each file off the grid most of the files share.

    The reference is the grid (shape, then affine within ``affine_tol`` mm) that the most
    files agree on (ties: the first file's), so the message names the odd one out, not the
    files that agree with each other.
    """
    items = list(grids.items())

    def same(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
        return a.shape[:3] == b.shape[:3] and bool(np.allclose(a.affine, b.affine, atol=affine_tol))

    if len(items) < 2:
        return []
    votes = [sum(same(img, other) for _, (_, other) in items) for _, (_, img) in items]
    ref_i = int(np.argmax(votes))
    ref_name, (ref_path, ref) = items[ref_i]
    agree = [n for n, (_, img) in items if same(img, ref)]
    basis = f"'{ref_name}' ({ref_path.name})" + (f" and {len(agree) - 1} other file(s) ({', '.join(a for a in agree if a != ref_name)})" if len(agree) > 1 else "")
    problems = []
    for name, (path, img) in items:
        if same(img, ref):
            continue
        if img.shape[:3] != ref.shape[:3]:
            problems.append(
                f"{path}: '{name}' has shape {tuple(img.shape[:3])}, but {basis} "
                f"{'have' if len(agree) > 1 else 'has'} {tuple(ref.shape[:3])}; all sequences of a "
                "patient must share one grid (co-register them first)"
            )
        else:
            diff = float(np.abs(img.affine - ref.affine).max())
            problems.append(
                f"{path}: '{name}' has an affine that differs from {basis} by up to {diff:.4g} mm "
                f"(tolerance {affine_tol:g}); all sequences of a patient must share one grid "
                "(co-register them first)"
            )
    return problems


def load_patient(
    pf: PatientFiles,
    sequences: Sequence[str] | None = None,
    *,
    affine_tol: float = AFFINE_TOL,
) -> Volume:
    """Load, validate and reorient one patient's volumes.

    ``sequences``: load only these canonical names (those present on disk); None = all.
    Returns a :class:`Volume` (images float32[X, Y, Z], mask uint8[X, Y, Z] or None).

    Raises :class:`DataError` naming patient, file and reason for: discovery problems,
    truncated/corrupt files, files that are not regular files (a FIFO, a dangling link),
    NaN/Inf voxels, a sequence whose voxels are all 0, a colour PNG slice, unexpected mask
    labels, grids (shape or affine) that differ between sequences, and a patient with no
    usable sequence. All problems of
    the patient are reported at once.
    """
    problems = list(pf.problems)
    wanted = [s for s in (sequences if sequences is not None else pf.files) if s in pf.files]
    if not problems and not wanted:
        problems.append(
            f"{pf.folder or pf.patient_id}: no usable sequence: has {sorted(pf.files)}, "
            f"the study needs one of {list(sequences or [])}"
        )
    images: dict[str, np.ndarray] = {}
    grids: dict[str, tuple[Path, nib.Nifti1Image]] = {}
    orig_affine: np.ndarray | None = None
    for name in wanted:
        path = pf.files[name]
        try:
            img = _read(path, pf)
            data = np.asarray(img.dataobj, dtype=np.float32)
            _check_finite(path, data)
            if not data.any():
                # Taken as present, it would be a blank input scaled as if acquired; a sequence
                # that was not acquired is left out (and handled as missing), not blanked.
                raise _Bad(f"{path}: every voxel is 0 (an empty or blanked volume); delete the file if "
                           "the sequence was not acquired, and seqablate treats it as missing")
        except _Bad as bad:
            problems.append(str(bad))
            continue
        images[name] = data
        grids[name] = (path, img)
        if orig_affine is None:
            orig_affine = nib.load(str(path)).affine if path.is_file() else img.affine
    mask = None
    labels: tuple[int, ...] = ()
    if pf.mask is not None:
        try:
            img = _read(pf.mask, pf)
            mask, labels = _mask(pf.mask, np.asarray(img.dataobj, dtype=np.float32), pf)
            grids["seg"] = (pf.mask, img)
        except _Bad as bad:
            problems.append(str(bad))
    problems += _grid_problems(grids, affine_tol)
    if problems:
        raise combine(f"patient {pf.patient_id}", problems)
    _, ref = next(iter(grids.values()))
    zooms = tuple(float(z) for z in ref.header.get_zooms()[:3])
    return Volume(
        patient_id=pf.patient_id,
        images=images,
        mask=mask,
        affine=np.asarray(ref.affine, dtype=np.float64),
        spacing=zooms,  # type: ignore[arg-type]
        orig_affine=np.asarray(orig_affine, dtype=np.float64),
        labels=labels,
        notes=list(pf.notes),
    )


def header_spacing(pf: PatientFiles) -> tuple[float, float, float]:
    """Voxel size (mm) along RAS X, Y, Z of a patient's first sequence, from its header only
    (no voxels are read): what :func:`load_patient` reports as ``Volume.spacing``. PNG series
    have the layout's spacing. Raises :class:`DataError` naming the file when it has none."""
    from seqablate.data.errors import DataError

    if not pf.files:
        raise DataError(f"patient {pf.patient_id}: no sequence file to read a voxel size from")
    name = sorted(pf.files)[0]
    path = pf.files[name]
    if path.is_dir():
        if pf.spacing is None:
            raise DataError(f"{path}: a PNG series without a voxel size (set data.default_spacing)")
        return tuple(float(v) for v in pf.spacing)  # type: ignore[return-value]
    try:
        img = nib.load(str(path))
        zooms = [float(z) for z in img.header.get_zooms()[:3]]
        ornt = nib.orientations.io_orientation(img.affine)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DataError(f"{path}: cannot read its header ({type(err).__name__}: {err})") from None
    ras = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt[:3]):
        ras[int(target)] = zooms[axis]
    return tuple(ras)  # type: ignore[return-value]


def readable_spacings(patients: Sequence[PatientFiles]) -> list[tuple[float, float, float]]:
    """:func:`header_spacing` of every patient whose header can be read; a patient with
    discovery problems or an unreadable file is skipped (its own error is reported when it is
    preprocessed). For planning a target spacing."""
    from seqablate.data.errors import DataError

    out = []
    for pf in patients:
        if not pf.files or pf.problems:
            continue
        try:
            out.append(header_spacing(pf))
        except DataError:
            continue
    return out
