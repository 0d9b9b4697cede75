"""The one exception type of the data layer.

Every message names the file (or patient / folder) and the reason, so a user can fix the
input without a traceback; the CLI turns it into exit code 2 (it is a ``ValueError``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path


class DataError(ValueError):
    """Bad cohort input. ``problems`` lists every problem found (one line each)."""

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]


def combine(prefix: str, problems: Sequence[str]) -> DataError:
    """One :class:`DataError` reporting several problems at once."""
    if len(problems) == 1:
        return DataError(f"{prefix}: {problems[0]}", problems)
    body = "\n  ".join(problems)
    return DataError(f"{prefix}: {len(problems)} problems:\n  {body}", problems)


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path``, named like a sequence file, cannot be read as one, or None when it is a
    regular file (or a folder: a PNG series).

    A dangling symbolic link would otherwise vanish from the patient (the sequence taken as
    never acquired), and reading a FIFO blocks until something writes into it, forever.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{path}: broken symbolic link (points to {os.readlink(path)}, which does not exist)"
        return f"{path}: no such file"
    except OSError as err:
        return f"{path}: cannot be read ({err.strerror or err})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{path}: {kind}, not a regular file; seqablate reads image files only"
