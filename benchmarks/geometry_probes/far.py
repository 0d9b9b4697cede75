from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

root = Path("/work/inv2/test_one_model_three_geometrie0")
ev = Path("/work/control3")
G = ["crop-1.5mm", "whole-1.0mm", "whole-1.2x1.2x3mm"]
found = {}
for g in G:
    les = pd.read_csv(ev / f"eval-{g}/lesions.csv")
    les = les[(les.condition == "test.full") & les.is_tp]
    for _, r in les.iterrows():
        aff = nib.load(root / g / r.patient / "seg.nii.gz").affine
        found.setdefault(g, []).append(
            (
                r.patient,
                np.array([r.centre_x_mm, r.centre_y_mm, r.centre_z_mm]) + aff[:3, 3],
                r.score,
                r.volume_mm3,
            )
        )
crop_lo = None
rows = []
for pid, c, s, v in found["crop-1.5mm"]:
    img = nib.load(root / "crop-1.5mm" / pid / "seg.nii.gz")
    lo = img.affine[:3, 3]
    hi = lo + np.array(img.shape) * 1.5
    edge = min(np.min(c - lo), np.min(hi - c))
    pts = [(c, s)]
    for g in G[1:]:
        cand = [(w, ss) for p, w, ss, vv in found[g] if p == pid]
        d = [np.linalg.norm(w - c) for w, _ in cand]
        if not d or min(d) > 6:
            break
        pts.append(cand[int(np.argmin(d))])
    else:
        sp = max(np.linalg.norm(a[0][:2] - b[0][:2]) for a in pts for b in pts)
        rows.append(
            dict(
                pid=pid,
                spread=sp,
                score=s,
                vol=v,
                edge_mm=edge,
                scores=[round(p[1], 2) for p in pts],
            )
        )
df = pd.DataFrame(rows)
print(df[df.spread > 1.5].round(2).to_string())
print(
    "corr spread~edge",
    np.corrcoef(df.spread, df.edge_mm)[0, 1].round(2),
    "spread~score",
    np.corrcoef(df.spread, df.score)[0, 1].round(2),
)
print(
    "edge<15mm: n",
    int((df.edge_mm < 15).sum()),
    "far",
    int(((df.edge_mm < 15) & (df.spread > 1.5)).sum()),
    "| edge>=15: n",
    int((df.edge_mm >= 15).sum()),
    "far",
    int(((df.edge_mm >= 15) & (df.spread > 1.5)).sum()),
)
