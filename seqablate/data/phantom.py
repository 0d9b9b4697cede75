"""Synthetic multi-sequence metastasis cohorts on real anatomy, written in the ``nifti`` layout.

Anatomy is nilearn's bundled MNI152 2009 template (grey/white matter probability maps and
brain mask; shipped inside the nilearn wheel, no download). Per patient:

- a smooth deformation of the template (random affine + low-frequency displacement field);
- tissue contrast per sequence: ``t1_gre_post`` (BRAVO, IR-FSPGR: strong grey/white contrast,
  enhancing vessels bright), ``t1_fse_pre`` / ``t1_fse_post`` (CUBE: black-blood, vessels
  suppressed), ``flair`` (dark CSF, bright edema); extra-cerebral CSF, skull and scalp shells;
- metastases of 2-30 mm (log-uniform, small ones more frequent), solid or ring-enhancing
  (necrotic core), enhancing only on post-contrast sequences, with vasogenic edema in white
  matter that is bright on FLAIR and NOT part of the lesion mask;
- enhancing vessels: bright tubes on ``t1_gre_post`` only, the paper's reason why BRAVO alone
  confuses vessels with small lesions;
- the mask is drawn on the registration reference (``t1_gre_post``; ``t1_fse_post`` for Oslo,
  whose cohort lacks BRAVO); every other sequence is rendered through a small residual rigid
  registration error and has its own noise level, so BRAVO is the most informative sequence
  (paper VI-C). The error is in mm, as in the paper's cohort (~1 mm voxels, errors sub-voxel
  to ~1 voxel): a 0.2-1 mm shift and a 0.1-0.6 degree rotation about the volume centre
  (<= ~0.8 mm at the edge of the brain), whatever the phantom's grid. (Version 1 drew it in
  phantom voxels, 0.5-5 mm on a 64 x 64 x 32 grid: then even a perfect segmentation moved by
  it fails the 1 mm lesion-centre rule, so no model can detect anything without BRAVO.)
- a smooth multiplicative bias field and Rician noise per sequence.

Sites: ``stanford`` has all four sequences; ``oslo`` has no ``t1_gre_post``, larger lesions
(>= 5 mm, its inclusion criterion) and two patients without ``t1_fse_pre`` (paper III-B).
Every patient is drawn from its own stream ``SeedSequence([seed, site, index])``, so a
cohort is reproducible and patient i does not depend on how many patients are made.
``phantom.json`` at the cohort root records the parameters and, per patient, every lesion
(centre in mm, diameter, kind), the registration errors and the missing sequences.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from seqablate.data.errors import DataError
from seqablate.sequences import PAPER_SEQUENCES

PHANTOM_VERSION = 3
SITES = ("stanford", "oslo")
SMALL_SHAPE = (64, 64, 32)
DEFAULT_SHAPE = (128, 128, 64)
#: Head field of view (mm, RAS world): brain bounding box of MNI152 plus the scalp shells.
FOV_MIN = np.array([-84.0, -120.0, -74.0])
FOV_MAX = np.array([84.0, 86.0, 94.0])

# Tissue intensities per sequence (arbitrary units, white matter ~0.8 on T1). Both post-contrast
# scans show the enhancing lesion ("BRAVO ... captures similar information", VI-C); the FSE
# scans suppress vessels, so their lesion CNR is the higher one (paper, section I); BRAVO
# enhances vessels as well. 'mimic': intrinsically T1-bright, non-enhancing foci (blood
# products, melanin): bright on every T1 scan, which the pre-contrast scan tells apart from
# enhancement ("a point of comparison with respect to the post-contrast scans", VI-C).
_TISSUES = ("csf", "gm", "wm", "skull", "scalp")
_CONTRAST: dict[str, dict[str, float]] = {
    "t1_gre_post": dict(csf=0.08, gm=0.45, wm=0.80, skull=0.04, scalp=0.90, vessel=1.40, enh=1.25, core=0.18, edema=0.55, mimic=1.25),
    "t1_fse_pre": dict(csf=0.15, gm=0.55, wm=0.72, skull=0.04, scalp=0.85, vessel=0.10, enh=0.52, core=0.30, edema=0.58, mimic=1.15),
    "t1_fse_post": dict(csf=0.15, gm=0.55, wm=0.72, skull=0.04, scalp=0.85, vessel=0.22, enh=1.25, core=0.30, edema=0.58, mimic=1.15),
    "flair": dict(csf=0.05, gm=0.62, wm=0.45, skull=0.04, scalp=0.60, vessel=0.15, enh=0.68, core=0.72, edema=0.92, mimic=0.55),
}
#: Noise sigma (relative to white matter): the FSE post-contrast lesion CNR is the highest.
_NOISE: dict[str, float] = {"t1_gre_post": 0.035, "t1_fse_pre": 0.03, "t1_fse_post": 0.03, "flair": 0.04}


@dataclass(frozen=True)
class _Site:
    code: int
    sequences: tuple[str, ...]
    reference: str  # the sequence the mask is drawn on (registration reference)
    diameter_mm: tuple[float, float]
    lesions: tuple[int, int]  # inclusive range of lesions per patient
    lesion_p: float  # 1 + Geometric(p) lesions, capped: most patients have few (mean ~1/p)
    missing_pre: int  # patients without t1_fse_pre
    gain: float  # scanner-ish scale of the stored intensities


_SITES: dict[str, _Site] = {
    "stanford": _Site(0, PAPER_SEQUENCES, "t1_gre_post", (2.0, 30.0), (1, 10), 0.35, 0, 1000.0),
    "oslo": _Site(1, ("t1_fse_pre", "t1_fse_post", "flair"), "t1_fse_post", (5.0, 30.0), (1, 6), 0.5, 2, 800.0),
}


def _nilearn_file(name: str) -> Path:
    """A data file shipped inside the nilearn wheel (``nilearn/datasets/data``).

    Located without importing ``nilearn.datasets``, which pulls in scikit-learn and
    scipy.stats (seconds); the files are the ones ``nilearn.datasets.load_mni152_*`` read.
    """
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("nilearn is not installed; it ships the MNI152 template the phantom uses")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        raise DataError(f"{path}: nilearn's bundled MNI152 file is missing (reinstall nilearn)")
    return path


@lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray]:
    """Tissue fraction maps float32[5, X, Y, Z] (csf, gm, wm, skull, scalp) at 2 mm + affine.

    From nilearn's bundled MNI152 2009 T1 template and grey/white matter maps (1 mm,
    averaged over 2x2x2 blocks: phantoms are coarser than 2 mm and this keeps the per-
    process setup well under a second). The brain mask is T1 > 0.2 (nilearn's
    ``load_mni152_brain_mask`` rule). CSF is the brain minus grey and white matter plus a
    2 mm subarachnoid shell; skull and scalp are shells 2-7 mm and 7-12 mm outside the brain.
    """

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        img = nib.load(str(_nilearn_file(f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")))
        a = img.get_fdata(dtype=np.float32)
        a = a / a.max()
        s = [d - d % 2 for d in a.shape]
        a = a[: s[0], : s[1], : s[2]].reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))
        affine = img.affine @ np.array([[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 2, 0.5], [0, 0, 0, 1.0]])
        return a, affine

    t1, affine = load("t1")
    g, _ = load("gm")
    w, _ = load("wm")
    brain = t1 > 0.2
    dist = ndimage.distance_transform_edt(~brain, sampling=2.0).astype(np.float32)  # mm outside

    def shell(a: float, b: float) -> np.ndarray:
        return (np.clip(dist - a + 1.0, 0, 1) * np.clip(b - dist + 1.0, 0, 1)).astype(np.float32)

    g, w = g * brain, w * brain
    csf = np.clip(brain - g - w, 0, 1) + shell(0.0, 2.0) * (~brain)
    maps = np.stack([csf, g, w, shell(2.0, 7.0), shell(7.0, 12.0)]).astype(np.float32)
    return np.ascontiguousarray(maps), affine


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int, sigma: float) -> np.ndarray:
    """Low-frequency random field float32[shape]: N(0, sigma) on a coarse grid, cubic upsampling."""
    c = rng.normal(0.0, sigma, (coarse, coarse, coarse))
    # Linear upsampling of a 3-5 node grid is smooth enough and ~10x cheaper than cubic.
    return ndimage.zoom(c, [s / coarse for s in shape], order=1, mode="nearest", grid_mode=True).astype(np.float32)[
        : shape[0], : shape[1], : shape[2]
    ]


def _soft(inside: np.ndarray, scale: np.ndarray | float, width: float) -> np.ndarray:
    """Partial-volume fraction of a shape from a normalised radius: 0.5 at ``inside`` == 0."""
    return np.clip(inside * scale / width + 0.5, 0.0, 1.0)


@dataclass
class _Lesion:
    center: np.ndarray  # mm, world
    radii: np.ndarray  # mm, ellipsoid semi-axes
    rot: np.ndarray  # 3x3
    kind: str  # 'solid' | 'ring'
    rim: float  # rim thickness (mm) for ring lesions
    edema: float  # edema extent as a multiple of the radius (0 = none)

    def rho(self, pts: np.ndarray) -> np.ndarray:
        """Normalised ellipsoid radius of points [N, 3] (1 on the surface)."""
        local = (pts - self.center) @ self.rot
        return np.linalg.norm(local / self.radii, axis=1)

    def box(self, pts: np.ndarray, width: float) -> np.ndarray:
        """Indices of points within the bounding box of the lesion and its edema."""
        reach = float(self.radii.max()) * max(self.edema, 1.0) + 2 * width
        return np.flatnonzero(np.all(np.abs(pts - self.center) <= reach, axis=1))

    def fields(self, pts: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lesion, core, edema) fractions at points [N, 3]."""
        rho = self.rho(pts)
        r = float(self.radii.mean())
        les = _soft(1.0 - rho, r, width)
        core = _soft(1.0 - rho * r / (r - self.rim), r - self.rim, width) if self.kind == "ring" else np.zeros_like(rho)
        ed = _soft(1.0 - rho / self.edema, r * self.edema, width) * (1 - les) if self.edema > 0 else np.zeros_like(rho)
        return les, core, ed


def _vessels(rng: np.random.Generator, brain_pts: np.ndarray, n: int) -> tuple[cKDTree, np.ndarray]:
    """Random tortuous vessel centrelines (1 mm steps) inside the brain: KD-tree + radii."""
    pts, radii = [], []
    for _ in range(n):
        p = brain_pts[rng.integers(len(brain_pts))].astype(np.float64)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        radius = rng.uniform(0.5, 1.4)
        for _ in range(int(rng.uniform(20, 70))):
            d = d + rng.normal(0, 0.25, 3)
            d /= np.linalg.norm(d)
            p = p + d
            pts.append(p.copy())
            radii.append(radius)
    return cKDTree(np.array(pts)), np.array(radii)


def _render_patient(
    rng: np.random.Generator,
    site: _Site,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    sequences: tuple[str, ...],
    debug: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """One patient: images int16[X, Y, Z] per sequence, mask uint8[X, Y, Z], manifest.

    ``debug`` (tests): filled with the noise-free tissue/vessel/edema fractions of the
    reference grid, float32[X, Y, Z] each ('wm', 'csf', 'vessel', 'edema').
    """
    spacing = np.abs(np.diag(affine)[:3])
    width = float(np.cbrt(np.prod(spacing)))  # partial-volume width (mm)
    maps, t_aff = _template()
    t_inv = np.linalg.inv(t_aff)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]  # [N, 3] mm

    # Patient anatomy: world -> MNI by a random affine and a smooth displacement field.
    rot = Rotation.from_euler("zxy", rng.uniform(-4, 4, 3), degrees=True).as_matrix()
    lin = rot @ np.diag(rng.uniform(0.93, 1.07, 3))
    shift = rng.uniform(-3, 3, 3)
    disp = np.stack([_smooth_field(rng, shape, 5, 2.5).reshape(-1) for _ in range(3)], axis=1)

    def anatomy(pts: np.ndarray) -> np.ndarray:
        mni = pts @ lin.T + shift + disp
        vox = (mni @ t_inv[:3, :3].T + t_inv[:3, 3]).T
        return np.stack([ndimage.map_coordinates(m, vox, order=1, mode="constant", cval=0.0) for m in maps])

    ref_tissue = anatomy(world)  # [5, N]
    parenchyma = (ref_tissue[1] + ref_tissue[2]).reshape(shape) > 0.5
    depth = ndimage.distance_transform_edt(parenchyma, sampling=spacing)  # mm to the brain surface

    # Metastases, placed in parenchyma, not overlapping (edema aside).
    lo, hi = site.diameter_mm
    lesions: list[_Lesion] = []
    n_lesions = min(site.lesions[1], site.lesions[0] - 1 + int(rng.geometric(site.lesion_p)))
    for i in range(n_lesions):
        d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        if i == 0:  # at least one lesion the grid can resolve
            d = max(d, min(hi, 2.5 * float(spacing.max())))
        r = d / 2
        ok = np.flatnonzero(depth.reshape(-1) >= max(0.6 * r, spacing.max()))
        for les in lesions:  # keep clear of earlier lesions
            ok = ok[np.linalg.norm(world[ok] - les.center, axis=1) > r + les.radii.max() + 3]
        if not len(ok):
            continue
        ok = ok[rng.permutation(len(ok))]
        radii = r * rng.uniform(0.85, 1.15, 3)
        kind = "ring" if d >= 10 and rng.random() < 0.6 else "solid"
        edema = float(rng.uniform(1.6, 2.8)) if rng.random() < (0.4 + 0.02 * d) else 0.0
        lesions.append(_Lesion(world[ok[0]].copy(), radii, Rotation.random(random_state=rng).as_matrix(), kind, max(1.5, 0.2 * r), edema))
    # T1-bright mimics: small non-enhancing foci, not lesions, away from the lesions.
    mimics: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.integers(0, 4))):
        r = float(rng.uniform(1.0, 3.0))
        ok = np.flatnonzero(depth.reshape(-1) >= max(r, spacing.max()))
        for les in lesions:
            ok = ok[np.linalg.norm(world[ok] - les.center, axis=1) > r + les.radii.max() * max(les.edema, 1.0) + 3]
        if len(ok):
            mimics.append((world[ok[rng.integers(len(ok))]].copy(), r))
    head = (ref_tissue.sum(axis=0) > 0.05)
    brain_pts = world[parenchyma.reshape(-1)]
    n_vessels = int(rng.integers(8, 16))
    vtree, vrad = _vessels(rng, brain_pts, n=n_vessels)
    # On coarse grids (test/demo phantoms) keep vessels about a voxel wide so they still show.
    vrad = np.maximum(vrad, 0.6 * float(spacing[:2].mean()))

    center = world.mean(axis=0)
    images: dict[str, np.ndarray] = {}
    registration: dict[str, dict[str, list[float]]] = {}
    mask = None
    for seq in sequences:
        if seq == site.reference:
            pts, tissue = world, ref_tissue
        else:  # residual registration error: small rigid motion about the volume centre
            axis = rng.normal(size=3)
            angle = rng.uniform(0.1, 0.6)
            r_err = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(angle)).as_matrix()
            sdir = rng.normal(size=3)
            t_err = sdir / np.linalg.norm(sdir) * rng.uniform(0.2, 1.0)  # mm, not voxels
            pts = (world - center) @ r_err.T + center + t_err
            tissue = anatomy(pts)
            registration[seq] = {"rotation_deg": [float(angle)], "shift_mm": t_err.round(3).tolist()}
        c = _CONTRAST[seq]
        img = sum(tissue[k] * c[t] for k, t in enumerate(_TISSUES))
        # Vessels: within the head only (they run in brain and subarachnoid space).
        dist, idx = vtree.query(pts, distance_upper_bound=3.0)
        near = np.isfinite(dist)
        fv = np.zeros(len(pts))
        fv[near] = _soft(vrad[idx[near]] - dist[near], 1.0, width) * (tissue[0, near] + tissue[1, near] + tissue[2, near]).clip(0, 1)
        img = img * (1 - fv) + c["vessel"] * fv
        for centre, r in mimics:
            sel = np.flatnonzero(np.all(np.abs(pts - centre) <= r + 2 * width, axis=1))
            fm = _soft(r - np.linalg.norm(pts[sel] - centre, axis=1), 1.0, width)
            img[sel] = img[sel] * (1 - fm) + c["mimic"] * fm
        les_all = np.zeros(len(pts))
        edema_all = np.zeros(len(pts))
        for les in lesions:
            sel = les.box(pts, width)  # only voxels near the lesion (and its edema)
            fl, fc, fe = les.fields(pts[sel], width)
            fe = fe * (tissue[2, sel] + 0.5 * tissue[1, sel]).clip(0, 1)
            part = img[sel] * (1 - fe) + c["edema"] * fe
            img[sel] = part * (1 - fl) + c["enh"] * (fl - fc) + c["core"] * fc
            les_all[sel] = np.maximum(les_all[sel], fl)
            edema_all[sel] = np.maximum(edema_all[sel], fe)
        if seq == site.reference:
            mask = (les_all >= 0.5).reshape(shape).astype(np.uint8)
            if debug is not None:
                debug.update(wm=tissue[2].reshape(shape), csf=tissue[0].reshape(shape), vessel=fv.reshape(shape), edema=edema_all.reshape(shape))
        vol = img.reshape(shape) * np.exp(_smooth_field(rng, shape, 3, 0.12))  # coil bias field
        sigma = _NOISE[seq]
        vol = np.sqrt((vol + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)  # Rician
        # Stored as int16, as scanners store magnitude images (and half the disk of float32).
        images[seq] = np.clip(np.rint(vol * site.gain), 0, np.iinfo(np.int16).max).astype(np.int16)
    assert mask is not None
    # Lesions the grid cannot resolve (no voxel centre inside) are not in the mask: drop them
    # from the manifest too, so its count matches the mask's connected components.
    inv = np.linalg.inv(affine)
    kept = [les for les in lesions if mask[tuple(np.rint(inv[:3, :3] @ les.center + inv[:3, 3]).astype(int))]]
    manifest = {
        "lesions": [
            {"center_mm": les.center.round(2).tolist(), "diameter_mm": round(float(2 * les.radii.mean()), 2), "kind": les.kind, "edema": les.edema > 0}
            for les in kept
        ],
        "registration_error": registration,
        "mimics": [{"center_mm": m.round(2).tolist(), "diameter_mm": round(2 * r, 2)} for m, r in mimics],
        "vessels": n_vessels,
        "head_voxels": int(head.sum()),
    }
    return images, mask, manifest


#: Centre (mm, MNI) of the field of view of a phantom with a given voxel size: mid-brain.
BRAIN_CENTRE = np.array([0.0, -18.0, 12.0])


def _grid(shape: tuple[int, int, int], voxel_mm: tuple[float, float, float] | None = None) -> np.ndarray:
    """RAS affine of a phantom grid of ``shape`` voxels.

    Without ``voxel_mm`` the grid covers the whole head (``FOV_MIN``..``FOV_MAX``), its voxel
    size following from ``shape``; with it, a box of ``shape * voxel_mm`` mm centred on
    :data:`BRAIN_CENTRE` (fine voxels over part of the brain, for CPU-sized phantoms).
    """
    if voxel_mm is None:
        spacing = (FOV_MAX - FOV_MIN) / np.asarray(shape)
        origin = FOV_MIN
    else:
        spacing = np.asarray(voxel_mm, dtype=np.float64)
        origin = BRAIN_CENTRE - spacing * np.asarray(shape) / 2
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin + spacing / 2
    return affine


def _write_patient(args: tuple[Any, ...]) -> dict[str, Any]:
    """Render patient ``i`` and write its NIfTI files into ``folder``; returns its manifest."""
    folder, pid, seed, site_name, site, i, seqs, shape, affine = args
    rng = np.random.default_rng([seed, site.code, i])
    images, mask, info = _render_patient(rng, site, shape, affine, seqs)
    folder.mkdir()
    for name, vol in images.items():
        nib.save(nib.Nifti1Image(vol, affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), folder / "seg.nii.gz")
    return {"patient_id": pid, "sequences": list(seqs), "missing": [q for q in site.sequences if q not in seqs], **info}


def _is_phantom(folder: Path) -> bool:
    """Whether ``folder`` is a phantom cohort seqablate wrote (marker, or its manifest)."""
    from seqablate.folders import marker_kind

    if not folder.is_dir() or folder.is_symlink():
        return False
    if marker_kind(folder) == "phantom":
        return True
    try:
        manifest = json.loads((folder / "phantom.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("site") in SITES and "version" in manifest


def make_phantom_cohort(
    out: str | Path,
    *,
    site: str = "stanford",
    patients: int = 4,
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    small: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    lesion_diameter_mm: tuple[float, float] | None = None,
    voxel_mm: tuple[float, float, float] | None = None,
    workers: int = 1,
) -> Path:
    """Write a synthetic cohort to ``out`` in the ``nifti`` layout and return ``out``.

    ``shape``: (X, Y, Z) voxels (default 128 x 128 x 64, or 64 x 64 x 32 with ``small``).
    Patients are ``<site>_000, <site>_001, ...``, each ``<seq>.nii.gz`` + ``seg.nii.gz``.
    ``lesion_diameter_mm``: (min, max) lesion diameters drawn log-uniformly, instead of the
    site's (stanford 2-30 mm, oslo 5-30 mm); coarse grids may want a larger minimum, since a
    lesion of one or two voxels is below what the network's output stride resolves.
    ``voxel_mm``: voxel size (mm); the grid then covers ``shape * voxel_mm`` mm around the
    mid-brain instead of the whole head (:func:`_grid`). ``workers``: processes rendering
    patients in parallel (each patient's stream is its own, so the cohort is the same).
    If ``out`` already holds the same phantom (same site, patients, seed, shape, version) it
    is reused untouched (so cache keys stay valid); another phantom cohort is replaced only
    with ``overwrite``; anything else (a file, a non-empty folder seqablate did not write) is
    an error. The cohort is built in a temp folder and moved into place.
    """
    from tqdm.auto import tqdm

    if site not in _SITES:
        raise DataError(f"unknown phantom site {site!r}; known: {list(SITES)}")
    if patients < 1:
        raise DataError(f"patients must be >= 1, got {patients}")
    shp = tuple(int(s) for s in (shape or (SMALL_SHAPE if small else DEFAULT_SHAPE)))
    if len(shp) != 3 or min(shp) < 8:
        raise DataError(f"phantom shape must be three sizes >= 8, got {shape}")
    s = _SITES[site]
    params: dict[str, object] = {"version": PHANTOM_VERSION, "site": site, "patients": patients, "seed": seed, "shape": list(shp)}
    if lesion_diameter_mm is not None:
        lo, hi = (float(v) for v in lesion_diameter_mm)
        if not 0 < lo <= hi:
            raise DataError(f"lesion_diameter_mm must be (min, max) with 0 < min <= max, got {lesion_diameter_mm}")
        s = dataclasses.replace(s, diameter_mm=(lo, hi))
        params["lesion_diameter_mm"] = [lo, hi]  # only when set: older manifests stay valid
    if voxel_mm is not None:
        vox = [float(v) for v in voxel_mm]
        if len(vox) != 3 or min(vox) <= 0:
            raise DataError(f"voxel_mm must be three positive sizes in mm, got {voxel_mm}")
        params["voxel_mm"] = vox
    out = Path(out)
    if _is_phantom(out):
        try:
            old = json.loads((out / "phantom.json").read_text())
            keys = (*params, "lesion_diameter_mm", "voxel_mm")  # an override, or its absence, is identity
            if {k: old.get(k) for k in keys} == {k: params.get(k) for k in keys}:
                return out
        except (OSError, ValueError):
            pass
        if not overwrite:
            raise DataError(
                f"{out}: holds another phantom cohort (different site, patients, seed, shape or "
                "version); choose another folder, or --overwrite to replace it"
            )
    elif out.exists() or out.is_symlink():
        if not out.is_dir() or any(out.iterdir()):
            from seqablate.folders import describe

            raise DataError(
                f"{out}: {describe(out)} is already there; a phantom cohort is written only into a "
                "new or empty folder or over another phantom cohort"
            )
    affine = _grid(shp, params.get("voxel_mm"))  # type: ignore[arg-type]
    n_missing = min(s.missing_pre, max(patients - 1, 0))
    missing = set(np.random.default_rng([seed, s.code, 10**6]).choice(patients, n_missing, replace=False).tolist())
    from seqablate.folders import mark, sweep_temp, temp_name

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"{out}: a parent of this path is a file, not a folder") from None
    sweep_temp(out.parent)  # temp folders of phantom writers that were killed
    tmp = out.parent / temp_name(f"phantom-{out.name}")
    tmp.mkdir()
    try:
        jobs = [
            (tmp / f"{site}_{i:03d}", f"{site}_{i:03d}", seed, site, s, i,
             tuple(q for q in s.sequences if not (i in missing and q == "t1_fse_pre")), shp, affine)
            for i in range(patients)
        ]
        bar = tqdm(total=patients, desc=f"phantom {site}", unit="patient", disable=not progress)
        n = max(1, min(int(workers), patients))
        if n == 1:
            entries = []
            for job in jobs:
                entries.append(_write_patient(job))
                bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the caller may hold torch/Ray threads, which fork does not survive.
            with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
                entries = []
                for entry in pool.map(_write_patient, jobs):
                    entries.append(entry)
                    bar.update()
        bar.close()
        meta = {**params, "spacing_mm": np.abs(np.diag(affine)[:3]).round(4).tolist(), "reference": s.reference, "affine": affine.tolist(), "patients_info": entries}
        (tmp / "phantom.json").write_text(json.dumps(meta, indent=1))
        mark(tmp, "phantom")
        if _is_phantom(out):  # only a phantom cohort is ever replaced (checked above)
            trash = out.parent / temp_name(f"trash-{out.name}")
            os.replace(out, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, out)  # rename(2) also takes the place of an empty folder
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
