"""One trained model scores the same patients alike whatever the scanner's geometry.

A model is trained here (the real loop, smoke scale: the demo's network and mixed-scanner
stanford cohort) and evaluated through ``seqablate evaluate``'s path on the same fresh phantom
patients rendered at three geometries: the whole brain at 1.0 mm, the demo's 96 mm crop at
1.5 mm, and the whole brain at 1.2 x 1.2 x 3 mm. Lesions are 6-30 mm (at least twice the
coarsest slice spacing), all inside the crop. A scale bug (a lesion's size in pixels following
the field of view, as with the pixel-count resize) makes the whole-brain renderings fail; so
does anything laid on the slice's own pixel grid rather than the world's (CLAHE tiles, the
network's stride: a strided network is not shift-equivariant).

The centre criterion is taken on lesions at least :data:`INTERIOR_MM` inside every face of the
crop, where the crop's edge does not cut the context the network sees, and asks 90 % of them to
agree within 1.5 mm across the three renderings. Not every lesion: measured on this test's
patients (``benchmarks/RESULTS.md``, Geometry), re-rendering the crop with another noise draw
alone moves 2 of 78 lesions by more than 1.5 mm (up to 5.6 mm: faint detections, scores
0.1-0.2, whose thresholded component changes shape), and within 15 mm of the crop's edge 8 of
28 lesions moved, 3 of 51 elsewhere.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

#: name -> (voxel mm, field of view mm or None for the whole head)
GEOMETRIES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float] | None]] = {
    "whole-1.0mm": ((1.0, 1.0, 1.0), None),
    "crop-1.5mm": ((1.5, 1.5, 1.5), (96.0, 96.0, 72.0)),
    "whole-1.2x1.2x3mm": ((1.2, 1.2, 3.0), None),
}
#: 30 patients hold ~96 lesions: one lesion found or missed moves mAP by ~0.01, so the 0.05
#: tolerance is about the model, not about which noise realisation a rendering drew (with 10
#: patients, 33 lesions, renderings differed by 2 lesions = 0.06).
PATIENTS = 30
#: mm: lesions whose centre is this far inside every face of the crop count for the centres
INTERIOR_MM = 15.0
SEED = 11  # not a training patient's seed


def _render(job: tuple[Path, int, tuple[float, float, float], tuple[float, float, float] | None]) -> list[list[float]]:
    """Write patient ``index`` at one geometry; returns its lesion centres (world mm)."""
    from seqablate.data.phantom import (
        SCANNERS,
        geometry_affine,
        render_patient,
        write_patient_nifti,
    )

    folder, index, voxel, fov = job
    affine, shape = geometry_affine(voxel, fov)
    lo, hi = SCANNERS["stanford"].region()
    images, mask, manifest = render_patient("stanford", SEED, index, affine=affine, shape=shape, region_mm=(lo, hi),
                                            lesion_diameter_mm=(6.0, 30.0), coarsest_mm=3.0)
    write_patient_nifti(folder, images, mask, affine)
    return [les["center_mm"] for les in manifest["lesions"]]


def _origin(cohort: Path, patient: str) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(cohort / patient / "seg.nii.gz").affine)[:3, 3]


def test_one_model_three_geometries(tmp_path: Path) -> None:
    from seqablate.data.phantom import SCANNERS, make_phantom_cohort
    from seqablate.evaluation.score import evaluate_cohort
    from seqablate.trainables.loop import fit_trial

    train = make_phantom_cohort(tmp_path / "train", site="stanford", patients=40, seed=0,
                                scanners=SCANNERS["stanford"], workers=2)
    cfg = {
        "name": "invariance",
        "data": {"cohort": str(train), "image_size": 64, "slices": 5, "test_fraction": 0.0, "val_patients": 6},
        "model": {"backbone": "tiny", "integration": "input", "norm": "batch"},
        "train": {"steps": 1500, "batch_size": 8, "lr": 3e-3, "warmup_steps": 50, "val_every": 500,
                  "saliency_every": 0, "dice_weight": 1.0, "seed": 0},
        "eval": {"norm_stats": "stored", "bootstrap": 0},
    }
    model = fit_trial(cfg, storage=tmp_path / "run", cpus=2, use_gpu=False, evaluate=False).checkpoint

    cohorts = {name: tmp_path / name for name in GEOMETRIES}
    jobs = [(cohorts[name] / f"p{i:03d}", i, voxel, fov) for name, (voxel, fov) in GEOMETRIES.items()
            for i in range(PATIENTS)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        centres = dict(zip([(j[0].parent.name, j[1]) for j in jobs], pool.map(_render, jobs), strict=True))
    # The same patients: identical lesions (world mm) in every rendering.
    for i in range(PATIENTS):
        assert centres[("crop-1.5mm", i)] == centres[("whole-1.0mm", i)] == centres[("whole-1.2x1.2x3mm", i)]
    n_lesions = sum(len(centres[("crop-1.5mm", i)]) for i in range(PATIENTS))
    assert n_lesions >= 15

    maps: dict[str, float] = {}
    found: dict[str, dict[tuple[int, int], np.ndarray]] = {}
    for name, cohort in cohorts.items():
        res = evaluate_cohort(str(model), cohort, out=tmp_path / f"eval-{name}", bootstrap=0, log=False,
                              cache_dir=tmp_path / "cache")
        maps[name] = res.metrics["test.full.mAP"]
        les = pd.read_csv(res.out / "lesions.csv")
        les = les[(les["condition"] == "test.full") & les["is_tp"].astype(bool)]
        found[name] = {}
        for i in range(PATIENTS):
            pid = f"p{i:03d}"
            rows = les[les["patient"] == pid]
            # Centres are voxel index x spacing: the grid's origin makes them world mm.
            world = rows[["centre_x_mm", "centre_y_mm", "centre_z_mm"]].to_numpy() + _origin(cohort, pid)
            for k, truth in enumerate(centres[("crop-1.5mm", i)]):
                if len(world):
                    d = np.linalg.norm(world - np.asarray(truth), axis=1)
                    if d.min() <= 6.0:
                        found[name][(i, k)] = world[int(np.argmin(d))]
    print("mAP per geometry:", json.dumps(maps))
    assert maps["crop-1.5mm"] >= 0.3
    assert max(maps.values()) - min(maps.values()) <= 0.05, maps
    common = set.intersection(*(set(f) for f in found.values()))
    assert len(common) >= 0.5 * n_lesions
    spreads = {key: max(float(np.linalg.norm(a[:2] - b[:2])) for a in xy for b in xy)
               for key in common for xy in [[found[name][key] for name in cohorts]]}
    print(f"in-plane centre spread over {len(spreads)} lesions found in all three: median "
          f"{np.median(list(spreads.values())):.2f} mm, max {max(spreads.values()):.2f} mm")
    from seqablate.data.phantom import geometry_affine

    voxel, fov = GEOMETRIES["crop-1.5mm"]
    affine, shape = geometry_affine(voxel, fov)
    lo = affine[:3, 3] - 0.5 * np.asarray(voxel)
    hi = lo + np.asarray(shape) * np.asarray(voxel)
    inner = {key: d for key, d in spreads.items()
             if min(np.min(np.asarray(centres[("crop-1.5mm", key[0])][key[1]]) - lo),
                    np.min(hi - np.asarray(centres[("crop-1.5mm", key[0])][key[1]]))) >= INTERIOR_MM}
    far = {key: round(d, 2) for key, d in inner.items() if d > 1.5}
    print(f"{len(inner)} lesions >= {INTERIOR_MM} mm inside the crop: {len(far)} spread by more than 1.5 mm {far}")
    assert len(inner) >= 0.3 * n_lesions
    assert len(far) <= 0.1 * len(inner), far
