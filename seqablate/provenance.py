"""Where a result came from: the seqablate version and the git commit of the code that ran.

Light on purpose (no MLflow, no torch): ``seqablate --version`` and every tracking run read it.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from seqablate import __version__


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the working tree seqablate runs from; ``SEQABLATE_GIT_COMMIT`` wins.

    Ray's ``--working-dir`` ships no ``.git``, so a driver should set ``SEQABLATE_GIT_COMMIT``
    in the job's env; without either this returns ``'unknown'``. Uncommitted changes to tracked
    files of the package (``seqablate/``, what a run executes) add a ``+dirty`` suffix: the
    commit alone would not reproduce the run.
    """
    env = os.environ.get("SEQABLATE_GIT_COMMIT")
    if env:
        return env
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0 or not out.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def version_string() -> str:
    """``seqablate <version> (commit <12 hex>[+dirty])``."""
    commit = git_commit()
    short = commit if commit == "unknown" else commit.split("+")[0][:12] + ("+dirty" if commit.endswith("+dirty") else "")
    return f"seqablate {__version__} (commit {short})"
