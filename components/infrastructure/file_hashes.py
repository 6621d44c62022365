"""The sha256 of a file's content, the one helper that every step uses to pin a file (data archives, shards,
checkpoints, the gate's evidence, a codec's decoded output).

`hashlib.file_digest` (Python 3.11) reads in blocks without holding the file in memory; an open handle is
hashed from its start, so a caller that has just written it need not rewind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO


def sha256_of(source: Path | str | BinaryIO) -> str:
    """Hex sha256 of a file's whole content: `source` is a path, or a seekable handle opened in binary mode."""
    if isinstance(source, str | Path):
        with open(source, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    source.seek(0)
    return hashlib.file_digest(source, "sha256").hexdigest()
