"""The ``seqablate`` command.

Each module of this package registers its own sub-commands through a ``register(subparsers)``
function; this file only assembles them. Those modules import their heavy dependencies (torch,
Ray, MLflow) inside the command functions, so ``seqablate --help`` stays fast. The CLI is the
top layer: nothing else in seqablate imports it.

Every command returns an exit code; errors that are the user's (bad input, bad config) are
printed as one clear message and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

#: Modules that contribute sub-commands (each defines ``register(subparsers) -> None``).
COMMAND_MODULES: tuple[str, ...] = (
    "seqablate.cli.data",  # cohort inspect, phantom
    "seqablate.cli.train",  # train, study, predict, evaluate
    "seqablate.cli.report",  # report
    "seqablate.cli.demo",  # demo
)


class _VersionAction(argparse.Action):
    """``--version``: the version and commit (computed only when asked: it runs git)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and git commit, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from seqablate.provenance import version_string

        print(version_string())
        parser.exit()


#: Errors of writing that the user fixes (space, permissions, read-only mounts), not seqablate.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def describe_write_error(err: OSError) -> str:
    """One line for a failed write: the reason, the file, and what to do."""
    where = f" ({err.filename})" if err.filename else ""
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = ("free some space, or write elsewhere (--out, --storage, data.cache_dir / --cache-dir, "
                "--tracking-uri); files are written whole or not at all, so a rerun starts from what is complete")
    else:
        hint = "the path is read-only or not yours to write; choose a writable place for it"
    return f"{reason}{where}: {hint}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqablate",
        description="Ablation and hyperparameter studies of multi-sequence MRI segmentation networks.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from seqablate.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        # ValueError/FileNotFoundError raised by validation carry messages meant for users.
        print(f"seqablate {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A full disk or a path that cannot be written is the machine's state, not a bug:
        # say which file and what to do (writes are atomic, so nothing is left half-written).
        if err.errno not in _WRITE_ERRNOS:
            raise
        print(f"seqablate {args.command}: error: {describe_write_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
