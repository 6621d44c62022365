"""Batches scored on several cores by worker threads, their results taken in input order.

The evaluation's forward passes are large batched tensor operations, inside which torch releases the GIL, so
threads use both cores here (unlike the codec's many tiny decoding steps, components/codec/group_workers.py).
Each batch is computed whole by one thread on one intra-op thread, with the same shapes as a one-worker run, and
the results are consumed in input order: every number, and so the report, is the same whatever the worker count
(tests/test_eval_batching.py compares the reports).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

AHEAD_PER_WORKER = 2  # batches submitted ahead of the one consumed, per worker: bounded memory


def default_workers(device: torch.device) -> int:
    """The cores torch computes on (its intra-op threads before the evaluation takes one) on CPU; 1 elsewhere."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


def ordered_map(function: Callable, items: Iterable, workers: int) -> Iterator:
    """function(item) for each item, in order, computed by `workers` threads (in this thread when 1)."""
    if workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="evaluation") as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= AHEAD_PER_WORKER * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
