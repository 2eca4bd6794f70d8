"""Atomic writes: a file appears whole under its name, or not at all (the one helper every writer uses)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# The process's umask, read once at import (reading it means setting it, which is not thread-safe later).
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike):
    """Yield a temporary path beside ``dest``; when the block succeeds it replaces ``dest`` (``os.replace``,
    atomic on POSIX within one file system), when it raises it is removed and ``dest`` is untouched.

    The parent folder is created. The temporary name keeps ``dest``'s suffix (``.png`` for matplotlib).
    The file gets the mode a plain ``open(dest, "w")`` would (``0o666`` less the umask), not
    ``mkstemp``'s private ``0o600``: a results table is for colleagues to read.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically (:func:`atomic_path`); returns ``dest`` as a Path."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)
