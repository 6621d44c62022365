"""Freed memory kept for the next batch instead of handed back to the system (glibc's malloc).

By default glibc serves a large request (above a threshold that adapts up to 32 MB) with a fresh mmap, and
returns freed memory at the top of its heap once more than twice that threshold is free. A forward pass over a
batch allocates and frees activations of a few MB each, so every batch mapped new pages and faulted on each of
them (about 4,000-7,000 page faults per evaluation batch of the `make demo` champion: zeroing pages in the
kernel). Serving requests up to 32 MB from the heap and keeping up to 256 MB free in it lets the next batch
reuse the same pages: the evaluation's forward passes take about 9% less CPU on the 2-core machine
(docs/benchmarks.md, "Sixth round"). The price is that a process holds on to up to 256 MB of freed memory
per malloc arena (each thread that allocates may get an arena of its own: the evaluation's workers do).

The settings are glibc's `mallopt` (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD; the same as the environment variables
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_). Other C libraries are left as they are. Numbers never
change: only where memory comes from.
"""

from __future__ import annotations

import ctypes
import functools
import platform

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest accepted value (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


@functools.cache
def keep_freed_memory() -> bool:
    """Set this process's malloc to reuse freed memory (once; later calls do nothing). False where the C
    library is not glibc or refused a setting."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
