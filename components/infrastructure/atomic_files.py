"""Atomic file writes: a reader, or a crash at any moment, sees the old file or the new one, never part of one.

The data goes to a temporary file beside the target (`.<name>.<random>.partial`: the same file system, so the
rename is atomic, and a dot name that folder scans skip), is flushed and fsynced, then renamed over the target
with os.replace; the folder is fsynced after, so that the rename itself survives a power cut. On any failure,
KeyboardInterrupt included, the temporary file is removed and the target is left as it was.

Only a regular file (or nothing) is ever replaced: a rename would turn a device node (a copy of /dev/null), a
FIFO, a symlink (/dev/stdout) or a folder into a regular file, breaking what it was for everyone. The target is
looked at (lstat, not following a symlink) before the temporary file is made and again just before the rename,
and anything else is refused with `NotARegularFileError`, so no caller can replace one.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from configs.errors import UserError

TEMP_SUFFIX = ".partial"


class NotARegularFileError(UserError):
    """The target exists and is not a regular file: a device node, FIFO, symlink, socket or folder."""


def file_kind(path: Path | str) -> str | None:
    """What `path` itself is (a symlink is not followed): None when nothing is there, else 'regular file',
    'symlink', 'folder', 'FIFO', 'character device', 'block device' or 'socket'."""
    try:
        return kind_of_mode(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def kind_of_mode(mode: int) -> str:
    """'regular file', 'symlink', 'folder', 'FIFO', 'character device', 'block device' or 'socket'."""
    kinds = [
        (stat.S_ISREG, "regular file"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "socket")


def require_replaceable(path: Path | str) -> None:
    """Refuse a target that exists and is not a regular file (a rename would replace it with one)."""
    kind = file_kind(path)
    if kind not in (None, "regular file"):
        raise NotARegularFileError(f"{path}: is a {kind}, not a regular file; refusing to replace it")


@contextmanager
def atomic_write(path: Path | str, readable: bool = False, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces `path` when the block ends without an exception (readable:
    opened for reading too, for a writer that checks what it wrote before it is published; mode: the file's
    permissions less the umask, from its creation on, e.g. 0o600 for a private key)."""
    path = Path(path)
    require_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    # Made as open() makes a file (mode 0o666 less the umask), not 0o600 as tempfile does: the result is an
    # ordinary file that others may read when the folder lets them (unless `mode` says otherwise).
    access, open_mode = (os.O_RDWR, "w+b") if readable else (os.O_WRONLY, "wb")
    handle = os.fdopen(os.open(temp, access | os.O_CREAT | os.O_EXCL, mode), open_mode)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        require_replaceable(path)  # it may have been made meanwhile; the gap left is the rename itself
        os.replace(temp, path)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename in (None, str(temp)):
            error.filename = str(path)  # a message names the file the user asked for, not our temporary one
        raise
    _fsync_folder(path.parent)


def write_bytes_atomic(path: Path | str, data: bytes, mode: int = 0o666) -> Path:
    with atomic_write(path, mode=mode) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: Path | str, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on a folder; the rename is atomic all the same
        pass
    finally:
        os.close(descriptor)
