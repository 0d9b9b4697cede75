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
  to ~1 voxel): a 0.2-1 mm shift and a 0.1-0.6 degree rotation about :data:`BRAIN_CENTRE`
  (<= ~0.8 mm at the edge of the brain), whatever the grid. (Version 1 drew it in phantom
  voxels, 0.5-5 mm on a 64 x 64 x 32 grid: then even a perfect segmentation moved by it fails
  the 1 mm lesion-centre rule, so no model can detect anything without BRAVO.)
- a smooth multiplicative coil bias field and Rician noise per sequence.

A patient is defined in world millimetres (RAS, MNI-like), apart from any grid
(:func:`patient_model`): its deformation, lesions, mimics, vessels, registration errors and
bias fields are drawn from its own stream ``SeedSequence([seed, site, index])`` and from
cohort-level parameters only (the lesion ``region``, the lesion size range, the cohort's
coarsest voxel size). Candidate positions come from a fixed 2 mm planning lattice over the
head. Rendering it at a geometry (affine + shape, :func:`render_model`) only samples it: partial
volume and noise depend on the grid, and the noise has its own child stream. So the same
``(site, seed, index, region)`` gives the same lesions, in mm, at any voxel size and field of
view that contains the region; :func:`render_patient` does both steps.

Sites: ``stanford`` has all four sequences; ``oslo`` has no ``t1_gre_post``, larger lesions
(>= 5 mm, its inclusion criterion) and two patients without ``t1_fse_pre`` (paper III-B).
A cohort is rendered at one grid, or (``scanners``, :class:`ScannerRange`) at a grid drawn per
patient from a range of voxel sizes and fields of view (the site's defaults: :data:`SCANNERS`;
Oslo's scans are thinner-sliced, paper VI-D). ``phantom.json`` at the cohort root records the
parameters and, per patient, its grid (voxel size, shape, FOV, affine), every lesion (centre
in mm, diameter, kind), the registration errors and the missing sequences.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
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

PHANTOM_VERSION = 4
SITES = ("stanford", "oslo")
SMALL_SHAPE = (64, 64, 32)
DEFAULT_SHAPE = (128, 128, 64)
#: Head field of view (mm, RAS world): brain bounding box of MNI152 plus the scalp shells.
FOV_MIN = np.array([-84.0, -120.0, -74.0])
FOV_MAX = np.array([84.0, 86.0, 94.0])
#: Centre (mm, MNI) of a field of view smaller than the head: mid-brain. Also the centre of
#: the residual registration errors' rotation.
BRAIN_CENTRE = np.array([0.0, -18.0, 12.0])
#: Spacing (mm) of the planning lattice on which lesion, mimic and vessel positions are chosen.
PLAN_MM = 2.0
#: Clearance (mm) between a lesion (or mimic) and the faces of the lesion region.
MARGIN_MM = 2.0
#: Largest phantom grid along an axis (a guard against a mistyped voxel size).
MAX_SIZE = 1024
#: Smallest grid along an axis (a few voxels of a network's output stride).
MIN_SIZE = 8
_DISP_NODES, _DISP_SIGMA = 5, 2.5  # displacement field: nodes per axis over the head, mm
_BIAS_NODES, _BIAS_SIGMA = 3, 0.12  # coil bias: nodes per axis over the head, log-gain sd
# Noise streams are children (1, k) of the patient's seed, geometry draws child (2,): neither
# shifts the world model's draws.
_NOISE_KEY, _GEOMETRY_KEY = 1, 2

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
    # residual misregistration of each non-reference sequence: None = the site's (a 0.2-1 mm shift
    # and a 0.1-0.6 degree rotation, drawn per patient); else a shift of exactly this many mm with
    # the rotation scaled by it / MEAN_SHIFT_MM (0 = perfectly registered)
    misregistration_mm: float | None = None


#: The mean shift of the sites' residual registration error (uniform 0.2-1 mm).
MEAN_SHIFT_MM = 0.6
#: The largest residual misregistration a cohort may ask for (mm).
MAX_MISREGISTRATION_MM = 10.0

_SITES: dict[str, _Site] = {
    "stanford": _Site(0, PAPER_SEQUENCES, "t1_gre_post", (2.0, 30.0), (1, 10), 0.35, 0, 1000.0),
    "oslo": _Site(1, ("t1_fse_pre", "t1_fse_post", "flair"), "t1_fse_post", (5.0, 30.0), (1, 6), 0.5, 2, 800.0),
}


def _pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    """``value`` as a (lo, hi) pair of finite positive floats with lo <= hi; DataError naming ``name``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a (min, max) pair in mm, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise DataError(f"{name} must be (min, max) with 0 < min <= max, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class ScannerRange:
    """Ranges (mm, ``(min, max)``, drawn uniformly per patient) of a mixed-scanner cohort's grids.

    ``inplane_mm``: in-plane voxel size (square pixels, X = Y); ``slice_mm``: slice thickness
    (Z); ``fov_inplane_mm``: in-plane field of view (square); ``fov_z_mm``: through-plane field
    of view. A patient's grid is ``ceil(fov / voxel)`` voxels per axis centred on
    :data:`BRAIN_CENTRE` (so its FOV is at least the drawn one); voxel sizes are rounded to
    0.01 mm, as scanner protocols state them. Every range's smallest FOV must span at least 8
    of its largest voxels. ``min == max`` fixes a value.
    """

    inplane_mm: tuple[float, float] = (1.2, 2.0)
    slice_mm: tuple[float, float] = (1.5, 3.0)
    fov_inplane_mm: tuple[float, float] = (90.0, 140.0)
    fov_z_mm: tuple[float, float] = (72.0, 72.0)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _pair(f"ScannerRange.{f.name}", getattr(self, f.name)))
        for fov, vox, axis in ((self.fov_inplane_mm, self.inplane_mm, "in-plane"), (self.fov_z_mm, self.slice_mm, "through-plane")):
            if fov[0] / vox[1] < MIN_SIZE:
                raise DataError(f"ScannerRange: the smallest {axis} FOV ({fov[0]} mm) spans fewer than {MIN_SIZE} of "
                                f"the largest voxels ({vox[1]} mm)")
            if fov[1] / vox[0] > MAX_SIZE:
                raise DataError(f"ScannerRange: the largest {axis} FOV ({fov[1]} mm) spans more than {MAX_SIZE} of "
                                f"the smallest voxels ({vox[0]} mm)")

    @property
    def coarsest_mm(self) -> float:
        """The largest voxel size (mm) a patient of the range can have, along any axis."""
        return max(self.inplane_mm[1], self.slice_mm[1])

    def region(self) -> tuple[np.ndarray, np.ndarray]:
        """The smallest FOV of the range centred on :data:`BRAIN_CENTRE`: (min, max) mm, float64[3] each.

        Every patient's grid contains it, so lesions placed in it are seen in every patient.
        """
        half = np.array([self.fov_inplane_mm[0], self.fov_inplane_mm[0], self.fov_z_mm[0]]) / 2
        return BRAIN_CENTRE - half, BRAIN_CENTRE + half

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One patient's grid: (RAS affine float64[4, 4], shape (X, Y, Z)); four draws from ``rng``."""
        v = round(float(rng.uniform(*self.inplane_mm)), 2)
        t = round(float(rng.uniform(*self.slice_mm)), 2)
        fov = np.array([rng.uniform(*self.fov_inplane_mm)] * 2 + [rng.uniform(*self.fov_z_mm)])
        voxel = np.array([v, v, t])
        # ceil, not round: the grid must contain the range's smallest FOV (the lesion region).
        shape = tuple(int(s) for s in np.ceil(fov / voxel - 1e-9))
        return _box_affine(voxel, shape, BRAIN_CENTRE), shape  # type: ignore[return-value]

    def as_dict(self) -> dict[str, list[float]]:
        """JSON form: ``{field: [min, max]}``."""
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}


#: Fields of view of the sites' scanner ranges: from a 90 mm crop around the mid-brain to the
#: whole head (210 x 210 x 168 mm; clinical protocols use ~200-260 mm in-plane). A model that
#: only ever saw mid-brain crops turns the skull base, orbits and scalp of a whole-head scan
#: into false positives (``benchmarks/RESULTS.md``, "Geometry"): which anatomy a cohort covers is
#: part of how scanners differ.
_FOV = {"fov_inplane_mm": (90.0, 210.0), "fov_z_mm": (72.0, 168.0)}
#: Each site's default scanner range (``--mixed-scanner``). Oslo's scans (one 3T Skyra) were
#: "taken at a lower slice thickness" (paper VI-D): 1 mm slices there, 1.5-3 mm at Stanford
#: (several 1.5T and 3T scanners).
SCANNERS: dict[str, ScannerRange] = {
    "stanford": ScannerRange(**_FOV),
    "oslo": ScannerRange(slice_mm=(1.0, 1.0), **_FOV),
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


@lru_cache(maxsize=1)
def _parenchyma_map() -> np.ndarray:
    """Grey + white matter fraction float32[X, Y, Z] of :func:`_template` (one map to sample
    when planning: linear interpolation commutes with the sum)."""
    maps, _ = _template()
    return np.ascontiguousarray(maps[1] + maps[2])


def _coarse_interp(nodes: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Fields given on a coarse node grid over the head FOV, linearly interpolated at points.

    ``nodes``: float[C, n, n, n], node ``k`` of an axis at the centre of the k-th of n equal
    cells of ``FOV_MIN..FOV_MAX``; ``pts``: float64[3, N] world mm. Returns float32[C, N];
    beyond the outer nodes a field is constant (so it is defined at any world point).
    """
    n = np.asarray(nodes.shape[1:], dtype=np.float64)
    u = (pts - FOV_MIN[:, None]) * (n / (FOV_MAX - FOV_MIN))[:, None] - 0.5
    return np.stack([ndimage.map_coordinates(c, u, order=1, mode="nearest", output=np.float32) for c in nodes])


def _coarse_on_axes(nodes: np.ndarray, axes: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`_coarse_interp` on the axis-aligned grid ``axes`` (world mm along X, Y, Z).

    The same values, float32[C, len(X) * len(Y) * len(Z)] (C order), from separable weights:
    a few small matrix products instead of a lookup per point (~10x faster).
    """
    weights = []
    for a, x in enumerate(axes):
        n = nodes.shape[1 + a]
        u = np.clip((np.asarray(x, dtype=np.float64) - FOV_MIN[a]) * (n / (FOV_MAX[a] - FOV_MIN[a])) - 0.5, 0, n - 1)
        i0 = np.minimum(np.floor(u).astype(int), n - 2)
        f = u - i0
        w = np.zeros((len(u), n))
        w[np.arange(len(u)), i0] = 1 - f
        w[np.arange(len(u)), i0 + 1] = f
        weights.append(w)
    out = np.einsum("xi,cijk->cxjk", weights[0], nodes)
    out = np.einsum("yj,cxjk->cxyk", weights[1], out)
    out = np.einsum("zk,cxyk->cxyz", weights[2], out)
    return out.reshape(len(nodes), -1).astype(np.float32)


def _soft(inside: np.ndarray, scale: np.ndarray | float, width: float) -> np.ndarray:
    """Partial-volume fraction of a shape from a normalised radius: 0.5 at ``inside`` == 0."""
    return np.clip(inside * scale / width + 0.5, 0.0, 1.0)


def _near(pts: np.ndarray, centre: np.ndarray, reach: float) -> np.ndarray:
    """Indices of points float[3, N] within the cube of half-side ``reach`` mm around ``centre``."""
    sel = np.abs(pts[0] - centre[0]) <= reach
    sel &= np.abs(pts[1] - centre[1]) <= reach
    sel &= np.abs(pts[2] - centre[2]) <= reach
    return np.flatnonzero(sel)


@dataclass
class _Lesion:
    center: np.ndarray  # mm, world
    radii: np.ndarray  # mm, ellipsoid semi-axes
    rot: np.ndarray  # 3x3
    kind: str  # 'solid' | 'ring'
    rim: float  # rim thickness (mm) for ring lesions
    edema: float  # edema extent as a multiple of the radius (0 = none)

    def rho(self, pts: np.ndarray) -> np.ndarray:
        """Normalised ellipsoid radius of points float[3, N] (1 on the surface)."""
        local = self.rot.T @ (pts - self.center[:, None])
        return np.linalg.norm(local / self.radii[:, None], axis=0)

    def box(self, pts: np.ndarray, width: float) -> np.ndarray:
        """Indices of points float[3, N] within the bounding box of the lesion and its edema."""
        return _near(pts, self.center, float(self.radii.max()) * max(self.edema, 1.0) + 2 * width)

    def fields(self, pts: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lesion, core, edema) fractions at points float[3, N]."""
        rho = self.rho(pts)
        r = float(self.radii.mean())
        les = _soft(1.0 - rho, r, width)
        core = _soft(1.0 - rho * r / (r - self.rim), r - self.rim, width) if self.kind == "ring" else np.zeros_like(rho)
        ed = _soft(1.0 - rho / self.edema, r * self.edema, width) * (1 - les) if self.edema > 0 else np.zeros_like(rho)
        return les, core, ed


@dataclass
class PatientModel:
    """One patient in world millimetres (RAS), independent of any rendering grid.

    Drawn by :func:`patient_model`; :func:`render_model` samples it on a grid. The world maps
    to the template (MNI) by ``lin @ p + shift + disp(p)``, ``disp`` interpolated from
    ``disp_nodes`` (mm) on a 5-node grid over the head FOV. ``registration[seq]``: that
    sequence's residual rigid error, (rotation float64[3, 3] about :data:`BRAIN_CENTRE`,
    shift float64[3] mm, angle in degrees); none for the reference. ``bias_nodes[seq]``:
    log coil gain on a 3-node grid over the head FOV. ``vessel_pts`` float64[M, 3] (mm, 1 mm
    steps) and ``vessel_radii`` float64[M] (mm) are the vessels' centrelines.
    """

    site: str
    seed_seq: np.random.SeedSequence  # the patient's stream; its children give the noise
    region_mm: tuple[np.ndarray, np.ndarray]
    coarsest_mm: float
    lin: np.ndarray
    shift: np.ndarray
    disp_nodes: np.ndarray
    lesions: list[_Lesion]
    mimics: list[tuple[np.ndarray, float]]
    n_vessels: int
    vessel_pts: np.ndarray
    vessel_radii: np.ndarray
    registration: dict[str, tuple[np.ndarray, np.ndarray, float]]
    bias_nodes: dict[str, np.ndarray]
    _tree: cKDTree | None = field(default=None, repr=False)

    def to_template(self, pts: np.ndarray | None = None, axes: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Template voxel coordinates float64[3, N] of world points float64[3, N] (mm).

        Either ``pts``, or ``axes``: the X, Y, Z coordinates (mm) of an axis-aligned grid whose
        points (C order) are meant: the same values, computed by broadcasting (cheaper).
        """
        _, t_aff = _template()
        t_inv = np.linalg.inv(t_aff)
        m = t_inv[:3, :3] @ self.lin
        const = t_inv[:3, :3] @ self.shift + t_inv[:3, 3]
        if axes is None:
            assert pts is not None
            disp = _coarse_interp(self.disp_nodes, pts)
            out = np.einsum("ij,jn->in", m, pts)
        else:
            disp = _coarse_on_axes(self.disp_nodes, axes)
            x, y, z = (np.asarray(a, dtype=np.float64) for a in axes)
            out = np.empty(disp.shape)
            for c in range(3):
                out[c] = (m[c, 0] * x[:, None, None] + m[c, 1] * y[None, :, None] + m[c, 2] * z[None, None, :]).reshape(-1)
        out += const[:, None]
        out += np.einsum("ij,jn->in", t_inv[:3, :3], disp)
        return out

    def vessel_tree(self) -> cKDTree | None:
        """KD-tree of the vessel centreline points (None without vessels); built once."""
        if self._tree is None and len(self.vessel_pts):
            self._tree = cKDTree(self.vessel_pts)
        return self._tree


def _region(region_mm: tuple[Sequence[float], Sequence[float]] | None) -> tuple[np.ndarray, np.ndarray]:
    """A lesion region as (min, max) float64[3] mm; None = the head FOV. DataError if malformed."""
    if region_mm is None:
        return FOV_MIN.copy(), FOV_MAX.copy()
    try:
        lo, hi = (np.asarray(v, dtype=np.float64).reshape(3) for v in region_mm)
    except (TypeError, ValueError):
        raise DataError(f"region_mm must be (min, max) corners of a box, 3 mm values each, got {region_mm!r}") from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
        raise DataError(f"region_mm must have min < max along every axis, got {region_mm!r}")
    return lo, hi


def _planning(deform: PatientModel, region: tuple[np.ndarray, np.ndarray], reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate positions: the parenchyma points of the planning lattice in the region, and their depth.

    The lattice has :data:`PLAN_MM` spacing over the head FOV (cell centres, fixed in world);
    parenchyma is grey + white matter > 0.5 of the deformed template. Depth (mm to the
    nearest non-parenchyma lattice point) is computed on the region grown by ``reach`` mm,
    which is exact wherever the depth is below ``reach`` (the surface nearer than that lies
    inside the grown box) and >= ``reach`` elsewhere: enough for thresholds below ``reach``.
    Returns (points float64[K, 3] mm, depth float64[K] mm, > 0); empty if the region misses
    the parenchyma.
    """
    lo, hi = region
    empty = np.zeros((0, 3)), np.zeros(0)
    size = np.rint((FOV_MAX - FOV_MIN) / PLAN_MM).astype(int)
    first = np.maximum(np.floor((lo - reach - FOV_MIN) / PLAN_MM - 0.5).astype(int), 0)
    last = np.minimum(np.ceil((hi + reach - FOV_MIN) / PLAN_MM - 0.5).astype(int) + 1, size)
    if np.any(last - first < 1):
        return empty
    axes = [FOV_MIN[a] + PLAN_MM * (np.arange(first[a], last[a]) + 0.5) for a in range(3)]
    box = tuple(len(a) for a in axes)
    vox = deform.to_template(axes=axes)
    par = (ndimage.map_coordinates(_parenchyma_map(), vox, order=1, mode="constant", cval=0.0) > 0.5).reshape(box)
    if not par.any():
        return empty
    # Distances on the parenchyma's bounding box plus one layer of background only: the same
    # depths (a background plane lies between a point and any background beyond it), less work.
    crop = []
    for a in range(3):
        hit = np.flatnonzero(par.any(axis=tuple(b for b in range(3) if b != a)))
        crop.append(slice(max(int(hit[0]) - 1, 0), int(hit[-1]) + 2))
    depth = np.zeros(box)
    depth[tuple(crop)] = ndimage.distance_transform_edt(par[tuple(crop)], sampling=PLAN_MM)
    inside = [(x >= lo[a]) & (x <= hi[a]) for a, x in enumerate(axes)]
    idx = np.nonzero(par & inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
    return np.stack([axes[a][idx[a]] for a in range(3)], axis=1), depth[idx]


def _draw_model(rng: np.random.Generator, site_name: str, site: _Site, region: tuple[np.ndarray, np.ndarray],
                coarsest_mm: float) -> PatientModel:
    """The world model of one patient, every draw from ``rng`` (its stream); no grid involved.

    Lesions (and mimics) lie wholly inside ``region`` shrunk by :data:`MARGIN_MM`; vessels start
    in its parenchyma. ``coarsest_mm``: the cohort's coarsest voxel size: the first lesion is at
    least 2.5 voxels of it across (so every rendering of the cohort resolves one), and lesions
    and mimics are at least that deep in the parenchyma.
    """
    seed_seq = getattr(rng.bit_generator, "seed_seq", None)
    if not isinstance(seed_seq, np.random.SeedSequence):
        # A generator not made from a SeedSequence: noise from a stream it seeds.
        seed_seq = np.random.SeedSequence(rng.integers(2**63))
    rot = Rotation.from_euler("zxy", rng.uniform(-4, 4, 3), degrees=True).as_matrix()
    lin = rot @ np.diag(rng.uniform(0.93, 1.07, 3))
    shift = rng.uniform(-3, 3, 3)
    disp_nodes = rng.normal(0.0, _DISP_SIGMA, (3, _DISP_NODES, _DISP_NODES, _DISP_NODES))
    model = PatientModel(site_name, seed_seq, region, coarsest_mm, lin, shift, disp_nodes, [], [], 0,
                         np.zeros((0, 3)), np.zeros(0), {}, {})

    lo, hi = site.diameter_mm
    reach = max(0.3 * hi, coarsest_mm, 3.0) + PLAN_MM  # above every depth threshold used below
    cand, depth = _planning(model, region, reach)  # parenchyma only: every draw below is in it
    order = np.argsort(-depth, kind="stable")  # deepest first: a depth threshold is a prefix
    cand, depth = cand[order], depth[order]
    neg_depth = -depth
    jit = PLAN_MM / 2  # centres are jittered within their lattice cell: not locked to the lattice
    slack = float(np.sqrt(3) * jit)

    def candidates(min_depth: float, half: float, clear: list[tuple[np.ndarray, float]]) -> np.ndarray:
        """Lattice points this deep whose cube of half-side ``half`` (+ jitter) fits the region,
        and farther than each (centre, distance) + jitter from ``clear``."""
        n = int(np.searchsorted(neg_depth, -min_depth, side="right"))  # depth >= min_depth
        ok, pts = np.arange(n), cand[:n]
        inside = np.all((pts >= region[0] + half + jit) & (pts <= region[1] - half - jit), axis=1)
        ok, pts = ok[inside], pts[inside]
        for centre, dist in clear:
            far = np.einsum("ij,ij->i", pts - centre, pts - centre) > (dist + slack) ** 2
            ok, pts = ok[far], pts[far]
        return ok

    # Metastases, placed in parenchyma, not overlapping (edema aside).
    n_lesions = min(site.lesions[1], site.lesions[0] - 1 + int(rng.geometric(site.lesion_p)))
    for i in range(n_lesions):
        d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        if i == 0:  # at least one lesion every grid of the cohort resolves
            d = max(d, min(hi, 2.5 * coarsest_mm))
        r = d / 2
        radii = r * rng.uniform(0.85, 1.15, 3)
        kind = "ring" if d >= 10 and rng.random() < 0.6 else "solid"
        edema = float(rng.uniform(1.6, 2.8)) if rng.random() < (0.4 + 0.02 * d) else 0.0
        orient = Rotation.random(random_state=rng).as_matrix()
        # keep clear of earlier lesions (3 mm between the surfaces)
        ok = candidates(max(0.6 * r, coarsest_mm), float(radii.max()) + MARGIN_MM,
                        [(les.center, float(radii.max() + les.radii.max()) + 3) for les in model.lesions])
        if not len(ok):
            continue
        centre = cand[ok[rng.integers(len(ok))]] + rng.uniform(-jit, jit, 3)
        model.lesions.append(_Lesion(centre, radii, orient, kind, max(1.5, 0.2 * r), edema))
    # T1-bright mimics: small non-enhancing foci, not lesions, away from the lesions and edema.
    for _ in range(int(rng.integers(0, 4))):
        r = float(rng.uniform(1.0, 3.0))
        ok = candidates(max(r, coarsest_mm), r + MARGIN_MM,
                        [(les.center, r + float(les.radii.max()) * max(les.edema, 1.0) + 3) for les in model.lesions])
        if len(ok):
            model.mimics.append((cand[ok[rng.integers(len(ok))]] + rng.uniform(-jit, jit, 3), r))
    # Enhancing vessels: random tortuous centrelines (1 mm steps) from parenchyma of the region.
    model.n_vessels = int(rng.integers(8, 16))
    starts = cand
    pts: list[np.ndarray] = []
    radii_v: list[float] = []
    for _ in range(model.n_vessels if len(starts) else 0):
        p = starts[rng.integers(len(starts))] + rng.uniform(-jit, jit, 3)
        step = rng.normal(size=3)
        step /= np.linalg.norm(step)
        radius = float(rng.uniform(0.5, 1.4))
        for _ in range(int(rng.uniform(20, 70))):
            step = step + rng.normal(0, 0.25, 3)
            step /= np.linalg.norm(step)
            p = p + step
            pts.append(p.copy())
            radii_v.append(radius)
    if pts:
        model.vessel_pts, model.vessel_radii = np.array(pts), np.array(radii_v)
    # Residual registration error of every non-reference sequence of the site, drawn whether or
    # not the patient has it (a missing sequence does not change the others').
    for seq in site.sequences:
        if seq == site.reference:
            continue
        axis = rng.normal(size=3)
        angle = float(rng.uniform(0.1, 0.6))
        r_err = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(angle)).as_matrix()
        sdir = rng.normal(size=3)
        t_err = sdir / np.linalg.norm(sdir) * rng.uniform(0.2, 1.0)  # mm, not voxels
        if site.misregistration_mm is not None:
            # The same draws, rescaled: the patient's anatomy, lesions and noise stay those of
            # every other level, so cohorts that differ in this alone differ in nothing else.
            scale = site.misregistration_mm / MEAN_SHIFT_MM
            t_err = sdir / np.linalg.norm(sdir) * site.misregistration_mm
            angle *= scale
            r_err = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(angle)).as_matrix()
        model.registration[seq] = (r_err, t_err, angle)
    for seq in site.sequences:
        model.bias_nodes[seq] = rng.normal(0.0, _BIAS_SIGMA, (1, _BIAS_NODES, _BIAS_NODES, _BIAS_NODES))
    return model


def _site(site: str, lesion_diameter_mm: tuple[float, float] | None, misregistration_mm: float | None = None) -> _Site:
    """The site's parameters, with ``lesion_diameter_mm`` overriding its diameter range and
    ``misregistration_mm`` its residual registration error."""
    if site not in _SITES:
        raise DataError(f"unknown phantom site {site!r}; known: {list(SITES)}")
    s = _SITES[site]
    if misregistration_mm is not None:
        m = float(misregistration_mm)
        if not (math.isfinite(m) and 0.0 <= m <= MAX_MISREGISTRATION_MM):
            raise DataError(f"misregistration_mm must be in [0, {MAX_MISREGISTRATION_MM:g}] mm, got {misregistration_mm!r}")
        s = dataclasses.replace(s, misregistration_mm=m)
    if lesion_diameter_mm is not None:
        lo, hi = (float(v) for v in lesion_diameter_mm)
        if not 0 < lo <= hi:
            raise DataError(f"lesion_diameter_mm must be (min, max) with 0 < min <= max, got {lesion_diameter_mm}")
        s = dataclasses.replace(s, diameter_mm=(lo, hi))
    return s


def patient_model(
    site: str,
    seed: int,
    index: int,
    *,
    region_mm: tuple[Sequence[float], Sequence[float]] | None = None,
    lesion_diameter_mm: tuple[float, float] | None = None,
    coarsest_mm: float = 1.0,
    misregistration_mm: float | None = None,
) -> PatientModel:
    """Patient ``index`` of ``site``'s cohort ``seed`` in world mm, from ``SeedSequence([seed, site, index])``.

    ``region_mm``: (min, max) corners (mm) of the box the lesions lie wholly inside and the
    vessels start in (None: the whole head, ``FOV_MIN..FOV_MAX``). ``lesion_diameter_mm``:
    (min, max) diameters instead of the site's. ``coarsest_mm``: the coarsest voxel size the
    patient will be rendered at (mm): the first lesion is at least 2.5 of it across and lesions
    are at least that deep in the parenchyma. These and the arguments fix the model: it does
    not depend on any grid. ``misregistration_mm``: the residual registration error of every
    non-reference sequence, a shift of exactly that many mm (None: the site's, 0.2-1 mm).
    """
    s = _site(site, lesion_diameter_mm, misregistration_mm)
    if not (math.isfinite(coarsest_mm) and coarsest_mm > 0):
        raise DataError(f"coarsest_mm must be a positive size in mm, got {coarsest_mm!r}")
    return _draw_model(np.random.default_rng([int(seed), s.code, int(index)]), site, s, _region(region_mm), float(coarsest_mm))


def _grid_points(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """World coordinates float64[3, X*Y*Z] (mm, C order) of the voxel centres of a grid."""
    ijk = [np.arange(s, dtype=np.float64) for s in shape]
    pts = np.empty((3, *shape))
    for c in range(3):  # by broadcasting: an (N, 3) @ (3, 3) product is ~50x slower here
        pts[c] = (affine[c, 0] * ijk[0][:, None, None] + affine[c, 1] * ijk[1][None, :, None]
                  + affine[c, 2] * ijk[2][None, None, :] + affine[c, 3])
    return pts.reshape(3, -1)


def render_model(
    model: PatientModel,
    *,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    sequences: Sequence[str] | None = None,
    debug: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """Sample a patient on a grid: images int16[X, Y, Z] per sequence, mask uint8[X, Y, Z], manifest.

    ``affine``: voxel index -> world mm (RAS; any orientation), float[4, 4]; ``shape``: the grid
    (X, Y, Z). ``sequences``: those to render (default: all the site's; the mask needs the
    site's reference). The grid enters only here: sampling, partial volume (over a width of
    the voxel's geometric mean size), a floor on the vessel radius of 0.6 in-plane voxels
    (thin vessels stay visible on coarse grids), and the noise, from child streams of the
    patient's seed (one per sequence), so rendering never changes the model.

    The manifest lists the lesions the grid resolves (some voxel centre inside: exactly the
    mask's components, barring lesions a coarse grid merges), every mimic, the registration
    errors of the rendered sequences, the vessel count, the head's voxel count and the grid
    (``voxel_mm``, ``shape``, ``fov_mm``, ``affine``). Lesions outside the grid are not in the
    mask nor the manifest: a grid whose FOV contains the model's region sees all of them.
    ``debug`` (tests): filled with the noise-free fractions of the reference scan,
    float32[X, Y, Z] each ('wm', 'csf', 'vessel', 'edema').
    """
    site = _SITES[model.site]
    seqs = tuple(site.sequences if sequences is None else sequences)
    unknown = [q for q in seqs if q not in site.sequences]
    if unknown or site.reference not in seqs:
        raise DataError(f"sequences {list(seqs)}: site {model.site!r} renders {list(site.sequences)}, "
                        f"always including its reference {site.reference!r}")
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    affine = np.asarray(affine, dtype=np.float64)
    if len(shape) != 3 or min(shape) < 1 or affine.shape != (4, 4) or not np.all(np.isfinite(affine)) \
            or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"a grid is three sizes >= 1 and an invertible 4 x 4 affine, got shape {shape} and "
                        f"affine {affine.tolist()}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    width = float(np.cbrt(np.prod(spacing)))  # partial-volume width (mm)
    maps, _ = _template()
    grid = _grid_points(affine, shape)  # float64[3, N] mm
    # An axis-aligned grid (the usual case) has separable smooth fields: cheaper, same values.
    aligned = np.count_nonzero(affine[:3, :3] - np.diag(np.diag(affine[:3, :3]))) == 0
    axes = [affine[a, a] * np.arange(shape[a]) + affine[a, 3] for a in range(3)] if aligned else None

    def anatomy(pts: np.ndarray, on_grid: bool) -> np.ndarray:
        vox = model.to_template(axes=axes) if on_grid and axes is not None else model.to_template(pts)
        return np.stack([ndimage.map_coordinates(m, vox, order=1, mode="constant", cval=0.0) for m in maps])

    tree = model.vessel_tree()
    # On coarse grids (test/demo phantoms) keep vessels about a voxel wide so they still show.
    vrad = np.maximum(model.vessel_radii, 0.6 * float(spacing[:2].mean()))
    vlo, vhi = (model.vessel_pts.min(axis=0) - 3.0, model.vessel_pts.max(axis=0) + 3.0) if tree is not None else (None, None)
    images: dict[str, np.ndarray] = {}
    registration: dict[str, dict[str, list[float]]] = {}
    mask = None
    resolved = np.zeros(len(model.lesions), dtype=bool)
    ref_tissue = None
    for seq in seqs:
        if seq == site.reference:
            pts = grid
        else:  # residual registration error: small rigid motion about the mid-brain
            r_err, t_err, angle = model.registration[seq]
            pts = np.einsum("ij,jn->in", r_err, grid - BRAIN_CENTRE[:, None]) + (BRAIN_CENTRE + t_err)[:, None]
            registration[seq] = {"rotation_deg": [angle], "shift_mm": t_err.round(3).tolist()}
        tissue = anatomy(pts, pts is grid)  # float32[5, N]
        if seq == site.reference:
            ref_tissue = tissue
        c = _CONTRAST[seq]
        img = np.einsum("k,kn->n", np.array([c[t] for t in _TISSUES], dtype=np.float32), tissue)
        # Vessels: within the head only (they run in brain and subarachnoid space).
        head = np.clip(tissue[0] + tissue[1] + tissue[2], 0, 1)
        fv = np.zeros(len(img), dtype=np.float32)
        if tree is not None:
            sel = (head > 0) & np.all((pts >= vlo[:, None]) & (pts <= vhi[:, None]), axis=0)
            sel = np.flatnonzero(sel)
            dist, idx = tree.query(pts[:, sel].T, distance_upper_bound=3.0)
            near = np.isfinite(dist)
            sel, dist, idx = sel[near], dist[near], idx[near]
            fv[sel] = _soft(vrad[idx] - dist, 1.0, width) * head[sel]
        img = img * (1 - fv) + c["vessel"] * fv
        for centre, r in model.mimics:
            sel = _near(pts, centre, r + 2 * width)
            fm = _soft(r - np.linalg.norm(pts[:, sel] - centre[:, None], axis=0), 1.0, width)
            img[sel] = img[sel] * (1 - fm) + c["mimic"] * fm
        les_all = np.zeros(len(img), dtype=np.float32)
        edema_all = np.zeros(len(img), dtype=np.float32)
        for k, les in enumerate(model.lesions):
            sel = les.box(pts, width)  # only voxels near the lesion (and its edema)
            if not len(sel):
                continue
            fl, fc, fe = les.fields(pts[:, sel], width)
            fe = fe * np.clip(tissue[2, sel] + 0.5 * tissue[1, sel], 0, 1)
            part = img[sel] * (1 - fe) + c["edema"] * fe
            img[sel] = part * (1 - fl) + c["enh"] * (fl - fc) + c["core"] * fc
            les_all[sel] = np.maximum(les_all[sel], fl)
            edema_all[sel] = np.maximum(edema_all[sel], fe)
            if seq == site.reference:
                resolved[k] = fl.max() >= 0.5
        if seq == site.reference:
            mask = (les_all >= 0.5).reshape(shape).astype(np.uint8)
            if debug is not None:
                debug.update(wm=tissue[2].reshape(shape), csf=tissue[0].reshape(shape), vessel=fv.reshape(shape),
                             edema=edema_all.reshape(shape))
        # The coil is fixed in the scanner: its bias field is sampled at the grid, not at pts.
        bias = _coarse_interp(model.bias_nodes[seq], grid) if axes is None else _coarse_on_axes(model.bias_nodes[seq], axes)
        vol = img * np.exp(bias[0])
        k_seq = site.sequences.index(seq)
        noise = np.random.default_rng(np.random.SeedSequence(
            model.seed_seq.entropy, spawn_key=(*model.seed_seq.spawn_key, _NOISE_KEY, k_seq)))
        sigma = np.float32(_NOISE[seq])
        re = vol + sigma * noise.standard_normal(len(vol), dtype=np.float32)
        im = sigma * noise.standard_normal(len(vol), dtype=np.float32)
        vol = np.sqrt(re * re + im * im)  # Rician magnitude
        # Stored as int16, as scanners store magnitude images (and half the disk of float32).
        images[seq] = np.clip(np.rint(vol * site.gain), 0, np.iinfo(np.int16).max).astype(np.int16).reshape(shape)
    assert mask is not None and ref_tissue is not None
    # Lesions with no voxel centre inside (too small for the grid, or outside its FOV) are not in
    # the mask: drop them from the manifest too, so its count matches the mask's components.
    kept = [les for les, ok in zip(model.lesions, resolved, strict=True) if ok]
    manifest = {
        "lesions": [
            {"center_mm": les.center.round(2).tolist(), "diameter_mm": round(float(2 * les.radii.mean()), 2), "kind": les.kind, "edema": les.edema > 0}
            for les in kept
        ],
        "registration_error": registration,
        "mimics": [{"center_mm": m.round(2).tolist(), "diameter_mm": round(2 * r, 2)} for m, r in model.mimics],
        "vessels": model.n_vessels,
        "head_voxels": int(np.count_nonzero(ref_tissue.sum(axis=0) > 0.05)),
        "voxel_mm": spacing.round(4).tolist(),
        "shape": list(shape),
        "fov_mm": (spacing * np.asarray(shape)).round(3).tolist(),
        "affine": affine.tolist(),
    }
    return images, mask, manifest


def render_patient(
    site: str,
    seed: int,
    index: int,
    *,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    region_mm: tuple[Sequence[float], Sequence[float]] | None = None,
    lesion_diameter_mm: tuple[float, float] | None = None,
    coarsest_mm: float = 1.0,
    sequences: Sequence[str] | None = None,
    debug: dict[str, np.ndarray] | None = None,
    misregistration_mm: float | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """Patient ``index`` of ``site``'s cohort ``seed``, rendered at a grid: (images, mask, manifest).

    :func:`patient_model` (``region_mm``, ``lesion_diameter_mm``, ``coarsest_mm``) then
    :func:`render_model` (``affine``, ``shape``, ``sequences``, ``debug``): images
    int16[X, Y, Z] per sequence, mask uint8[X, Y, Z], manifest dict. The same
    ``(site, seed, index, region_mm, lesion_diameter_mm, coarsest_mm)`` gives the same patient
    (lesions, mimics, vessels, registration errors, bias) in world mm at any geometry; every
    lesion is in the mask of a grid whose FOV contains the region and that resolves it (pass
    the coarsest voxel size you render at as ``coarsest_mm``; the default region is the whole
    head, see :func:`geometry_affine`). A cohort's patient ``i`` is
    ``render_patient(site, seed, i, ...)`` with the cohort's ``region_mm`` and ``coarsest_mm``
    from its ``phantom.json`` (and ``lesion_diameter_mm`` and ``misregistration_mm`` if set).
    """
    model = patient_model(site, seed, index, region_mm=region_mm, lesion_diameter_mm=lesion_diameter_mm,
                          coarsest_mm=coarsest_mm, misregistration_mm=misregistration_mm)
    return render_model(model, affine=affine, shape=shape, sequences=sequences, debug=debug)


def _fov_box(affine: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """World (min, max) corners (mm) of the voxels of an axis-aligned grid (its FOV)."""
    corners = np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def _render_patient(
    rng: np.random.Generator,
    site: _Site,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    sequences: tuple[str, ...],
    debug: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """A patient of a single-grid cohort: world model from ``rng``, rendered at ``affine``/``shape``.

    As :func:`make_phantom_cohort` makes it for a cohort at this grid: the lesion region is
    the grid's FOV and the coarsest voxel size its largest spacing; ``rng`` should be
    ``default_rng([seed, site.code, index])`` (the noise comes from child streams of its seed).
    """
    name = next(k for k, v in _SITES.items() if v.code == site.code)
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    model = _draw_model(rng, name, site, _fov_box(affine, shape), float(spacing.max()))
    # the site's other parameters (e.g. a diameter override) came in with `site`
    return render_model(model, affine=affine, shape=shape, sequences=sequences, debug=debug)


def _box_affine(voxel: np.ndarray, shape: Sequence[int], centre: np.ndarray) -> np.ndarray:
    """RAS affine float64[4, 4] of a grid of ``shape`` voxels of ``voxel`` mm centred on ``centre``."""
    voxel = np.asarray(voxel, dtype=np.float64)
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = np.asarray(centre, dtype=np.float64) - voxel * np.asarray(shape) / 2 + voxel / 2
    return affine


def geometry_affine(
    voxel_mm: float | Sequence[float],
    fov_mm: float | Sequence[float] | None = None,
    centre: Sequence[float] | None = None,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A RAS grid (positive axes) of ``voxel_mm`` voxels: (affine float64[4, 4], shape (X, Y, Z)).

    ``voxel_mm``, ``fov_mm``: one value or three (mm). Shape = round(fov / voxel) (at least
    1), so the FOV is the requested one to within half a voxel per axis. ``fov_mm`` None: the
    whole head (``FOV_MIN..FOV_MAX``), centred on the head's centre unless ``centre`` is given;
    otherwise centred on ``centre`` (default :data:`BRAIN_CENTRE`, the mid-brain).
    """
    voxel = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(voxel) & (voxel > 0)):
        raise DataError(f"voxel_mm must be positive sizes in mm, got {voxel_mm!r}")
    if fov_mm is None:
        fov = FOV_MAX - FOV_MIN
        mid = (FOV_MIN + FOV_MAX) / 2 if centre is None else np.asarray(centre, dtype=np.float64)
    else:
        fov = np.broadcast_to(np.asarray(fov_mm, dtype=np.float64), (3,)).copy()
        if not np.all(np.isfinite(fov) & (fov > 0)):
            raise DataError(f"fov_mm must be positive sizes in mm, got {fov_mm!r}")
        mid = BRAIN_CENTRE if centre is None else np.asarray(centre, dtype=np.float64)
    shape = tuple(max(1, int(s)) for s in np.rint(fov / voxel))
    return _box_affine(voxel, shape, mid), shape  # type: ignore[return-value]


def _grid(shape: tuple[int, int, int], voxel_mm: Sequence[float] | None = None) -> np.ndarray:
    """RAS affine of a phantom grid of ``shape`` voxels.

    Without ``voxel_mm`` the grid covers the whole head (``FOV_MIN``..``FOV_MAX``), its voxel
    size following from ``shape``; with it, a box of ``shape * voxel_mm`` mm centred on
    :data:`BRAIN_CENTRE` (fine voxels over part of the brain, for CPU-sized phantoms).
    """
    if voxel_mm is None:
        return _box_affine((FOV_MAX - FOV_MIN) / np.asarray(shape), shape, (FOV_MIN + FOV_MAX) / 2)
    return _box_affine(np.asarray(voxel_mm, dtype=np.float64), shape, BRAIN_CENTRE)


def write_patient_nifti(folder: str | Path, images: dict[str, np.ndarray], mask: np.ndarray, affine: np.ndarray) -> Path:
    """Write one patient into ``folder`` (created) as the ``nifti`` layout reads it; returns it.

    ``<sequence>.nii.gz`` per image and ``seg.nii.gz`` for the mask, all with ``affine``
    (voxel -> RAS mm) as both qform and sform and mm units, so readers agree on the voxel size
    and position. Files of the same names are replaced.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(affine, dtype=np.float64)
    for name, vol in [*images.items(), ("seg", mask)]:
        img = nib.Nifti1Image(vol, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, folder / f"{name}.nii.gz")
    return folder


def _write_patient(args: tuple[Any, ...]) -> dict[str, Any]:
    """Render patient ``i`` and write its NIfTI files into ``folder``; returns its manifest entry."""
    folder, pid, seed, site_name, site, i, seqs, shape, affine, region, coarsest = args
    model = _draw_model(np.random.default_rng([seed, site.code, i]), site_name, site, region, coarsest)
    images, mask, info = render_model(model, affine=affine, shape=shape, sequences=seqs)
    folder.mkdir()
    write_patient_nifti(folder, images, mask, affine)
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


def _three(name: str, value: Sequence[float]) -> np.ndarray:
    """Three finite positive sizes (mm) as float64[3]; DataError naming ``name`` otherwise."""
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be three positive sizes in mm, got {value!r}") from None
    if arr.shape != (3,) or not np.all(np.isfinite(arr) & (arr > 0)):
        raise DataError(f"{name} must be three positive sizes in mm, got {value!r}")
    return arr


def _cohort_grid(
    shape: tuple[int, int, int] | None, small: bool, voxel_mm: Sequence[float] | None, fov_mm: Sequence[float] | None
) -> tuple[np.ndarray, tuple[int, int, int], bool]:
    """The one grid of a single-geometry cohort: (affine, shape, whether it is a box around the mid-brain).

    Two of ``shape``, ``voxel_mm``, ``fov_mm`` fix it (a missing shape is the default one);
    neither voxel_mm nor fov_mm: the whole head at ``shape``.
    """
    if voxel_mm is not None and fov_mm is not None and shape is not None:
        raise DataError("give at most two of shape, voxel_mm and fov_mm (the third follows from them)")
    vox = _three("voxel_mm", voxel_mm) if voxel_mm is not None else None
    fov = _three("fov_mm", fov_mm) if fov_mm is not None else None
    if vox is not None and fov is not None:
        shp = tuple(int(s) for s in np.rint(fov / vox))
        if min(shp) < MIN_SIZE or max(shp) > MAX_SIZE:
            raise DataError(f"fov_mm {list(fov)} at voxel_mm {list(vox)} is a {' x '.join(map(str, shp))} grid; "
                            f"the FOV must span {MIN_SIZE} to {MAX_SIZE} voxels per axis")
    else:
        shp = tuple(int(s) for s in (shape or (SMALL_SHAPE if small else DEFAULT_SHAPE)))
        if len(shp) != 3 or min(shp) < MIN_SIZE or max(shp) > MAX_SIZE:
            raise DataError(f"phantom shape must be three sizes from {MIN_SIZE} to {MAX_SIZE}, got {shape}")
        if fov is not None:
            vox = fov / np.asarray(shp)
    if vox is None:
        return _grid(shp), shp, False  # type: ignore[arg-type]
    return _box_affine(vox, shp, BRAIN_CENTRE), shp, True  # type: ignore[return-value]


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
    fov_mm: tuple[float, float, float] | None = None,
    scanners: ScannerRange | None = None,
    region_mm: tuple[Sequence[float], Sequence[float]] | None = None,
    misregistration_mm: float | None = None,
) -> Path:
    """Write a synthetic cohort to ``out`` in the ``nifti`` layout and return ``out``.

    Patients are ``<site>_000, <site>_001, ...``, each ``<seq>.nii.gz`` + ``seg.nii.gz``; patient
    ``i`` is :func:`render_patient` ``(site, seed, i)`` at its grid (RAS, positive axes).

    The grid, one for the cohort: ``shape`` (X, Y, Z) voxels (default 128 x 128 x 64, or
    64 x 64 x 32 with ``small``) over the whole head; with ``voxel_mm`` (mm), a box of
    ``shape * voxel_mm`` mm centred on the mid-brain (:data:`BRAIN_CENTRE`); with ``fov_mm``
    (mm) and ``voxel_mm``, ``round(fov_mm / voxel_mm)`` voxels there; with ``fov_mm`` and
    ``shape``, voxels of ``fov_mm / shape``. Or, with ``scanners`` (:class:`ScannerRange`, e.g.
    ``SCANNERS[site]``), a grid per patient drawn from the range by a child stream of the
    patient's seed (so its anatomy and lesions do not depend on its grid); then none of
    ``shape``, ``small``, ``voxel_mm``, ``fov_mm`` applies.

    ``region_mm``: (min, max) corners (mm) of the box every lesion lies wholly inside (default:
    the grid's FOV; with ``scanners``, the range's smallest FOV around the mid-brain), so every
    patient's grid shows all of its lesions. The first lesion of a patient is at least 2.5 of
    the cohort's coarsest voxels across. ``lesion_diameter_mm``: (min, max) lesion diameters
    drawn log-uniformly, instead of the site's (stanford 2-30 mm, oslo 5-30 mm); coarse grids
    may want a larger minimum, since a lesion of one or two voxels is below what the network's
    output stride resolves. ``misregistration_mm``: the residual registration error of every
    non-reference sequence, a shift of exactly that many mm about the registration reference
    with a proportional rotation (0 = perfectly registered; None = the site's 0.2-1 mm); the
    patients are otherwise those of every other level (same draws). ``workers``: processes
    rendering patients in parallel (each patient's stream is its own, so the cohort is the same).

    If ``out`` already holds the same phantom (same site, patients, seed, grid or scanner
    range, region, lesion sizes, misregistration, version) it is reused untouched (so cache keys stay valid);
    another phantom cohort is replaced only with ``overwrite``; anything else (a file, a
    non-empty folder seqablate did not write) is an error. The cohort is built in a temp
    folder and moved into place.
    """
    s = _site(site, lesion_diameter_mm, misregistration_mm)
    if patients < 1:
        raise DataError(f"patients must be >= 1, got {patients}")
    params, affine, shp, region, coarsest = _cohort_params(
        s, site, patients, seed, shape, small, voxel_mm, fov_mm, scanners, region_mm, lesion_diameter_mm,
        misregistration_mm)
    out = Path(out)
    if _reusable(out, params, overwrite):
        return out
    n_missing = min(s.missing_pre, max(patients - 1, 0))
    missing = set(np.random.default_rng([seed, s.code, 10**6]).choice(patients, n_missing, replace=False).tolist())
    grids = _patient_grids(s, seed, patients, scanners, shp, affine)
    from seqablate.folders import sweep_temp, temp_name

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
             tuple(q for q in s.sequences if not (i in missing and q == "t1_fse_pre")), *grids[i], region, coarsest)
            for i in range(patients)
        ]
        entries = _map_patients(_write_patient, jobs, workers=workers, desc=f"phantom {site}", progress=progress)
        meta = {
            **params,
            # one grid: its voxel size, FOV and affine; mixed scanners: per patient only
            "spacing_mm": None if affine is None else np.abs(np.diag(affine)[:3]).round(4).tolist(),
            "fov_mm": None if affine is None else (np.abs(np.diag(affine)[:3]) * np.asarray(shp)).round(3).tolist(),
            "affine": None if affine is None else affine.tolist(),
            "coarsest_mm": coarsest,
            "reference": s.reference,
            "patients_info": entries,
        }
        (tmp / "phantom.json").write_text(json.dumps(meta, indent=1))
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _cohort_params(
    s: _Site, site: str, patients: int, seed: int, shape: tuple[int, int, int] | None, small: bool,
    voxel_mm: tuple[float, float, float] | None, fov_mm: tuple[float, float, float] | None,
    scanners: ScannerRange | None, region_mm: tuple[Sequence[float], Sequence[float]] | None,
    lesion_diameter_mm: tuple[float, float] | None, misregistration_mm: float | None,
) -> tuple[dict[str, Any], np.ndarray | None, tuple[int, int, int] | None, tuple[np.ndarray, np.ndarray], float]:
    """What identifies a phantom cohort (``params``, recorded in ``phantom.json``) and its grid:
    ``(params, affine or None, shape or None, lesion region (min, max) mm, coarsest voxel mm)``
    (affine and shape None with ``scanners``: a grid per patient). Arguments as
    :func:`make_phantom_cohort`; DataError for a combination that does not apply."""
    params: dict[str, Any] = {"version": PHANTOM_VERSION, "site": site, "patients": patients, "seed": seed}
    if scanners is not None:
        if not isinstance(scanners, ScannerRange):
            raise DataError(f"scanners must be a ScannerRange, got {type(scanners).__name__}")
        given = [n for n, v in (("shape", shape), ("voxel_mm", voxel_mm), ("fov_mm", fov_mm)) if v is not None]
        if given or small:
            raise DataError(f"scanners draws each patient's grid; {', '.join(given or ['small'])} does not apply with it")
        affine, shp = None, None
        region = scanners.region()
        coarsest = scanners.coarsest_mm
        params.update(shape=None, scanners=scanners.as_dict())
    else:
        affine, shp, boxed = _cohort_grid(shape, small, voxel_mm, fov_mm)
        region = _fov_box(affine, shp)
        coarsest = float(np.abs(np.diag(affine)[:3]).max())
        params["shape"] = list(shp)
        if boxed:  # the grid's voxel size (however it was given) fixes it with the shape
            params["voxel_mm"] = np.diag(affine)[:3].tolist()
    if region_mm is not None:
        region = _region(region_mm)
    # as recorded, so that render_patient with the manifest's region gives the cohort's patients
    region = (np.round(region[0], 4), np.round(region[1], 4))
    params["region_mm"] = [region[0].tolist(), region[1].tolist()]
    if lesion_diameter_mm is not None:
        params["lesion_diameter_mm"] = list(s.diameter_mm)  # only when set: the default is the site's
    if misregistration_mm is not None:
        params["misregistration_mm"] = s.misregistration_mm
    return params, affine, shp, region, coarsest


def _reusable(out: Path, params: dict[str, Any], overwrite: bool) -> bool:
    """Whether ``out`` already holds this phantom (reuse it untouched). False when ``out`` is
    missing, an empty folder, or another phantom cohort and ``overwrite``; DataError for another
    phantom without ``overwrite``, or anything seqablate did not write."""
    if _is_phantom(out):
        try:
            old = json.loads((out / "phantom.json").read_text())
            # an override, or its absence, is identity
            keys = (*params, "lesion_diameter_mm", "voxel_mm", "scanners", "misregistration_mm")
            if {k: old.get(k) for k in keys} == {k: params.get(k) for k in keys}:
                return True
        except (OSError, ValueError):
            pass
        if not overwrite:
            raise DataError(
                f"{out}: holds another phantom cohort (different site, patients, seed, grid, scanner range, "
                "lesion region or sizes, or version); choose another folder, or --overwrite to replace it"
            )
    elif out.exists() or out.is_symlink():
        if not out.is_dir() or any(out.iterdir()):
            from seqablate.folders import describe

            raise DataError(
                f"{out}: {describe(out)} is already there; a phantom cohort is written only into a "
                "new or empty folder or over another phantom cohort"
            )
    return False


def _patient_grids(s: _Site, seed: int, patients: int, scanners: ScannerRange | None,
                   shape: tuple[int, int, int] | None, affine: np.ndarray | None) -> list[tuple[Any, Any]]:
    """``(shape, affine)`` of every patient: the cohort's one grid, or a draw from ``scanners``
    by a child stream of the patient's seed (its anatomy and lesions do not depend on it)."""
    if scanners is None:
        return [(shape, affine)] * patients
    grids = []
    for i in range(patients):
        geo = np.random.default_rng(np.random.SeedSequence([seed, s.code, i], spawn_key=(_GEOMETRY_KEY,)))
        a, g = scanners.draw(geo)
        grids.append((g, a))
    return grids


def _move_into_place(tmp: Path, out: Path) -> None:
    """Move the finished cohort ``tmp`` to ``out`` (:func:`seqablate.folders.replace_own_dir`:
    one rename; a phantom already there is swapped out and deleted). A phantom written before
    folders carried markers is recognised by its manifest and marked first."""
    from seqablate.folders import mark, marker_kind, replace_own_dir

    if _is_phantom(out) and marker_kind(out) != "phantom":
        mark(out, "phantom")  # ours by its manifest (checked by _reusable)
    replace_own_dir(tmp, out, "phantom", flag="--overwrite")


def _map_patients(fn: Any, jobs: Sequence[Any], *, workers: int = 1, desc: str = "", progress: bool = False) -> list[Any]:
    """``[fn(job) for job in jobs]`` in ``workers`` processes (spawned, in order), with a
    progress bar of one step per job. ``fn`` must be picklable (a module-level function)."""
    from tqdm.auto import tqdm

    n = max(1, min(int(workers), len(jobs)))
    out: list[Any] = []
    with tqdm(total=len(jobs), desc=desc, unit="patient", disable=not progress) as bar:
        if n == 1:
            for job in jobs:
                out.append(fn(job))
                bar.update()
            return out
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the caller may hold torch/Ray threads, which fork does not survive.
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(fn, jobs):
                out.append(result)
                bar.update()
    return out
