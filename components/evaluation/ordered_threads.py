"""Batches scored on several cores by worker threads, their results taken in input order.

The evaluation's forward passes are large batched tensor operations, inside which torch releases the GIL, so
threads use both cores here (unlike the codec's many tiny decoding steps, components/codec/group_workers.py).
Each batch is computed whole by one thread on one intra-op thread, with the same shapes as a one-worker run, and
the results are consumed in input order: every number, and so the report, is the same whatever the worker count
(tests/test_eval_batching.py compares the reports). The workers also take other jobs while they map (the
evaluation's greedy reconstruction), queued among the batches in the order they are submitted.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

AHEAD_PER_WORKER = 2  # batches submitted ahead of the one consumed, per worker: bounded memory


def default_workers(device: torch.device) -> int:
    """The cores torch computes on (its intra-op threads before the evaluation takes one) on CPU; 1 elsewhere."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


class Workers:
    """`count` threads (a context manager), or, for one, the calling thread: a job submitted then runs at once.
    On an error (or an interrupt) in the block, the jobs not yet started are dropped, and `stop` is set for the
    long ones that watch it, so the error is not held up by work nobody will read."""

    def __init__(self, count: int):
        self.count, self.stop = count, threading.Event()
        self.pool = ThreadPoolExecutor(count, thread_name_prefix="evaluation") if count > 1 else None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, error_type, *_) -> None:
        if error_type is not None:
            self.stop.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=error_type is not None)

    def submit(self, function: Callable, *args) -> Future:
        if self.pool is not None:
            return self.pool.submit(function, *args)
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except Exception as error:
            future.set_exception(error)
        return future

    def ordered_map(self, function: Callable, items: Iterable) -> Iterator:
        """function(item) for each item, in order, computed by the threads."""
        if self.pool is None:
            yield from map(function, items)
            return
        pending = deque()
        for item in items:
            pending.append(self.pool.submit(function, item))
            if len(pending) >= AHEAD_PER_WORKER * self.count:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
