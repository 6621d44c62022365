"""Compress and decompress files with a model: streaming, atomic, verified.

Streams: the content is cut into up to `streams` chunks (`chunk_layout`), each coded as the evaluation codes a
file (BOS + bytes + EOS in context-carrying windows, components/codec/window_coder.py), all of them side by side:
round r codes window r of every stream that has one, the streams' step-by-step decoders running in lockstep as
one batch (model/lockstep_decoding.py). That is what makes coding fast: one model call per position computes
every stream. Context carries across windows inside a stream; a chunk starts cold, which costs about one window
boundary's bits. One range coder per block of rounds.

`compress_file` reads the input twice (its sha256 and length first, for the header), then each round's windows, and
refuses a file that changed in between; `decompress_file` checks the payload against the header before decoding
anything, writes each stream's bytes at its chunk's offset, and checks the content against its sha256 after. Memory
is bounded by a block and a round whatever the file size. Both write to a temporary file beside the destination and
rename it into place only when everything checked out, so a failure leaves nothing partial behind.

Determinism: one thread, fp32, CPU, eval mode, at both ends (`coding_mode`). The same model on the same kind of
CPU and torch build then computes bit-identical distributions; the content sha256 catches any other case.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from components.codec.adaptation import OnlineAdapter
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
from components.codec.range_coding import DecodingChannel, EncodingChannel
from components.codec.window_coder import default_context, encode_round, plan_windows, run_round
from components.infrastructure.atomic_files import atomic_write
from model.code_length import PRECISION_BITS, require_code_probabilities
from model.tokenizer import BOS_ID, EOS_ID, NUM_BYTES

CHUNK = 1 << 20


class CodecParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: int | None = Field(None, description="known tokens carried into each window (default: window // 8)")
    streams: int = Field(64, ge=1, description="chunks coded side by side (at most; small files get fewer)")
    chunk_bytes: int | None = Field(None, ge=1, description="bytes per chunk (default: from streams)")
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


@contextmanager
def coding_mode(model):
    """One thread, eval mode, fp32 on CPU: what both ends need for identical distributions."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    model.float().cpu().eval()
    try:
        yield model
    finally:
        torch.set_num_threads(previous)


def file_digest(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


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


def _stream_tokens(path: Path, offset: int, length: int, start: int, end: int) -> list[int]:
    """Tokens [start, end) of the stream BOS + the chunk's bytes + EOS, read from the file."""
    first, last = max(start - 1, 0), min(end - 1, length)
    with path.open("rb") as stream:
        stream.seek(offset + first)
        data = stream.read(last - first)
    return ([BOS_ID] if start == 0 else []) + list(data) + ([EOS_ID] if end == length + 2 else [])


def _rounds(chunks: list[tuple[int, int]], window: int, context: int) -> Iterator[list[tuple[int, tuple]]]:
    """Each round: (stream, (start, known_end, end)) of the next window of every stream that has one. Each
    stream's plan is drawn lazily (the plan of a huge file is never held)."""
    plans = [plan_windows(length + 2, window, context) for _, length in chunks]
    while round_ := [(stream, w) for stream, plan in enumerate(plans) if (w := next(plan, None)) is not None]:
        yield round_


def compress_file(
    model, identity: ModelIdentity, source: Path, destination: Path, params: CodecParams, progress: bool = False
) -> CodecSummary:
    if not source.is_file():
        raise CodecError(f"{source}: no such file")
    try:
        require_code_probabilities(model, "compressing")
    except ValueError as error:
        raise CodecError(str(error)) from None
    window = int(model.config.sequence_length)
    context = default_context(window) if params.context is None else params.context
    if not 0 <= context < window:
        raise CodecError(f"--context must be in [0, {window}) for a window of {window} tokens (got {context})")
    started = time.perf_counter()
    model = copy.deepcopy(model) if params.adapt else model  # adapting changes a copy, never the caller's model
    stamp = _stamp(source)
    size, content_sha = file_digest(source)
    streams, chunk = chunk_layout(size, params.streams, window, params.chunk_bytes)
    chunks = _chunks(size, streams, chunk)
    payload, coded_bits = hashlib.sha256(), 0.0
    with (
        coding_mode(model),
        tempfile.TemporaryFile(dir=destination.parent if destination.parent.exists() else None) as body,
        _progress(size, progress, "compress") as bar,
    ):
        adapter = OnlineAdapter(model, params.adapt) if params.adapt else None
        channel = EncodingChannel()
        for index, round_ in enumerate(_rounds(chunks, window, context)):
            if index and index % params.rounds_per_block == 0:
                coded_bits += channel.bits
                payload.update(write_block(body, channel.finish()))
                channel.bits = 0.0
            windows = [_stream_tokens(source, *chunks[stream], start, end) for stream, (start, _, end) in round_]
            encode_round(model, windows, [known_end - start for _, (start, known_end, _) in round_], channel)
            if adapter:
                adapter.update(windows)
            bar.update(sum(min(end, chunks[stream][1] + 1) - known_end for stream, (_, known_end, end) in round_))
        coded_bits += channel.bits
        payload.update(write_block(body, channel.finish()))
        if _stamp(source) != stamp:  # the header's sha256 would not describe what was coded
            raise CodecError(f"{source}: changed while it was being compressed; nothing written")
        header = CodecHeader(
            bytes=size,
            sha256=content_sha,
            payload_bytes=body.tell(),
            payload_sha256=payload.hexdigest(),
            model=identity,
            window=window,
            context=context,
            streams=streams,
            chunk_bytes=chunk,
            rounds_per_block=params.rounds_per_block,
            precision_bits=PRECISION_BITS,
            adapt=params.adapt,
        )
        with atomic_write(destination) as out:
            out.write(header_bytes(header))
            body.seek(0)
            while data := body.read(CHUNK):
                out.write(data)
    summary = _summary(size, destination.stat().st_size, header.payload_bytes, time.perf_counter() - started)
    return summary.model_copy(update={"coded_bits": coded_bits})


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is written to or replaced: size, modification time, inode."""
    status = path.stat()
    return status.st_size, status.st_mtime_ns, status.st_ino


def _summary(original: int, compressed: int, payload: int, seconds: float) -> CodecSummary:
    return CodecSummary(
        bytes_in=original,
        bytes_out=compressed,
        bits_per_byte=8 * compressed / max(original, 1),
        payload_bits_per_byte=8 * payload / max(original, 1),
        seconds=seconds,
        bytes_per_second=original / max(seconds, 1e-9),
    )


def read_verified_header(source: Path) -> CodecHeader:
    """The header of a compressed file whose payload matches it (length and sha256), else CodecError."""
    if not source.is_file():
        raise CodecError(f"{source}: no such file")
    with source.open("rb") as stream:
        header = read_header(stream, str(source))
        digest, length = hashlib.sha256(), 0
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            length += len(chunk)
    if length != header.payload_bytes:
        state = "truncated" if length < header.payload_bytes else "has trailing data"
        raise CodecError(f"{source}: {state} ({length} payload bytes, the header says {header.payload_bytes})")
    if digest.hexdigest() != header.payload_sha256:
        raise CodecError(f"{source}: corrupted (the payload does not match its sha256)")
    return header


def check_model(model, header: CodecHeader, source: Path) -> None:
    actual = weights_sha256(model)
    if actual != header.model.weights_sha256:
        made_with = header.model.source or "another model"
        raise CodecError(
            f"{source}: made with another model ({made_with}, weights sha256 {header.model.weights_sha256[:12]}); "
            f"this one is {actual[:12]}"
        )


def decompress_file(model, source: Path, destination: Path, progress: bool = False) -> CodecSummary:
    header = read_verified_header(source)
    check_model(model, header, source)
    if header.precision_bits != PRECISION_BITS:
        raise CodecError(
            f"{source}: coded at {header.precision_bits}-bit precision, this build codes at {PRECISION_BITS}"
        )
    if (
        chunk_layout(header.bytes, header.streams, header.window, header.chunk_bytes)
        != (
            header.streams,
            header.chunk_bytes,
        )
        or not 0 <= header.context < header.window
    ):
        raise CodecError(f"{source}: corrupted header (inconsistent chunk layout or window)")
    started = time.perf_counter()
    model = copy.deepcopy(model) if header.adapt else model
    chunks = _chunks(header.bytes, header.streams, header.chunk_bytes)
    tails = [[BOS_ID] for _ in chunks]  # each stream so far, as far as its next window can look back
    written = 0
    with (
        coding_mode(model),
        source.open("rb") as stream,
        atomic_write(destination, readable=True) as out,
        _progress(header.bytes, progress, "decompress") as bar,
    ):
        read_header(stream, str(source))
        adapter = OnlineAdapter(model, header.adapt) if header.adapt else None
        for index, round_ in enumerate(_rounds(chunks, header.window, header.context)):
            if index % header.rounds_per_block == 0:
                channel = DecodingChannel(read_block(stream, str(source)))
            knowns = [tails[s][len(tails[s]) - (known_end - start) :] for s, (start, known_end, _) in round_]
            news = run_round(model, knowns, [end - known_end for _, (_, known_end, end) in round_], channel)
            for (stream_index, (_, known_end, _)), known, new in zip(round_, knowns, news, strict=True):
                offset, length = chunks[stream_index]
                data = _check_tokens(new, known_end, length, offset, source)
                out.seek(offset + known_end - 1)
                out.write(data)
                written += len(data)
                tails[stream_index] = (known + new)[-max(header.context, 1) :]
                bar.update(len(data))
            if adapter:
                adapter.update([known + new for known, new in zip(knowns, news, strict=True)])
        out.flush()
        if written != header.bytes or _digest_of(out) != header.sha256:
            raise CodecError(
                f"{source}: the decoded content does not match its sha256 (decoded with the same weights under "
                "another configuration, or on another kind of CPU or torch build than it was coded on?)"
            )
    return _summary(header.bytes, source.stat().st_size, header.payload_bytes, time.perf_counter() - started)


def _digest_of(handle) -> str:
    handle.seek(0)
    digest = hashlib.sha256()
    while data := handle.read(CHUNK):
        digest.update(data)
    return digest.hexdigest()


def _check_tokens(tokens: list[int], first: int, length: int, offset: int, source: Path) -> bytes:
    """Bytes of a chunk's decoded stream tokens [first, first + len); the chunk's last token must be EOS."""
    for index, token in enumerate(tokens, start=first):
        expected_eos = index == length + 1
        if (token == EOS_ID) != expected_eos or (not expected_eos and token >= NUM_BYTES):
            raise CodecError(
                f"{source}: decoding diverged at byte {offset + index - 1} (not the model it was made with?)"
            )
    return bytes(token for token in tokens if token < NUM_BYTES)
