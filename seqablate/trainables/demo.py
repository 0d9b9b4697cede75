"""``seqablate demo``: the paper's sequence-dropout finding, end to end, on a laptop.

Writes synthetic ``stanford`` (4 sequences) and ``oslo`` (no ``t1_gre_post``; some patients
also lack ``t1_fse_pre``) phantom cohorts, runs a small study on local Ray (input-level
network with and without sequence dropout p = 0.25, 2 seeds each, ``compact`` backbone,
small images), evaluates every trial on the full protocol, with ``t1_gre_post`` censored,
and on oslo, and prints the paper-style tables (I, III, IV, VI) built from MLflow by
``seqablate.analysis``, plus the ``mlflow ui`` command that shows the runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

#: Demo scale, chosen for wall time on a 2-core CPU (see benchmarks/RESULTS.md, "Demo").
# 32 stanford patients: 22 train / 2 validation / 8 test (~20 test lesions; each lesion is
# 1/n of the recall, so fewer makes mAP jumpy); preprocessing them costs seconds, not steps.
PATIENTS = {"stanford": 32, "oslo": 8}
# 64 x 64 in-plane: DeepLabv3 predicts at output stride 8, so 32 x 32 images give 4 x 4 logit
# maps that cannot resolve these lesions (measured: mAP 0 for both arms at 32 x 32).
# 32 slices (5.3 mm) rather than 16 (10.5 mm): lesions are 2-30 mm (median ~8 mm), so at 10.5 mm
# most span a single slice and the 5-slice 2.5D stack spans 5 cm. Training cost is unchanged
# (it samples slices); evaluation doubles.
SHAPE = (64, 64, 32)  # phantom volume (X, Y, Z)
# 200 steps at lr 3e-3. At 150 steps and lr 1e-3 no trial detected anything (mAP 0); at 300
# steps / 1e-3 the demo took 11.6 min (+ 4.3 min install). Single-run checks on this cohort
# (benchmarks/RESULTS.md, "Demo"): with lr 3e-3 both arms reached by step 150 what 1e-3
# reached by 300. A step costs ~0.57 s on one idle core (benchmarks/bench_train_step.py).
STEPS = 200
BASE: dict[str, Any] = {
    "data": {"image_size": 64, "slices": 5, "val_patients": 2, "test_fraction": 0.25},
    "model": {"backbone": "compact", "integration": "input"},
    # BCE alone predicts no lesion voxel above 0.1 after a few hundred steps on these tiny,
    # imbalanced images (measured: n_pred = 0); soft Dice (same for both arms) fixes that.
    "train": {"steps": STEPS, "batch_size": 4, "lr": 3e-3, "warmup_steps": 10, "val_every": 100,
              "saliency_every": 25, "dice_weight": 1.0},
    "eval": {"bootstrap": 500, "each_sequence": False, "censor": ["t1_gre_post"]},
}


def run_demo(out: str | Path, *, steps: int | None = None, overwrite: bool = False) -> int:
    """Run the demo into ``out``; returns the exit code.

    ``out`` must be new, empty, or an earlier demo's folder: then its cohorts are reused and its
    study resumes (finished trials are not re-run). ``overwrite`` deletes an earlier demo
    folder first (only one seqablate made).
    """
    from seqablate import folders, tracking
    from seqablate.analysis.render import table_markdown
    from seqablate.analysis.runs import runs_from_frame
    from seqablate.analysis.tables import build_tables
    from seqablate.config import StudyConfig, parse
    from seqablate.data import make_phantom_cohort
    from seqablate.trainables.driver import run_study

    t0 = time.perf_counter()
    out = Path(out).resolve()
    if overwrite:
        folders.remove_own(out, "demo", flag="--overwrite")
    folders.claim(out, "demo", flag="--out")
    cohorts = {
        site: make_phantom_cohort(out / "cohorts" / site, site=site, patients=n, seed=i, shape=SHAPE, progress=True)
        for i, (site, n) in enumerate(PATIENTS.items())
    }
    storage = out / "study"  # a rerun resumes it (same config) or refuses (another one)
    base = {**BASE, "train": {**BASE["train"], "steps": steps or STEPS}}
    cfg = parse(StudyConfig, {
        "name": "demo", "space": str(Path(__file__).with_name("demo_space.py")),
        "cohort": str(cohorts["stanford"]), "external": {"oslo": str(cohorts["oslo"])},
        # Two trials at a time, one core each. Measured (benchmarks/RESULTS.md, "Demo"): with
        # all 4 at once, each trial's Ray actors (driver, controller, queue, cleaner: ~8 % of a
        # core each) and 4 workers on 2 cores left the workers ~1.45 cores; steps took 1.7 s
        # instead of 2 x 0.57 s.
        "seeds": 2, "max_concurrent": 2, "cpus_per_worker": 1.0, "storage": str(storage), "base": base,
    }, source="demo")
    t1 = time.perf_counter()
    result = run_study(cfg, verbose=1)
    t2 = time.perf_counter()
    runs = runs_from_frame(tracking.list_trials(str(storage)))
    print("\n" + "=" * 100)
    print("seqablate demo: input-level network without / with sequence dropout (p = 0.25), 2 seeds")
    print("values in %, mean over seeds (± std), mAP with its 95 % bootstrap CI over test patients")
    print("=" * 100)
    wanted = {"I", "II", "III", "IV", "VI"}  # the paper's tables this study fills
    for table in build_tables(runs):
        if table.available and table.id.split(".")[0] in wanted:
            print("\n" + table_markdown(table))
    print("\n" + summary(result.trials))
    failed = [r for r in result.trials if r["status"] != "TERMINATED"]
    print(f"\nwall time: {t2 - t0:.0f} s (cohorts {t1 - t0:.0f} s, study {t2 - t1:.0f} s); "
          f"{len(result.trials) - len(failed)}/{len(result.trials)} trials finished")
    print(f"\nsee the runs: .venv/bin/mlflow ui --backend-store-uri {result.tracking_uri}")
    # The readable answer: tables, saliency/PR/FROC figures and overlays in one HTML file,
    # also logged to the study's parent run (seqablate.analysis.report).
    from seqablate.analysis.report import write_report

    report = write_report(str(storage), progress=True)
    print(f"report: {report.files[0]}")
    return 1 if failed else 0


def summary(trials: list[dict[str, Any]]) -> str:
    """The finding in one line per arm: full vs t1_gre_post-censored mAP, and oslo."""
    import numpy as np

    lines = []
    for arm, label in (("input-seed", "without dropout"), ("input-p0.25-seed", "with dropout p=0.25")):
        rows = [r for r in trials if r["name"].startswith(arm) and r["status"] == "TERMINATED"]
        if not rows:
            continue

        def mean(key: str, rows: list[dict[str, Any]] = rows) -> float:
            vals = [r[key] for r in rows if isinstance(r.get(key), float)]
            return float(np.mean(vals)) if vals else float("nan")

        full, cens, oslo = mean("test.full.mAP"), mean("test.censor_t1_gre_post.mAP"), mean("external.oslo.mAP")
        kept = cens / full if full > 0 else float("nan")
        lines.append(f"{label:<22} mAP full {full:.2f} | t1_gre_post censored {cens:.2f} "
                     f"({kept:.0%} of full) | oslo {oslo:.2f}")
    return "\n".join(lines)
