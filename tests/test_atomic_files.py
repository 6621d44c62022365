"""Atomic writes (components/infrastructure/atomic_files.py): the old file or the new one, never part of one, and
nothing left behind by a failed write."""

from __future__ import annotations

import os

import pytest

from components.infrastructure.atomic_files import atomic_write, write_bytes_atomic, write_text_atomic


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
