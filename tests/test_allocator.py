"""Freed memory is reused (components/infrastructure/allocator.py): batches that allocate and free a few MB each
stop faulting in new pages. Each case runs in a fresh interpreter, since the setting is process-wide; the
blocks come straight from malloc, so that no other allocation sits between them and the heap's top."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import ctypes, resource, sys
from components.infrastructure.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
SIZES = [6_000_000 + 400_000 * i for i in range(6)]
def batch():  # a forward pass's activations: several MB each, written, then freed together
    blocks = [libc.malloc(size) for size in SIZES]
    for block, size in zip(blocks, SIZES):
        ctypes.memset(block, 1, size)
    for block in blocks:
        libc.free(block)
for _ in range(3):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    # glibc's defaults, whatever the environment tunes (MALLOC_TOP_PAD_ alone keeps the blocks too)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        timeout=120,
        check=True,
    )
    return int(result.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_batches_reuse_freed_pages():
    pages_per_batch = 42_000_000 // 4096  # what a batch touches: about 10,000 pages
    # Ten batches: by default glibc hands the memory back and faults it in again each time (measured:
    # 102,220 faults); kept, fewer than one batch's pages over all ten (measured: 0).
    handed_back = faults("default")
    if handed_back < pages_per_batch:  # transparent huge pages "always": a fault maps 2 MB, the count shows nothing
        pytest.skip(f"this host faults {handed_back} times for ten batches of 42 MB: huge pages hide the reuse")
    assert handed_back > 5 * pages_per_batch
    assert faults("keep") < pages_per_batch
