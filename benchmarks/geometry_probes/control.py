"""Noise floor of the invariance test's centre criterion: the crop geometry re-rendered and
scored by the same model. ``control.py ROOT OUT [noise|pixels]``: ``noise`` (default) renders
another noise draw and a shift by 0.75 mm (half a voxel) on every axis; ``pixels`` shifts
in-plane by 6.4 and 12.8 mm (4 and 8 pixels of the 1.6 mm target grid)."""

import json
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

root = Path(sys.argv[1])
out = Path(sys.argv[2])
out.mkdir(exist_ok=True)
PATIENTS, SEED = 30, 11
SET = sys.argv[3] if len(sys.argv) > 3 else "noise"
# variant -> (kind, shift of the field of view's centre in mm)
VARIANTS = {
    "noise": {"crop-noise2": ("noise", (0.0, 0.0, 0.0)), "crop-shift": ("shift", (0.75, 0.75, 0.75))},
    "pixels": {"crop-shift4px": ("shift", (6.4, 6.4, 0.0)), "crop-shift8px": ("shift", (12.8, 12.8, 0.0))},
}[SET]
COMPARISONS = {
    "noise": (
        ["crop-1.5mm", "crop-noise2"],
        ["crop-1.5mm", "crop-shift"],
        ["crop-1.5mm", "whole-1.0mm"],
        ["crop-1.5mm", "whole-1.2x1.2x3mm"],
        ["whole-1.0mm", "whole-1.2x1.2x3mm"],
        ["crop-1.5mm", "crop-noise2", "crop-shift"],
        ["whole-1.0mm", "crop-1.5mm", "whole-1.2x1.2x3mm"],
    ),
    "pixels": (
        ["crop-1.5mm", "crop-shift4px"],
        ["crop-1.5mm", "crop-shift8px"],
        ["crop-1.5mm", "whole-1.0mm"],
        ["whole-1.0mm", "whole-1.2x1.2x3mm"],
    ),
}[SET]


def render(job):
    import seqablate.data.phantom as ph

    folder, index, kind = job
    centre = ph.BRAIN_CENTRE + np.asarray(VARIANTS[folder.parent.name][1])
    if kind == "noise":
        ph._NOISE_KEY = 7
    affine, shape = ph.geometry_affine((1.5, 1.5, 1.5), (96.0, 96.0, 72.0), centre=centre)
    lo, hi = ph.SCANNERS["stanford"].region()
    images, mask, manifest = ph.render_patient(
        "stanford",
        SEED,
        index,
        affine=affine,
        shape=shape,
        region_mm=(lo, hi),
        lesion_diameter_mm=(6.0, 30.0),
        coarsest_mm=3.0,
    )
    ph.write_patient_nifti(folder, images, mask, affine)
    return [les["center_mm"] for les in manifest["lesions"]]


if __name__ == "__main__":
    from seqablate.evaluation.score import evaluate_cohort

    jobs = [
        (out / v / f"p{i:03d}", i, kind)
        for v, (kind, _) in VARIANTS.items()
        for i in range(PATIENTS)
    ]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        centres = dict(zip([(j[0].parent.name, j[1]) for j in jobs], pool.map(render, jobs), strict=False))
    model = root / "run" / "checkpoint_000002"
    cohorts = {
        "whole-1.0mm": root / "whole-1.0mm",
        "crop-1.5mm": root / "crop-1.5mm",
        "whole-1.2x1.2x3mm": root / "whole-1.2x1.2x3mm",
        **{v: out / v for v in VARIANTS},
    }
    found = {}
    for name, cohort in cohorts.items():
        ev = (
            root if name in ("whole-1.0mm", "crop-1.5mm", "whole-1.2x1.2x3mm") else out
        ) / f"eval-{name}"
        if not (ev / "lesions.csv").exists():
            res = evaluate_cohort(
                str(model), cohort, out=ev, bootstrap=0, log=False, cache_dir=out / "cache"
            )
            print(name, res.metrics["test.full.mAP"], flush=True)
        les = pd.read_csv(ev / "lesions.csv")
        les = les[(les["condition"] == "test.full") & les["is_tp"].astype(bool)]
        found[name] = {}
        for i in range(PATIENTS):
            pid = f"p{i:03d}"
            org = np.asarray(nib.load(cohort / pid / "seg.nii.gz").affine)[:3, 3]
            world = (
                les[les["patient"] == pid][["centre_x_mm", "centre_y_mm", "centre_z_mm"]].to_numpy()
                + org
            )
            for k, truth in enumerate(centres[(next(iter(VARIANTS)), i)]):
                if len(world):
                    d = np.linalg.norm(world - np.asarray(truth), axis=1)
                    if d.min() <= 6.0:
                        found[name][(i, k)] = world[int(np.argmin(d))]

    def spread(names):
        common = set.intersection(*(set(found[n]) for n in names))
        s = np.array(
            [
                max(np.linalg.norm(found[a][k][:2] - found[b][k][:2]) for a in names for b in names)
                for k in common
            ]
        )
        return dict(
            pairs=" vs ".join(names),
            n=len(s),
            median=round(float(np.median(s)), 2),
            p90=round(float(np.percentile(s, 90)), 2),
            max=round(float(s.max()), 2),
            over_1p5=int((s > 1.5).sum()),
        )

    for names in COMPARISONS:
        print(json.dumps(spread(names)), flush=True)
