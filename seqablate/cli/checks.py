"""Checks of command-line arguments that need no heavy import.

``evaluate`` and ``predict`` import torch, MLflow and (for evaluation) Ray's neighbours before
they do anything: seconds on a laptop, tens of seconds on a loaded machine. A mistyped flag
must not wait for that, so these checks run first and use only the standard library and
seqablate's light modules (``folders``, ``sequences``, ``data.layouts``). They repeat nothing
the commands would not check later; they only answer sooner. Each raises ValueError naming
the flag and the value (the CLI prints it and exits 2).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

#: What ``tracking.download_model`` accepts besides an existing path (kept in step with it;
#: importing it would import MLflow).
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_RUNS_URI = re.compile(r"^runs:/[0-9a-f]{32}(?:/.*)?$")
_MODELS_URI = re.compile(r"^models:/[^/]+/.+$")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--steps 0`` is a mistake, not 'the default')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def check_model_ref(ref: str, flag: str = "--model") -> None:
    """An existing path, a run id, ``runs:/<id>[/path]`` or ``models:/<name>/<version>``."""
    if Path(ref).exists() or _RUN_ID.match(ref) or _RUNS_URI.match(ref) or _MODELS_URI.match(ref):
        return
    raise ValueError(f"{flag} {ref!r}: not an existing path, an MLflow run id, runs:/<run id>/model or "
                     "models:/<name>/<version>")


def check_folder(path: str, flag: str) -> Path:
    """``path`` exists and is a folder."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"{flag} {p}: {'not a folder' if p.exists() else 'no such folder'}")
    return p


def check_sequences(names: list[str] | None, flag: str = "--sequences") -> None:
    """Known sequence names (canonical or aliases), none twice."""
    if not names:
        return
    from seqablate.sequences import validate_sequences

    try:
        validate_sequences(names)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def check_external(values: list[str] | None) -> None:
    """``--external NAME=PATH`` values: well formed, PATH a folder."""
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--external {v!r}: expected NAME=PATH (e.g. oslo=/data/oslo)")
        check_folder(path, f"--external {name}=")


def check_masks(cohort: Path, layout: str, aliases: dict[str, str] | None = None) -> None:
    """ValueError when no patient of ``cohort`` has a lesion mask file. Discovery reads names,
    not voxels; a cohort it cannot read is left to the command (which knows the model's
    label rules) to report."""
    from seqablate.data.errors import DataError
    from seqablate.data.layouts import discover

    try:
        found = discover(cohort, layout, aliases=aliases)
    except DataError:
        return
    if not any(p.labelled for p in found.patients):
        raise ValueError(f"--cohort {cohort}: no labelled patient (no lesion masks) among its "
                         f"{len(found.patients)} patients; evaluate needs masks")


def check_evaluate_args(args: Any) -> None:
    """``seqablate evaluate``'s flags, before anything heavy is imported."""
    from seqablate import folders

    cohort = check_folder(args.cohort, "--cohort")
    if getattr(args, "model", None):
        check_model_ref(args.model)
    if getattr(args, "predictions", None):
        check_folder(args.predictions, "--predictions")
    check_sequences(args.sequences)
    if args.bootstrap is not None and args.bootstrap < 0:
        raise ValueError(f"--bootstrap {args.bootstrap}: must be 0 (no intervals) or more resamples")
    check_external(args.external)
    out = Path(args.out) if args.out is not None else Path.cwd() / "seqablate-evaluations" / cohort.resolve().name
    folders.check_replaceable(out, "evaluate", flag="--out")
    aliases = None
    if getattr(args, "alias", None):
        from seqablate.cli.data import parse_aliases

        aliases = parse_aliases(args.alias)
    check_masks(cohort, args.layout, aliases)


def check_predict_args(args: Any) -> None:
    """``seqablate predict``'s flags, before anything heavy is imported; see
    :func:`check_predict_out` for ``--out``."""
    check_model_ref(args.model)
    patient = check_folder(args.input, "--input")
    check_sequences(args.sequences)
    check_predict_out(Path(args.out), patient)


def check_predict_out(out: Path, patient: Path) -> None:
    """``predict --out``: :func:`seqablate.evaluation.predict.check_out` (that module imports
    numpy and the config, not torch)."""
    from seqablate.evaluation.predict import check_out

    check_out(out, patient)
