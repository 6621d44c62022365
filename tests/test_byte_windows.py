"""Byte windows over prepared shards: framing, determinism, resume, padding, the sequential eval walk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.data.byte_windows import ByteWindowLoader, SplitStream, iter_eval_windows
from components.data.data_sources import DataSourceError
from components.data.prepare_data import PrepareDataParams, prepare_data, split_of
from components.data.shards import ManifestError
from model.tokenizer import BOS_ID, EOS_ID, PAD_ID


@pytest.fixture
def prepared(text_corpus, tmp_path) -> tuple[Path, dict[str, bytes]]:
    """The toy corpus prepared with small shards, so windows cross shard boundaries."""
    root, documents = text_corpus
    out = tmp_path / "prepared"
    prepare_data(PrepareDataParams(source=str(root), out_dir=out, shard_bytes=6_000, include_eval_sets=False))
    return out, documents


def framed_stream(documents: dict[str, bytes], split: str) -> list[int]:
    """The stream by its definition: BOS + bytes + EOS per document of the split, in doc-id order."""
    tokens = []
    for doc_id, content in sorted(documents.items()):
        if split_of(doc_id) == split:
            tokens += [BOS_ID, *content, EOS_ID]
    return tokens


def test_stream_frames_every_document_with_bos_and_eos(prepared):
    out, documents = prepared
    stream = SplitStream(out, "train")
    tokens, padding = stream.gather(np.arange(stream.length))
    assert tokens.tolist() == framed_stream(documents, "train")
    assert not padding.any()
    # And back: cutting the stream at BOS/EOS gives the documents again.
    cuts = np.flatnonzero(tokens == BOS_ID)
    rebuilt = [
        bytes(tokens[start + 1 : end].astype(np.uint8))
        for start, end in zip(cuts, np.flatnonzero(tokens == EOS_ID), strict=True)
    ]
    assert rebuilt == [c for d, c in sorted(documents.items()) if split_of(d) == "train"]


def test_batches_have_the_promised_shapes_and_are_real_stream_windows(prepared):
    out, documents = prepared
    loader = ByteWindowLoader(out, "train", sequence_length=64, batch_size=8, seed=0)
    batch = loader.next_batch()
    assert batch["tokens"].shape == (8, 64) and batch["tokens"].dtype == torch.int64
    assert batch["key_padding_mask"].dtype == torch.bool and not batch["key_padding_mask"].any()
    stream = bytes(t % 256 for t in framed_stream(documents, "train"))  # specials folded, for searching
    for row in batch["tokens"].tolist():
        assert bytes(t % 256 for t in row) in stream


def test_same_seed_same_batches_other_seed_or_rank_others(prepared):
    out, _ = prepared

    def first_batches(**kwargs) -> list[torch.Tensor]:
        loader = ByteWindowLoader(out, "train", sequence_length=32, batch_size=4, **kwargs)
        return [loader.next_batch()["tokens"] for _ in range(3)]

    reference = first_batches(seed=7)
    assert not torch.equal(reference[0], reference[1])  # batch n depends on n
    assert all(torch.equal(a, b) for a, b in zip(reference, first_batches(seed=7), strict=True))
    assert not torch.equal(reference[0], first_batches(seed=8)[0])
    assert not torch.equal(reference[0], first_batches(seed=7, rank=1, world_size=2)[0])


def test_ranks_split_the_global_batch_of_a_single_process(prepared):
    out, _ = prepared
    single = ByteWindowLoader(out, "train", sequence_length=32, batch_size=6, seed=5)
    ranks = [
        ByteWindowLoader(out, "train", sequence_length=32, batch_size=2, seed=5, rank=r, world_size=3) for r in range(3)
    ]
    for _ in range(3):
        expected = single.next_batch()["tokens"]
        assert torch.equal(torch.cat([loader.next_batch()["tokens"] for loader in ranks]), expected)


def test_resume_from_state_dict_continues_with_the_same_batches(prepared):
    out, _ = prepared
    straight = ByteWindowLoader(out, "train", sequence_length=32, batch_size=4, seed=3)
    expected = [straight.next_batch()["tokens"] for _ in range(7)]

    interrupted = ByteWindowLoader(out, "train", sequence_length=32, batch_size=4, seed=3)
    for _ in range(4):
        interrupted.next_batch()
    state = interrupted.state_dict()
    resumed = ByteWindowLoader(out, "train", sequence_length=32, batch_size=4, seed=3)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.next_batch()["tokens"], expected[k]) for k in range(4, 7))
    with pytest.raises(ValueError, match="seed 3"):
        ByteWindowLoader(out, "train", sequence_length=32, batch_size=4, seed=4).load_state_dict(state)


def test_an_epoch_is_batches_per_epoch_batches(prepared):
    out, _ = prepared
    loader = ByteWindowLoader(out, "train", sequence_length=50, batch_size=4, seed=0)
    assert loader.batches_per_epoch == loader.stream.length // (4 * 50) > 1
    first_epoch = list(loader)
    assert len(first_epoch) == loader.batches_per_epoch and loader.epoch == 1
    loader.load_state_dict({**loader.state_dict(), "batch_index": loader.batches_per_epoch + 2})
    assert len(list(loader)) == loader.batches_per_epoch - 2  # a resumed epoch finishes, not restarts
    two_ranks = ByteWindowLoader(out, "train", sequence_length=50, batch_size=4, seed=0, rank=1, world_size=2)
    assert two_ranks.batches_per_epoch == loader.stream.length // (4 * 50 * 2)


def test_window_longer_than_the_split_is_padded_and_masked(prepared):
    out, documents = prepared
    val = framed_stream(documents, "val")
    loader = ByteWindowLoader(out, "val", sequence_length=len(val) + 10, batch_size=2, seed=0)
    batch = loader.next_batch()
    for row, mask in zip(batch["tokens"].tolist(), batch["key_padding_mask"].tolist(), strict=True):
        assert row == val + [PAD_ID] * 10
        assert mask == [False] * len(val) + [True] * 10


def test_eval_windows_cover_the_stream_exactly_once(prepared):
    out, documents = prepared
    expected = framed_stream(documents, "val")
    batches = list(iter_eval_windows(out, "val", sequence_length=100, batch_size=3))
    tokens = torch.cat([b["tokens"] for b in batches]).flatten()
    mask = torch.cat([b["key_padding_mask"] for b in batches]).flatten()
    assert tokens[~mask].tolist() == expected
    assert len(tokens) == -(-len(expected) // 100) * 100  # only the last window is padded
    assert (tokens[mask] == PAD_ID).all() and not mask[: len(expected)].any()
    assert [len(b["tokens"]) for b in batches][:-1] == [3] * (len(batches) - 1)
    limited = list(iter_eval_windows(out, "val", sequence_length=100, batch_size=3, max_bytes=250))
    limited_tokens = torch.cat([b["tokens"] for b in limited]).flatten()
    limited_mask = torch.cat([b["key_padding_mask"] for b in limited]).flatten()
    assert limited_tokens[~limited_mask].tolist() == expected[:250] and len(limited_tokens) == 300


def test_empty_split_is_a_clear_error(tmp_path):
    (tmp_path / "one").mkdir()
    doc_id = next(f"doc{i}.txt" for i in range(100) if split_of(f"doc{i}.txt") == "train")
    (tmp_path / "one" / doc_id).write_bytes(b"only a training document")
    prepare_data(PrepareDataParams(source=str(tmp_path / "one"), out_dir=tmp_path / "out", include_eval_sets=False))
    with pytest.raises(DataSourceError, match="split 'val' has no documents"):
        ByteWindowLoader(tmp_path / "out", "val", sequence_length=8, batch_size=1, seed=0)
    with pytest.raises(DataSourceError, match="split 'test' has no documents"):
        next(iter_eval_windows(tmp_path / "out", "test", sequence_length=8, batch_size=1))


def test_damaged_shard_is_refused(prepared):
    out, _ = prepared
    shard = out / "train-00001.bin"
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF  # same size, different content: only the hash can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="train-00001.bin: sha256"):
        ByteWindowLoader(out, "train", sequence_length=8, batch_size=1, seed=0)
