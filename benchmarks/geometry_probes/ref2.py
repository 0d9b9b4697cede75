import numpy as np

from seqablate.data.phantom import SCANNERS, geometry_affine, render_patient
from seqablate.data.preprocess import head_mask

G = {
    "whole": ((1.0, 1.0, 1.0), None),
    "crop": ((1.5, 1.5, 1.5), (96.0, 96.0, 72.0)),
    "aniso": ((1.2, 1.2, 3.0), None),
}


def ball(shape, vox, center, r):
    g = np.ogrid[tuple(slice(0, n) for n in shape)]
    d = sum(((gi - c) * v) ** 2 for gi, c, v in zip(g, center, vox, strict=False))
    return d <= r * r


for idx in range(4):
    for g, (vox, fov) in G.items():
        aff, shape = geometry_affine(vox, fov)
        lo, hi = SCANNERS["stanford"].region()
        imgs, mask, man = render_patient(
            "stanford",
            11,
            idx,
            affine=aff,
            shape=shape,
            region_mm=(lo, hi),
            lesion_diameter_mm=(6.0, 30.0),
            coarsest_mm=3.0,
        )
        row = []
        for s, v in imgs.items():
            m = head_mask(v)
            c_fov = [(n - 1) / 2 for n in v.shape]
            c_head = [float(np.mean(ix)) for ix in np.nonzero(m)]
            b1 = ball(v.shape, vox, c_fov, 35)
            b2 = ball(v.shape, vox, c_head, 35)
            row.append(
                f"{s[:6]} fov:{np.percentile(v[b1], 99.5):.0f}/{np.percentile(v[b1], 50):.0f} head:{np.percentile(v[b2], 99.5):.0f}/{np.percentile(v[b2], 50):.0f}"
            )
        print(idx, g, " | ".join(row), flush=True)
