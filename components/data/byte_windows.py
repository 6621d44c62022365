"""Token windows over prepared shards (shards.py), for training and evaluation.

A split is read as one virtual token stream in which every document is framed as BOS + bytes + EOS and the
documents follow each other back to back (ids from model/tokenizer.py):

    stream = [BOS, b0, b1, ..., EOS, BOS, c0, ..., EOS, ...]        length = n_bytes + 2 * n_docs

`ByteWindowLoader` draws random windows of `sequence_length` tokens from it (a window may span documents);
`iter_eval_windows` walks it once in order with non-overlapping windows. Both return batches
    {"tokens": int64 [B, S], "key_padding_mask": bool [B, S] (True = PAD)}
The shards stay memory-mapped: only the bytes of the windows asked for are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from components.data.data_sources import DataSourceError
from components.data.shards import load_manifest, open_split
from components.infrastructure.logs import get_logger
from model.tokenizer import BOS_ID, EOS_ID, PAD_ID

log = get_logger(__name__)


class SplitStream:
    """Random access into a split's framed token stream."""

    def __init__(self, data_dir: Path, split: str, check_hashes: bool = True):
        manifest = load_manifest(data_dir)
        shards = open_split(data_dir, split, manifest, check_hashes=check_hashes)
        self.data_hash = manifest.data_hash
        self._bytes = [data for data, _ in shards]
        # Per document (over all shards, in order): byte length, first byte within its shard, its shard.
        self._lengths = np.concatenate([np.diff(offsets) for _, offsets in shards] or [np.zeros(0, np.int64)])
        self._byte_starts = np.concatenate([offsets[:-1] for _, offsets in shards] or [np.zeros(0, np.int64)])
        self._shard_of = np.concatenate(
            [np.full(len(offsets) - 1, i, dtype=np.int64) for i, (_, offsets) in enumerate(shards)]
            or [np.zeros(0, np.int64)]
        )
        framed = self._lengths + 2
        self._doc_starts = np.concatenate([[0], np.cumsum(framed)[:-1]]).astype(np.int64)  # stream pos of BOS
        self.length = int(framed.sum())
        self.documents = len(self._lengths)
        if self.length == 0:
            raise DataSourceError(f"{data_dir}: split {split!r} has no documents")

    def gather(self, positions: np.ndarray, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (int64) at stream `positions` (any shape), and a mask, True where a position lies at or past
        `limit` (default: the stream's end) and PAD stands in for a token."""
        limit = self.length if limit is None else min(limit, self.length)
        padding = positions >= limit
        positions = np.where(padding, 0, positions)
        doc = np.searchsorted(self._doc_starts, positions, side="right") - 1
        offset = positions - self._doc_starts[doc]  # 0 = BOS, 1..n = bytes, n+1 = EOS
        tokens = np.full(positions.shape, BOS_ID, dtype=np.int64)
        tokens[offset == self._lengths[doc] + 1] = EOS_ID
        is_byte = (offset > 0) & (offset <= self._lengths[doc])
        shard = self._shard_of[doc]
        byte_index = self._byte_starts[doc] + offset - 1
        for shard_id in np.unique(shard[is_byte]):  # a window touches one shard, rarely two
            take = is_byte & (shard == shard_id)
            tokens[take] = self._bytes[shard_id][byte_index[take]]
        tokens[padding] = PAD_ID
        return tokens, padding


def _as_batch(tokens: np.ndarray, padding: np.ndarray) -> dict[str, torch.Tensor]:
    return {"tokens": torch.from_numpy(tokens), "key_padding_mask": torch.from_numpy(padding)}


class ByteWindowLoader:
    """Random training windows, reproducible and resumable.

    Global batch n is a pure function of (seed, n): batch_size * world_size window starts drawn from
    PCG64([seed, n]); rank r takes rows r*batch_size .. (r+1)*batch_size - 1. So N processes with batch B see
    exactly the windows one process with batch N*B sees (DDP is numerically the same run), and the loader's
    only state is n: `state_dict()` saved in a checkpoint and `load_state_dict()` on resume give the batches a
    run without the interruption would have seen, also after a change of world size (same global batch).
    A split shorter than `sequence_length` gives the whole stream in every row, padded and masked.
    """

    def __init__(
        self,
        data_dir: Path,
        split: str,
        sequence_length: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        check_hashes: bool = True,
    ):
        if sequence_length < 1 or batch_size < 1:
            raise ValueError(f"sequence_length ({sequence_length}) and batch_size ({batch_size}) must be >= 1")
        if seed < 0 or not 0 <= rank < world_size:
            raise ValueError(f"need seed >= 0 and 0 <= rank < world_size (seed={seed}, {rank=}, {world_size=})")
        self.stream = SplitStream(data_dir, split, check_hashes=check_hashes)
        self.split, self.sequence_length, self.batch_size = split, sequence_length, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.batch_index = 0
        if self.stream.length < sequence_length:
            log.warning("split_shorter_than_window", split=split, tokens=self.stream.length, window=sequence_length)

    @property
    def batches_per_epoch(self) -> int:
        """Batches per rank that together draw about as many tokens as the split holds (at least 1)."""
        per_step = self.batch_size * self.sequence_length * self.world_size
        return max(1, self.stream.length // per_step)

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """This rank's rows of global batch `index`; does not move the loader's position."""
        rng = np.random.Generator(np.random.PCG64([self.seed, index]))
        last_start = max(self.stream.length - self.sequence_length, 0)
        global_starts = rng.integers(0, last_start, size=self.batch_size * self.world_size, endpoint=True)
        starts = global_starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        positions = starts[:, None] + np.arange(self.sequence_length)  # [B, S]
        return _as_batch(*self.stream.gather(positions))

    def next_batch(self) -> dict[str, torch.Tensor]:
        batch = self.batch(self.batch_index)
        self.batch_index += 1
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """The rest of the current epoch (all of it when at its start): `for batch in loader` per epoch."""
        epoch_end = (self.batch_index // self.batches_per_epoch + 1) * self.batches_per_epoch
        while self.batch_index < epoch_end:
            yield self.next_batch()

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def epoch(self) -> int:
        return self.batch_index // self.batches_per_epoch

    def state_dict(self) -> dict:
        return {
            "batch_index": self.batch_index,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "data_hash": self.stream.data_hash,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"loader state is for seed {state['seed']}, this loader has seed {self.seed}")
        if state.get("data_hash") != self.stream.data_hash:
            # Still resumable, but the batches differ from the interrupted run's: say so.
            log.warning("resume_on_different_data", saved=state.get("data_hash"), now=self.stream.data_hash)
        self.batch_index = int(state["batch_index"])


def iter_eval_windows(
    data_dir: Path,
    split: str,
    sequence_length: int,
    batch_size: int,
    max_bytes: int | None = None,
    check_hashes: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """The split's stream (its first `max_bytes` tokens, when given) in order, cut into non-overlapping
    windows of `sequence_length`: every token exactly once; the last window is padded with PAD and masked,
    and the last batch may have fewer rows."""
    if sequence_length < 1 or batch_size < 1:
        raise ValueError(f"sequence_length ({sequence_length}) and batch_size ({batch_size}) must be >= 1")
    stream = SplitStream(data_dir, split, check_hashes=check_hashes)
    limit = stream.length if max_bytes is None else min(stream.length, max_bytes)
    windows = -(-limit // sequence_length)
    for first in range(0, windows, batch_size):
        starts = np.arange(first, min(first + batch_size, windows), dtype=np.int64) * sequence_length
        positions = starts[:, None] + np.arange(sequence_length)
        yield _as_batch(*stream.gather(positions, limit=limit))
