"""Atomic writes (components/infrastructure/atomic_files.py): the old file or the new one, never part of one, and
nothing left behind by a failed write."""

from __future__ import annotations

import os
import stat

import pytest

from components.infrastructure.atomic_files import (
    TEMP_SUFFIX,
    NotARegularFileError,
    atomic_write,
    write_bytes_atomic,
    write_text_atomic,
)


def test_the_target_changes_only_when_the_block_ends(tmp_path) -> None:
    target = tmp_path / "deep" / "result.json"
    write_text_atomic(target, "old")
    with atomic_write(target) as handle:
        handle.write(b"new, half written")
        assert target.read_text() == "old"  # a reader meanwhile sees the whole old file
        handle.write(b" and finished")
    assert target.read_text() == "new, half written and finished"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, failure) -> None:
    target = tmp_path / "manifest.json"
    write_bytes_atomic(target, b"old")
    with pytest.raises(type(failure)):
        with atomic_write(target) as handle:
            handle.write(b"partial")
            raise failure
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_the_file_has_the_mode_open_would_give_it(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "shared.txt", "readable by the group and others")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def _make(kind: str, target) -> None:
    """A `kind` at `target`: what a rename would turn into a regular file."""
    if kind == "device node":  # a copy of /dev/null (major 1, minor 3), as `mknod c 1 3` makes it
        if os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "FIFO":
        os.mkfifo(target)
    elif kind == "symlink":
        (target.parent / "pointed-at.txt").write_text("the link's target")
        target.symlink_to(target.parent / "pointed-at.txt")
    else:
        target.mkdir()


@pytest.mark.parametrize("kind", ["device node", "FIFO", "symlink", "folder"])
def test_anything_but_a_regular_file_is_never_replaced(tmp_path, kind) -> None:
    target = tmp_path / "target"
    _make(kind, target)
    before = os.lstat(target)
    with pytest.raises(NotARegularFileError, match="not a regular file; refusing to replace it"):
        write_bytes_atomic(target, b"would become a regular file")
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    if kind == "symlink":
        assert (tmp_path / "pointed-at.txt").read_text() == "the link's target"


def test_a_special_file_made_while_writing_is_not_replaced(tmp_path) -> None:
    target = tmp_path / "target"
    with pytest.raises(NotARegularFileError):
        with atomic_write(target) as handle:
            handle.write(b"data")
            os.mkfifo(target)  # another program makes a FIFO there meanwhile
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


def test_a_full_disk_names_the_target_not_the_temporary_file(tmp_path) -> None:
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(OSError) as failed:
            with atomic_write(disk / "report.json") as handle:
                handle.write(b"x" * (2 << 20))
                handle.flush()
        assert failed.value.filename == str(disk / "report.json")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
