"""Atomic writes: all or nothing, and ordinary file permissions."""

import os
import stat

import pytest

from gknet.atomic import atomic_path, publish_copy, write_atomic


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


def test_publish_copy_links_or_copies_and_replaces(tmp_path, monkeypatch):
    src, dst = tmp_path / "step_1.pt", tmp_path / "last.pt"
    src.write_bytes(b"state 1")
    dst.write_bytes(b"state 0")
    publish_copy(src, dst)
    assert dst.read_bytes() == b"state 1" and os.path.samefile(src, dst)  # a hard link here
    monkeypatch.setattr(os, "link", lambda *_: (_ for _ in ()).throw(OSError("no links here")))
    other = tmp_path / "step_2.pt"
    other.write_bytes(b"state 2")
    publish_copy(other, dst)
    assert dst.read_bytes() == b"state 2" and not os.path.samefile(other, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_1.pt", "step_2.pt"]
