"""Folders seqablate creates: the ownership marker, refusal rules, atomic writes, temp sweeping.

seqablate never deletes or replaces anything it did not create. Every output folder it makes
(a study, a training run, a report, a demo, a phantom cohort, a prediction) holds a small
marker file, ``.seqablate``, naming what kind of folder it is. Before writing into a path, a
command asks :func:`claim`:

- the path does not exist, or is an empty folder: it is created and marked;
- it is a folder marked with the same kind: it is the command's own, and the command decides
  (resume, replace its own files, or, with ``--overwrite``, delete and start afresh);
- anything else (a file, a foreign folder, a folder of another kind): :class:`OutputRefused`
  naming the path, what is there, and what to do instead.

Temporary files and folders carry the creating process id in their names
(:func:`temp_name`), so a later run can remove those whose process is gone
(:func:`sweep_temp`) instead of leaving them forever after a ``kill -9``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

#: Name of the marker file inside every folder seqablate creates.
MARKER = ".seqablate"

#: Folder kinds (the marker's ``kind``).
KINDS = ("study", "train", "report", "demo", "phantom", "predict", "evaluate", "nnunet-export")


class OutputRefused(ValueError):
    """A path seqablate will not write into or replace; the message says why and what to do."""


class FolderBusy(OutputRefused):
    """Another live seqablate process is writing into the folder (it holds the folder's lock)."""


def user_cache_dir() -> Path:
    """seqablate's per-user cache: ``$SEQABLATE_CACHE``, else ``~/.cache/seqablate``."""
    return Path(os.environ.get("SEQABLATE_CACHE") or Path.home() / ".cache" / "seqablate").expanduser()


def check_writable(path: str | Path, *, flag: str = "--out") -> None:
    """Raise :class:`OutputRefused` when ``path`` could not be created or written into: one of
    its parents is a file, or the folder (``path`` itself if it exists, else its nearest
    existing parent) is read-only.

    ``os.access`` is the test (also for root, it says False on a read-only mount), so a
    command refuses before any slow work instead of failing at its first write.
    """
    path = Path(path)
    above = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
    if above is None:
        return
    if above != path and not above.is_dir():
        raise OutputRefused(f"{flag} {path}: a parent of this path is a file, not a folder ({above})")
    if above.is_dir() and not os.access(above, os.W_OK | os.X_OK):
        what = "is read-only" if above == path else f"cannot be created: {above} is read-only"
        raise OutputRefused(f"{flag} {path}: {what} (no permission to write there, or a read-only file "
                            f"system); choose another {flag}")


def marker_kind(folder: str | Path) -> str | None:
    """The kind recorded in ``folder``'s marker, or None (no marker, unreadable, or not a dir)."""
    p = Path(folder) / MARKER
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def mark(folder: str | Path, kind: str) -> None:
    """Write ``folder``'s marker (atomically); ``folder`` must exist."""
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}; known: {list(KINDS)}")
    folder = Path(folder)
    payload = {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname()}
    write_text_atomic(folder / MARKER, json.dumps(payload) + "\n")


def _is_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def describe(path: Path) -> str:
    """What is at ``path``, for messages ('a file', 'a folder of 3 entries', ...)."""
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link"
    if path.is_file():
        return "a file"
    if path.is_dir():
        kind = marker_kind(path)
        if kind is not None:
            return f"a seqablate {kind} folder"
        n = sum(1 for _ in path.iterdir())
        return f"a folder of {n} entr{'y' if n == 1 else 'ies'} that seqablate did not create"
    return "something that is neither a file nor a folder"


def claim(path: str | Path, kind: str, *, flag: str = "--out") -> bool:
    """Make ``path`` a marked ``kind`` folder, or confirm it already is one.

    Returns True when ``path`` already was a ``kind`` folder (the caller's own output from an
    earlier run), False when it was created (or was an empty folder) now. Raises
    :class:`OutputRefused` for a file, a non-empty folder seqablate did not create, or a
    folder of another kind; ``flag`` names the option that chose the path, for the message.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if path.is_dir() and marker_kind(path) == kind:
            check_writable(path, flag=flag)
            return True
        if _is_empty_dir(path):
            check_writable(path, flag=flag)
            mark(path, kind)
            return False
        raise OutputRefused(
            f"{flag} {path}: {describe(path)} is already there; seqablate writes only into new "
            f"or empty folders or its own {kind} folders, and never replaces anything else. "
            f"Choose another {flag}"
        )
    check_writable(path, flag=flag)
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return claim(path, kind, flag=flag)  # created meanwhile: judge what is there now
    except NotADirectoryError:
        raise OutputRefused(f"{flag} {path}: a parent of this path is a file, not a folder") from None
    mark(path, kind)
    return False


def check_removable(path: str | Path, kind: str, *, flag: str = "--overwrite") -> bool:
    """Whether :func:`remove_own` has something to delete at ``path`` (a marked ``kind``
    folder); False for a missing path or an empty folder. Anything else raises
    :class:`OutputRefused`: ``flag`` deletes only what seqablate made."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return False  # nothing to delete, and claim() takes it as it is
    if not (path.is_dir() and not path.is_symlink() and marker_kind(path) == kind):
        raise OutputRefused(
            f"{flag}: {path} is {describe(path)}; {flag} deletes only {kind} folders that "
            "seqablate created (they hold a .seqablate marker). Choose another output path"
        )
    return True


def remove_own(path: str | Path, kind: str, *, flag: str = "--overwrite") -> None:
    """Delete ``path`` if (and only if) it is a marked ``kind`` folder (:func:`check_removable`)."""
    path = Path(path)
    if not check_removable(path, kind, flag=flag):
        return
    trash = path.with_name(temp_name(f"trash-{path.name}"))
    os.replace(path, trash)  # the path is gone at once; the slow delete follows
    shutil.rmtree(trash, ignore_errors=True)


def check_replaceable(path: str | Path, kind: str, *, flag: str = "--out") -> None:
    """Raise :class:`OutputRefused` unless ``path`` is missing, an empty folder, or a marked
    ``kind`` folder (what :func:`replace_own_dir` may replace), and can be written
    (:func:`check_writable`: no parent is a file, nothing read-only). Lets a command refuse
    before it does slow work."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        check_writable(path, flag=flag)  # a parent that is a file, a read-only folder
        return
    if path.is_dir() and not path.is_symlink() and (marker_kind(path) == kind or _is_empty_dir(path)):
        check_writable(path, flag=flag)
        return
    raise OutputRefused(
        f"{flag} {path}: {describe(path)} is already there; seqablate replaces only its own "
        f"{kind} folders. Choose another {flag}"
    )


def replace_own_dir(src: Path, dst: Path, kind: str, *, flag: str = "--out") -> None:
    """Move the finished folder ``src`` to ``dst``, replacing ``dst`` only if it is ours.

    ``dst`` may be missing, an empty folder, or a marked ``kind`` folder (swapped out in one
    rename, then deleted); anything else raises :class:`OutputRefused` and ``src`` is left.
    ``src`` is marked ``kind`` first.
    """
    check_replaceable(dst, kind, flag=flag)
    mark(src, kind)
    if dst.is_dir() and marker_kind(dst) == kind:
        old = dst.with_name(temp_name(f"old-{dst.name}"))
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(old, dst)  # the previous folder goes back where it was
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)  # rename(2) replaces an empty folder


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and one rename (never half a file)."""
    path = Path(path)
    tmp = path.with_name(temp_name(path.name))  # a leftover of a killed process is swept
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ------------------------------------------------------------------------------- folder locks

#: Lock file inside a folder a command writes into for a long time (a train run, a study).
LOCK = ".seqablate.lock"

#: Folders this process holds the lock of: (st_dev, st_ino) -> (open lock file, depth).
_HELD: dict[tuple[int, int], list] = {}  # type: ignore[type-arg]


def _holder(lock_file: Path) -> str:
    """Who holds a lock, from what the holder wrote into the lock file."""
    try:
        info = json.loads(lock_file.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another seqablate process (it has not recorded its id yet)"
    since = f", since {info['since']}" if info.get("since") else ""
    command = f": {info['command']}" if info.get("command") else ""
    return f"seqablate process {info['pid']} on host {info.get('host', '?')}{since}{command}"


@contextlib.contextmanager
def locked(folder: str | Path, *, flag: str = "--out") -> Iterator[None]:
    """Hold ``folder``'s lock for the block: an exclusive ``fcntl.flock`` on
    ``folder/.seqablate.lock``, which records this process (pid, host, start, command).

    A second process asking for a held lock gets :class:`FolderBusy` at once, naming the
    holder's pid and host (two ``train`` runs into one ``--out``, two studies into one
    ``--storage`` would otherwise overwrite each other's checkpoints and runs). The kernel
    drops the lock when the holder exits, however it exits (``kill -9`` too), so a lock file
    left behind never blocks anyone; it is never deleted (deleting a lock file races with a
    process about to take it). Within one process the lock is re-entrant. Where ``fcntl`` is
    missing (Windows) or the file system does not support ``flock``, nothing is locked.
    ``folder`` must exist.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(folder)
    st = folder.stat()
    key = (st.st_dev, st.st_ino)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    path = folder / LOCK
    fh = open(path, "a+")  # noqa: SIM115 - held open for the whole block
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(
                f"{flag} {folder}: in use by {_holder(path)}; wait for it to finish (or stop it), "
                f"or choose another {flag}"
            ) from None
        except OSError as err:  # no flock on this file system (some network mounts): go on
            print(f"{folder}: cannot lock it ({err}); nothing stops a second process from writing "
                  "into it at the same time", file=sys.stderr)
            yield
            return
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "command": " ".join(sys.argv)[:300]}) + "\n")
        fh.flush()
        _HELD[key] = [fh, 1]
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


# ------------------------------------------------------------------------------- temp files

_TEMP = ".tmp-"


def _host() -> str:
    """This host, as 12 hex digits of a hash of its full name: pod names on one cluster share
    long prefixes, so a truncated name could make another node's live temp entries look like
    this node's, with a dead process id."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:12]


def temp_name(stem: str) -> str:
    """A hidden temp name that records this process: ``.tmp-<stem>-<host>-<pid>-<rand>``."""
    return f"{_TEMP}{stem}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_TEMP_RE = re.compile(r"^\.tmp-.+-(?P<host>[^-]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of a name made by :func:`temp_name`; None for any other name."""
    m = _TEMP_RE.match(name)
    return (m["host"], int(m["pid"])) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temp(folder: str | Path, *, max_age_s: float = 24 * 3600.0) -> list[Path]:
    """Remove seqablate temp entries in ``folder`` whose creating process is gone.

    Only names :func:`temp_name` makes are considered. One made on this host is removed when
    its process id is no longer running; one made elsewhere (a shared file system) only when
    older than ``max_age_s``. Returns what was removed. Errors are ignored: housekeeping.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.glob(f"{_TEMP}*"))
    except OSError:
        return removed
    host = _host()
    now = time.time()
    for p in entries:
        owner = _owner(p.name)
        if owner is None:
            continue  # not a name seqablate makes: never touched
        try:
            stale = not _alive(owner[1]) if owner[0] == host else now - p.lstat().st_mtime > max_age_s
            if not stale:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed
