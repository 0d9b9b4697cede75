"""The one exception type of the data layer.

Every message names the file (or patient / folder) and the reason, so a user can fix the
input without a traceback; the CLI turns it into exit code 2 (it is a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Sequence


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
