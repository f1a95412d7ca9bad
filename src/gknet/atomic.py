"""Atomic file writes: readers, and runs killed mid-write, never see a half-written file."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _create_temporary(path: Path) -> Path:
    """A new empty file beside ``path``, created with mode 0666 so that the kernel applies the
    umask as for any ``open()`` (tempfile.mkstemp would make it private, 0600)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; write it, and on success it replaces ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. ``durable``
    also flushes the file to disk before the rename (checkpoints: survive a power cut).
    """
    path = Path(path)
    tmp = _create_temporary(path)
    try:
        yield str(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Replace ``path`` with ``data`` (text is written as UTF-8, line endings untouched)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def publish_copy(src: str | Path, dst: str | Path) -> Path:
    """Replace ``dst`` with a copy of ``src``: a hard link where the filesystem allows, else a copy."""
    with atomic_path(dst) as tmp:
        os.unlink(tmp)  # os.link needs a free name; the random one stays ours
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    return Path(dst)
