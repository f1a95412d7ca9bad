"""Atomic writes: all or nothing, and ordinary file permissions."""

import os
import signal
import stat
import subprocess
import sys

import pytest

from gknet.errors import GknetError
from gknet.io import atomic
from gknet.io.atomic import (
    NAME_MAX,
    atomic_path,
    check_writable,
    publish_copy,
    remove_stale_temporaries,
    temporary_path,
    write_atomic,
)


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


def test_a_250_byte_name_is_written_although_its_temporary_would_be_longer(tmp_path):
    target = tmp_path / ("é" * 124 + "xy")  # 250 bytes: the name limit is 255
    assert len(os.fsencode(target.name)) == 250
    write_atomic(target, "data")
    assert target.read_text() == "data" and [p.name for p in tmp_path.iterdir()] == [target.name]
    tmp = temporary_path(target)
    assert len(os.fsencode(tmp.name)) <= NAME_MAX and tmp.parent == tmp_path


def test_stale_temporaries_of_the_named_targets_are_removed(tmp_path):
    long_name = "n" * 250
    stale = [temporary_path(tmp_path / name) for name in ("a.png", "a.png", long_name)]
    other = [temporary_path(tmp_path / "b.png"), tmp_path / ".a.png.notours.tmp", tmp_path / "a.png"]
    for path in stale + other:
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path, ["a.png", long_name]) == 3
    assert sorted(tmp_path.iterdir()) == sorted(other)
    assert remove_stale_temporaries(tmp_path) == 1  # every one of ours
    assert remove_stale_temporaries(tmp_path / "missing") == 0


def test_an_age_limit_spares_the_temporaries_of_live_writers(tmp_path):
    old, fresh = temporary_path(tmp_path / "a.png"), temporary_path(tmp_path / "b.png")
    for path in (old, fresh):
        path.write_bytes(b"partial")
    hours_ago = os.stat(old).st_mtime - 7200
    os.utime(old, (hours_ago, hours_ago))
    assert remove_stale_temporaries(tmp_path, older_than_s=3600) == 1
    assert list(tmp_path.iterdir()) == [fresh]


def test_check_writable_tries_the_location(tmp_path, readonly_dir):
    folder = tmp_path / "here"
    folder.mkdir()
    check_writable(folder / "new" / "deeper" / "out.png")  # folders still to be made
    assert list(folder.iterdir()) == []  # the probe is gone
    (folder / "file").write_text("x")
    with pytest.raises(GknetError, match="is not a folder"):
        check_writable(folder / "file" / "out.png")
    with pytest.raises(GknetError, match="longer than 255 bytes"):
        check_writable(tmp_path / ("x" * 256))
    with pytest.raises(GknetError, match="cannot write"):
        check_writable(readonly_dir / "out.png")


def test_check_writable_passes_when_another_process_removes_its_probe(tmp_path, monkeypatch):
    """Shards of one evaluation check and clean one shared folder at once: one shard's cleaning may
    remove another's probe before that one removes it (which made that shard fail, writing nothing)."""
    import gknet.io.atomic as atomic

    create = atomic._create

    def create_then_lose(tmp):
        create(tmp)
        assert remove_stale_temporaries(tmp.parent) == 1  # the other process

    monkeypatch.setattr(atomic, "_create", create_then_lose)
    check_writable(tmp_path / "results.json")
    check_writable(tmp_path / "shard-1-of-2" / "results.json")  # probed in tmp_path, too
    assert not list(tmp_path.iterdir())


CHECK_AND_CLEAN = """
import sys
from gknet.io.atomic import check_writable, remove_stale_temporaries
for _ in range(300):
    check_writable(sys.argv[1] + "/results.json")
    remove_stale_temporaries(sys.argv[1], ["results.json"])
"""


def test_processes_checking_and_cleaning_one_folder_at_once_all_pass(tmp_path):
    command = [sys.executable, "-c", CHECK_AND_CLEAN, str(tmp_path)]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    assert not list(tmp_path.iterdir())


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


def test_an_interrupt_just_after_the_temporary_is_created_leaves_no_file(tmp_path, monkeypatch):
    create = atomic._create

    def create_then_interrupt(tmp):
        create(tmp)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C at the worst moment: the file exists

    monkeypatch.setattr(atomic, "_create", create_then_interrupt)
    # Python's own Ctrl+C handler, also where the suite runs in the background (SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_atomic(tmp_path / "out.txt", "data")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert list(tmp_path.iterdir()) == []
