"""Atomic writes: all or nothing, and ordinary file permissions."""

import os
import stat

import pytest

from gknet.atomic import atomic_path, write_atomic


def test_write_replaces_and_respects_umask(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    old_umask = os.umask(0o022)
    try:
        write_atomic(target, "new é\r\n")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == "new é\r\n".encode()
    # mkstemp creates 0600 files: outputs must be readable like any other file.
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError), atomic_path(target, durable=True) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
