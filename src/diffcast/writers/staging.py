"""Staged output: a forecast's files appear together or not at all.

Writers write into the temporary folder that :func:`staged_output` yields; the
folder is published (renamed) only when every file is written, so an error or an
interrupt leaves no partial output. Used by ``diffcast nowcast`` and the
``--watch`` loop (:mod:`diffcast.streaming`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def replace_entry(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst``; a folder (a Zarr store) replaces an existing one too.

    ``os.replace`` cannot replace a non-empty folder: the old one is renamed aside
    first and removed after, so ``dst`` is always either the old or the new store.
    """
    if src.is_dir() and dst.is_dir() and not dst.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.parent))
        os.replace(dst, old / dst.name)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(old / dst.name, dst)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike[str]) -> Any:
    """Yield a temporary folder beside ``out_dir``; publish its files on success.

    On success the temporary folder is renamed to ``out_dir`` (or, when
    ``out_dir`` exists, each file is moved into it with an atomic rename). On any
    error the temporary folder is removed, so no partial output remains. A second
    process staging into the same ``out_dir`` meanwhile gets
    :class:`~diffcast.utils.io.BusyError` (lock file ``.NAME.lock`` beside it).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    parent = out.resolve().parent
    from ..utils.io import ensure_writable_dir

    ensure_writable_dir(parent)
    from ..utils.io import exclusive_lock

    # One writer per output: a second nowcast into the same folder refuses before any work,
    # instead of the two interleaving their files (the lock goes with the process, even on SIGKILL).
    with exclusive_lock(parent / f".{out.name}.lock", f"output {out}"):
        yield from _stage(out, parent)


def _stage(out: Path, parent: Path) -> Any:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=parent))
    try:
        yield tmp
        # mkdtemp/mkstemp create owner-only entries; give the outputs the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        if not out.exists():
            os.rename(tmp, out)
        else:
            for f in tmp.iterdir():
                replace_entry(f, out / f.name)
            tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
