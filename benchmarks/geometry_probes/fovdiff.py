from pathlib import Path

import numpy as np
from scipy import ndimage

from seqablate.data.layouts import PatientFiles
from seqablate.data.preprocess import PreprocessParams, preprocess_volume
from seqablate.data.volumes import load_patient

root = Path("/work/inv1/test_one_model_three_geometrie0")
SEQ = ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"]


def files(d):
    return PatientFiles(
        d.name,
        {s: d / f"{s}.nii.gz" for s in SEQ},
        d / "seg.nii.gz",
        "nifti",
        folder=d,
        mask_labels=(0, 1),
        lesion_labels=(1,),
    )


def world_of_target(vol, grid):
    # target voxel index (x,y,z) -> world
    idx = np.indices(grid.shape).reshape(3, -1).T.astype(float)
    src = grid.offset + grid.scale * idx
    return (vol.affine[:3, :3] @ src.T).T + vol.affine[:3, 3]


def compare(params, pid="p000", A=root / "crop-1.5mm", B=root / "whole-1.0mm", margin=3):
    a = load_patient(files(A / pid))
    b = load_patient(files(B / pid))
    pa = preprocess_volume(a, SEQ, params)
    pb = preprocess_volume(b, SEQ, params)
    w = world_of_target(a, pa.grid)
    src_b = np.linalg.solve(b.affine[:3, :3], (w - b.affine[:3, 3]).T).T
    tb = (src_b - pb.grid.offset) / pb.grid.scale
    out = []
    for s in range(len(SEQ)):
        ia = np.transpose(pa.image[s], (1, 2, 0)).reshape(-1)
        ib = ndimage.map_coordinates(np.transpose(pb.image[s], (1, 2, 0)), tb.T, order=1)
        inner = np.all(
            (np.indices(pa.grid.shape).reshape(3, -1).T >= margin)
            & (np.indices(pa.grid.shape).reshape(3, -1).T < np.array(pa.grid.shape) - margin),
            axis=1,
        )
        out.append(
            f"{SEQ[s][:8]} mad={np.abs(ia - ib)[inner].mean():.3f} mean a/b={ia[inner].mean():.3f}/{ib[inner].mean():.3f}"
        )
    return " | ".join(out)


base = dict(geometry="spacing", spacing_mm=1.6, slice_mm=2.2)
for m in (3, 20):
    for pid in ("p000", "p004"):
        print(
            m,
            pid,
            "whole ",
            compare(PreprocessParams(intensity="minmax_clahe", **base), pid, margin=m),
        )
        print(
            m,
            pid,
            "noise2",
            compare(
                PreprocessParams(intensity="minmax_clahe", **base),
                pid,
                B=Path("/work/control1/crop-noise2"),
                margin=m,
            ),
        )
