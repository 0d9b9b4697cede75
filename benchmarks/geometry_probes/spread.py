import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

root = Path(sys.argv[1])
G = ["whole-1.0mm", "crop-1.5mm", "whole-1.2x1.2x3mm"]
rows = []
for g in G:
    les = pd.read_csv(root / f"eval-{g}/lesions.csv")
    les = les[(les.condition == "test.full")]
    for pid in sorted(les.patient.unique()):
        img = nib.load(root / g / pid / "seg.nii.gz")
        seg = np.asarray(img.dataobj) > 0
        lab, n = ndimage.label(seg, np.ones((3, 3, 3)))
        zooms = np.array(img.header.get_zooms()[:3])
        org = img.affine[:3, 3]
        cents = ndimage.center_of_mass(seg, lab, range(1, n + 1))
        vols = ndimage.sum(seg, lab, range(1, n + 1)) * zooms.prod()
        tw = [np.array(c) * zooms + org for c in cents]
        p = les[les.patient == pid]
        for _, r in p.iterrows():
            w = np.array([r.centre_x_mm, r.centre_y_mm, r.centre_z_mm]) + org
            d = [np.linalg.norm((w - t)[:2]) for t in tw]
            k = int(np.argmin(d))
            # truths the prediction covers (centre within predicted radius)
            rows.append(
                dict(
                    g=g,
                    pid=pid,
                    tp=r.is_tp,
                    score=r.score,
                    truth=k,
                    err=d[k],
                    pvol=r.volume_mm3,
                    tvol=vols[k],
                    dice=r.dice,
                    tc=tuple(np.round(tw[k])),
                )
            )
df = pd.DataFrame(rows)
tp = df[df.tp]
print(tp.groupby("g").err.describe())
piv = tp.pivot_table(index=["pid", "tc"], columns="g", values="err", aggfunc="min").dropna()
print("lesions in all three", len(piv))
far = piv[piv.max(axis=1) > 1.0]
vol = tp.pivot_table(index=["pid", "tc"], columns="g", values="pvol", aggfunc="max")
tv = tp.groupby(["pid", "tc"]).tvol.first()
print(
    pd.concat(
        [
            far.round(2),
            (vol.loc[far.index] / 1000).round(1).add_prefix("pv_"),
            (tv.loc[far.index] / 1000).round(1),
        ],
        axis=1,
    ).to_string()
)
print()
for g in G:
    les = pd.read_csv(root / f"eval-{g}/lesions.csv")
    les = les[les.condition == "test.full"]
    fp = les[~les.is_tp]
    print(
        g,
        "pred",
        len(les),
        "tp",
        int(les.is_tp.sum()),
        "fp",
        len(fp),
        "fp>0.5",
        int((fp.score > 0.5).sum()),
        f"fp score max {fp.score.max():.2f}" if len(fp) else "",
        f"fp vol median {fp.volume_mm3.median():.0f}" if len(fp) else "",
    )
