"""The one file-hash helper: the same digest from a path and from an open handle, whatever the handle's
position (the codec hashes its output right after writing it)."""

from __future__ import annotations

import hashlib
import io
import tempfile

from components.infrastructure.file_hashes import sha256_of


def test_a_path_and_a_handle_at_its_end_hash_the_whole_content(tmp_path) -> None:
    content = bytes(range(256)) * 5000  # over one read block, so the blocks are joined in order
    path = tmp_path / "blob"
    path.write_bytes(content)
    expected = hashlib.sha256(content).hexdigest()
    assert sha256_of(path) == expected
    assert sha256_of(str(path)) == expected
    with tempfile.SpooledTemporaryFile(max_size=1 << 10, mode="w+b") as spooled:  # the codec's stdout spool
        spooled.write(content)
        assert sha256_of(spooled) == expected
    handle = io.BytesIO(content)
    handle.seek(len(content))
    assert sha256_of(handle) == expected
