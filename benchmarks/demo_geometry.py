"""Do the demo's models carry to other scanners? The same fresh patients at three geometries.

Every finished trial model of a demo is scored by ``seqablate evaluate`` (the CLI, in-process)
on the same fresh phantom patients (seed 11: none is a training patient) rendered

* ``demo``: at the demo's own kind of geometry, each patient at a voxel size and field of
  view drawn from the stanford scanner range (``SCANNERS["stanford"]``);
* ``whole-1.0mm``: the whole head at 1.0 mm isotropic (168 x 206 x 168 voxels);
* ``whole-1.2x1.2x3mm``: the whole head at 1.2 x 1.2 x 3 mm (thick slices);

full protocol and ``t1_gre_post`` censored, with each model's own BatchNorm statistics policy.
Lesions are 6-30 mm, at least twice the coarsest slice spacing, so every rendering resolves
every lesion and the three truths hold the same lesions (checked: identical world-mm lists); a
lesion of 2 mm would exist on the 1 mm grid and not on a 3 mm one, and the comparison would
measure the truths' difference, not the model's. Prints mAP per cohort
and arm (mean and range over seeds) and the largest difference to ``demo`` per model.

    python benchmarks/demo_geometry.py --demo demo-out --patients 20 [--per-arm 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

WHOLE = {"whole-1.0mm": (1.0, 1.0, 1.0), "whole-1.2x1.2x3mm": (1.2, 1.2, 3.0)}
LESIONS_MM = (6.0, 30.0)


def _render(job: tuple[str, int, tuple[float, float, float], list[list[float]], float]) -> list[list[float]]:
    """Write fresh patient ``index`` at a whole-head geometry; returns its lesion centres."""
    from seqablate.data.phantom import geometry_affine, render_patient, write_patient_nifti

    folder, index, voxel, region, coarsest = job
    affine, shape = geometry_affine(voxel)
    images, mask, manifest = render_patient("stanford", 11, index, affine=affine, shape=shape,
                                            region_mm=(region[0], region[1]), coarsest_mm=coarsest,
                                            lesion_diameter_mm=LESIONS_MM)
    write_patient_nifti(folder, images, mask, affine)
    return [les["center_mm"] for les in manifest["lesions"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", required=True, help="a finished demo's --out folder")
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--per-arm", type=int, default=None, help="models per arm (lowest seeds first; default: all)")
    ap.add_argument("--work", default=None, help="folder for the cohorts and evaluations (default: a temp folder)")
    args = ap.parse_args()

    from seqablate import tracking
    from seqablate.cli import main as cli
    from seqablate.data.phantom import SCANNERS, make_phantom_cohort

    study = Path(args.demo).resolve() / "study"
    uri = tracking.default_tracking_uri(str(study))
    trials = tracking.list_trials(str(study))
    trials = trials[trials["status"] == "FINISHED"].sort_values("tags.mlflow.runName")
    if args.per_arm:
        arm = trials["params.train.dropout_p"].astype(float) > 0
        trials = trials.groupby(arm, group_keys=False).head(args.per_arm)
    work = Path(args.work or tempfile.mkdtemp(prefix="seqablate-geometry-"))
    demo = make_phantom_cohort(work / "demo", site="stanford", patients=args.patients, seed=11,
                               scanners=SCANNERS["stanford"], lesion_diameter_mm=LESIONS_MM, progress=True, workers=2)
    manifest = json.loads((demo / "phantom.json").read_text())
    region, coarsest = manifest["region_mm"], float(manifest["coarsest_mm"])
    want = [[les["center_mm"] for les in p["lesions"]] for p in manifest["patients_info"]]
    cohorts = {"demo": demo}
    for name, voxel in WHOLE.items():
        cohorts[name] = work / name
        if not cohorts[name].is_dir():
            jobs = [(work / name / f"stanford_{i:03d}", i, voxel, region, coarsest) for i in range(args.patients)]
            with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
                got = list(pool.map(_render, jobs))
            assert got == want, f"{name}: the renderings' lesions differ from the demo geometry's"
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    gaps: list[tuple[str, str, float]] = []
    for _, t in trials.iterrows():
        arm = "dropout" if float(t["params.train.dropout_p"]) > 0 else "no dropout"
        per: dict[str, float] = {}
        for name, path in cohorts.items():
            out = work / "eval" / f"{t['run_id']}-{name}"
            if not (out / "metrics.json").is_file():
                code = cli(["evaluate", "--model", t["run_id"], "--cohort", str(path), "--out", str(out),
                            "--tracking-uri", uri, "--bootstrap", "0", "--no-log", "--cache-dir", str(work / "cache")])
                assert code == 0, f"evaluate failed for {t['run_id']} on {name}"
            m = json.loads((out / "metrics.json").read_text())
            rows.setdefault((name, arm), []).append((m["test.full.mAP"], m["test.censor_t1_gre_post.mAP"]))
            per[name] = m["test.full.mAP"]
        for name in WHOLE:
            gaps.append((t["tags.mlflow.runName"], name, per[name] - per["demo"]))
    lesions = sum(len(w) for w in want)
    print(f"\n{len(trials)} demo models, {args.patients} fresh patients ({lesions} lesions), the same in every rendering")
    print(f"{'cohort':<20}{'arm':<12}{'full mAP (min-max)':>24}{'censored (min-max)':>24}")
    for name in cohorts:
        for arm in ("no dropout", "dropout"):
            vals = rows.get((name, arm), [])
            if not vals:
                continue
            f, c = [v[0] for v in vals], [v[1] for v in vals]
            print(f"{name:<20}{arm:<12}{statistics.mean(f):>8.3f} ({min(f):.3f}-{max(f):.3f})"
                  f"{statistics.mean(c):>10.3f} ({min(c):.3f}-{max(c):.3f})")
    print("\nfull mAP minus the demo geometry's, per model:")
    for run, name, gap in gaps:
        print(f"  {run:<28}{name:<20}{gap:+.3f}")
    print(f"largest |difference|: {max(abs(g) for _, _, g in gaps):.3f}")


if __name__ == "__main__":
    main()
