"""Atomic file writing: a killed process never leaves a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same folder so the final ``os.replace`` is
    atomic on POSIX file systems. On any exception the temporary file is removed
    and ``path`` is left untouched.

    Parameters
    ----------
    path : path-like
        Final destination.
    suffix : str, optional
        Suffix of the temporary name (some writers choose the format from it);
        defaults to the suffix of ``path``.
    """
    path = Path(path)
    folder = path.parent
    if not folder.exists():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.tmp.", suffix=path.suffix if suffix is None else suffix, dir=folder
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates owner-only files; give the result the permissions open() would.
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be written in it.

    Raises
    ------
    PermissionError
        If the folder cannot be created or written to.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"cannot write to output folder {path}: {exc.strerror or exc}") from exc
    return path


class BusyError(RuntimeError):
    """Another process holds the lock of a run folder or output (:func:`exclusive_lock`)."""


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold an exclusive, non-blocking ``flock`` on ``lock_file`` for the block.

    The file holds the owner's PID and is removed when the block ends. The kernel
    releases the lock when the process ends, however it ends (SIGKILL included), so
    a crashed run never blocks the next one (its empty or stale file is simply locked
    again). Raises :class:`BusyError` naming ``what`` and the holder's PID while
    another process holds it. Where ``flock`` does not exist (Windows) the block runs
    unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield Path(lock_file)
        return
    path = Path(lock_file)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise BusyError(f"{what} is in use by another process (pid {holder}; lock {path})") from None
        try:  # the holder before us may have removed the file between our open and flock: lock the current one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still holding the lock: nobody can take this inode after us
        os.close(fd)
