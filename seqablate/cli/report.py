"""``seqablate report STUDY``: the study's tables, consistency and figures as Markdown + HTML."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a study's report (paper tables, consistency, figures) as HTML/Markdown",
        description=(
            "Read a study back from MLflow and write report.md and a self-contained report.html "
            "(figures embedded), then log them to the study's parent run. STUDY is a study folder "
            "(holding mlflow.db), an MLflow experiment name, or a parent (or trial) run id."
        ),
    )
    p.add_argument("study", metavar="STUDY", help="study folder, experiment name, or parent run id")
    p.add_argument("--out", metavar="DIR", help="report folder (default: STUDY/report for a folder, "
                   "else ./seqablate-reports/<study>); replaced as a whole")
    p.add_argument("--format", default="html,md", help="comma-separated: html, md (default: both)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study folder's "
                   "database, MLFLOW_TRACKING_URI, or ./seqablate-runs)")
    p.add_argument("--no-overlays", action="store_true",
                   help="skip the prediction overlays (they load the best models and the cohort)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_report)


def _running_trials(study: str, tracking_uri: str | None) -> tuple[list[str], int]:
    """(names of the study's trials still RUNNING in MLflow, number of trials); nothing when
    the study cannot be resolved (the report then says what was tried)."""
    from seqablate import tracking

    try:
        df = tracking.list_trials(study, tracking_uri=tracking_uri)
    except ValueError:
        return [], 0
    return [str(n) for n in df.loc[df["status"] == "RUNNING", "run_name"]], len(df)


def run_report(args: argparse.Namespace) -> int:
    """Write the report; a study whose trials are all still running is refused (its report
    would be empty), and one with some running reports the finished ones and names the rest."""
    import sys

    from seqablate.analysis.report import write_report

    formats = [f.strip() for f in str(args.format).split(",") if f.strip()]
    if args.out is not None:  # a bad --out is refused before the study's database is even opened
        from seqablate import folders

        folders.check_replaceable(args.out, "report", flag="--out")
    running, total = _running_trials(args.study, args.tracking_uri)
    shown = ", ".join(running[:10]) + (" ..." if len(running) > 10 else "")
    if running and len(running) == total:
        raise ValueError(
            f"study {args.study}: all {total} trial(s) are still running ({shown}), so there is nothing "
            "to report yet; run `seqablate report` again when they finish (if the study was killed, "
            "`seqablate study resume STUDY_FOLDER` finishes them)"
        )
    if running:
        print(f"{len(running)} of {total} trial(s) are still running and are left out of the report: {shown}",
              file=sys.stderr)
    res = write_report(
        args.study,
        out=args.out,
        formats=formats,
        tracking_uri=args.tracking_uri,
        progress=not args.quiet,
        overlays=not args.no_overlays,
        log=not args.no_log,
    )
    print(res.files[0])
    return 0
