"""Compress and decompress files with a model: streaming, atomic, verified.

Streams: the content is cut into up to `streams` chunks (`chunk_layout`), each coded as the evaluation codes a
file (BOS + bytes + EOS in context-carrying windows, components/codec/window_coder.py), side by side: round r
codes window r of every stream that has one, the streams' step-by-step decoders running in lockstep as one
batch (model/lockstep_decoding.py), one model call per position for every stream of the batch. Context carries
across windows inside a stream; a chunk starts cold, which costs about one window boundary's bits.

Groups: the streams are split into `groups` independent batches (components/codec/stream_groups.py), each with
its own range coder per block of rounds and, with --adapt, its own adapted copy of the model, and worker
processes code the groups side by side (components/codec/group_workers.py). The group count is in the header;
the worker count is not, and the file does not depend on it.

`compress_file` reads the input once, into a snapshot hashed on the way (components/codec/endpoints.py), and codes
that snapshot: the header's sha256 describes exactly the bytes coded, whatever happens to the file meanwhile; with
`verify` it decodes the result before publishing it. `decompress_file` checks the payload against the header before
decoding anything, writes each stream's bytes at its chunk's offset, and checks the content against its sha256 after.
Apart from the snapshots (in memory up to 64 MB, a private temporary file beyond), memory is bounded by a block and
a round whatever the file size. Both write to a temporary file beside the destination (or hold the bytes for
standard output) and publish only when everything checked out, so a failure leaves nothing partial behind.

Determinism: one thread, fp32, CPU, eval mode, at both ends (`coding_mode`). The same model on the same kind of
CPU and torch build then computes bit-identical distributions; the content sha256 catches any other case.
"""

from __future__ import annotations

import errno
import hashlib
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from components.codec.endpoints import Snapshot, is_stdio, open_output, snapshot_input
from components.codec.file_format import (
    AdaptSettings,
    CodecError,
    CodecHeader,
    ModelIdentity,
    header_bytes,
    read_block,
    read_header,
    weights_sha256,
    write_block,
)
from components.codec.group_workers import default_workers, group_workers
from components.codec.stream_groups import GroupDecoder, GroupEncoder, group_layout, group_rounds
from components.infrastructure.file_hashes import sha256_of
from model.code_length import PRECISION_BITS, require_code_probabilities
from model.tokenizer import BOS_ID, EOS_ID, NUM_BYTES
from model.window_plan import default_context

CHUNK = 1 << 20
MAX_GROUPS = 1024  # a bound for the flag; a file has at most one group per stream
# Each group ends its own range coder per block (a few bytes) and takes a worker process: below this size a
# second group costs bits (a 120-byte text 7.0 -> 7.2 bits per byte) and the fork costs more time than it saves.
AUTO_GROUPS_MIN_BYTES = 16_384


class CodecParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: int | None = Field(
        None, description="known tokens carried into each window (default: window // 8, at most 16 unless adapting)"
    )
    streams: int = Field(64, ge=1, description="chunks coded side by side (at most; small files get fewer)")
    chunk_bytes: int | None = Field(None, ge=1, description="bytes per chunk (default: from streams)")
    groups: int | None = Field(
        None,
        ge=1,
        le=MAX_GROUPS,
        description="stream groups: independent batches that workers code side by side (default: two for inputs "
        f"of at least {AUTO_GROUPS_MIN_BYTES} bytes, one below)",
    )
    rounds_per_block: int = Field(16, ge=1, description="rounds (one window of every stream) per range-coder block")
    adapt: AdaptSettings | None = None


class CodecSummary(BaseModel):
    bytes_in: int
    bytes_out: int
    bits_per_byte: float  # 8 * compressed size / original size (header included)
    payload_bits_per_byte: float  # the range-coded blocks only
    coded_bits: float | None = None  # sum of -log2 of the quantized probabilities the encoder coded (compress)
    seconds: float
    bytes_per_second: float
    groups: int | None = None  # stream groups in the file
    workers: int | None = None  # processes that coded them


@contextmanager
def coding_mode(model):
    """One thread, eval mode, fp32 on CPU: what both ends need for identical distributions. (And freed memory
    kept for reuse, components/infrastructure/allocator.py: the rounds' batched passes allocate alike.)"""
    import torch

    from components.infrastructure.allocator import keep_freed_memory

    keep_freed_memory()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    model.float().cpu().eval()
    try:
        yield model
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _writes_named(folder: Path | None):
    """A full disk met by a write to an unnamed temporary file in `folder` (an OSError without a file name) names
    the folder. None: nothing is named (standard output, whose disk is not known here)."""
    try:
        yield
    except OSError as error:
        if folder is not None and error.filename is None and error.errno in (errno.ENOSPC, errno.EDQUOT):
            error.filename = str(folder)
        raise


def _progress(total: int, enabled: bool, description: str):
    from tqdm import tqdm

    # disable=None: a bar on a terminal only; never one in logs or pipes.
    return tqdm(total=total, unit="B", unit_scale=True, desc=description, disable=None if enabled else True)


def chunk_layout(size: int, streams: int, window: int, chunk_bytes: int | None = None) -> tuple[int, int]:
    """(streams, chunk bytes) for `size` bytes: at most `streams` chunks, none shorter than a window (a chunk
    starts cold, so tiny chunks would cost bits for little speed), unless chunk_bytes says otherwise."""
    chunk = chunk_bytes or max(-(-size // streams), window, 1)
    return max(1, -(-size // chunk)), chunk


def _chunks(size: int, streams: int, chunk: int) -> list[tuple[int, int]]:
    """(offset, length) of each stream's chunk."""
    return [(index * chunk, min(chunk, size - index * chunk)) for index in range(streams)]


def _stream_tokens(content: BinaryIO, offset: int, length: int, start: int, end: int) -> list[int]:
    """Tokens [start, end) of the stream BOS + the chunk's bytes + EOS, read from the input's snapshot."""
    first, last = max(start - 1, 0), min(end - 1, length)
    content.seek(offset + first)
    data = content.read(last - first)
    return ([BOS_ID] if start == 0 else []) + list(data) + ([EOS_ID] if end == length + 2 else [])


def _take(plans: list[Iterator], rounds: int) -> list[list]:
    """The next `rounds` rounds of every group (empty for a group that has none left)."""
    return [list(islice(plan, rounds)) for plan in plans]


def compress_file(
    model,
    identity: ModelIdentity,
    source: Path | str,
    destination: Path | str,
    params: CodecParams,
    progress: bool = False,
    verify: bool = False,
    workers: int | None = None,
) -> CodecSummary:
    """Code `source` (`-`: standard input) into `destination` (`-`: standard output). verify: decode the result
    here before it is published, so that success means it decompresses on this machine. workers: processes
    coding the stream groups side by side (default: the cores torch sees, at most the groups); the file is the
    same whatever the number."""
    try:
        require_code_probabilities(model, "compressing")
    except ValueError as error:
        raise CodecError(str(error)) from None
    window = int(model.exp_config.data.sequence_length)
    context = params.context if params.context is not None else default_context(window, params.adapt is not None)
    if not 0 <= context < window:
        raise CodecError(f"--context must be in [0, {window}) for a window of {window} tokens (got {context})")
    started = time.perf_counter()
    beside = None if is_stdio(destination) or not Path(destination).parent.exists() else Path(destination).parent
    with snapshot_input(source) as content:  # read once: the bytes hashed are the bytes coded
        streams, chunk = chunk_layout(content.size, params.streams, window, params.chunk_bytes)
        chunks = _chunks(content.size, streams, chunk)
        layout = group_layout(streams, params.groups or (2 if content.size >= AUTO_GROUPS_MIN_BYTES else 1))
        workers = workers or default_workers(len(layout))  # before coding_mode leaves torch one thread
        payload, coded_bits = hashlib.sha256(), 0.0
        with (
            _writes_named(beside),
            coding_mode(model),
            tempfile.TemporaryFile(dir=beside) as body,
            _progress(content.size, progress, "compress") as bar,
        ):
            coders = [GroupEncoder(model, params.adapt, content.name) for _ in layout]
            plans = [group_rounds(chunks, group, window, context) for group in layout]
            with group_workers(coders, workers) as pool:
                while any(block := _take(plans, params.rounds_per_block)):
                    read = content.handle
                    requests = [([_round_windows(read, chunks, round_) for round_ in rounds],) for rounds in block]
                    for words, bits in pool.run("code_block", requests):
                        payload.update(write_block(body, words))
                        coded_bits += bits
                    bar.update(
                        sum(
                            min(end, chunks[s][1] + 1) - known_end
                            for rounds in block
                            for round_ in rounds
                            for s, (_, known_end, end) in round_
                        )
                    )
            header = CodecHeader(
                bytes=content.size,
                sha256=content.sha256,
                payload_bytes=body.tell(),
                payload_sha256=payload.hexdigest(),
                model=identity,
                window=window,
                context=context,
                streams=streams,
                groups=len(layout),
                chunk_bytes=chunk,
                rounds_per_block=params.rounds_per_block,
                precision_bits=PRECISION_BITS,
                adapt=params.adapt,
            )
            prefix = header_bytes(header)
            with open_output(destination, readable=verify) as out:
                out.write(prefix)
                body.seek(0)
                while data := body.read(CHUNK):
                    out.write(data)
                if verify:
                    _verify(model, out, content.name, workers)
    summary = _summary(
        content.size, len(prefix) + header.payload_bytes, header.payload_bytes, time.perf_counter() - started
    )
    return summary.model_copy(update={"coded_bits": coded_bits, "groups": len(layout), "workers": workers})


def _round_windows(content: BinaryIO, chunks: list[tuple[int, int]], round_) -> tuple[list[list[int]], list[int]]:
    """A round's windows (tokens read from the snapshot) and how many tokens of each the receiver knows."""
    windows = [_stream_tokens(content, *chunks[s], start, end) for s, (start, _, end) in round_]
    return windows, [known_end - start for _, (start, known_end, _) in round_]


def _verify(model, packed: BinaryIO, name: str, workers: int) -> None:
    """Decode what was just written (the caller's model, as decompress would load it) and check its content."""
    packed.flush()
    packed.seek(0)
    header = read_header(packed, name)
    with coding_mode(model), _writes_named(Path(tempfile.gettempdir())), tempfile.TemporaryFile() as scratch:
        try:
            _decode(model, header, packed, scratch, name, _progress(0, False, ""), workers)
        except CodecError:
            raise CodecError(
                f"{name}: the compressed file does not decompress on this machine (verification failed); "
                "nothing written"
            ) from None


def _summary(original: int, compressed: int, payload: int, seconds: float) -> CodecSummary:
    return CodecSummary(
        bytes_in=original,
        bytes_out=compressed,
        bits_per_byte=8 * compressed / max(original, 1),
        payload_bits_per_byte=8 * payload / max(original, 1),
        seconds=seconds,
        bytes_per_second=original / max(seconds, 1e-9),
    )


def read_verified_header(packed: BinaryIO, name: str) -> CodecHeader:
    """The header of a compressed file whose payload matches it (length and sha256), else CodecError. The
    handle is left at the start of the file."""
    packed.seek(0)
    header = read_header(packed, name)
    digest, length = hashlib.sha256(), 0
    while chunk := packed.read(CHUNK):
        digest.update(chunk)
        length += len(chunk)
    packed.seek(0)
    if length != header.payload_bytes:
        state = "truncated" if length < header.payload_bytes else "has trailing data"
        raise CodecError(f"{name}: {state} ({length} payload bytes, the header says {header.payload_bytes})")
    if digest.hexdigest() != header.payload_sha256:
        raise CodecError(f"{name}: corrupted (the payload does not match its sha256)")
    return header


def check_model(model, header: CodecHeader, name: str) -> None:
    actual = weights_sha256(model)
    if actual != header.model.weights_sha256:
        made_with = header.model.source or "another model"
        raise CodecError(
            f"{name}: made with another model ({made_with}, weights sha256 {header.model.weights_sha256[:12]}); "
            f"this one is {actual[:12]}"
        )


def decompress_file(
    model, source: Path | str, destination: Path | str, progress: bool = False, workers: int | None = None
) -> CodecSummary:
    """Restore `source` (`-`: standard input) into `destination` (`-`: standard output)."""
    with snapshot_input(source) as packed:
        header = read_verified_header(packed.handle, packed.name)
        return decompress_snapshot(model, header, packed, destination, progress, workers)


def decompress_snapshot(
    model, header: CodecHeader, packed: Snapshot, destination, progress: bool, workers: int | None = None
) -> CodecSummary:
    """Decode a verified compressed file's snapshot (`read_verified_header`) into `destination` with `workers`
    processes (default: the cores torch sees, at most the header's groups)."""
    check_model(model, header, packed.name)
    if header.precision_bits != PRECISION_BITS:
        raise CodecError(
            f"{packed.name}: coded at {header.precision_bits}-bit precision, this build codes at {PRECISION_BITS}"
        )
    layout = chunk_layout(header.bytes, header.streams, header.window, header.chunk_bytes)
    consistent = layout == (header.streams, header.chunk_bytes) and header.groups <= header.streams
    if not consistent or not 0 <= header.context < header.window:
        raise CodecError(f"{packed.name}: corrupted header (inconsistent chunk layout or window)")
    workers = workers or default_workers(header.groups)
    started = time.perf_counter()
    packed.handle.seek(0)
    read_header(packed.handle, packed.name)
    with (
        coding_mode(model),
        open_output(destination, readable=True) as out,
        _progress(header.bytes, progress, "decompress") as bar,
    ):
        _decode(model, header, packed.handle, out, packed.name, bar, workers)
    summary = _summary(header.bytes, packed.size, header.payload_bytes, time.perf_counter() - started)
    return summary.model_copy(update={"groups": header.groups, "workers": workers})


def _decode(model, header: CodecHeader, stream: BinaryIO, out: BinaryIO, name: str, bar, workers: int) -> None:
    """Decode the payload at `stream`'s position into `out` (seekable, readable), each stream's bytes at its
    chunk's offset, then check the content's length and sha256. Any damage is a CodecError."""
    chunks = _chunks(header.bytes, header.streams, header.chunk_bytes)
    layout = group_layout(header.streams, header.groups)
    coders = [GroupDecoder(model, header.adapt, header.context, group, name) for group in layout]
    plans = [group_rounds(chunks, group, header.window, header.context) for group in layout]
    written = 0
    with group_workers(coders, workers) as pool:
        while any(block := _take(plans, header.rounds_per_block)):
            words = [read_block(stream, name) for _ in layout]
            decoded = pool.run("decode_block", list(zip(words, block, strict=True)))
            for rounds, news_of_rounds in zip(block, decoded, strict=True):
                for round_, news in zip(rounds, news_of_rounds, strict=True):
                    for (stream_index, (_, known_end, _)), new in zip(round_, news, strict=True):
                        offset, length = chunks[stream_index]
                        data = _check_tokens(new, known_end, length, offset, name)
                        out.seek(offset + known_end - 1)
                        out.write(data)
                        written += len(data)
                        bar.update(len(data))
    out.flush()
    if written != header.bytes or sha256_of(out) != header.sha256:
        raise CodecError(
            f"{name}: the decoded content does not match its sha256 (decoded with the same weights under "
            "another configuration, or on another kind of CPU or torch build than it was coded on?)"
        )


def _check_tokens(tokens: list[int], first: int, length: int, offset: int, name: str) -> bytes:
    """Bytes of a chunk's decoded stream tokens [first, first + len); the chunk's last token must be EOS."""
    for index, token in enumerate(tokens, start=first):
        expected_eos = index == length + 1
        if (token == EOS_ID) != expected_eos or (not expected_eos and token >= NUM_BYTES):
            raise CodecError(
                f"{name}: decoding diverged at byte {offset + index - 1} (not the model it was made with?)"
            )
    return bytes(token for token in tokens if token < NUM_BYTES)
