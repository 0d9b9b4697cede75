"""Per-patient preprocessing cache of memory-mapped ``.npy`` arrays.

A volume on disk is read once, validated, preprocessed and cached; training reads the cache.

Layout: ``<cache_dir>/<patient>-<key>/{image.npy, mask.npy, meta.json}``. The key is a hash
of the patient's input files (path, size, mtime and a hash of a sample of the bytes of every
file, every PNG of a series), the layout's label rules, the study's sequence list and the
preprocessing parameters, so editing a file or a parameter makes a new entry. An entry is built in ``<cache_dir>/.tmp-*`` and
moved into place with one ``os.replace``: a crash or a failed patient leaves no entry (only
a hidden temp folder that is never read and is swept by a later run once its process is
gone). An entry found damaged (a truncated array, no ``meta.json``) is set aside and
rebuilt. The cache lives beside the cohort, or in the per-user cache when the cohort's folder
is read-only (:func:`default_cache_dir`); a full disk stops preprocessing at once with a
:class:`CacheWriteError` naming the folder.

A warm run only lists the cohort folders, ``stat``s the files, reads a few KiB of each and
opens memmaps.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seqablate.data.errors import DataError, combine
from seqablate.data.geometry import GridMap
from seqablate.data.layouts import Cohort, PatientFiles, discover
from seqablate.data.preprocess import PreprocessParams, preprocess_volume
from seqablate.data.preprocess import to_original_grid as _to_original_grid
from seqablate.folders import sweep_temp, temp_name, user_cache_dir


@dataclass(eq=False)
class CachedPatient:
    """One preprocessed patient.

    ``image``: float16[S, Z, H, W] (an ``np.memmap`` when read from the cache; float32 when
    made in memory; S in
    ``sequences`` order; a sequence missing on disk is zeros); ``present``: bool[S];
    ``mask``: uint8[Z, H, W] binary, or None when unlabelled; ``spacing``: (sx, sy, sz) mm of
    the ORIGINAL (RAS) grid; ``orig_shape``: (X, Y, Z); ``affine``: float64[4, 4] of the RAS
    grid; ``entry``: the cache folder (pickling then reopens the memmaps instead of copying
    the arrays, so datasets travel cheaply to DataLoader/Ray workers on the same machine).
    ``grid``: the resampling of the ``spacing`` geometry (None: ``resize``, slices resized to
    H = W); ``head_box``: (h0, h1, w0, w1), the head's in-plane box on the cached slices
    (training patches are drawn around it); ``truth``: uint8[X, Y, Z], the lesion mask on the
    original grid (``spacing`` geometry; None otherwise, where the cached mask resized back is
    the truth, as before the geometry existed).
    """

    patient_id: str
    image: np.ndarray
    present: np.ndarray
    mask: np.ndarray | None
    spacing: tuple[float, float, float]
    orig_shape: tuple[int, int, int]
    affine: np.ndarray
    sequences: tuple[str, ...]
    entry: Path | None = None
    lesions: int | None = None  # 26-connected lesions of the original-grid mask (None: unlabelled)
    grid: GridMap | None = None
    head_box: tuple[int, int, int, int] | None = None
    truth: np.ndarray | None = None

    @property
    def labelled(self) -> bool:
        return self.mask is not None

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[1])

    def lesion_slices(self) -> np.ndarray:
        """bool[Z]: slices whose mask contains lesion (all False when unlabelled)."""
        if self.mask is None:
            return np.zeros(self.n_slices, dtype=bool)
        return np.asarray(self.mask).reshape(self.n_slices, -1).any(axis=1)

    def __reduce_ex__(self, protocol: Any) -> Any:  # noqa: D105
        if self.entry is not None:
            return (load_entry, (str(self.entry),))
        return super().__reduce_ex__(protocol)


def to_original_grid(vol_zhw: np.ndarray, patient: CachedPatient, *, above: float | None = None) -> np.ndarray:
    """Undo the preprocessing's geometry (resampling or in-plane resize): float32[Z, H, W] ->
    float32[X, Y, Z] on the patient's RAS grid.

    Linear interpolation (meant for probabilities); ``patient.affine`` maps the result to mm.
    ``above``: for scoring at that threshold: voxels that cannot exceed it are left 0
    (:meth:`~seqablate.data.geometry.GridMap.to_source`); everything above it is as without.
    """
    return _to_original_grid(vol_zhw, patient.orig_shape, patient.grid, above=above)


class CacheEntryError(DataError):
    """A cache entry that cannot be read (truncated, corrupt, incomplete)."""


class CacheWriteError(DataError):
    """The cache folder cannot be written (a full disk, a read-only folder): no patient can be
    cached, so preprocessing stops at the first such error instead of failing each patient."""


#: Errors of writing the cache that no patient causes: a full disk or quota, no permission,
#: a read-only file system.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

#: Name of the default cache folder, beside the cohort.
CACHE_NAME = ".seqablate-cache"


def load_entry(entry: str | Path) -> CachedPatient:
    """Open a cache entry (memmaps, read-only).

    Raises :class:`CacheEntryError` naming the entry and the file when it is damaged (a
    truncated array, unreadable metadata, or arrays whose shapes disagree).
    """
    entry = Path(entry)
    try:
        meta = json.loads((entry / "meta.json").read_text())
        image = np.load(entry / "image.npy", mmap_mode="r")
        mask = np.load(entry / "mask.npy", mmap_mode="r") if meta["labelled"] else None
        grid = GridMap.from_dict(meta["grid"]) if meta.get("grid") else None
        truth = np.load(entry / "truth.npy", mmap_mode="r") if grid is not None and meta["labelled"] else None
    except (OSError, ValueError, KeyError, EOFError, TypeError) as err:
        raise CacheEntryError(f"{entry}: damaged preprocessing cache entry ({type(err).__name__}: {err})") from None
    n_seq = len(meta.get("sequences", ()))
    if (image.ndim != 4 or image.shape[0] != n_seq or (mask is not None and mask.shape != image.shape[1:])
            or (grid is not None and (tuple(image.shape[1:]) != (grid.shape[2], grid.shape[0], grid.shape[1])
                                      or (truth is not None and tuple(truth.shape) != grid.src_shape)))):
        raise CacheEntryError(
            f"{entry}: damaged preprocessing cache entry (image {image.shape}, mask "
            f"{None if mask is None else mask.shape}, {n_seq} sequences)"
        )
    return CachedPatient(
        patient_id=meta["patient_id"],
        image=image,
        present=np.asarray(meta["present"], dtype=bool),
        mask=mask,
        spacing=tuple(meta["spacing"]),  # type: ignore[arg-type]
        orig_shape=tuple(meta["orig_shape"]),  # type: ignore[arg-type]
        affine=np.asarray(meta["affine"], dtype=np.float64),
        sequences=tuple(meta["sequences"]),
        entry=entry,
        lesions=meta.get("lesions"),
        grid=grid,
        head_box=tuple(meta["head_box"]) if meta.get("head_box") else None,  # type: ignore[arg-type]
        truth=truth,
    )


#: Bytes of a file read into its fingerprint: this many at the start and at the end, and as
#: many again at each of ``_SAMPLE_BLOCKS`` evenly spaced offsets between.
_SAMPLE = 4096
_SAMPLE_BLOCKS = 6


def _sample_digest(path: Path, block: int = _SAMPLE, blocks: int = _SAMPLE_BLOCKS) -> str:
    """A hash of a sample of ``path``'s bytes: its start, its end and ``blocks`` blocks between
    (the whole file when it is that small).

    Size and mtime miss a file rewritten with the same size within the file system's mtime
    resolution (or copied back with ``cp -p``); the sample catches it where it matters: the
    end of a ``.nii.gz`` holds the gzip CRC of all the voxels and the end of a PNG the CRC of
    its image data, so any change to those files changes their last bytes. An uncompressed
    ``.nii`` edited only between the sampled blocks is missed: a sample, not a checksum (a warm
    run must not read every voxel of the cohort)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size <= block * (blocks + 2):
            h.update(fh.read())
        else:
            step = (size - block) // (blocks + 1)
            for offset in [0, *(step * i for i in range(1, blocks + 1)), size - block]:
                fh.seek(offset)
                h.update(fh.read(block))
    return h.hexdigest()[:16]


def _fingerprint(path: Path) -> list[Any]:
    """(path, size, mtime, sampled-bytes hash) of a file, or of every file of a PNG-series
    folder (there the sample is each slice's first and last 512 bytes: a series holds
    hundreds of files, and a PNG's last bytes carry the CRC of its pixels)."""
    if path.is_dir():
        return [str(path.resolve()), [[p.name, (s := p.stat()).st_size, s.st_mtime_ns, _sample_digest(p, 512, 0)]
                                      for p in sorted(path.iterdir())]]
    s = path.stat()
    return [str(path.resolve()), s.st_size, s.st_mtime_ns, _sample_digest(path)]


def cache_key(pf: PatientFiles, sequences: Sequence[str], params: PreprocessParams) -> str:
    """Hash of the patient's input files and everything that shapes its cached arrays."""
    src = {
        "patient": pf.patient_id,
        "layout": pf.layout,
        "files": {k: _fingerprint(v) for k, v in sorted(pf.files.items())},
        "mask": _fingerprint(pf.mask) if pf.mask is not None else None,
        "mask_labels": list(pf.mask_labels),
        "lesion_labels": list(pf.lesion_labels),
        "spacing": list(pf.spacing) if pf.spacing else None,
        "sequences": list(sequences),
        "params": params.key(),
    }
    return hashlib.sha256(json.dumps(src, sort_keys=True).encode()).hexdigest()[:20]


def entry_path(cache_dir: Path, pf: PatientFiles, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", pf.patient_id)
    return cache_dir / f"{safe}-{key}"


def build_entry(pf: PatientFiles, sequences: Sequence[str], params: PreprocessParams, final: Path) -> Path:
    """Load, validate, preprocess one patient and write its entry atomically at ``final``.

    On any error the temp folder is removed, so a failed patient leaves no entry.
    """
    from seqablate.data.inspection import count_lesions
    from seqablate.data.volumes import load_patient

    tmp = final.parent / temp_name(final.name)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise _write_error(err, final.parent) from None
    try:
        vol = load_patient(pf, sequences)
        pre = preprocess_volume(vol, sequences, params)
        image, present, mask = pre
        # float16 halves the cache (a [0, 1] or z-scored intensity keeps ~3 significant
        # digits, far below the images' noise); readers convert batches to float32.
        np.save(tmp / "image.npy", image.astype(np.float16))
        if mask is not None:
            np.save(tmp / "mask.npy", mask)
            if pre.grid is not None:  # the truth stays the original-grid mask, not a round trip
                np.save(tmp / "truth.npy", np.ascontiguousarray(vol.mask, dtype=np.uint8))
        meta = {
            "patient_id": pf.patient_id,
            "sequences": list(sequences),
            "present": present.tolist(),
            "labelled": mask is not None,
            "lesions": count_lesions(vol.mask) if vol.mask is not None else None,
            "spacing": list(vol.spacing),
            "orig_shape": list(vol.shape),
            "affine": vol.affine.tolist(),
            "orig_affine": vol.orig_affine.tolist(),
            "files": {k: str(v) for k, v in pf.files.items()},
            "mask_file": str(pf.mask) if pf.mask else None,
            "params": params.key(),
            "grid": pre.grid.to_dict() if pre.grid is not None else None,
            "head_box": list(pre.head_box) if pre.head_box is not None else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent twin: a real failure
                raise
    except OSError as err:
        if err.errno in _WRITE_ERRNOS:
            raise _write_error(err, final.parent) from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_error(err: OSError, cdir: Path) -> CacheWriteError:
    what = f"{err.strerror or err}" + (f" ({err.filename})" if err.filename else "")
    return CacheWriteError(
        f"cannot write the preprocessing cache in {cdir}: {what}; free space there, or set "
        "data.cache_dir (--cache-dir of evaluate) to a folder on another disk"
    )


def _worker(pf: PatientFiles, sequences: Sequence[str], params: PreprocessParams, final: Path) -> tuple[str, str | None]:
    """Process-pool entry point: (patient id, error message or None)."""
    try:
        build_entry(pf, sequences, params, final)
        return pf.patient_id, None
    except CacheWriteError:
        raise  # not this patient's problem: stops the whole cohort
    except DataError as err:
        return pf.patient_id, str(err)  # already names the patient
    except (ValueError, OSError) as err:
        return pf.patient_id, f"patient {pf.patient_id}: {type(err).__name__}: {err}"


def default_cache_dir(cohort_root: Path) -> Path:
    """``<cohort>/../.seqablate-cache`` (beside the cohort, so one cache serves its runs), or,
    where that cannot be written (a cohort on a read-only disk or share),
    ``<user cache>/preprocessed`` (:func:`seqablate.folders.user_cache_dir`:
    ``$SEQABLATE_CACHE``, else ``~/.cache/seqablate``). Entries are keyed by the patients'
    resolved file paths, so cohorts never collide in the shared fallback.

    A user's file (or anything not a folder) already named ``.seqablate-cache`` beside the
    cohort is a :class:`DataError`: it is not replaced, and the cache does not silently move.
    """
    beside = cohort_root.resolve().parent / CACHE_NAME
    if beside.exists() or beside.is_symlink():
        if not beside.is_dir():
            raise DataError(
                f"{beside}: the preprocessing cache of cohort {cohort_root} goes here, but a file that "
                "seqablate did not create has the name; move it, or set data.cache_dir (--cache-dir "
                "of evaluate) to another folder"
            )
        if os.access(beside, os.W_OK | os.X_OK):
            return beside
    elif os.access(beside.parent, os.W_OK | os.X_OK):
        return beside
    return user_cache_dir() / "preprocessed"


def _cache_folder(cohort_root: Path, explicit: str | Path | None) -> Path:
    """The cache folder of a cohort, checked: ``explicit`` (``data.cache_dir``) must be a
    writable folder or creatable (:class:`DataError` naming it otherwise); the default is
    :func:`default_cache_dir`, which says on stderr when it falls back to the user cache."""
    if explicit is None:
        cdir = default_cache_dir(cohort_root)
        if cdir.name != CACHE_NAME:
            print(f"{cohort_root.resolve().parent}: read-only, so the preprocessing cache of {cohort_root.name} "
                  f"is kept in {cdir} (data.cache_dir / --cache-dir choose another)", file=sys.stderr)
        label = "the preprocessing cache"
    else:
        cdir, label = Path(explicit).expanduser(), "data.cache_dir"
    above = next((p for p in (cdir, *cdir.parents) if p.exists() or p.is_symlink()), None)
    if above is not None and not above.is_dir():
        what = "is a file, not a folder" if above == cdir else f"cannot be made: {above} is a file"
        raise DataError(f"{label} {cdir}: {what}; seqablate replaces nothing it did not create: set "
                        "data.cache_dir (--cache-dir of evaluate) to another folder")
    if above is not None and not os.access(above, os.W_OK | os.X_OK):
        raise DataError(f"{label} {cdir}: {above} is read-only (no permission to write, or a read-only "
                        "file system); set data.cache_dir (--cache-dir of evaluate) to a writable folder")
    return cdir


def preprocess_cohort(
    root_or_cohort: str | Path | Cohort | None,
    cfg: Any = None,
    *,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    errors: Literal["raise", "skip"] = "raise",
) -> list[CachedPatient]:
    """Preprocess (or read from the cache) every patient of a cohort.

    ``root_or_cohort``: a cohort folder, a :class:`Cohort`, or None for ``cfg.cohort``.
    ``cfg``: a :class:`~seqablate.config.DataConfig` (or mapping); uses ``layout``,
    ``sequences``, ``image_size``, ``intensity``, ``lesion_labels``, ``default_spacing``,
    ``aliases``, ``cache_dir``. ``workers``: processes for cold patients (default ``min(cpus, 4)``; 1 runs
    in this process; more use the ``spawn`` start method, so a script that calls this at
    import level needs the usual ``if __name__ == "__main__":`` guard).
    ``errors="skip"`` drops failed patients instead of raising.

    Returns CachedPatients in cohort order (patient id). Raises :class:`DataError` listing
    every failed patient with its reason; the other patients are cached all the same.
    """
    from tqdm.auto import tqdm

    from seqablate.config import DataConfig, parse

    cfg = parse(DataConfig, cfg)
    if root_or_cohort is None:
        if cfg.cohort is None:
            raise DataError("no cohort given: pass a cohort folder or set data.cohort")
        root_or_cohort = cfg.cohort
    cohort = (
        root_or_cohort
        if isinstance(root_or_cohort, Cohort)
        else discover(root_or_cohort, cfg.layout, lesion_labels=cfg.lesion_labels, default_spacing=cfg.default_spacing,
                      aliases=cfg.aliases)
    )
    for note in cohort.notes:
        print(note, file=sys.stderr)
    cdir = _cache_folder(cohort.root, cache_dir or cfg.cache_dir)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_error(err, cdir) from None
    sweep_temp(cdir)
    sequences = tuple(cfg.sequences)
    if cfg.geometry == "spacing" and (cfg.spacing_mm is None or cfg.slice_mm is None):
        from seqablate.data.geometry import plan_spacing
        from seqablate.data.volumes import readable_spacings

        spacings = readable_spacings(cohort.patients)
        if not spacings:
            raise DataError(f"{cohort.root}: no readable patient to plan data.spacing_mm / data.slice_mm from")
        inplane, slice_mm = plan_spacing(spacings)
        cfg = cfg.model_copy(update={"spacing_mm": cfg.spacing_mm or inplane, "slice_mm": cfg.slice_mm or slice_mm})
        print(f"{cohort.root}: target spacing planned from this cohort: {cfg.spacing_mm} mm in-plane, "
              f"{cfg.slice_mm} mm between slices", file=sys.stderr)
    params = PreprocessParams.from_data(cfg)

    finals: dict[str, Path] = {}
    todo: list[PatientFiles] = []
    for pf in cohort.patients:
        final = entry_path(cdir, pf, cache_key(pf, sequences, params))
        finals[pf.patient_id] = final
        if (final / "meta.json").is_file():
            try:
                load_entry(final)
                continue
            except CacheEntryError as err:
                # The cache is seqablate's own: a damaged entry (disk full, a copy cut short)
                # is set aside and rebuilt from the patient's files, never read.
                print(f"{err}; rebuilding it", file=sys.stderr)
                trash = cdir / temp_name(f"damaged-{final.name}")
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
        elif final.is_dir() and not final.is_symlink():
            # An entry without its meta.json (a copy or a clean-up cut short) would block the
            # patient for good: the rename of a rebuilt entry cannot replace it. It is ours
            # (its name is this patient's key in the cache): set it aside and rebuild.
            print(f"{final}: incomplete preprocessing cache entry (no meta.json); rebuilding it", file=sys.stderr)
            trash = cdir / temp_name(f"damaged-{final.name}")
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        todo.append(pf)

    failures: dict[str, str] = {}
    if todo:
        n = workers if workers is not None else min(os.cpu_count() or 1, 4)
        n = max(1, min(n, len(todo)))
        bar = tqdm(total=len(todo), desc=f"preprocess {cohort.root.name}", unit="patient", disable=not progress)
        if n == 1:
            for pf in todo:
                pid, err = _worker(pf, sequences, params, finals[pf.patient_id])
                if err:
                    failures[pid] = err
                bar.update()
        else:
            # spawn, not fork: the caller may hold torch/Ray threads, which fork does not survive.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
                futs = [pool.submit(_worker, pf, sequences, params, finals[pf.patient_id]) for pf in todo]
                try:
                    for fut in as_completed(futs):
                        pid, err = fut.result()
                        if err:
                            failures[pid] = err
                        bar.update()
                except CacheWriteError:
                    pool.shutdown(wait=True, cancel_futures=True)  # no use starting more patients
                    raise
        bar.close()
    if failures and errors == "raise":
        raise combine(
            f"{cohort.root}: {len(failures)} of {len(cohort.patients)} patient(s) failed",
            [failures[k] for k in sorted(failures)],
        )
    return [load_entry(finals[pf.patient_id]) for pf in cohort.patients if pf.patient_id not in failures]
