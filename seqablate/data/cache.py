"""Per-patient preprocessing cache of memory-mapped ``.npy`` arrays.

A volume on disk is read once, validated, preprocessed and cached; training reads the cache.

Layout: ``<cache_dir>/<patient>-<key>/{image.npy, mask.npy, meta.json}``. The key is a hash
of the patient's input files (path, size, mtime of every file, every PNG of a series), the
layout's label rules, the study's sequence list and the preprocessing parameters, so editing
a file or a parameter makes a new entry. An entry is built in ``<cache_dir>/.tmp-*`` and
moved into place with one ``os.replace``: a crash or a failed patient leaves no entry (only
a hidden temp folder that is never read and is swept by a later run once its process is
gone). An entry found damaged (a truncated array) is set aside and rebuilt.

A warm run only lists the cohort folders, ``stat``s the files and opens memmaps.
"""

from __future__ import annotations

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
from seqablate.data.layouts import Cohort, PatientFiles, discover
from seqablate.data.preprocess import PreprocessParams, preprocess_volume
from seqablate.data.preprocess import to_original_grid as _to_original_grid
from seqablate.folders import sweep_temp, temp_name


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


def to_original_grid(vol_zhw: np.ndarray, patient: CachedPatient) -> np.ndarray:
    """Undo the in-plane resize: float32[Z, H, W] -> float32[X, Y, Z] on the patient's RAS grid.

    Linear interpolation (meant for probabilities); ``patient.affine`` maps the result to mm.
    """
    return _to_original_grid(vol_zhw, patient.orig_shape)


class CacheEntryError(DataError):
    """A cache entry that cannot be read (truncated, corrupt, incomplete)."""


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
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise CacheEntryError(f"{entry}: damaged preprocessing cache entry ({type(err).__name__}: {err})") from None
    n_seq = len(meta.get("sequences", ()))
    if image.ndim != 4 or image.shape[0] != n_seq or (mask is not None and mask.shape != image.shape[1:]):
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
    )


def _fingerprint(path: Path) -> list[Any]:
    """(path, size, mtime) of a file, or of every file of a PNG-series folder."""
    if path.is_dir():
        return [str(path.resolve()), [[p.name, (s := p.stat()).st_size, s.st_mtime_ns] for p in sorted(path.iterdir())]]
    s = path.stat()
    return [str(path.resolve()), s.st_size, s.st_mtime_ns]


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
    tmp.mkdir(parents=True)
    try:
        vol = load_patient(pf, sequences)
        image, present, mask = preprocess_volume(vol, sequences, params)
        # float16 halves the cache (a [0, 1] or z-scored intensity keeps ~3 significant
        # digits, far below the images' noise); readers convert batches to float32.
        np.save(tmp / "image.npy", image.astype(np.float16))
        if mask is not None:
            np.save(tmp / "mask.npy", mask)
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
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent twin: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _worker(pf: PatientFiles, sequences: Sequence[str], params: PreprocessParams, final: Path) -> tuple[str, str | None]:
    """Process-pool entry point: (patient id, error message or None)."""
    try:
        build_entry(pf, sequences, params, final)
        return pf.patient_id, None
    except DataError as err:
        return pf.patient_id, str(err)  # already names the patient
    except (ValueError, OSError) as err:
        return pf.patient_id, f"patient {pf.patient_id}: {type(err).__name__}: {err}"


def default_cache_dir(cohort_root: Path) -> Path:
    """``<cohort>/../.seqablate-cache`` (beside the cohort, so one cache serves its runs)."""
    return cohort_root.resolve().parent / ".seqablate-cache"


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
    ``cache_dir``. ``workers``: processes for cold patients (default ``min(cpus, 4)``; 1 runs
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
        else discover(root_or_cohort, cfg.layout, lesion_labels=cfg.lesion_labels, default_spacing=cfg.default_spacing)
    )
    for note in cohort.notes:
        print(note, file=sys.stderr)
    cdir = Path(cache_dir or cfg.cache_dir or default_cache_dir(cohort.root))
    cdir.mkdir(parents=True, exist_ok=True)
    sweep_temp(cdir)
    sequences = tuple(cfg.sequences)
    params = PreprocessParams(image_size=cfg.image_size, intensity=cfg.intensity)

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
                for fut in as_completed(futs):
                    pid, err = fut.result()
                    if err:
                        failures[pid] = err
                    bar.update()
        bar.close()
    if failures and errors == "raise":
        raise combine(
            f"{cohort.root}: {len(failures)} of {len(cohort.patients)} patient(s) failed",
            [failures[k] for k in sorted(failures)],
        )
    return [load_entry(finals[pf.patient_id]) for pf in cohort.patients if pf.patient_id not in failures]
