"""Where the codec's bytes come from and go to, as gzip, xz and zstd treat them.

Input: `-` is standard input; otherwise a regular file (a symlink to one is followed). A folder, FIFO, device
node or socket is refused with what it is (not "no such file"): a FIFO or /dev/stdin would block or be read only
once, so standard input is asked for by name. The input is read once, into a snapshot (memory up to
`SPOOL_BYTES`, a private temporary file beyond) hashed on the way: what is coded is exactly what was hashed,
whatever another program does to the file meanwhile.

Output: `-` is standard output, written only after every check passed (the codec needs a seekable file while it
works, so the bytes wait in a snapshot). An existing output is refused unless `force`; even with `force` only a
regular file is replaced (components/infrastructure/atomic_files.py refuses a device node, FIFO, symlink or folder
for every caller). The output may not be the input.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from components.codec.file_format import CodecError
from components.infrastructure.atomic_files import atomic_write, file_kind, kind_of_mode, require_replaceable

STDIO = "-"
SPOOL_BYTES = 64 << 20  # snapshots up to this size stay in memory
CHUNK = 1 << 20  # bytes read or copied at a time


def is_stdio(path: Path | str) -> bool:
    return str(path) == STDIO


@dataclass
class Snapshot:
    """The input's bytes as read once: a seekable handle, their length and sha256."""

    handle: BinaryIO
    size: int
    sha256: str
    name: str  # for messages: the path the user gave, or "standard input"


def _input_kind(path: Path) -> str:
    """What the input is, following a symlink (a link to a regular file is that file)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CodecError(f"{path}: no such file") from None
    except OSError as error:
        raise CodecError(f"{path}: cannot be read ({error.strerror})") from None
    return kind_of_mode(mode)


def check_input(source: Path | str) -> None:
    """Refuse an input that is missing, a folder, or not a regular file (standard input is asked for as -)."""
    if is_stdio(source):
        return
    kind = _input_kind(Path(source))
    if kind == "folder":
        raise CodecError(f"{source}: is a folder, not a file")
    if kind != "regular file":
        raise CodecError(f"{source}: is a {kind}, not a regular file (use - to read standard input)")


@contextmanager
def snapshot_input(source: Path | str) -> Iterator[Snapshot]:
    """The input (`-`: standard input), read once and hashed; the handle is positioned at its start."""
    name = "standard input" if is_stdio(source) else str(source)
    check_input(source)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+b") as copy:
        digest, size = hashlib.sha256(), 0
        try:  # standard input stays open for whoever reads it next
            reader = nullcontext(sys.stdin.buffer) if is_stdio(source) else Path(source).open("rb")
        except OSError as error:
            raise CodecError(f"{source}: cannot be read ({error.strerror})") from None
        with reader as stream:
            while data := stream.read(CHUNK):
                digest.update(data)
                copy.write(data)
                size += len(data)
        copy.seek(0)
        yield Snapshot(copy, size, digest.hexdigest(), name)


def check_paths(source: Path | str, destination: Path | str, force: bool) -> None:
    """Refuse, before any work, an output that is the input, exists (without `force`) or is not a regular file."""
    if is_stdio(destination):
        return
    destination = Path(destination)
    if not is_stdio(source) and destination.resolve() == Path(source).resolve():
        raise CodecError(f"{destination}: the output would overwrite the input")
    require_replaceable(destination)
    if file_kind(destination) == "regular file" and not force:
        raise CodecError(f"{destination}: already exists (--force replaces it)")


@contextmanager
def open_output(destination: Path | str, readable: bool = False) -> Iterator[BinaryIO]:
    """A handle whose bytes become `destination` (`-`: go to standard output) when the block ends without an
    exception; nothing is written anywhere otherwise."""
    if not is_stdio(destination):
        with atomic_write(destination, readable=readable) as handle:
            yield handle
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+b") as pending:
        yield pending
        pending.seek(0)
        shutil.copyfileobj(pending, sys.stdout.buffer, CHUNK)
        sys.stdout.buffer.flush()
