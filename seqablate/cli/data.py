"""CLI: ``seqablate cohort inspect PATH`` and ``seqablate phantom OUT``."""

from __future__ import annotations

import argparse
import json
import sys

from seqablate.data.layouts import LAYOUTS


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
    ins.set_defaults(func=_inspect)
    cohort.set_defaults(func=lambda args: (cohort.print_help(), 2)[1])

    ph = subparsers.add_parser(
        "phantom",
        help="write a synthetic multi-sequence metastasis cohort (nifti layout)",
        description="Synthetic cohort on nilearn's bundled MNI152 anatomy. Site 'stanford': "
        "4 sequences; 'oslo': no t1_gre_post, larger lesions, two patients without t1_fse_pre.",
    )
    ph.add_argument("out", help="output folder (reused if it already holds the same phantom)")
    ph.add_argument("--site", default="stanford", choices=["stanford", "oslo"])
    ph.add_argument("--patients", type=int, default=8)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--small", action="store_true", help="64x64x32 volumes (tests, demo)")
    ph.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="volume shape (default 128 128 64)")
    ph.add_argument("--overwrite", action="store_true", help="replace a different cohort at OUT")
    ph.set_defaults(func=_phantom)


def _inspect(args: argparse.Namespace) -> int:
    from seqablate.data.inspection import format_report, inspect_cohort

    report = inspect_cohort(
        args.path,
        args.layout,
        lesion_labels=args.lesion_labels,
        default_spacing=args.spacing,
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_report(report))
    return 0 if report.usable else 2


def _phantom(args: argparse.Namespace) -> int:
    from seqablate.data.phantom import make_phantom_cohort

    out = make_phantom_cohort(
        args.out,
        site=args.site,
        patients=args.patients,
        seed=args.seed,
        shape=tuple(args.shape) if args.shape else None,
        small=args.small,
        overwrite=args.overwrite,
        progress=True,
    )
    print(f"phantom cohort ({args.site}, {args.patients} patients, seed {args.seed}) at {out}")
    return 0
