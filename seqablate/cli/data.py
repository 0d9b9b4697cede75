"""CLI: ``seqablate cohort inspect PATH``, ``seqablate cohort export-nnunet COHORT OUT`` and
``seqablate phantom OUT``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seqablate.data.layouts import LAYOUTS


def parse_aliases(values: list[str] | None) -> dict[str, str]:
    """``--alias NAME=SEQUENCE`` values -> ``{NAME: canonical sequence}``; ValueError naming a
    malformed value or an unknown sequence."""
    from seqablate.sequences import canonical

    out: dict[str, str] = {}
    for v in values or []:
        name, sep, seq = v.partition("=")
        if not sep or not name.strip() or not seq.strip():
            raise ValueError(f"--alias {v!r}: expected NAME=SEQUENCE (e.g. 'T1_post_gd=t1_post')")
        out[name.strip()] = canonical(seq)
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cohort`` and ``phantom`` sub-commands."""
    cohort = subparsers.add_parser("cohort", help="inspect cohorts on disk")
    csub = cohort.add_subparsers(dest="cohort_command", metavar="ACTION")
    ins = csub.add_parser(
        "inspect",
        help="layout, sequences, grid and lesions per patient, and every problem found",
        description="Validate every patient of a cohort and report all problems at once. "
        "Exit code 2 if any patient is unusable.",
    )
    ins.add_argument("path", help="cohort folder")
    ins.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS])
    ins.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    ins.add_argument("--lesion-labels", type=int, nargs="+", default=[1, 3], metavar="L", help="mask labels that are lesion (brats-mets, ucsf-bmsr; default 1 3)")
    ins.add_argument("--spacing", type=float, nargs=3, default=[0.94, 0.94, 1.0], metavar=("SX", "SY", "SZ"), help="voxel size in mm for PNG layouts (default 0.94 0.94 1.0)")
    ins.add_argument("--alias", action="append", metavar="NAME=SEQUENCE",
                     help="nnunet layout: read channel NAME as canonical SEQUENCE (repeatable)")
    ins.set_defaults(func=_inspect)
    ex = csub.add_parser(
        "export-nnunet",
        help="write the cohort as an nnU-Net v2 raw dataset, with a study's split as splits_final.json",
        description="Writes OUT/nnUNet_raw/Dataset<ID>_<Name>/ (imagesTr, labelsTr, imagesTs, labelsTs, "
        "dataset.json) and, with --study, OUT/nnUNet_preprocessed/Dataset<ID>_<Name>/splits_final.json: the "
        "study's training and validation patients as nnU-Net's fold 0, its test patients in imagesTs, so an "
        "nnU-Net baseline trains and is tested on exactly the study's patients.")
    ex.add_argument("cohort", help="cohort folder (any layout)")
    ex.add_argument("out", help="output folder (new, empty, or an earlier export with --overwrite)")
    ex.add_argument("--study", default=None,
                    help="whose split: a study folder, a train --out folder, a run id, or a split.json "
                    "(default: no split; every labelled patient is a training case)")
    ex.add_argument("--dataset-id", type=int, default=500, help="nnU-Net dataset id, 1..999 (default 500)")
    ex.add_argument("--dataset-name", default=None, help="nnU-Net dataset name (default: the cohort folder's name)")
    ex.add_argument("--sequences", nargs="+", default=None,
                    help="the channels, in order (default: the study's sequences, else those every patient has)")
    ex.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS])
    ex.add_argument("--lesion-labels", type=int, nargs="+", default=None, metavar="L",
                    help="mask labels that are lesion (default: the study's, else 1 3)")
    ex.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
                    help="voxel size in mm for PNG layouts (default: the study's, else 0.94 0.94 1.0)")
    ex.add_argument("--alias", action="append", metavar="NAME=SEQUENCE",
                    help="nnunet layout: read channel NAME as canonical SEQUENCE (repeatable)")
    ex.add_argument("--tracking-uri", default=None, help="MLflow URI where --study's runs are (a run id, a name)")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier export at OUT (only seqablate's)")
    ex.set_defaults(func=_export_nnunet)
    cohort.set_defaults(func=lambda args: (cohort.print_help(), 2)[1])

    ph = subparsers.add_parser(
        "phantom",
        help="write a synthetic multi-sequence metastasis cohort (nifti layout)",
        description="Synthetic cohort on nilearn's bundled MNI152 anatomy. Site 'stanford': "
        "4 sequences; 'oslo': no t1_gre_post, larger lesions, two patients without t1_fse_pre. "
        "The grid: --shape over the whole head (default); with --voxel-mm, --shape voxels of that size "
        "around the mid-brain; with --voxel-mm and --fov-mm, round(FOV / voxel) voxels there; with "
        "--fov-mm and --shape, voxels of FOV / shape. Lesions lie inside the grid's FOV. A patient's "
        "anatomy and lesions (in mm) do not depend on the grid.",
    )
    ph.add_argument("out", help="output folder (reused if it already holds the same phantom)")
    ph.add_argument("--site", default="stanford", choices=["stanford", "oslo"])
    ph.add_argument("--patients", type=int, default=8)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--small", action="store_true", help="64x64x32 volumes (tests, demo)")
    ph.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="volume shape (default 128 128 64)")
    ph.add_argument("--voxel-mm", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                    help="voxel size in mm; the grid is then a box around the mid-brain, not the whole head")
    ph.add_argument("--fov-mm", type=float, nargs=3, metavar=("FX", "FY", "FZ"),
                    help="field of view in mm around the mid-brain (with --voxel-mm or --shape)")
    # The ranges are seqablate.data.phantom.SCANNERS (a test keeps this text in step); not
    # imported here, since building the parser must stay cheap.
    ph.add_argument("--mixed-scanner", action="store_true",
                    help="draw each patient's grid (around the mid-brain) uniformly from the site's scanner "
                    "range, instead of one grid for the cohort (stanford: 1.2-2 mm in-plane pixels, 1.5-3 mm "
                    "slices, 90-210 mm square in-plane FOV, 72-168 mm through-plane FOV; oslo: 1.2-2 mm in-plane "
                    "pixels, 1 mm slices, 90-210 mm square in-plane FOV, 72-168 mm through-plane FOV); lesions "
                    "lie inside the smallest FOV, so every patient shows all of its lesions. Not with "
                    "--shape, --small, --voxel-mm or --fov-mm")
    ph.add_argument("--misregistration-mm", type=float, default=None, metavar="MM",
                    help="residual misregistration of every sequence but the registration reference: a shift of "
                    "exactly MM mm with a proportional rotation (0 = perfectly registered; default: drawn per "
                    "patient, 0.2-1 mm); patients are otherwise the same at every level")
    ph.add_argument("--overwrite", action="store_true", help="replace a different cohort at OUT")
    ph.set_defaults(func=_phantom)


def _inspect(args: argparse.Namespace) -> int:
    from seqablate.data.inspection import format_report, inspect_cohort

    report = inspect_cohort(
        args.path,
        args.layout,
        lesion_labels=args.lesion_labels,
        default_spacing=args.spacing,
        aliases=parse_aliases(args.alias),
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_report(report))
    return 0 if report.usable else 2


def _export_nnunet(args: argparse.Namespace) -> int:
    import shutil

    from seqablate import folders
    from seqablate.config import DataConfig
    from seqablate.data.layouts import discover
    from seqablate.data.nnunet import PREPROCESSED, RAW, dataset_folder_name, export_nnunet
    from seqablate.evaluation.splits import same_cohort, study_source
    from seqablate.sequences import validate_sequences

    kind, out, cohort_dir = "nnunet-export", Path(args.out).resolve(), Path(args.cohort).resolve()
    # Refuse a bad OUT before reading anything; --overwrite deletes only an earlier export.
    if args.overwrite:
        folders.check_removable(out, kind, flag="--overwrite")
    elif out.is_dir() and folders.marker_kind(out) == kind:
        raise folders.OutputRefused(f"OUT {out}: holds an earlier nnU-Net export; --overwrite replaces it")
    else:
        folders.check_replaceable(out, kind, flag="OUT")
    folder = dataset_folder_name(args.dataset_id, args.dataset_name or cohort_dir.name)
    source = study_source(args.study, tracking_uri=args.tracking_uri) if args.study else None
    data = source.config.data if source is not None and source.config is not None else DataConfig()
    cohort = discover(cohort_dir, args.layout,
                      lesion_labels=args.lesion_labels or data.lesion_labels,
                      default_spacing=args.spacing or data.default_spacing,
                      aliases={**data.aliases, **parse_aliases(args.alias)})
    for note in cohort.notes:
        print(note, file=sys.stderr)
    if args.sequences:
        sequences: list[str] | None = list(validate_sequences(args.sequences))
    elif source is not None:
        sequences = list(source.split.sequences or (source.config.data.sequences if source.config else [])) or None
    else:
        sequences = None
    if source is not None and source.split.cohort and not same_cohort(source.split.cohort, cohort.root):
        print(f"note: {source.split.source} was trained on {source.split.cohort}, not {cohort.root}; its patient "
              "ids are looked up in this cohort", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / folders.temp_name(out.name)  # the export appears at OUT whole, or not at all
    tmp.mkdir()
    try:
        exp = export_nnunet(cohort, tmp, dataset_id=args.dataset_id, name=folder.split("_", 1)[1],
                            sequences=sequences, split=source.split.as_dict() if source else None,
                            source=source.split.source if source else None,
                            progress=lambda pid: print(f"  {pid}", file=sys.stderr) if sys.stderr.isatty() else None)
        folders.replace_own_dir(tmp, out, kind, flag="OUT")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for note in exp.notes:
        print(f"note: {note}", file=sys.stderr)
    raw, pre = out / RAW, out / PREPROCESSED
    print(f"nnU-Net v2 dataset {folder} in {raw}: {len(exp.train) + len(exp.val)} training cases (imagesTr), "
          f"{len(exp.test)} test cases with labels (imagesTs, labelsTs), {len(exp.unlabelled)} unlabelled (imagesTs)")
    if source is not None:
        print(f"split of {source.split.source}: {pre / folder / 'splits_final.json'} (fold 0: "
              f"{len(exp.train)} train, {len(exp.val)} val)")
    print(f"\nexport nnUNet_raw={raw} nnUNet_preprocessed={pre} nnUNet_results={out / 'nnUNet_results'}\n"
          f"nnUNetv2_plan_and_preprocess -d {args.dataset_id} --verify_dataset_integrity\n"
          f"nnUNetv2_train {args.dataset_id} 2d {0 if source is not None else 'all'}\n"
          f"nnUNetv2_predict -d {args.dataset_id} -c 2d -f {0 if source is not None else 'all'} "
          f"-i {raw / folder / 'imagesTs'} -o PREDICTIONS\n"
          f"seqablate evaluate --predictions PREDICTIONS --cohort {cohort_dir} --name nnunet-2d"
          + (f" --study {args.study}" if args.study else ""))
    return 0


def _check_phantom_args(args: argparse.Namespace) -> None:
    """ValueError naming the option for phantom grid options that cannot work together or are out of range."""
    import math

    from seqablate.data.phantom import MAX_MISREGISTRATION_MM, MAX_SIZE, MIN_SIZE

    if args.mixed_scanner:
        given = [f for f, v in (("--voxel-mm", args.voxel_mm), ("--fov-mm", args.fov_mm), ("--shape", args.shape),
                                ("--small", args.small or None)) if v is not None]
        if given:
            raise ValueError(f"--mixed-scanner draws each patient's voxel size and FOV; it cannot be combined with "
                             f"{' or '.join(given)}")
    for flag, values in (("--voxel-mm", args.voxel_mm), ("--fov-mm", args.fov_mm)):
        if values is not None and not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"{flag} {' '.join(f'{v:g}' for v in values)}: sizes must be positive mm")
    m = args.misregistration_mm
    if m is not None and not (math.isfinite(m) and 0 <= m <= MAX_MISREGISTRATION_MM):
        raise ValueError(f"--misregistration-mm {m:g}: must be 0 to {MAX_MISREGISTRATION_MM:g} mm")
    if args.shape is not None and not MIN_SIZE <= min(args.shape) <= max(args.shape) <= MAX_SIZE:
        raise ValueError(f"--shape {' '.join(map(str, args.shape))}: each size must be {MIN_SIZE} to {MAX_SIZE} voxels")
    if args.voxel_mm is not None and args.fov_mm is not None:
        if args.shape is not None:
            raise ValueError("--shape, --voxel-mm and --fov-mm: give at most two (the third follows from them)")
        sizes = [round(f / v) for f, v in zip(args.fov_mm, args.voxel_mm, strict=True)]
        if not MIN_SIZE <= min(sizes) <= max(sizes) <= MAX_SIZE:
            raise ValueError(f"--fov-mm {' '.join(f'{v:g}' for v in args.fov_mm)} spans "
                             f"{' x '.join(map(str, sizes))} voxels of --voxel-mm "
                             f"{' '.join(f'{v:g}' for v in args.voxel_mm)}; it must span {MIN_SIZE} to {MAX_SIZE} "
                             "per axis")


def _phantom(args: argparse.Namespace) -> int:
    from seqablate.data.phantom import SCANNERS, make_phantom_cohort

    _check_phantom_args(args)
    out = make_phantom_cohort(
        args.out,
        site=args.site,
        patients=args.patients,
        seed=args.seed,
        shape=tuple(args.shape) if args.shape else None,
        small=args.small,
        overwrite=args.overwrite,
        progress=True,
        voxel_mm=tuple(args.voxel_mm) if args.voxel_mm else None,
        fov_mm=tuple(args.fov_mm) if args.fov_mm else None,
        scanners=SCANNERS[args.site] if args.mixed_scanner else None,
        misregistration_mm=args.misregistration_mm,
    )
    meta = json.loads((out / "phantom.json").read_text())
    if meta.get("scanners"):
        grid = "mixed scanners"
    else:
        grid = f"{' x '.join(map(str, meta['shape']))} voxels of {' x '.join(f'{v:g}' for v in meta['spacing_mm'])} mm"
    print(f"phantom cohort ({args.site}, {args.patients} patients, seed {args.seed}, {grid}) at {out}")
    return 0
