"""Run in a fresh interpreter by tests/test_codec_slow.py: the codec's memory peak (tracemalloc) at two input sizes.

tracemalloc sees every Python and numpy allocation: where a copy of the input, of the output or of the coded
blocks would live, and garbage that waits for the cycle collector. In a process of its own nothing that earlier
tests left behind (caches, collector state, tracemalloc's own history) moves the peaks; the withdrawn in-process
version passed alone and failed after the other slow codec tests. Its 32 KB and 288 KB were both under the 1 MB
read size, which alone made the peaks differ by a share of the size difference.

    python -m tests.codec_memory_probe FOLDER SMALL LARGE   -> prints {"peaks": [small, large]} (bytes)
"""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from pathlib import Path

import torch

from components.codec import endpoints, files
from components.codec.files import CodecParams, compress_file, decompress_file
from tests.codec_helpers import identity, trained_model
from tests.model_helpers import real_text


def peak_bytes(model, folder: Path, size: int, params: CodecParams) -> int:
    """tracemalloc's peak while `size` bytes of text go through compress and decompress (checked)."""
    source, packed, restored = folder / f"{size}.bin", folder / f"{size}.abz", folder / f"{size}.out"
    source.write_bytes((real_text() * (size // len(real_text()) + 1))[:size])
    gc.collect()
    tracemalloc.start()
    try:
        compress_file(model, identity(model), source, packed, params)
        decompress_file(model, packed, restored)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if restored.read_bytes() != source.read_bytes():
        raise SystemExit("round trip failed")
    return peak


def main() -> int:
    folder, small, large = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    # The codec reads and hashes files in chunks of files.CHUNK (1 MB): below that a whole small file is one
    # read, and the peak grows with the size by design. 4 KB chunks put both sizes far above it, so what grows
    # with the input here is what a large file would grow by.
    files.CHUNK = 4096
    # Likewise the input and output snapshots (components/codec/endpoints.py): read in endpoints.CHUNK pieces, kept
    # in memory up to SPOOL_BYTES (64 MB) and in a private temporary file beyond: 4 KB puts both sizes beyond both.
    endpoints.CHUNK = endpoints.SPOOL_BYTES = 4096
    model, params = trained_model(), CodecParams(streams=64, rounds_per_block=1)
    peak_bytes(model, folder, 8 * 1024, params)  # warm-up: lazy imports and first-call caches are not the codec's
    print(json.dumps({"peaks": [peak_bytes(model, folder, size, params) for size in (small, large)]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
