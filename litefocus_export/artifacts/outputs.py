"""Writing results without ever losing a user's file (torch-free).

- Folders (exports, engine folders) are written into a hidden ``.NAME.partial-*`` folder beside the
  destination and renamed into place, under a lock (in ``$LITEFOCUS_CACHE/locks``) so two writers of one
  destination take turns. A folder already there is replaced only when its manifest says it is ours (an export or engine
  folder) or it is empty, or with ``force``; a symbolic link is never replaced. Partial folders that a killed
  process left are removed by the next writer of the same destination (it holds the lock, so nobody else
  is writing them).
- Files (WAVs): a regular file or a new path is written to a hidden temp file beside it and renamed into
  place; ``-`` is standard output; a character device or a FIFO is written through (opened and written,
  never replaced); anything else (a folder, a socket, a symbolic link) is refused.
- What this creates gets the permissions the umask gives (not ``mkstemp``'s 0600 / ``mkdtemp``'s 0700).
- Every check runs before any work: ``check_output_folder`` / ``check_output_file`` raise a one-line
  ``UsageError``.
- A stop request (the CLI's SIGTERM handler, :func:`request_termination`) is remembered as well as raised: a
  ``SystemExit`` raised while Python runs a destructor or a callback is printed and dropped, so nothing is renamed
  into place after one (:func:`check_not_terminated`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

from ..core.errors import UsageError

log = logging.getLogger(__name__)
OURS = ("export", "engine")  # manifest kinds this tool writes, so may replace
PARTIAL = "partial"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: Path, *, folder: bool) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666 / 0777 less the umask)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _hidden(target: Path, tag: str) -> str:
    return f".{target.name}.{tag}"


def is_ours(folder: Path, kinds: tuple[str, ...] = OURS) -> bool:
    """Whether ``folder`` holds a manifest of one of ``kinds`` (not a hash check: whose folder it is)."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") in kinds


def _writable_parent(path: Path, what: str) -> None:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {what} {path}: {parent} exists and is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: {parent} is not writable")


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """A folder files may be added to (it exists as a folder, or can be made): a one-line error otherwise."""
    if not str(folder):
        raise UsageError("the output folder is an empty path")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"cannot write to {path}: it exists and is not a folder")
    _writable_parent(path, "to")
    return path


def check_output_folder(out_dir: str | os.PathLike, *, force: bool = False, kinds: tuple[str, ...] = OURS) -> Path:
    """The folder a result may be written to, checked before any work (one-line ``UsageError`` otherwise).

    Refused: an empty path, the current folder or one of its parents, a symbolic link, a file, and a
    non-empty folder that is not one of ours (``kinds``) unless ``force``.
    """
    if not str(out_dir):
        raise UsageError("the output folder is an empty path")
    path = Path(out_dir)
    resolved = path.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise UsageError(f"cannot write into {str(out_dir)!r}: it is the current folder or one of its parents; "
                         f"give a new folder name")
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link: give the folder it points to, or a new name")
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"cannot write to {path}: it exists and is not a folder")
        if not force and any(path.iterdir()) and not is_ours(path, kinds):
            raise UsageError(f"{path} holds files that are not a litefocus-export {' or '.join(kinds)} folder; "
                             f"choose another output folder (or pass --force to replace it)")
    _writable_parent(path, "to")
    return path


_HELD: dict[tuple[str, int], int] = {}  # (lock file, thread) held, with their depth: path_lock is re-entrant
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def path_lock(target: Path) -> Iterator[None]:
    """Hold a lock on ``target`` while writing it; a second writer waits its turn (and says so).

    The lock files live in the cache (``$LITEFOCUS_CACHE/locks``), named by the target's absolute path, so
    nothing is left beside a user's file. Re-entrant within a process (a cache entry's lock is held around
    the export that writes it).
    """
    import fcntl
    import hashlib

    from .cache import cache_root

    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = str(locks / f"{hashlib.sha256(str(Path(target).resolve()).encode()).hexdigest()[:24]}.lock")
    key = (lock, threading.get_ident())  # another thread of this process waits like another process
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key] += 1
            held = True
        else:
            held = False
    if held:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another litefocus-export process writing %s ...", target)
            fcntl.flock(handle, fcntl.LOCK_EX)
        with _HELD_GUARD:
            _HELD[key] = 1
        try:
            yield
        finally:
            with _HELD_GUARD:
                del _HELD[key]
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_partials(target: Path) -> None:
    """Remove what a killed writer of ``target`` left beside it (call with ``path_lock(target)`` held)."""
    for leftover in target.parent.glob(_hidden(target, f"{PARTIAL}-*")):
        log.info("removing %s, left by an interrupted run", leftover.name)
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def partial_folder(target: Path) -> Path:
    """A new hidden folder beside ``target`` to build it in (call with ``path_lock(target)`` held)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_hidden(target, f"{PARTIAL}-"), dir=target.parent))
    follow_umask(tmp, folder=True)
    return tmp


def replace_folder(tmp: Path, out_dir: Path, *, force: bool = False, kinds: tuple[str, ...] = OURS) -> None:
    """Move a finished folder into place (with ``path_lock(out_dir)`` held).

    An earlier folder there is swapped out, then deleted, only after checking again that it may be replaced.
    """
    check_output_folder(out_dir, force=force, kinds=kinds)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(_hidden(out_dir, f"{PARTIAL}-old-{os.getpid()}"))
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_terminated_by: int | None = None  # the signal that asked this process to stop


def request_termination(signum: int) -> NoReturn:
    """Remember that signal ``signum`` asked this process to stop, and unwind (``SystemExit(128 + signum)``)."""
    global _terminated_by
    _terminated_by = signum
    raise SystemExit(128 + signum)


def check_not_terminated() -> None:
    """``SystemExit`` again if a stop was requested: its first one may have been dropped (module docstring)."""
    if _terminated_by is not None:
        raise SystemExit(128 + _terminated_by)


@contextlib.contextmanager
def staged_folder(target: Path, *, force: bool = False, kinds: tuple[str, ...] = OURS) -> Iterator[Path]:
    """Build ``target`` in a partial folder and rename it into place when the block ends without error.

    On any error (a SIGTERM included, which the CLI turns into ``SystemExit``) the partial folder is removed
    and ``target`` is left as it was. Call with ``path_lock(target)`` held.
    """
    remove_stale_partials(target)
    tmp = partial_folder(target)
    try:
        yield tmp
        check_not_terminated()
        replace_folder(tmp, target, force=force, kinds=kinds)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- files ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputFile:
    """Where a file result goes: ``kind`` says how it is written (see the module docstring)."""

    path: Path | None  # None: standard output
    kind: Literal["stdout", "file", "stream"]

    def __str__(self) -> str:
        return "standard output" if self.path is None else str(self.path)


def check_output_file(path: str | os.PathLike) -> OutputFile:
    """How a file result can be written to ``path``, checked before any work (one-line ``UsageError``)."""
    if str(path) == "-":
        return OutputFile(None, "stdout")
    if not str(path):
        raise UsageError("the output file is an empty path")
    target = Path(path)
    if target.is_symlink():
        raise UsageError(f"{target} is a symbolic link: give the file it points to, or a new name")
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise UsageError(f"output {target} is a folder, not a file name")
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            if not os.access(target, os.W_OK):
                raise UsageError(f"cannot write to {target}: not writable")
            return OutputFile(target, "stream")
        if not stat.S_ISREG(mode):
            raise UsageError(f"cannot write to {target}: not a regular file, a character device or a FIFO")
    if not target.parent.is_dir():
        raise UsageError(f"output folder does not exist: {target.parent}")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {target.parent}: not writable")
    return OutputFile(target, "file")


def write_output(output: OutputFile, data: bytes) -> None:
    """Write ``data`` where ``output`` says: stdout, through a device/FIFO, or a temp file renamed into place."""
    if output.kind == "stdout":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    assert output.path is not None
    if output.kind == "stream":
        with open(output.path, "wb") as handle:
            handle.write(data)
        return
    target = output.path
    with path_lock(target):
        remove_stale_partials(target)
        fd, name = tempfile.mkstemp(prefix=_hidden(target, f"{PARTIAL}-"), dir=target.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            follow_umask(tmp, folder=False)
            check_not_terminated()
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
