import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

root = Path("/work/inv2/test_one_model_three_geometrie0")
ctl = Path("/work/control2")
out = Path(sys.argv[1])
out.mkdir(exist_ok=True)
PATIENTS = 30
from seqablate.evaluation.score import evaluate_cohort  # noqa: E402 (a probe script: arguments first)

model = root / "run" / "checkpoint_000002"
cohorts = {
    "whole-1.0mm": (root / "whole-1.0mm", root / "cache"),
    "crop-1.5mm": (root / "crop-1.5mm", root / "cache"),
    "whole-1.2x1.2x3mm": (root / "whole-1.2x1.2x3mm", root / "cache"),
    "crop-shift4px": (ctl / "crop-shift4px", ctl / "cache"),
    "crop-shift8px": (ctl / "crop-shift8px", ctl / "cache"),
}
found, maps = {}, {}
for name, (cohort, cache) in cohorts.items():
    ev = out / f"eval-{name}"
    if not (ev / "lesions.csv").exists():
        res = evaluate_cohort(str(model), cohort, out=ev, bootstrap=0, log=False, cache_dir=cache)
        maps[name] = res.metrics["test.full.mAP"]
        print(name, maps[name], flush=True)
    les = pd.read_csv(ev / "lesions.csv")
    les = les[(les["condition"] == "test.full") & les["is_tp"].astype(bool)]
    found[name] = []
    for _, r in les.iterrows():
        org = nib.load(cohort / r.patient / "seg.nii.gz").affine[:3, 3]
        found[name].append(
            (r.patient, np.array([r.centre_x_mm, r.centre_y_mm, r.centre_z_mm]) + org)
        )


def spread(names):
    sp = []
    for pid, c in found[names[0]]:
        pts = [c]
        for g in names[1:]:
            cand = [w for p, w in found[g] if p == pid]
            d = [np.linalg.norm(w - c) for w in cand]
            if not d or min(d) > 6:
                break
            pts.append(cand[int(np.argmin(d))])
        else:
            sp.append(max(np.linalg.norm(a[:2] - b[:2]) for a in pts for b in pts))
    sp = np.array(sp)
    return dict(
        pairs=" vs ".join(names),
        n=len(sp),
        median=round(float(np.median(sp)), 2),
        p90=round(float(np.percentile(sp, 90)), 2),
        max=round(float(sp.max()), 2),
        over_1p5=int((sp > 1.5).sum()),
    )


print(json.dumps(maps))
for names in (
    ["crop-1.5mm", "crop-shift4px"],
    ["crop-1.5mm", "crop-shift8px"],
    ["crop-1.5mm", "whole-1.0mm"],
    ["crop-1.5mm", "whole-1.2x1.2x3mm"],
    ["whole-1.0mm", "whole-1.2x1.2x3mm"],
    ["crop-1.5mm", "whole-1.0mm", "whole-1.2x1.2x3mm"],
):
    print(json.dumps(spread(names)), flush=True)
