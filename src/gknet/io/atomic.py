"""Atomic file writes: readers, and runs killed mid-write, never see a half-written file.

A write goes to a hidden temporary ``.NAME.<12 hex digits>.tmp`` beside the target and is
renamed over it when complete. A run killed before the rename leaves that temporary behind;
:func:`remove_stale_temporaries` lets the next run that writes there delete it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from gknet.errors import GknetError

NAME_MAX = 255  # bytes in one file name (ext4, XFS, APFS, NTFS)
_SUFFIX_BYTES = len(".0123456789ab.tmp")
_TEMPORARY = re.compile(r"\.(?P<prefix>.+)\.[0-9a-f]{12}\.tmp", re.DOTALL)


def _prefix(name: str) -> str:
    """``name`` as its temporaries carry it: cut short so that the temporary's name stays valid."""
    encoded = os.fsencode(name)
    room = NAME_MAX - 1 - _SUFFIX_BYTES
    return name if len(encoded) <= room else os.fsdecode(encoded[:room])


def temporary_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path`` (not created)."""
    path = Path(path)
    return path.parent / f".{_prefix(path.name)}.{secrets.token_hex(6)}.tmp"


def _create(tmp: Path) -> None:
    """Create the empty file ``tmp`` (FileExistsError if taken) with mode 0666, so that the kernel
    applies the umask as for any ``open()`` (tempfile.mkstemp would make it private, 0600)."""
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def remove_stale_temporaries(
    folder: str | Path, names: Iterable[str] | None = None, older_than_s: float = 0.0
) -> int:
    """Delete the temporaries that killed runs left in ``folder``: those of the targets ``names``,
    or every one of ours when None. Returns how many were removed.

    Only for outputs this process is about to write: a live writer's temporary would go too,
    unless ``older_than_s`` spares those modified within that many seconds (for folders that
    several processes write, such as the studio's cache).
    """
    prefixes = None if names is None else {_prefix(name) for name in names}
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no folder yet, or none we may list: nothing of ours to clean
        return 0
    removed, now = 0, time.time()
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        ours = match and (prefixes is None or match["prefix"] in prefixes)
        if ours and older_than_s:
            with suppress(OSError):
                ours = now - entry.stat(follow_symlinks=False).st_mtime > older_than_s
        if ours and entry.is_file(follow_symlinks=False):
            with suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed


def check_writable(path: str | Path) -> None:
    """GknetError unless a file can be created at ``path``.

    Tries it: a temporary is created (and removed) in ``path``'s folder, or in the nearest
    existing folder above it when the folders are still to be made. Callers with slow work
    ahead call this first, so that the work is not done for nothing. The probe may vanish
    before it is removed (another process cleaning that folder's stale temporaries, e.g. a
    shard of the same evaluation): it was created, which is all the check needs.
    """
    path = Path(path)
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        raise GknetError(f"cannot write {path}: the name {long[0][:40]!r}... is longer than {NAME_MAX} bytes")
    folder = path.parent
    try:
        while not folder.is_dir():
            if folder.exists():
                raise GknetError(f"cannot write {path}: {folder} is not a folder")
            folder = folder.parent
        probe = temporary_path(folder / path.name)
        _create(probe)
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise GknetError(f"cannot write {path}: {exc.strerror or exc}") from None


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; write it, and on success it replaces ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. ``durable``
    also flushes the file to disk before the rename (checkpoints: survive a power cut).
    """
    path = Path(path)
    tmp = None
    try:
        while tmp is None:
            # Named before it exists, so that an interrupt right after its creation cannot leak it.
            tmp = temporary_path(path)
            try:
                _create(tmp)
            except FileExistsError:
                tmp = None  # another writer's: draw another name
        yield str(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp is not None:
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
