"""Write a phantom cohort (nifti layout) as the public releases lay theirs out, for the tests.

``brainmetshare``: ``Mets_XXX/{0,1,2,3,seg}/<n>.png`` (8-bit PNGs, one per axial slice, mask
0/255); ``brats-mets``: ``<case>/<case>-{t1n,t1c,t2f,seg}.nii.gz`` (mask label 3, enhancing);
``ucsf-bmsr``: ``<study>/<study>_{T1pre,T1post,FLAIR,seg}.nii.gz``. The sequences keep their
meaning where the release names one: pre-contrast T1 (``t1_fse_pre``) -> t1n / T1pre,
post-contrast T1 (``t1_fse_post``) -> t1c / T1post, FLAIR -> t2f / FLAIR; BrainMetShare's
0-3 are the paper's four.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

#: Sequences each converted layout carries, in the canonical names seqablate reads them as.
SEQUENCES = {
    "brainmetshare": ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"],
    "brats-mets": ["t1_pre", "t1_post", "flair"],
    "ucsf-bmsr": ["t1_pre", "t1_post", "flair"],
}
_BRATS = {"t1_fse_pre": "t1n", "t1_fse_post": "t1c", "flair": "t2f"}
_UCSF = {"t1_fse_pre": "T1pre", "t1_fse_post": "T1post", "flair": "FLAIR"}
_BMS = {"t1_gre_post": "0", "t1_fse_pre": "1", "t1_fse_post": "2", "flair": "3"}


def _png_series(folder: Path, vol: np.ndarray, *, mask: bool = False) -> None:
    """[X, Y, Z] RAS -> one PNG per z: rows anterior->posterior, columns right->left."""
    from PIL import Image

    folder.mkdir(parents=True)
    v = np.asarray(vol, dtype=np.float32)
    if mask:
        u8 = (v > 0).astype(np.uint8) * 255
    else:
        hi = float(np.percentile(v, 99.9)) or 1.0
        u8 = np.clip(v / hi * 255, 0, 255).astype(np.uint8)
    for z in range(u8.shape[2]):
        # array [col, row] of the PNG is L-P; RAS x (left->right) is reversed, y likewise
        Image.fromarray(u8[::-1, ::-1, z].T).save(folder / f"{z + 1}.png")


def write_as(layout: str, phantom: Path, out: Path) -> Path:
    """Write every patient of the ``phantom`` cohort at ``out`` in ``layout``; returns ``out``."""
    out.mkdir(parents=True)
    for i, pdir in enumerate(sorted(d for d in phantom.iterdir() if d.is_dir())):
        vols = {f.name.split(".")[0]: nib.load(str(f)) for f in pdir.glob("*.nii.gz")}
        seg = vols.pop("seg")
        if layout == "brainmetshare":
            case = out / f"Mets_{i:03d}"
            for name, sub in _BMS.items():
                if name in vols:
                    _png_series(case / sub, np.asarray(vols[name].dataobj))
            _png_series(case / "seg", np.asarray(seg.dataobj), mask=True)
        elif layout in ("brats-mets", "ucsf-bmsr"):
            table, sep = (_BRATS, "-") if layout == "brats-mets" else (_UCSF, "_")
            case_id = f"BraTS-MET-{i:05d}-000" if layout == "brats-mets" else f"{100000 + i}_{1}"
            case = out / case_id
            case.mkdir()
            for name, suffix in table.items():
                if name in vols:
                    img = vols[name]
                    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), case / f"{case_id}{sep}{suffix}.nii.gz")
            label = (np.asarray(seg.dataobj) > 0).astype(np.uint8) * 3
            nib.save(nib.Nifti1Image(label, seg.affine), case / f"{case_id}{sep}seg.nii.gz")
        else:
            raise ValueError(f"unknown layout {layout!r}")
    return out
