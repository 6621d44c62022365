"""Atomic file writes: a reader, or a crash at any moment, sees the old file or the new one, never part of one.

The data goes to a temporary file beside the target (`.<name>.<random>.partial`: the same file system, so the
rename is atomic, and a dot name that folder scans skip), is flushed and fsynced, then renamed over the target
with os.replace; the folder is fsynced after, so that the rename itself survives a power cut. On any failure,
KeyboardInterrupt included, the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".partial"


@contextmanager
def atomic_write(path: Path | str, readable: bool = False, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces `path` when the block ends without an exception (readable:
    opened for reading too, for a writer that checks what it wrote before it is published; mode: the file's
    permissions less the umask, from its creation on, e.g. 0o600 for a private key)."""
    path = Path(path)
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
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
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
