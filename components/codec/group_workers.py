"""Worker processes that run the stream groups' coders (components/codec/stream_groups.py) on several cores.

Why processes, not threads: a decoding step is many small torch calls, and their Python side holds the GIL; two
threads coding two groups took longer in wall time than the same two groups one after the other
(docs/benchmarks.md, "Fourth round"). Each worker is a forked copy of this process (the model's weights are
shared copy-on-write, nothing is pickled to start it, a start costs milliseconds), computing on ONE intra-op
thread as the codec's determinism requires (components/codec/files.py, `coding_mode`); every reply says how many
threads computed it, and a reply from more than one is refused, since its floats would not be reproducible.

Group g runs in worker g % workers, one request per worker at a time (a wave), so no worker waits on a pipe
that the caller is not reading. With one worker (or on a platform without fork) the coders run here, in the
same order: the results are the same floats either way, as each group's arithmetic is its own.
"""

from __future__ import annotations

import multiprocessing
import sys
from contextlib import contextmanager

import torch

JOIN_SECONDS = 10


def default_workers(groups: int) -> int:
    """The cores torch computes on (its intra-op threads as this process started), at most one per group."""
    return max(1, min(groups, torch.get_num_threads()))


def _serve(connection, coders: dict) -> None:
    """A worker's loop: (group, method, arguments) in, ("ok", result, threads) or ("error", exception) out."""
    torch.set_num_threads(1)
    while (message := connection.recv()) is not None:
        group, method, arguments = message
        try:
            connection.send(("ok", getattr(coders[group], method)(*arguments), torch.get_num_threads()))
        except BaseException as error:  # noqa: BLE001 - the caller re-raises it, whatever it was
            connection.send(("error", error))
    connection.close()


def _checked(reply):
    if reply[0] == "error":
        raise reply[1]
    _, result, threads = reply
    if threads != 1:
        raise RuntimeError(f"a codec worker computed on {threads} threads; its floats would not be reproducible")
    return result


class GroupWorkers:
    """Runs `method` of every group's coder with one request per group, in `workers` processes."""

    def __init__(self, coders: list, workers: int):
        self.coders = coders
        self.workers = max(1, min(workers, len(coders)))
        self.connections: list = []
        self.processes: list = []

    def start(self) -> None:
        if self.workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
            self.workers = 1
            return
        context = multiprocessing.get_context("fork")
        sys.stdout.flush()  # a child flushes its copy of unwritten output on exit: flush it here, once
        sys.stderr.flush()
        for worker in range(self.workers):
            mine = {g: coder for g, coder in enumerate(self.coders) if g % self.workers == worker}
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, mine), daemon=True)
            process.start()
            theirs.close()
            self.connections.append(ours)
            self.processes.append(process)

    def run(self, method: str, requests: list[tuple]) -> list:
        """[coder_g.method(*requests[g]) for each group g], the groups spread over the workers."""
        if not self.processes:
            return [
                _checked(("ok", getattr(coder, method)(*request), torch.get_num_threads()))
                for coder, request in zip(self.coders, requests, strict=True)
            ]
        results = [None] * len(self.coders)
        for wave in range(0, len(self.coders), self.workers):
            groups = range(wave, min(wave + self.workers, len(self.coders)))
            for group in groups:
                self.connections[group % self.workers].send((group, method, requests[group]))
            replies = [self._receive(group) for group in groups]  # every reply of the wave, then any error
            for group, reply in zip(groups, replies, strict=True):
                results[group] = _checked(reply)
        return results

    def _receive(self, group: int):
        try:
            return self.connections[group % self.workers].recv()
        except EOFError:
            return ("error", RuntimeError(f"the codec worker of stream group {group} ended unexpectedly"))

    def stop(self, failed: bool = False) -> None:
        """Ask the workers to finish (after a failure: end them; they may be mid-request)."""
        for connection in self.connections if not failed else []:
            try:
                connection.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(0 if failed else JOIN_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join()
        for connection in self.connections:
            connection.close()
        self.connections, self.processes = [], []


@contextmanager
def group_workers(coders: list, workers: int):
    pool = GroupWorkers(coders, workers)
    pool.start()
    try:
        yield pool
    except BaseException:
        pool.stop(failed=True)
        raise
    pool.stop()
