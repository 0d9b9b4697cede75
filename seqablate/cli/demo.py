"""CLI: ``seqablate demo``."""

from __future__ import annotations

import argparse

from seqablate.cli.checks import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    de = subparsers.add_parser("demo", help="synthetic cohorts + a small dropout study + paper-style tables")
    de.add_argument("--out", default="demo-out")
    de.add_argument("--steps", type=positive_int, default=None, help="training steps per trial (default: the demo's)")
    de.add_argument("--seeds", type=positive_int, default=None,
                    help="seeds per arm (default 5, --smoke 3; below 5 the seed test of finding (d) cannot "
                         "reach its Holm level)")
    de.add_argument("--overwrite", action="store_true",
                    help="delete the demo already in --out (only if seqablate made it) and start afresh")
    de.add_argument("--verbose", action="store_true", help="show Ray's own output and Tune's status table")
    de.add_argument("--smoke", action="store_true",
                    help="small cohorts and tiny trials: the whole pipeline in minutes, numbers meaningless")
    de.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from seqablate.demo import run_demo

    return run_demo(args.out, steps=args.steps, seeds=args.seeds, overwrite=args.overwrite, verbose=args.verbose,
                    smoke=args.smoke)
